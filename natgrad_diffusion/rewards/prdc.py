"""Precision, recall, density and coverage (Naeem et al., 2020) for evaluating generated features.

With real (reference) features ``R = {r_1..r_M}``, fake (generated) features ``F = {f_1..f_N}``, and
``NND_k(x)`` the distance from ``x`` to its ``k``-th nearest neighbour in its own set::

    precision = 1/N Σ_j 1[∃ i: ‖f_j − r_i‖ < NND_k(r_i)]        # fakes inside the real manifold
    recall    = 1/M Σ_i 1[∃ j: ‖r_i − f_j‖ < NND_k(f_j)]        # reals inside the fake manifold
    density   = 1/(kN) Σ_j Σ_i 1[‖f_j − r_i‖ < NND_k(r_i)]      # how many real balls hold each fake
    coverage  = 1/M Σ_i 1[∃ j: ‖r_i − f_j‖ < NND_k(r_i)]        # reals with a fake in their own ball

(M. F. Naeem, S. J. Oh, Y. Uh, Y. Choi & J. Yoo, "Reliable fidelity and diversity metrics for
generative models", ICML 2020; Kynkäänniemi et al., 2019 for precision/recall.)  Strict inequalities
follow the authors' reference implementation.  Identical sets without duplicated rows give
precision = recall = coverage = 1 and density = 1.  Precision/recall/coverage lie in [0, 1]; density
can exceed 1 (fakes concentrated where the reals are dense).
"""

from __future__ import annotations

import numpy as np

from .arrays import ArrayLike, as_features, rows_per_chunk
from .distances import knn_radii, pairwise_distances

__all__ = ["precision_recall_density_coverage"]


def precision_recall_density_coverage(
    real_features: ArrayLike, fake_features: ArrayLike, *, k: int = 5
) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake_features`` ``(N, d)`` against ``real_features`` ``(M, d)``.

    Both sets need more than ``k`` rows.  Returns ``{"precision", "recall", "density", "coverage"}``.
    Memory is bounded by processing the fake set in chunks of rows.
    """
    real = as_features(real_features, "real_features")
    fake = as_features(fake_features, "fake_features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dimensions differ: {real.shape[1]} vs {fake.shape[1]}")
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer; got {k}")
    k = int(k)
    if real.shape[0] <= k or fake.shape[0] <= k:
        raise ValueError(f"prdc needs more than k={k} rows per set; got {real.shape[0]} real, {fake.shape[0]} fake")
    real_radii = knn_radii(real, k)
    fake_radii = knn_radii(fake, k)
    n, m = fake.shape[0], real.shape[0]
    in_real_ball_count = np.zeros(n, dtype=np.int64)  # per fake: number of real balls containing it
    real_covered = np.zeros(m, dtype=bool)  # per real: some fake within its own radius
    real_recalled = np.zeros(m, dtype=bool)  # per real: within some fake's radius
    chunk = rows_per_chunk(m)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        d = pairwise_distances(fake[start:stop], real)  # (chunk, M)
        inside_real = d < real_radii[None, :]
        in_real_ball_count[start:stop] = inside_real.sum(axis=1)
        real_covered |= inside_real.any(axis=0)
        real_recalled |= (d < fake_radii[start:stop, None]).any(axis=0)
    return {
        "precision": float((in_real_ball_count > 0).mean()),
        "recall": float(real_recalled.mean()),
        "density": float(in_real_ball_count.sum() / (k * n)),
        "coverage": float(real_covered.mean()),
    }
