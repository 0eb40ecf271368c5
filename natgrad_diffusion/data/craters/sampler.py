"""Random crater scenes (:func:`sample_scene`), drawn caption first, with a diversity knob.

A scene is drawn caption first: one value per caption attribute
(:data:`~natgrad_diffusion.data.craters.captions.ATTRIBUTES`: count, size, morphology, freshness, sun direction,
sun elevation), then the continuous parameters inside the bands those words stand for
(:data:`SIZE_FRACTION`, :data:`FRESHNESS_BAND`, :data:`ELEVATION_BAND`, :data:`DIRECTION_AZIMUTH` ±
:data:`AZIMUTH_JITTER_DEG`, :data:`NUM_PRIMARIES`), the simple-to-complex transition diameter in
:data:`TRANSITION_KM`, and background craters from a truncated power law ``N(>D) ∝ D^-2`` (the physics
behind these is in :mod:`natgrad_diffusion.data.craters.terrain`). The caption of the result is computed again
from the drawn parameters (:func:`~natgrad_diffusion.data.craters.captions.caption_attributes`), so it always
describes the scene truthfully.

With ``diversity < 1`` every caption attribute keeps its ``base`` value with probability
``1 - diversity²`` and every continuous draw ``u ~ U[0, 1]`` is pulled to ``0.5 + diversity (u - 0.5)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from .captions import ATTRIBUTES, caption_attributes
from .scene import Crater, Scene
from .terrain import depth_km

__all__ = [
    "AZIMUTH_JITTER_DEG",
    "DIRECTION_AZIMUTH",
    "ELEVATION_BAND",
    "FRESHNESS_BAND",
    "NUM_PRIMARIES",
    "SIZE_FRACTION",
    "TRANSITION_KM",
    "sample_scene",
]

#: size classes as a fraction of the image width (rim-crest diameter of the primary craters)
SIZE_FRACTION = {"small": (0.13, 0.22), "medium": (0.26, 0.40), "large": (0.46, 0.66)}
#: degradation bands for the caption words
FRESHNESS_BAND = {"fresh": (0.0, 0.3), "degraded": (0.55, 0.9)}
#: sun elevation bands in degrees (incidence angle = 90° - elevation)
ELEVATION_BAND = {"low": (12.0, 26.0), "high": (42.0, 62.0)}
#: sun azimuth (degrees clockwise from north, the direction the light comes from) of each direction word
DIRECTION_AZIMUTH = {"north": 0.0, "east": 90.0, "south": 180.0, "west": 270.0}
#: the azimuth is drawn within ± this many degrees of :data:`DIRECTION_AZIMUTH`
AZIMUTH_JITTER_DEG = 20.0
#: number of primary (captioned) craters of each count word, inclusive range
NUM_PRIMARIES = {"a": (1, 1), "two": (2, 2), "several": (3, 5)}
#: simple-to-complex transition diameter on Mars in km (Pike 1980; Garvin et al. 2003)
TRANSITION_KM = (5.0, 8.0)

# caption attributes that a narrowed draw (diversity < 1) keeps when ``base`` does not name them
_DEFAULT_BASE = {
    "count": "a",
    "freshness": "fresh",
    "size": "medium",
    "morphology": "central peak",
    "direction": "west",
    "elevation": "low",
}


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


@dataclass(frozen=True)
class _Draws:
    """The random draws of one scene: ``rng`` narrowed by ``diversity`` towards ``mid`` (``None``: full range)."""

    rng: np.random.Generator
    diversity: float
    mid: float | None

    def pick(self, values: tuple[str, ...], base: str | None) -> str:
        """:func:`_pick` with this scene's generator and diversity."""
        return _pick(self.rng, values, base, self.diversity)

    def blend(self, lo: float, hi: float) -> float:
        """:func:`_blend` with this scene's generator, ``mid`` and diversity."""
        return _blend(self.rng, lo, hi, self.mid, self.diversity)


class _Scale(NamedTuple):
    """Scale of a scene: transition diameter ``D_t`` (km), main crater diameter over image width, main crater
    diameter (km) and image width (km)."""

    transition: float
    frac: float
    d_main: float
    image_km: float


def _caption_choices(draws: _Draws, base: dict[str, str | None]) -> dict[str, str]:
    """The caption words asked for (keys of :data:`~natgrad_diffusion.data.craters.captions.ATTRIBUTES`), in a fixed
    order: count, size, morphology, freshness, direction, elevation."""
    count = draws.pick(ATTRIBUTES["count"], base["count"])
    size = draws.pick(ATTRIBUTES["size"], base["size"])
    if count == "several" and size == "large":  # several large craters do not fit in one image
        size = "medium"
    morph = draws.pick(ATTRIBUTES["morphology"], base["morphology"])
    fresh = draws.pick(ATTRIBUTES["freshness"], base["freshness"])
    direction = draws.pick(ATTRIBUTES["direction"], base["direction"])
    elevation = draws.pick(ATTRIBUTES["elevation"], base["elevation"])
    return {
        "count": count,
        "size": size,
        "morphology": morph,
        "freshness": fresh,
        "direction": direction,
        "elevation": elevation,
    }


def _scale(draws: _Draws, size: str, morph: str) -> _Scale:
    """Transition diameter, main crater size and image width for the size and morphology words."""
    transition = draws.blend(*TRANSITION_KM)
    frac = draws.blend(*SIZE_FRACTION[size])
    # physical diameter of the main crater decides simple vs complex (the caption asked for `morph`)
    if morph == "bowl-shaped":
        d_main = draws.blend(1.0, 0.9 * transition)
    else:
        d_main = math.exp(draws.blend(math.log(1.2 * transition), math.log(60.0)))
    return _Scale(transition, frac, d_main, d_main / frac)


def _primaries(draws: _Draws, choice: dict[str, str], scale: _Scale) -> tuple[Crater, ...]:
    """The captioned craters, the main one first (near the centre), the others of the same size class."""
    rng, size, morph = draws.rng, choice["size"], choice["morphology"]
    lo_n, hi_n = NUM_PRIMARIES[choice["count"]]
    n_primary = int(rng.integers(lo_n, hi_n + 1))
    g_lo, g_hi = FRESHNESS_BAND[choice["freshness"]]
    primaries = []
    for k in range(n_primary):
        if k == 0:
            D = scale.d_main
            lo, hi = (0.4, 0.6) if n_primary == 1 else (0.3, 0.7)
            cx, cy = draws.blend(lo, hi), draws.blend(lo, hi)
        else:
            # same size class, no larger than the main crater
            # (clamped in km too: frac · (D_main / frac) can exceed D_main by one rounding step)
            D = min(min(scale.frac, _blend(rng, *SIZE_FRACTION[size], None, 1.0)) * scale.image_km, scale.d_main)
            cx, cy = rng.uniform(0.12, 0.88, size=2)
        complex_ = D > scale.transition
        peak = bool(complex_ and (morph == "central peak" if k == 0 else rng.random() < 0.7))
        primaries.append(
            Crater(
                x_km=float(cx * scale.image_km),
                y_km=float(cy * scale.image_km),
                diameter_km=float(D),
                complex=bool(complex_),
                central_peak=peak,
                degradation=float(draws.blend(g_lo, g_hi)),
                ellipticity=float(draws.blend(0.01, 0.06)),
                phases=tuple(float(p) for p in rng.uniform(0, 2 * math.pi, size=3)),
            )
        )
    return tuple(primaries)


def _background(draws: _Draws, scale: _Scale) -> tuple[Crater, ...]:
    """Uncaptioned craters: truncated power law ``N(>D) ∝ D^-b`` (``b = 2``) between 2 px and 10 % of the image.

    Diameters by inverse transform, ``D = D_min (1 - u (1 - (D_min/D_max)^b))^(-1/b)``, ``u ~ U[0, 1)``.
    """
    rng, image_km, transition = draws.rng, scale.image_km, scale.transition
    b_slope = 2.0
    d_min, d_max = image_km / 24.0, image_km * 0.1
    density = draws.blend(2.0, 14.0)  # expected number per image
    n_bg = int(rng.poisson(density))
    u = rng.random(n_bg)
    diam = d_min * (1.0 - u * (1.0 - (d_min / d_max) ** b_slope)) ** (-1.0 / b_slope)
    return tuple(
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
        base: caption attributes (keys of :data:`~natgrad_diffusion.data.craters.captions.ATTRIBUTES`) used when
            ``diversity < 1``; missing keys take these defaults: ``{"count": "a", "freshness": "fresh",
            "size": "medium", "morphology": "central peak", "direction": "west", "elevation": "low"}``.
        seed: seed of the texture noise (default: drawn from ``rng``).
    """
    diversity = float(np.clip(diversity, 0.0, 1.0))
    narrow = diversity < 1.0
    b = {**_DEFAULT_BASE, **(base or {})} if narrow else dict.fromkeys(ATTRIBUTES)
    draws = _Draws(rng, diversity, 0.5 if narrow else None)
    choice = _caption_choices(draws, b)
    scale = _scale(draws, choice["size"], choice["morphology"])
    primaries = _primaries(draws, choice, scale)
    background = _background(draws, scale)

    az = DIRECTION_AZIMUTH[choice["direction"]] + draws.blend(-AZIMUTH_JITTER_DEG, AZIMUTH_JITTER_DEG)
    el = draws.blend(*ELEVATION_BAND[choice["elevation"]])
    texture = draws.blend(0.001, 0.004) * scale.image_km
    beta = draws.blend(2.6, 3.2)
    noise_seed = int(rng.integers(2**31)) if seed is None else int(seed)
    d_main, transition = scale.d_main, scale.transition
    scene = Scene(
        image_km=float(scale.image_km),
        sun_azimuth_deg=float(az % 360.0),
        sun_elevation_deg=float(el),
        primaries=primaries,
        background=background,
        transition_km=float(transition),
        texture_rms_km=float(texture),
        texture_beta=float(beta),
        albedo_contrast=float(draws.blend(0.03, 0.1)),
        seed=noise_seed,
        vertical_exaggeration=float(max(1.0, 0.15 * d_main / depth_km(d_main, d_main > transition))),
    )
    return replace(scene, labels=caption_attributes(scene))
