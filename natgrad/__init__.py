"""natgrad: natural gradients and trust regions for PyTorch.

A functional core (:func:`conjugate_gradient`, :func:`fisher_vector_product`,
:func:`line_search`, :func:`trust_region_step`) and a thin ``torch.optim`` shell
(:class:`TrustRegionOptimizer`).  Depends on torch only.
"""

from .backtracking import LineSearchResult, line_search
from .cg import CGResult, conjugate_gradient
from .families import OutputFamily, detach_distribution, family_of, mean_kl
from .fisher import FisherOperator, fisher_vector_product, graph_fisher_vector_product
from .tree import tree_flatten, tree_map, tree_unflatten
from .trust_region import (
    NonFiniteError,
    SampleLayoutWarning,
    StepInfo,
    TrustRegionOptimizer,
    choose_fvp_method,
    swap_parameters,
    trust_region_step,
    trust_region_update,
)

__version__ = "0.1.0"

__all__ = [
    "CGResult",
    "FisherOperator",
    "LineSearchResult",
    "NonFiniteError",
    "OutputFamily",
    "SampleLayoutWarning",
    "StepInfo",
    "TrustRegionOptimizer",
    "choose_fvp_method",
    "conjugate_gradient",
    "detach_distribution",
    "family_of",
    "fisher_vector_product",
    "graph_fisher_vector_product",
    "line_search",
    "mean_kl",
    "swap_parameters",
    "tree_flatten",
    "tree_map",
    "tree_unflatten",
    "trust_region_step",
    "trust_region_update",
]
