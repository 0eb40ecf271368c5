"""Procedural renderer of Mars-like crater images, with captions derived from the true parameters.

The renderer builds a *heightmap* (km) of a square patch of terrain, then shades it with a Lambertian
sun and cast shadows. Everything is seeded and deterministic: the same :class:`Scene` always renders to
the same pixels, and :func:`sample_scene` with the same generator state always returns the same scene.

Conventions
-----------
* Images are ``uint8``: grayscale ``(H, W)`` (batches ``(N, H, W)``) or, with ``rgb=True``, a reddish
  Mars tint ``(H, W, 3)`` (batches ``(N, H, W, 3)``).
* Row 0 is **north**, column 0 is **west** (map view, north up). Positions are in km from the
  north-west corner: ``x`` grows to the east, ``y`` grows to the south.
* The sun azimuth is the compass direction the light comes *from* (0° = north, 90° = east, clockwise);
  the sun elevation is measured above the horizon, i.e. the incidence angle on flat ground is
  ``90° - elevation``.

Crater morphometry (all lengths in km, ``D`` the rim-crest diameter)
--------------------------------------------------------------------
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

Captions
--------
Each scene gets a short caption from a closed vocabulary (:data:`VOCABULARY`), derived from its true
parameters, e.g. ``"a fresh large complex crater with a central peak, lit from the west, low sun"``.
:func:`parse_caption` inverts it into attributes (:data:`ATTRIBUTES`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, replace

import numpy as np

__all__ = [
    "ATTRIBUTES",
    "VOCABULARY",
    "Crater",
    "Scene",
    "caption_attributes",
    "caption_for",
    "heightmap",
    "parse_caption",
    "render",
    "render_batch",
    "sample_scene",
    "scene_from_json",
    "scene_to_json",
    "shade",
    "size_class",
]

# ----------------------------------------------------------------------------------------------------------------------
# caption vocabulary
# ----------------------------------------------------------------------------------------------------------------------

#: caption attributes and their values (the order of the values is used for colour maps and classifiers)
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "count": ("a", "two", "several"),
    "freshness": ("fresh", "degraded"),
    "size": ("small", "medium", "large"),
    "morphology": ("bowl-shaped", "central peak", "flat floor"),
    "direction": ("north", "east", "south", "west"),
    "elevation": ("low", "high"),
}

#: every word (as split by a CLIP tokenizer: letters, or runs of punctuation) that a caption can contain
VOCABULARY: tuple[str, ...] = (
    "a",
    "two",
    "several",
    "fresh",
    "degraded",
    "small",
    "medium",
    "large",
    "bowl",
    "-",
    "shaped",
    "complex",
    "crater",
    "craters",
    "with",
    "central",
    "peak",
    "peaks",
    "flat",
    "floor",
    "floors",
    ",",
    "lit",
    "from",
    "the",
    "north",
    "east",
    "south",
    "west",
    "low",
    "high",
    "sun",
)

# size classes as a fraction of the image width (rim-crest diameter of the primary craters)
SIZE_FRACTION = {"small": (0.13, 0.22), "medium": (0.26, 0.40), "large": (0.46, 0.66)}
# degradation bands for the caption words
FRESHNESS_BAND = {"fresh": (0.0, 0.3), "degraded": (0.55, 0.9)}
# sun elevation bands in degrees (incidence angle = 90° - elevation)
ELEVATION_BAND = {"low": (12.0, 26.0), "high": (42.0, 62.0)}
DIRECTION_AZIMUTH = {"north": 0.0, "east": 90.0, "south": 180.0, "west": 270.0}
AZIMUTH_JITTER_DEG = 20.0
NUM_PRIMARIES = {"a": (1, 1), "two": (2, 2), "several": (3, 5)}
TRANSITION_KM = (5.0, 8.0)  # simple-to-complex transition diameter on Mars (Pike 1980; Garvin et al. 2003)


# ----------------------------------------------------------------------------------------------------------------------
# parameters
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Crater:
    """One crater.

    Attributes:
        x_km, y_km: rim centre, km east / south of the north-west image corner.
        diameter_km: rim-crest diameter ``D`` (km).
        complex: complex (flat floor, terraces) rather than a simple bowl; set from ``D`` against the
            simple-to-complex transition diameter of the scene.
        central_peak: complex craters only: has a central peak.
        degradation: 0 (pristine) … 1 (nearly erased).
        ellipticity: relative amplitude of the low-order azimuthal rim irregularity (≈ 0.02–0.06).
        phases: phases (rad) of the 2nd, 3rd and 5th azimuthal harmonics of the rim irregularity.
    """

    x_km: float
    y_km: float
    diameter_km: float
    complex: bool
    central_peak: bool
    degradation: float
    ellipticity: float = 0.03
    phases: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Scene:
    """All parameters of one image (JSON-serialisable via :func:`scene_to_json`).

    Attributes:
        image_km: width (= height) of the patch in km.
        sun_azimuth_deg: direction the light comes from, degrees clockwise from north.
        sun_elevation_deg: sun elevation above the horizon in degrees.
        primaries: the captioned craters, largest first.
        background: small (uncaptioned) craters from a power-law size-frequency distribution.
        transition_km: simple-to-complex transition diameter used for this scene.
        texture_rms_km: RMS height of the fractal surface texture (km).
        texture_beta: spectral exponent ``β`` of the texture, ``P(k) ∝ k^-β``.
        albedo_contrast: relative amplitude of smooth albedo variations.
        seed: seed of the texture and albedo noise fields.
        vertical_exaggeration: heights are multiplied by this before shading (1 = true relief).
            :func:`sample_scene` uses ``max(1, 0.15 / (d/D))`` of the main crater, so that shallow
            large complex craters stay visible at 32–64 px (1 for simple craters, ≈ 2–3.5 for complex).
    """

    image_km: float
    sun_azimuth_deg: float
    sun_elevation_deg: float
    primaries: tuple[Crater, ...]
    background: tuple[Crater, ...] = ()
    transition_km: float = 6.5
    texture_rms_km: float = 0.02
    texture_beta: float = 2.6
    albedo_contrast: float = 0.06
    seed: int = 0
    vertical_exaggeration: float = 1.5
    labels: dict[str, str] = field(default_factory=dict)


def scene_to_json(scene: Scene) -> str:
    """Serialise a :class:`Scene` to a compact JSON string."""
    return json.dumps(asdict(scene), separators=(",", ":"))


def scene_from_json(text: str) -> Scene:
    """Inverse of :func:`scene_to_json`."""
    d = json.loads(text)
    d["primaries"] = tuple(Crater(**{**c, "phases": tuple(c["phases"])}) for c in d["primaries"])
    d["background"] = tuple(Crater(**{**c, "phases": tuple(c["phases"])}) for c in d["background"])
    return Scene(**d)


# ----------------------------------------------------------------------------------------------------------------------
# morphometry
# ----------------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------------
# heightmap and shading
# ----------------------------------------------------------------------------------------------------------------------


def _fractal_field(rng: np.random.Generator, n: int, beta: float) -> np.ndarray:
    """Zero-mean unit-RMS periodic field of size ``(n, n)`` with power spectrum ``∝ k^-β``."""
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
    z = scene.texture_rms_km * _fractal_field(rng, size, scene.texture_beta)
    # background first (older), primaries on top; smaller primaries later so they cut the larger ones
    for c in scene.background:
        _add_crater(z, c, px_km)
    for c in sorted(scene.primaries, key=lambda c: -c.diameter_km):
        _add_crater(z, c, px_km)
    return z


def shade(z_km: np.ndarray, px_km: float, azimuth_deg: float, elevation_deg: float, shadows: bool = True) -> np.ndarray:
    """Lambertian hillshade with cast shadows, normalised so that flat ground has brightness 1.

    With unit normal ``n ∝ (-∂z/∂x_east, -∂z/∂y_north, 1)`` and sun vector
    ``s = (cos e sin a, cos e cos a, sin e)`` the brightness is ``max(0, n·s) / sin e``. A pixel is in cast
    shadow when the terrain towards the sun rises above the sun ray, ``z(p + t u) > z(p) + t tan e``.
    Returns float64 of the same shape as ``z_km``.
    """
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    dz_drow, dz_dcol = np.gradient(z_km, px_km)
    gx, gy = dz_dcol, -dz_drow  # east, north slopes
    sx, sy, sz = math.cos(el) * math.sin(az), math.cos(el) * math.cos(az), math.sin(el)
    lam = (-gx * sx - gy * sy + sz) / np.sqrt(gx**2 + gy**2 + 1.0)
    out = np.clip(lam, 0.0, None) / sz
    if shadows:
        n = z_km.shape[0]
        u_col, u_row = math.sin(az), -math.cos(az)  # towards the sun, pixel axes
        rise = math.tan(el) * px_km
        relief = float(z_km.max() - z_km.min())
        steps = min(n, math.ceil(relief / max(rise, 1e-9)) + 1)
        rows, cols = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        lit = np.ones_like(z_km, dtype=bool)
        for t in range(1, steps + 1):
            rr = np.rint(rows + t * u_row).astype(np.int64)
            cc = np.rint(cols + t * u_col).astype(np.int64)
            inside = (rr >= 0) & (rr < n) & (cc >= 0) & (cc < n)
            zt = np.where(inside, z_km[np.clip(rr, 0, n - 1), np.clip(cc, 0, n - 1)], -np.inf)
            lit &= zt <= z_km + t * rise
        out = np.where(lit, out, 0.0)
    return out


def render(scene: Scene, size: int = 64, rgb: bool = False, supersample: int = 2) -> np.ndarray:
    """Render a scene to ``uint8``: ``(size, size)`` grayscale, or ``(size, size, 3)`` Mars-tinted with ``rgb``.

    The terrain is shaded at ``supersample × size`` and box-filtered down (anti-aliasing). Brightness:
    ``albedo · (0.1 + 0.9 · shade)`` with flat ground ≈ 0.47 of full scale; the 0.1 floor is diffuse
    skylight, which keeps Martian shadows from being black.
    """
    n = size * supersample
    px_km = scene.image_km / n
    z = heightmap(scene, n) * scene.vertical_exaggeration
    s = shade(z, px_km, scene.sun_azimuth_deg, scene.sun_elevation_deg)
    rng = np.random.default_rng([scene.seed, 1])
    albedo = 1.0 + scene.albedo_contrast * _fractal_field(rng, n, 3.5)
    img = 0.47 * albedo * (0.1 + 0.9 * s)
    img = img.reshape(size, supersample, size, supersample).mean(axis=(1, 3))
    img = np.clip(img, 0.0, 1.0)
    if rgb:
        # butterscotch tint: darker tones reddish-brown, highlights pale orange
        tint_lo, tint_hi = np.array([0.35, 0.16, 0.08]), np.array([1.0, 0.82, 0.62])
        img = tint_lo * (1 - img[..., None]) * img[..., None] * 2 + tint_hi * img[..., None] ** 1.1
        img = np.clip(img, 0.0, 1.0)
    return np.round(img * 255.0).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------------------
# sampling scenes and captions
# ----------------------------------------------------------------------------------------------------------------------


def _pick(rng: np.random.Generator, values: tuple[str, ...], base: str | None, diversity: float) -> str:
    """A uniformly random value, or ``base`` with probability ``1 - diversity²``."""
    if base is not None and rng.random() >= diversity**2:
        return base
    return values[int(rng.integers(len(values)))]


def _blend(rng: np.random.Generator, lo: float, hi: float, base01: float | None, diversity: float) -> float:
    """Uniform draw in ``[lo, hi]``, pulled towards ``base01`` (a position in [0, 1]) for diversity < 1."""
    u = rng.random()
    if base01 is not None:
        u = base01 + diversity * (u - base01)
    return lo + (hi - lo) * u


def sample_scene(
    rng: np.random.Generator,
    diversity: float = 1.0,
    base: dict[str, str] | None = None,
    seed: int | None = None,
) -> Scene:
    """Draw a random scene.

    Args:
        rng: numpy generator (the only source of randomness).
        diversity: 1 = every attribute and continuous parameter drawn from its full range; smaller values
            keep each caption attribute at its ``base`` value with probability ``1 - diversity²`` and pull
            every continuous parameter towards the middle of its range (0 = near-identical scenes that
            differ only in texture noise).
        base: caption attributes (keys of :data:`ATTRIBUTES`) used when ``diversity < 1``; missing keys
            take these defaults: ``{"count": "a", "freshness": "fresh",
            "size": "medium", "morphology": "central peak", "direction": "west", "elevation": "low"}``.
        seed: seed of the texture noise (default: drawn from ``rng``).
    """
    diversity = float(np.clip(diversity, 0.0, 1.0))
    narrow = diversity < 1.0
    default = {
        "count": "a",
        "freshness": "fresh",
        "size": "medium",
        "morphology": "central peak",
        "direction": "west",
        "elevation": "low",
    }
    b = {**default, **(base or {})} if narrow else dict.fromkeys(ATTRIBUTES)
    mid = 0.5 if narrow else None

    count = _pick(rng, ATTRIBUTES["count"], b["count"], diversity)
    size = _pick(rng, ATTRIBUTES["size"], b["size"], diversity)
    if count == "several" and size == "large":  # several large craters do not fit in one image
        size = "medium"
    morph = _pick(rng, ATTRIBUTES["morphology"], b["morphology"], diversity)
    fresh = _pick(rng, ATTRIBUTES["freshness"], b["freshness"], diversity)
    direction = _pick(rng, ATTRIBUTES["direction"], b["direction"], diversity)
    elevation = _pick(rng, ATTRIBUTES["elevation"], b["elevation"], diversity)

    transition = _blend(rng, *TRANSITION_KM, mid, diversity)
    frac = _blend(rng, *SIZE_FRACTION[size], mid, diversity)
    # physical diameter of the main crater decides simple vs complex (the caption asked for `morph`)
    if morph == "bowl-shaped":
        d_main = _blend(rng, 1.0, 0.9 * transition, mid, diversity)
    else:
        d_main = math.exp(_blend(rng, math.log(1.2 * transition), math.log(60.0), mid, diversity))
    image_km = d_main / frac

    lo_n, hi_n = NUM_PRIMARIES[count]
    n_primary = int(rng.integers(lo_n, hi_n + 1))
    g_lo, g_hi = FRESHNESS_BAND[fresh]
    primaries = []
    for k in range(n_primary):
        if k == 0:
            D = d_main
            lo, hi = (0.4, 0.6) if n_primary == 1 else (0.3, 0.7)
            cx, cy = _blend(rng, lo, hi, mid, diversity), _blend(rng, lo, hi, mid, diversity)
        else:
            # same size class, no larger than the main crater
            D = min(frac, _blend(rng, *SIZE_FRACTION[size], None, 1.0)) * image_km
            cx, cy = rng.uniform(0.12, 0.88, size=2)
        complex_ = D > transition
        peak = bool(complex_ and (morph == "central peak" if k == 0 else rng.random() < 0.7))
        primaries.append(
            Crater(
                x_km=float(cx * image_km),
                y_km=float(cy * image_km),
                diameter_km=float(D),
                complex=bool(complex_),
                central_peak=peak,
                degradation=float(_blend(rng, g_lo, g_hi, mid, diversity)),
                ellipticity=float(_blend(rng, 0.01, 0.06, mid, diversity)),
                phases=tuple(float(p) for p in rng.uniform(0, 2 * math.pi, size=3)),
            )
        )

    # background craters: truncated power law N(>D) ∝ D^-b between 2 px and 10 % of the image
    b_slope = 2.0
    d_min, d_max = image_km / 24.0, image_km * 0.1
    density = _blend(rng, 2.0, 14.0, mid, diversity)  # expected number per image
    n_bg = int(rng.poisson(density))
    u = rng.random(n_bg)
    diam = d_min * (1.0 - u * (1.0 - (d_min / d_max) ** b_slope)) ** (-1.0 / b_slope)
    background = tuple(
        Crater(
            x_km=float(rng.uniform(0, image_km)),
            y_km=float(rng.uniform(0, image_km)),
            diameter_km=float(Dk),
            complex=bool(Dk > transition),
            central_peak=bool(Dk > transition and rng.random() < 0.5),
            degradation=float(rng.uniform(0.2, 1.0)),
            ellipticity=float(rng.uniform(0.01, 0.08)),
            phases=tuple(float(p) for p in rng.uniform(0, 2 * math.pi, size=3)),
        )
        for Dk in diam
    )

    az = DIRECTION_AZIMUTH[direction] + _blend(rng, -AZIMUTH_JITTER_DEG, AZIMUTH_JITTER_DEG, mid, diversity)
    el = _blend(rng, *ELEVATION_BAND[elevation], mid, diversity)
    texture = _blend(rng, 0.001, 0.004, mid, diversity) * image_km
    beta = _blend(rng, 2.6, 3.2, mid, diversity)
    noise_seed = int(rng.integers(2**31)) if seed is None else int(seed)
    scene = Scene(
        image_km=float(image_km),
        sun_azimuth_deg=float(az % 360.0),
        sun_elevation_deg=float(el),
        primaries=tuple(primaries),
        background=background,
        transition_km=float(transition),
        texture_rms_km=float(texture),
        texture_beta=float(beta),
        albedo_contrast=float(_blend(rng, 0.03, 0.1, mid, diversity)),
        seed=noise_seed,
        vertical_exaggeration=float(max(1.0, 0.15 * d_main / depth_km(d_main, d_main > transition))),
    )
    return replace(scene, labels=caption_attributes(scene))


def size_class(fraction: float) -> str:
    """Caption size word of a crater whose rim-crest diameter is ``fraction`` of the image width.

    ``"small"`` below 0.24, ``"medium"`` below 0.43, else ``"large"`` (between the :data:`SIZE_FRACTION` bands).
    """
    return "small" if fraction < 0.24 else ("medium" if fraction < 0.43 else "large")


def caption_attributes(scene: Scene) -> dict[str, str]:
    """Caption attributes derived from the *true* parameters of a scene (see :data:`ATTRIBUTES`).

    count: number of primary craters (1 → "a", 2 → "two", ≥ 3 → "several"); size: class of the main
    crater's diameter as a fraction of the image width; freshness: main crater degradation < 0.45;
    morphology: simple → "bowl-shaped", complex → "central peak" or "flat floor"; direction: the nearest
    compass direction of the sun azimuth; elevation: "low" below 35°.
    """
    main = max(scene.primaries, key=lambda c: c.diameter_km)
    n = len(scene.primaries)
    size = size_class(main.diameter_km / scene.image_km)
    if not main.complex:
        morph = "bowl-shaped"
    else:
        morph = "central peak" if main.central_peak else "flat floor"
    direction = ATTRIBUTES["direction"][int(((scene.sun_azimuth_deg + 45.0) % 360.0) // 90.0)]
    return {
        "count": "a" if n == 1 else ("two" if n == 2 else "several"),
        "freshness": "fresh" if main.degradation < 0.45 else "degraded",
        "size": size,
        "morphology": morph,
        "direction": direction,
        "elevation": "low" if scene.sun_elevation_deg < 35.0 else "high",
    }


def caption_for(attrs: dict[str, str] | Scene) -> str:
    """Caption text from attributes (or from a :class:`Scene`, via :func:`caption_attributes`).

    >>> caption_for({"count": "a", "freshness": "fresh", "size": "large", "morphology": "central peak",
    ...              "direction": "west", "elevation": "low"})
    'a fresh large complex crater with a central peak, lit from the west, low sun'
    """
    a = caption_attributes(attrs) if isinstance(attrs, Scene) else attrs
    plural = a["count"] != "a"
    noun = "craters" if plural else "crater"
    if a["morphology"] == "bowl-shaped":
        body = f"bowl-shaped {noun}"
    elif a["morphology"] == "central peak":
        body = f"complex {noun} with central peaks" if plural else f"complex {noun} with a central peak"
    else:
        body = f"complex {noun} with flat floors" if plural else f"complex {noun} with a flat floor"
    return f"{a['count']} {a['freshness']} {a['size']} {body}, lit from the {a['direction']}, {a['elevation']} sun"


_CAPTION_RE = re.compile(
    r"^(a|two|several) (fresh|degraded) (small|medium|large) "
    r"(bowl-shaped craters?|complex craters? with (?:a )?(?:central peaks?|flat floors?)), "
    r"lit from the (north|east|south|west), (low|high) sun$"
)


def parse_caption(caption: str) -> dict[str, str]:
    """Attributes of a caption written by :func:`caption_for`; raises ``ValueError`` for other text."""
    m = _CAPTION_RE.match(caption.strip())
    if m is None:
        raise ValueError(f"not a crater caption of this renderer: {caption!r}")
    count, fresh, size, body, direction, elevation = m.groups()
    morph = "bowl-shaped" if body.startswith("bowl") else ("central peak" if "peak" in body else "flat floor")
    return {
        "count": count,
        "freshness": fresh,
        "size": size,
        "morphology": morph,
        "direction": direction,
        "elevation": elevation,
    }


def render_batch(
    n: int,
    seed: int = 0,
    size: int = 64,
    diversity: float = 1.0,
    base: dict[str, str] | None = None,
    rgb: bool = False,
    start: int = 0,
) -> tuple[np.ndarray, list[str], list[Scene]]:
    """Render ``n`` scenes: ``(images uint8 (n, size, size[, 3]), captions, scenes)``.

    Scene ``i`` is drawn from ``np.random.default_rng([seed, start + i])``, so image ``i`` does not depend
    on ``n`` (a batch of 10 is the first 10 images of a batch of 100).
    """
    images, captions, scenes = [], [], []
    for i in range(start, start + n):
        rng = np.random.default_rng([seed, i])
        scene = sample_scene(rng, diversity=diversity, base=base)
        images.append(render(scene, size=size, rgb=rgb))
        captions.append(caption_for(scene.labels))
        scenes.append(scene)
    shape = (0, size, size, 3) if rgb else (0, size, size)
    return (np.stack(images) if images else np.zeros(shape, np.uint8)), captions, scenes
