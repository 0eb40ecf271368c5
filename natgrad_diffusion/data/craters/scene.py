"""Parameters of a procedural crater scene (:class:`Crater`, :class:`Scene`) and their JSON form.

Positions are in km from the north-west corner of the square patch: ``x`` grows to the east, ``y`` to
the south (row 0 of an image is north, column 0 west). The sun azimuth is the compass direction the light
comes *from* (0° = north, 90° = east, clockwise); the elevation is measured above the horizon.
:mod:`natgrad_diffusion.data.craters.terrain` turns a scene into a heightmap,
:mod:`natgrad_diffusion.data.craters.render` into pixels, :mod:`natgrad_diffusion.data.craters.sampler` draws
random scenes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

__all__ = ["Crater", "Scene", "scene_from_json", "scene_to_json"]


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
            :func:`~natgrad_diffusion.data.craters.sampler.sample_scene` uses ``max(1, 0.15 / (d/D))`` of the main
            crater, so that shallow large complex craters stay visible at 32–64 px (1 for simple craters,
            ≈ 2–3.5 for complex).
        labels: caption attributes of the scene
            (:func:`~natgrad_diffusion.data.craters.captions.caption_attributes`, filled in by
            :func:`~natgrad_diffusion.data.craters.sampler.sample_scene`; empty by default).
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
