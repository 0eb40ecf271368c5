"""Heightmap (km) of a crater scene: crater morphometry, radial profiles, fractal texture.

All lengths in km, ``D`` the rim-crest diameter; the maps are ``(n, n)`` float64 with row 0 north and
column 0 west (:mod:`natgrad_diffusion.data.craters.scene`).

Crater morphometry
------------------
* **Simple craters** are parabolic bowls. Rim-to-floor depth ``d ≈ 0.2 D`` (Pike 1977, *Impact and
  Explosion Cratering*, 489–509; Melosh 1989, *Impact Cratering: A Geologic Process*, ch. 8); for fresh
  Martian simple craters Garvin et al. (2003, *6th Int. Conf. Mars*, abstract 3277) fit ``d ≈ 0.21 D^0.81``.
* **Rim height** above the surrounding plains ``h_r ≈ 0.036 D^1.014`` (Pike 1977).
* **Simple-to-complex transition** on Mars at ``D_t ≈ 5–8 km`` (Pike 1980, *Proc. Lunar Planet. Sci.
  Conf.* 11; Garvin et al. 2003); each scene draws ``D_t`` uniformly in that range.
* **Complex craters** have a flat floor, terraced walls and often a central peak. Depth
  ``d ≈ 0.36 D^0.49`` (Garvin et al. 2003, fresh Martian complex craters); floor diameter
  ``D_f ≈ 0.187 D^1.249`` (Pike 1977, lunar), capped at ``0.7 D``; central-peak base diameter
  ``≈ 0.22 D`` (Hale & Head 1979, *Proc. Lunar Planet. Sci. Conf.* 10; Pike 1985) and peak height a
  fraction (0.25–0.5) of the depth, below the rim crest (Hale & Grieve 1982, *JGR* 87, A65).
* **Ejecta blankets** thin with range as ``t(r) = h_r (r/R)^-3`` (McGetchin, Settle & Head 1973,
  *EPSL* 20, 226), the continuous blanket reaching ~2–3 crater radii (Melosh 1989).
* **Degradation** (0 = pristine, 1 = nearly erased) lowers the rim and the ejecta, fills the floor
  (infill raises the floor up to 50 % of the depth), and smooths the profile as topographic diffusion
  does (Soderblom 1970, *JGR* 75, 2655; Craddock & Maxwell 1993, *JGR* 98, 3453; Fassett & Thomson 2014,
  *JGR Planets* 119, 2255). Here diffusion is applied to the 1-D radial profile as a Gaussian smoothing
  whose width grows with degradation.
* **Background craters** follow a power-law cumulative size-frequency distribution
  ``N(>D) ∝ D^-b`` with ``b ≈ 2`` (Hartmann 2005, *Icarus* 174, 294, small Martian craters).
* **Surface texture** is a fractional-Brownian surface with power spectrum ``P(k) ∝ k^-β``,
  ``β ≈ 2–3`` (Turcotte 1997, *Fractals and Chaos in Geology and Geophysics*).
"""

from __future__ import annotations

import math

import numpy as np

from .scene import Crater, Scene

__all__ = ["depth_km", "floor_fraction", "fractal_field", "heightmap", "radial_profile", "rim_height_km"]


def rim_height_km(diameter_km: float) -> float:
    """Rim height above the plains, ``h_r = 0.036 D^1.014`` km (Pike 1977)."""
    return 0.036 * diameter_km**1.014


def depth_km(diameter_km: float, complex_: bool) -> float:
    """Rim-to-floor depth of a fresh crater (km).

    Simple: ``d = 0.2 D`` (Pike 1977; Melosh 1989). Complex: ``d = 0.36 D^0.49`` (Garvin et al. 2003),
    never deeper than ``0.2 D``.
    """
    if not complex_:
        return 0.2 * diameter_km
    return min(0.36 * diameter_km**0.49, 0.2 * diameter_km)


def floor_fraction(diameter_km: float) -> float:
    """Floor diameter over rim diameter for complex craters, ``D_f/D = 0.187 D^0.249`` (Pike 1977), in [0.25, 0.7]."""
    return float(np.clip(0.187 * diameter_km**0.249, 0.25, 0.7))


_PROFILE_X = np.linspace(0.0, 4.0, 801)  # radial samples in units of the crater radius
_EJECTA_EXTENT = 3.0  # the ejecta blanket is tapered to zero at this many radii


def radial_profile(crater: Crater) -> tuple[np.ndarray, np.ndarray]:
    """Height (km) of a crater relative to the pre-impact surface as a function of ``r/R``.

    Returns ``(x, z)`` with ``x = r/R`` sampled on ``[0, 4]`` and ``z`` in km; ``z(4) = 0``.

    * Simple: parabolic bowl ``z = h_r - d (1 - x²)`` inside the rim.
    * Complex: flat floor out to ``x_f = D_f/D``, terraced wall (three steps on a smoothstep) up to the rim,
      optional Gaussian central peak of base radius ``0.11 D`` (diameter ``0.22 D``).
    * Outside the rim: ejecta ``h_r x^-3`` (McGetchin et al. 1973) tapered to 0 at ``x = 3``.
    * Degradation ``g``: rim and ejecta scaled by ``(1 - 0.6 g)`` and ``(1 - g)²``, floor infill up to
      ``0.5 g d``, then Gaussian smoothing of width ``(0.02 + 0.15 g) R`` (topographic diffusion).
    """
    D, g = crater.diameter_km, float(np.clip(crater.degradation, 0.0, 1.0))
    x = _PROFILE_X
    h = rim_height_km(D) * (1.0 - 0.6 * g)
    d = depth_km(D, crater.complex)
    floor = h - d  # floor level relative to the plains (negative)
    if not crater.complex:
        inner = floor + d * x**2
    else:
        xf = floor_fraction(D)
        s = np.clip((x - xf) / (1.0 - xf), 0.0, 1.0)
        smooth = s * s * (3.0 - 2.0 * s)
        n_terraces = 3
        stairs = (np.floor(smooth * n_terraces) + _smoothstep(np.mod(smooth * n_terraces, 1.0), 0.55, 1.0)) / n_terraces
        wall = 0.6 * stairs + 0.4 * smooth  # terraced but still monotone
        inner = floor + d * wall
        if crater.central_peak:
            peak_h = d * 0.45 * (1.0 - 0.6 * g)
            inner = inner + peak_h * np.exp(-0.5 * (x / 0.11) ** 2)  # base diameter ≈ 0.22 D (± 2σ)
    ejecta = h * np.clip(x, 1.0, None) ** -3 * (1.0 - g) ** 2 + h * g * np.clip(x, 1.0, None) ** -6
    taper = 1.0 - _smoothstep(x, 0.6 * _EJECTA_EXTENT, _EJECTA_EXTENT)
    outer = np.where(x > 1.0, ejecta * taper, 0.0)
    z = np.where(x <= 1.0, inner, outer)
    if g > 0:  # infill: the floor is buried under a flat deposit
        z = np.where(x <= 1.0, np.maximum(z, floor + 0.5 * g * d), z)
    width = 0.02 + 0.15 * g
    z = _gaussian_smooth_1d(z, width / (x[1] - x[0]))
    z = z - z[-1]
    return x, z


def _smoothstep(x: np.ndarray, a: float, b: float) -> np.ndarray:
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _gaussian_smooth_1d(z: np.ndarray, sigma_samples: float) -> np.ndarray:
    """Gaussian smoothing with a reflecting boundary at ``x = 0`` (the profile is even in ``r``)."""
    half = math.ceil(3.0 * sigma_samples)
    if half < 1:
        return z
    k = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma_samples) ** 2)
    k /= k.sum()
    padded = np.concatenate([z[half:0:-1], z, np.full(half, z[-1])])
    return np.convolve(padded, k, mode="valid")


def fractal_field(rng: np.random.Generator, n: int, beta: float) -> np.ndarray:
    """Zero-mean unit-RMS periodic field of size ``(n, n)`` with power spectrum ``∝ k^-β``.

    Complex white noise times ``|k|^(-β/2)`` on the ``rfft2`` grid (zero at ``k = 0``), transformed back and
    scaled to unit standard deviation.
    """
    ky = np.fft.fftfreq(n)[:, None]
    kx = np.fft.rfftfreq(n)[None, :]
    k = np.sqrt(kx**2 + ky**2)
    k[0, 0] = 1.0
    amp = k ** (-beta / 2.0)
    amp[0, 0] = 0.0
    spec = amp * (rng.standard_normal(amp.shape) + 1j * rng.standard_normal(amp.shape))
    f = np.fft.irfft2(spec, s=(n, n))
    return f / (f.std() + 1e-12)


def _add_crater(z: np.ndarray, crater: Crater, px_km: float) -> None:
    n = z.shape[0]
    R = crater.diameter_km / 2.0
    reach = _EJECTA_EXTENT * R * 1.1
    cx, cy = crater.x_km / px_km - 0.5, crater.y_km / px_km - 0.5  # pixel-centre coordinates
    r_px = reach / px_km
    j0, j1 = max(0, int(cx - r_px)), min(n, int(cx + r_px) + 2)
    i0, i1 = max(0, int(cy - r_px)), min(n, int(cy + r_px) + 2)
    if j0 >= j1 or i0 >= i1:
        return
    dx = (np.arange(j0, j1) - cx)[None, :] * px_km
    dy = (np.arange(i0, i1) - cy)[:, None] * px_km
    r = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx)
    p2, p3, p5 = crater.phases
    wobble = 1.0 + crater.ellipticity * (
        np.cos(2 * theta + p2) + 0.5 * np.cos(3 * theta + p3) + 0.25 * np.cos(5 * theta + p5)
    )
    xs, zs = radial_profile(crater)
    z[i0:i1, j0:j1] += np.interp(r / (R * wobble), xs, zs, right=0.0)


def heightmap(scene: Scene, size: int) -> np.ndarray:
    """Heightmap (km, float64, shape ``(size, size)``) of a scene: texture + background + primary craters."""
    px_km = scene.image_km / size
    rng = np.random.default_rng(scene.seed)
    z = scene.texture_rms_km * fractal_field(rng, size, scene.texture_beta)
    # background first (older), primaries on top; smaller primaries later so they cut the larger ones
    for c in scene.background:
        _add_crater(z, c, px_km)
    for c in sorted(scene.primaries, key=lambda c: -c.diameter_km):
        _add_crater(z, c, px_km)
    return z
