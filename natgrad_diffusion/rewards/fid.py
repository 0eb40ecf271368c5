"""Fréchet distance between Gaussian fits (FID; Heusel et al., 2017) and the FID reward.

For Gaussians ``N(μ1, Σ1)`` and ``N(μ2, Σ2)`` the squared 2-Wasserstein (Fréchet) distance is::

    FD = ‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1^{1/2} Σ2 Σ1^{1/2})^{1/2}

(Heusel, Ramsauer, Unterthiner, Nessler & Hochreiter, "GANs trained by a two time-scale update rule
converge to a local Nash equilibrium", NeurIPS 2017).  The trace term equals ``tr (Σ1 Σ2)^{1/2}`` of
the usual formula, but ``Σ1^{1/2} Σ2 Σ1^{1/2}`` is symmetric positive semi-definite, so it is
evaluated with two symmetric eigendecompositions in float64 (negative round-off eigenvalues clipped
to 0) instead of a general ``sqrtm`` of a non-symmetric product, which can return complex values.

**Bias.**  FID computed from sample means and covariances is biased upwards, strongly so when the
number of samples is not much larger than the feature dimension (Chong & Forsyth, "Effectively
unbiased FID and Inception score and where to find them", CVPR 2020): compare values only at equal
sample sizes, and read small-batch values as a relative signal.  ``shrinkage`` regularises the
covariances towards a scaled identity, ``Σ ← (1 − α) Σ + α (tr Σ / d) I``, which helps when ``n < d``.

**Leave-one-out.**  With the reference fit fixed, the trace term for the generated covariance
``S = Xcᵀ Xc / (n−1)`` (``Xc`` centred, ``n × d``) has the same nonzero eigenvalues as the
``n × n`` matrix ``Xc Σr Xcᵀ / (n−1)``, so leaving one image out costs one ``(n−1) × (n−1)`` (or
``d × d``, whichever is smaller) symmetric eigendecomposition, with no ``d × d`` work per image.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .arrays import ArrayLike, as_features
from .base import Reward

__all__ = ["FIDReward", "frechet_distance", "frechet_distance_features", "gaussian_fit", "sqrtm_psd"]


def _check_shrinkage(shrinkage: float) -> float:
    if not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must lie in [0, 1]; got {shrinkage}")
    return float(shrinkage)


def _shrink(cov: np.ndarray, shrinkage: float) -> np.ndarray:
    if shrinkage == 0.0:
        return cov
    d = cov.shape[0]
    return (1.0 - shrinkage) * cov + shrinkage * (np.trace(cov) / d) * np.eye(d)


def gaussian_fit(features: ArrayLike, *, shrinkage: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(d,)`` and unbiased covariance ``(d, d)`` (divisor ``n − 1``) of ``features`` ``(n, d)``, ``n >= 2``."""
    x = as_features(features, min_rows=2)
    mu = x.mean(axis=0)
    xc = x - mu
    cov = xc.T @ xc / (x.shape[0] - 1)
    return mu, _shrink(cov, _check_shrinkage(shrinkage))


def sqrtm_psd(a: ArrayLike) -> np.ndarray:
    """Symmetric PSD square root of a symmetric matrix (symmetrised, negative eigenvalues clipped to 0)."""
    a = np.asarray(a, dtype=np.float64)
    w, v = np.linalg.eigh(0.5 * (a + a.T))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _trace_sqrt(sym_psd: np.ndarray) -> float:
    """``tr M^{1/2}`` of a symmetric PSD matrix.

    Eigenvalues below the round-off level ``size · eps · max|λ|`` are treated as exact zeros: their
    square roots (~1e-8 relative) would otherwise be pure noise, different for every route to the
    same rank-deficient matrix.
    """
    w = np.linalg.eigvalsh(0.5 * (sym_psd + sym_psd.T))
    if w.size == 0:
        return 0.0
    tol = w.size * np.finfo(np.float64).eps * float(np.abs(w).max())
    return float(np.sqrt(w[w > tol]).sum())


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (means ``(d,)``, covariances ``(d, d)``)."""
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    s1, s2 = np.asarray(sigma1, dtype=np.float64), np.asarray(sigma2, dtype=np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.shape[0], mu1.shape[0]):
        raise ValueError(f"shape mismatch: mu {mu1.shape}, {mu2.shape}; sigma {s1.shape}, {s2.shape}")
    r1 = sqrtm_psd(s1)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * _trace_sqrt(r1 @ s2 @ r1))


def frechet_distance_features(x: ArrayLike, y: ArrayLike, *, shrinkage: float = 0.0) -> float:
    """Fréchet distance between the Gaussian fits of ``x`` ``(n, d)`` and ``y`` ``(m, d)`` (the FID when these are Inception features)."""
    return frechet_distance(*gaussian_fit(x, shrinkage=shrinkage), *gaussian_fit(y, shrinkage=shrinkage))


class FIDReward(Reward):
    """Reward for matching the reference statistics: ``value = FD(batch fit, reference fit)`` (lower is better).

    ``per_image[i] = FD(S \\ {i}) − FD(S)``: positive when image ``i`` brings the batch's mean and
    covariance closer to the reference's.  Needs batches of at least 3 images.  Biased at small batch
    sizes (see the module docstring).

    Args:
        reference_features: ``(m, d)`` reference features, fitted once at construction.
        shrinkage: covariance shrinkage ``α`` applied to both fits.  With ``α > 0`` the leave-one-out
            values need one ``d × d`` eigendecomposition per image.
    """

    name: ClassVar[str] = "FID"
    higher_is_better: ClassVar[bool] = False
    requires_reference: ClassVar[bool] = True
    min_batch: ClassVar[int] = 3

    def __init__(self, reference_features: ArrayLike, *, shrinkage: float = 0.0) -> None:
        self.shrinkage = _check_shrinkage(shrinkage)
        self.mu_ref, self.sigma_ref = gaussian_fit(reference_features, shrinkage=self.shrinkage)
        self.trace_ref = float(np.trace(self.sigma_ref))
        self._sqrt_ref: np.ndarray | None = None

    @property
    def sqrt_sigma_ref(self) -> np.ndarray:
        if self._sqrt_ref is None:
            self._sqrt_ref = sqrtm_psd(self.sigma_ref)
        return self._sqrt_ref

    def _check_dim(self, x: np.ndarray) -> None:
        if x.shape[1] != self.mu_ref.shape[0]:
            raise ValueError(f"feature dimension {x.shape[1]} != reference dimension {self.mu_ref.shape[0]}")

    def metric(self, features: np.ndarray, prompt_ids: np.ndarray | None = None) -> float:
        self._check_dim(features)
        n, d = features.shape
        mu, sigma = gaussian_fit(features, shrinkage=self.shrinkage)
        diff = mu - self.mu_ref
        if self.shrinkage == 0.0 and n - 1 <= d:  # n × n Gram route, no d × d eigendecomposition
            xc = features - mu
            trace_sqrt = _trace_sqrt(xc @ self.sigma_ref @ xc.T / (n - 1))
        else:
            r = self.sqrt_sigma_ref
            trace_sqrt = _trace_sqrt(r @ sigma @ r)
        return float(diff @ diff + np.trace(sigma) + self.trace_ref - 2.0 * trace_sqrt)

    def leave_one_out(self, features: np.ndarray, prompt_ids: np.ndarray | None = None) -> np.ndarray:
        self._check_dim(features)
        n, d = features.shape
        if n < 3:
            raise ValueError(f"leave-one-out FID needs n >= 3; got n={n}")
        if self.shrinkage > 0.0:
            return super().leave_one_out(features, prompt_ids)
        x = features
        mu_loo = (x.sum(axis=0)[None, :] - x) / (n - 1)  # [i] = mean without row i
        diff = mu_loo - self.mu_ref
        mean_term = np.einsum("ij,ij->i", diff, diff)
        sq = np.einsum("ij,ij->i", x, x)
        trace_loo = (sq.sum() - sq - (n - 1) * np.einsum("ij,ij->i", mu_loo, mu_loo)) / (n - 2)
        trace_sqrt = np.empty(n)
        keep = np.ones(n, dtype=bool)
        if n - 1 <= d:  # (n−1) × (n−1) Gram matrices Xc Σr Xcᵀ
            gram = x @ self.sigma_ref @ x.T
            for i in range(n):
                keep[i] = False
                g = gram[np.ix_(keep, keep)]
                g = g - g.mean(axis=0, keepdims=True) - g.mean(axis=1, keepdims=True) + g.mean()
                trace_sqrt[i] = _trace_sqrt(g / (n - 2))
                keep[i] = True
        else:  # d × d: Σr^{1/2} S_{−i} Σr^{1/2} with S_{−i} from a rank-one downdate of the scatter
            r = self.sqrt_sigma_ref
            xr = x @ r
            scatter = xr.T @ xr
            mur = mu_loo @ r
            for i in range(n):
                s = (scatter - np.outer(xr[i], xr[i]) - (n - 1) * np.outer(mur[i], mur[i])) / (n - 2)
                trace_sqrt[i] = _trace_sqrt(s)
        return mean_term + trace_loo + self.trace_ref - 2.0 * trace_sqrt
