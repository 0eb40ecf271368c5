"""One call for before/after tables: distribution match, diversity and fidelity of generated features."""

from __future__ import annotations

import math

import numpy as np

from .arrays import ArrayLike, as_features, as_prompt_codes, group_indices
from .distances import pairwise_distances
from .fid import frechet_distance_features
from .kernels import median_heuristic_bandwidth
from .mi import mutual_information_knn
from .mmd import mmd2_unbiased
from .prdc import precision_recall_density_coverage
from .vendi import KernelName, vendi_score, within_prompt_vendi_score

__all__ = ["evaluate_metrics", "mean_pairwise_distance_within_prompt"]


def mean_pairwise_distance_within_prompt(features: ArrayLike, prompt_ids: ArrayLike | None = None) -> float:
    """Mean over prompts of the mean Euclidean distance between two distinct images of that prompt.

    Prompts with a single image are skipped; ``prompt_ids=None`` treats the batch as one prompt.
    ``nan`` when no prompt has two images.
    """
    x = as_features(features)
    codes = as_prompt_codes(prompt_ids, x.shape[0])
    groups = [np.arange(x.shape[0])] if codes is None else group_indices(codes)
    means = []
    for g in groups:
        if g.size >= 2:
            d = pairwise_distances(x[g])
            means.append(d[np.triu_indices(g.size, k=1)].mean())
    return float(np.mean(means)) if means else math.nan


def evaluate_metrics(
    features: ArrayLike,
    reference: ArrayLike,
    prompt_ids: ArrayLike | None = None,
    *,
    k: int = 5,
    mi_k: int = 3,
    bandwidth: float | None = None,
    fid_shrinkage: float = 0.0,
    fid: bool = True,
    vendi_kernel: KernelName = "cosine",
    vendi_bandwidth: float | None = None,
) -> dict[str, float]:
    """Evaluation metrics of generated ``features`` ``(n, d)`` against ``reference`` ``(m, d)``.

    Returns a flat dict of floats (``nan`` where a metric needs more samples than given):

    * ``n``, ``n_prompts``: batch size and number of distinct prompts (1 without ``prompt_ids``);
    * ``mmd2``: unbiased MMD² with the RBF bandwidth from the reference's median heuristic (or ``bandwidth``);
    * ``fid``: Fréchet distance of the Gaussian fits (biased at small ``n``: compare at equal ``n``; ``nan`` with
      ``fid=False``: a matrix square root of the feature dimension, the dearest metric here);
    * ``vendi``: Vendi score of the whole batch; ``vendi_within_prompt``: mean per-prompt Vendi score;
    * ``pairwise_distance_within_prompt``: see :func:`mean_pairwise_distance_within_prompt`;
    * ``mi``: Ross k-NN estimate of I(prompt; feature) (``nan`` without ``prompt_ids``);
    * ``precision``, ``recall``, ``density``, ``coverage``: Naeem et al. (2020) with ``k`` neighbours.

    ``prompt_ids=None`` treats the batch as a single prompt for the within-prompt metrics.  With
    ``vendi_kernel="rbf"`` and no ``vendi_bandwidth``, the reference median heuristic fixes the bandwidth.
    """
    x = as_features(features)
    ref = as_features(reference, "reference", min_rows=2)
    if x.shape[1] != ref.shape[1]:
        raise ValueError(f"feature dimension {x.shape[1]} != reference dimension {ref.shape[1]}")
    n = x.shape[0]
    codes = as_prompt_codes(prompt_ids, n)
    one_prompt = np.zeros(n, dtype=np.int64)
    ref_bandwidth = median_heuristic_bandwidth(ref) if bandwidth is None else float(bandwidth)
    if vendi_kernel == "rbf" and vendi_bandwidth is None:
        vendi_bandwidth = ref_bandwidth
    out: dict[str, float] = {
        "n": float(n),
        "n_prompts": float(1 if codes is None else np.unique(codes).size),
        "mmd2": mmd2_unbiased(x, ref, bandwidth=ref_bandwidth) if n >= 2 else math.nan,
        "fid": frechet_distance_features(x, ref, shrinkage=fid_shrinkage) if n >= 2 and fid else math.nan,
        "vendi": vendi_score(x, kernel=vendi_kernel, bandwidth=vendi_bandwidth),
        "vendi_within_prompt": within_prompt_vendi_score(
            x, one_prompt if codes is None else codes, kernel=vendi_kernel, bandwidth=vendi_bandwidth
        ),
        "pairwise_distance_within_prompt": mean_pairwise_distance_within_prompt(x, codes),
        "mi": math.nan if codes is None else mutual_information_knn(x, codes, k=mi_k),
    }
    if n > k and ref.shape[0] > k:
        out.update(precision_recall_density_coverage(ref, x, k=k))
    else:
        out.update(dict.fromkeys(("precision", "recall", "density", "coverage"), math.nan))
    return out
