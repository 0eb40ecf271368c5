"""Procedural renderer of Mars-like crater images, with captions derived from the true parameters.

The renderer builds a *heightmap* (km) of a square patch of terrain, then shades it with a Lambertian
sun and cast shadows. Everything is seeded and deterministic: the same
:class:`~natgrad_diffusion.data.craters.scene.Scene` always renders to the same pixels, and
:func:`~natgrad_diffusion.data.craters.sampler.sample_scene` with the same generator state always returns the
same scene.

This module holds the shading (:func:`shade`), the rendering to pixels (:func:`render`) and the batch
generator (:func:`render_batch`), and re-exports the renderer's other public names from

* :mod:`natgrad_diffusion.data.craters.scene`: the parameters (:class:`~natgrad_diffusion.data.craters.scene.Crater`,
  :class:`~natgrad_diffusion.data.craters.scene.Scene`) and their JSON form;
* :mod:`natgrad_diffusion.data.craters.terrain`: crater morphometry (with its references), radial profiles,
  the heightmap;
* :mod:`natgrad_diffusion.data.craters.captions`: the caption vocabulary
  (:data:`~natgrad_diffusion.data.craters.captions.ATTRIBUTES`, :data:`~natgrad_diffusion.data.craters.captions.VOCABULARY`),
  :func:`~natgrad_diffusion.data.craters.captions.caption_for`, :func:`~natgrad_diffusion.data.craters.captions.parse_caption`;
* :mod:`natgrad_diffusion.data.craters.sampler`: :func:`~natgrad_diffusion.data.craters.sampler.sample_scene`, random
  scenes with a diversity knob.

Conventions
-----------
* Images are ``uint8``: grayscale ``(H, W)`` (batches ``(N, H, W)``) or, with ``rgb=True``, a reddish
  Mars tint ``(H, W, 3)`` (batches ``(N, H, W, 3)``).
* Row 0 is **north**, column 0 is **west** (map view, north up). Positions are in km from the
  north-west corner: ``x`` grows to the east, ``y`` grows to the south.
* The sun azimuth is the compass direction the light comes *from* (0° = north, 90° = east, clockwise);
  the sun elevation is measured above the horizon, i.e. the incidence angle on flat ground is
  ``90° - elevation``.
"""

from __future__ import annotations

import math

import numpy as np

from .captions import ATTRIBUTES, VOCABULARY, caption_attributes, caption_for, parse_caption, size_class
from .sampler import (
    AZIMUTH_JITTER_DEG,
    DIRECTION_AZIMUTH,
    ELEVATION_BAND,
    FRESHNESS_BAND,
    NUM_PRIMARIES,
    SIZE_FRACTION,
    TRANSITION_KM,
    sample_scene,
)
from .scene import Crater, Scene, scene_from_json, scene_to_json
from .terrain import depth_km, floor_fraction, fractal_field, heightmap, radial_profile, rim_height_km

# this module's names and, re-exported, those of the modules the renderer was split into (same names as before)
__all__ = [
    "ATTRIBUTES",
    "AZIMUTH_JITTER_DEG",
    "DIRECTION_AZIMUTH",
    "ELEVATION_BAND",
    "FRESHNESS_BAND",
    "NUM_PRIMARIES",
    "SIZE_FRACTION",
    "TRANSITION_KM",
    "VOCABULARY",
    "Crater",
    "Scene",
    "caption_attributes",
    "caption_for",
    "depth_km",
    "floor_fraction",
    "heightmap",
    "parse_caption",
    "radial_profile",
    "render",
    "render_batch",
    "rim_height_km",
    "sample_scene",
    "scene_from_json",
    "scene_to_json",
    "shade",
    "size_class",
]


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
    albedo = 1.0 + scene.albedo_contrast * fractal_field(rng, n, 3.5)
    img = 0.47 * albedo * (0.1 + 0.9 * s)
    img = img.reshape(size, supersample, size, supersample).mean(axis=(1, 3))
    img = np.clip(img, 0.0, 1.0)
    if rgb:
        # butterscotch tint: darker tones reddish-brown, highlights pale orange
        tint_lo, tint_hi = np.array([0.35, 0.16, 0.08]), np.array([1.0, 0.82, 0.62])
        img = tint_lo * (1 - img[..., None]) * img[..., None] * 2 + tint_hi * img[..., None] ** 1.1
        img = np.clip(img, 0.0, 1.0)
    return np.round(img * 255.0).astype(np.uint8)


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
