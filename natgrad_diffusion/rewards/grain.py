"""Grain: the share of an image's spectral power at high spatial frequencies (feature-free; shows pixel noise).

For an image ``I`` of ``H × W`` pixels (values in ``[0, 1]``; uint8 is divided by 255), let
``x = (I − mean(I)) · w`` with ``w[r, c] = h_H[r] h_W[c]`` the separable Hann window (``window=True``; it
removes the edge discontinuities the periodic DFT would otherwise count as high-frequency power) or
``w = 1``.  With ``X = DFT₂(x)`` and ``ρ(k) = (f_r(k)² + f_c(k)²)^½`` the radial frequency of bin ``k`` in
cycles per pixel (``f = numpy.fft.fftfreq``, so ``0 ≤ ρ ≤ √½``)::

    HF(I) = Σ_{k: ρ(k) > cutoff} |X(k)|²  /  Σ_{k ≠ 0} |X(k)|²

the fraction of the non-DC power above ``cutoff`` (default ``0.25``, half the Nyquist frequency).  It is in
``[0, 1]``, invariant to brightness and contrast, ``0`` for a constant image (by convention), small for a
smooth image and, in expectation, ``#{k ≠ 0: ρ(k) > cutoff} / (HW − 1)`` for white noise
(:func:`white_noise_fraction`; 0.80 at 32 × 32 and the default cutoff), whose power spectrum is flat.

The set-level comparison :func:`grain_ratio` is ``mean_i HF(sample_i) / mean_j HF(reference_j)``: ``≈ 1``
when generated images are as grainy as the reference, ``> 1`` when they carry extra pixel noise.
"""

from __future__ import annotations

import numpy as np

from .arrays import ArrayLike, is_tensor

__all__ = ["grain_ratio", "high_frequency_energy", "white_noise_fraction"]

#: images whose pixel variance is below this count as constant (HF = 0); a uint8 step is 1/255
_FLAT_VARIANCE = 1e-18


def _as_images(images: ArrayLike) -> np.ndarray:
    """``(N, H, W)`` float64: ``(H, W)`` → one image, channel-last ``(N, H, W, C)`` → mean over channels,
    uint8 → ``/ 255``."""
    if is_tensor(images):
        images = images.detach().to("cpu").numpy()
    a = np.asarray(images)
    is_uint8 = a.dtype == np.uint8
    a = a.astype(np.float64)
    if is_uint8:
        a = a / 255.0
    if a.ndim == 2:
        a = a[None]
    elif a.ndim == 4:
        a = a.mean(axis=-1)
    if a.ndim != 3 or a.shape[1] < 2 or a.shape[2] < 2:
        raise ValueError(f"images must be (N, H, W), (H, W) or (N, H, W, C) with H, W >= 2; got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("images contain NaN or inf")
    return a


def _high_mask(h: int, w: int, cutoff: float) -> np.ndarray:
    fr, fc = np.fft.fftfreq(h), np.fft.fftfreq(w)
    return np.hypot(fr[:, None], fc[None, :]) > cutoff  # (H, W)


def white_noise_fraction(h: int, w: int, cutoff: float = 0.25) -> float:
    """Expected :func:`high_frequency_energy` of ``h × w`` white noise: the share of non-DC DFT bins above
    ``cutoff`` cycles per pixel."""
    return float(_high_mask(h, w, cutoff).sum() / (h * w - 1))


def high_frequency_energy(images: ArrayLike, cutoff: float = 0.25, *, window: bool = True) -> np.ndarray:
    """Per-image fraction of the non-DC spectral power above ``cutoff`` cycles/pixel (see the module docstring).

    ``images``: ``(N, H, W)`` (or one ``(H, W)``, or channel-last ``(N, H, W, C)``, averaged over ``C``), uint8
    or floats in ``[0, 1]``, NumPy or torch. Returns float64 ``(N,)`` in ``[0, 1]``; constant images give 0.
    """
    if not 0.0 <= cutoff < np.sqrt(0.5):
        raise ValueError(f"cutoff must be in [0, √½) cycles per pixel; got {cutoff}")
    a = _as_images(images)
    n, h, w = a.shape
    flat = a.var(axis=(1, 2)) <= _FLAT_VARIANCE  # (N,)
    x = a - a.mean(axis=(1, 2), keepdims=True)
    if window:
        x = x * (np.hanning(h)[:, None] * np.hanning(w)[None, :])
    power = np.abs(np.fft.fft2(x)) ** 2  # (N, H, W)
    power[:, 0, 0] = 0.0
    total = power.sum(axis=(1, 2))
    high = power[:, _high_mask(h, w, cutoff)].sum(axis=1)
    out = np.zeros(n)
    ok = ~flat & (total > 0)
    out[ok] = high[ok] / total[ok]
    return out


def grain_ratio(samples: ArrayLike, reference: ArrayLike, cutoff: float = 0.25, *, window: bool = True) -> float:
    """``mean HF(samples) / mean HF(reference)`` (:func:`high_frequency_energy`; sizes may differ between the sets).

    ``samples`` ``(n, H, W)``, ``reference`` ``(m, H', W')``. Raises ``ValueError`` if the reference has no
    high-frequency power at all (every image constant).
    """
    ref = float(high_frequency_energy(reference, cutoff, window=window).mean())
    if ref <= 0.0:
        raise ValueError("the reference images have no high-frequency power (constant images?)")
    return float(high_frequency_energy(samples, cutoff, window=window).mean()) / ref
