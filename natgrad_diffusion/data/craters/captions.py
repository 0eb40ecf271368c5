"""Captions of crater scenes from a closed vocabulary, derived from the true parameters, and their parser.

Each scene gets a short caption from :data:`VOCABULARY`, derived from its true parameters
(:func:`caption_attributes`, :func:`caption_for`), e.g.
``"a fresh large complex crater with a central peak, lit from the west, low sun"``.
:func:`parse_caption` inverts it into attributes (:data:`ATTRIBUTES`).
"""

from __future__ import annotations

import re

from .scene import Scene

__all__ = ["ATTRIBUTES", "VOCABULARY", "caption_attributes", "caption_for", "parse_caption", "size_class"]

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


def size_class(fraction: float) -> str:
    """Caption size word of a crater whose rim-crest diameter is ``fraction`` of the image width.

    ``"small"`` below 0.24, ``"medium"`` below 0.43, else ``"large"`` (between the bands of
    :data:`~natgrad_diffusion.data.craters.sampler.SIZE_FRACTION`).
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
    """Caption text from attributes, or from a scene via :func:`caption_attributes`.

    ``attrs``: a dict keyed by :data:`ATTRIBUTES`, or a :class:`~natgrad_diffusion.data.craters.scene.Scene`.

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
