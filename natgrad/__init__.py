"""natgrad: natural gradients and trust regions for PyTorch.

A functional core (:func:`conjugate_gradient`, :func:`fisher_vector_product`,
:func:`line_search`, :func:`trust_region_step`) configured by one frozen
:class:`TrustRegionConfig`, and a thin ``torch.optim`` shell
(:class:`TrustRegionOptimizer`).  Depends on torch only.

The public names are loaded on first use (PEP 562), so that ``import natgrad`` and
:mod:`natgrad.config` cost nothing until a tensor is involved: a command-line tool can
validate its settings before torch is imported.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# natgrad depends on torch alone.  Without numpy installed, torch warns "Failed to initialize NumPy" on import;
# natgrad never converts to numpy, so that one warning is silenced (before natgrad imports torch)
warnings.filterwarnings("ignore", message="Failed to initialize NumPy", category=UserWarning)

#: public name -> the module that defines it
_EXPORTS = {
    "LineSearchResult": "backtracking",
    "line_search": "backtracking",
    "CGResult": "cg",
    "conjugate_gradient": "cg",
    "SampleLayoutWarning": "closure",
    "check_sample_layout": "closure",
    "choose_fvp_method": "closure",
    "swap_parameters": "closure",
    "FVP_METHODS": "config",
    "TrustRegionConfig": "config",
    "OutputFamily": "families",
    "detach_distribution": "families",
    "family_of": "families",
    "mean_kl": "families",
    "StochasticModuleWarning": "module_state",
    "FisherOperator": "fisher",
    "fisher_vector_product": "fisher",
    "graph_fisher_vector_product": "fisher",
    "resolve_method": "fisher",
    "TrustRegionOptimizer": "optimizer",
    "KFAC": "kfac",
    "kfac_preconditioner": "kfac",
    "tree_flatten": "tree",
    "tree_map": "tree",
    "tree_unflatten": "tree",
    "NonFiniteError": "trust_region",
    "StepInfo": "trust_region",
    "trust_region_step": "trust_region",
    "trust_region_update": "trust_region",
}

__all__ = [
    "FVP_METHODS",
    "KFAC",
    "CGResult",
    "FisherOperator",
    "LineSearchResult",
    "NonFiniteError",
    "OutputFamily",
    "SampleLayoutWarning",
    "StepInfo",
    "StochasticModuleWarning",
    "TrustRegionConfig",
    "TrustRegionOptimizer",
    "check_sample_layout",
    "choose_fvp_method",
    "conjugate_gradient",
    "detach_distribution",
    "family_of",
    "fisher_vector_product",
    "graph_fisher_vector_product",
    "kfac_preconditioner",
    "line_search",
    "mean_kl",
    "resolve_method",
    "swap_parameters",
    "tree_flatten",
    "tree_map",
    "tree_unflatten",
    "trust_region_step",
    "trust_region_update",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'natgrad' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:  # what a static type checker and an IDE see
    from .backtracking import LineSearchResult, line_search
    from .cg import CGResult, conjugate_gradient
    from .closure import SampleLayoutWarning, check_sample_layout, choose_fvp_method, swap_parameters
    from .config import FVP_METHODS, TrustRegionConfig
    from .families import OutputFamily, detach_distribution, family_of, mean_kl
    from .fisher import FisherOperator, fisher_vector_product, graph_fisher_vector_product, resolve_method
    from .module_state import StochasticModuleWarning
    from .optimizer import TrustRegionOptimizer
    from .tree import tree_flatten, tree_map, tree_unflatten
    from .trust_region import NonFiniteError, StepInfo, trust_region_step, trust_region_update
