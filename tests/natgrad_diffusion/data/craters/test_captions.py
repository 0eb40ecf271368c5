"""Crater captions: closed vocabulary, attributes from the true parameters, caption text and its parser."""

from __future__ import annotations

import itertools
import re

import pytest

from natgrad_diffusion.data.craters.captions import (
    ATTRIBUTES,
    VOCABULARY,
    caption_attributes,
    caption_for,
    parse_caption,
    size_class,
)
from natgrad_diffusion.data.craters.render import render_batch
from natgrad_diffusion.data.craters.sampler import SIZE_FRACTION
from natgrad_diffusion.data.craters.scene import Crater, Scene


def _crater(diameter_km: float, *, complex_: bool = False, peak: bool = False, degradation: float = 0.1) -> Crater:
    return Crater(5.0, 5.0, diameter_km, complex=complex_, central_peak=peak, degradation=degradation)


def _scene(*primaries: Crater, azimuth: float = 270.0, elevation: float = 20.0) -> Scene:
    return Scene(image_km=10.0, sun_azimuth_deg=azimuth, sun_elevation_deg=elevation, primaries=primaries)


def test_captions_use_the_closed_vocabulary_and_match_the_true_parameters():
    _, captions, scenes = render_batch(40, seed=1, size=16)
    words = set(VOCABULARY)
    for cap, scene in zip(captions, scenes):
        assert set(re.findall(r"[a-z]+|[^\sa-z]+", cap)) <= words, cap
        attrs = parse_caption(cap)
        assert attrs == caption_attributes(scene) == scene.labels
        main = max(scene.primaries, key=lambda c: c.diameter_km)
        assert (attrs["morphology"] == "bowl-shaped") == (not main.complex)
        assert main.complex == (main.diameter_km > scene.transition_km)
        n = len(scene.primaries)
        assert attrs["count"] == {1: "a", 2: "two"}.get(n, "several")
        assert (attrs["elevation"] == "low") == (scene.sun_elevation_deg < 35)
    # the sample covers every value of every attribute
    seen = {k: {parse_caption(c)[k] for c in captions} for k in ATTRIBUTES}
    assert all(len(seen[k]) >= 2 for k in ATTRIBUTES)


def test_caption_text_and_parse_roundtrip():
    attrs = {
        "count": "a",
        "freshness": "fresh",
        "size": "large",
        "morphology": "central peak",
        "direction": "west",
        "elevation": "low",
    }
    cap = caption_for(attrs)
    assert cap == "a fresh large complex crater with a central peak, lit from the west, low sun"
    assert parse_caption(cap) == attrs
    assert (
        parse_caption(caption_for({**attrs, "count": "two", "morphology": "flat floor"}))["morphology"] == "flat floor"
    )
    with pytest.raises(ValueError, match="not a crater caption"):
        parse_caption("a photo of a cat")


def test_every_attribute_combination_round_trips_through_the_vocabulary():
    words = set(VOCABULARY)
    captions = set()
    for values in itertools.product(*ATTRIBUTES.values()):
        attrs = dict(zip(ATTRIBUTES, values))
        cap = caption_for(attrs)
        assert parse_caption(f"  {cap}\n") == attrs
        assert set(re.findall(r"[a-z]+|[^\sa-z]+", cap)) <= words, cap
        captions.add(cap)
    assert len(captions) == 3 * 2 * 3 * 3 * 4 * 2  # different attributes, different text
    several = {"count": "several", "freshness": "fresh", "size": "small", "morphology": "central peak"}
    plural = caption_for({**several, "direction": "north", "elevation": "high"})
    assert plural == "several fresh small complex craters with central peaks, lit from the north, high sun"


def test_size_class_bands_sit_between_the_sampler_bands():
    assert [size_class(f) for f in (0.0, 0.2399, 0.24, 0.4299, 0.43, 1.0)] == [
        "small", "small", "medium", "medium", "large", "large",
    ]  # fmt: skip
    for word, (lo, hi) in SIZE_FRACTION.items():
        assert size_class(lo) == size_class(hi) == word


def test_caption_attributes_read_the_main_crater_and_the_sun():
    small_fresh = _crater(1.0, degradation=0.0)
    main = _crater(4.0, complex_=True, peak=False, degradation=0.45)
    attrs = caption_attributes(_scene(small_fresh, main, _crater(2.0), elevation=35.0))
    assert attrs == {
        "count": "several",
        "freshness": "degraded",  # 0.45 is not < 0.45
        "size": "medium",  # 4 km of a 10 km image
        "morphology": "flat floor",
        "direction": "west",
        "elevation": "high",  # 35° is not < 35°
    }
    assert caption_attributes(_scene(_crater(2.0, complex_=True, peak=True)))["morphology"] == "central peak"
    assert caption_attributes(_scene(_crater(2.0)))["morphology"] == "bowl-shaped"
    azimuths = (0, 44.9, 45, 135, 225, 314.9, 315)
    directions = {az: caption_attributes(_scene(main, azimuth=az))["direction"] for az in azimuths}
    assert directions == {0: "north", 44.9: "north", 45: "east", 135: "south", 225: "west", 314.9: "west", 315: "north"}


def test_caption_for_a_scene_uses_its_true_attributes():
    scene = _scene(_crater(6.0, complex_=True, peak=True), _crater(5.0), azimuth=100.0, elevation=50.0)
    assert caption_for(scene) == caption_for(caption_attributes(scene))
    assert caption_for(scene) == "two fresh large complex craters with central peaks, lit from the east, high sun"
