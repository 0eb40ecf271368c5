"""Crater scene parameters: defaults, immutability and the JSON round trip."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from natgrad_diffusion.data.craters.render import render
from natgrad_diffusion.data.craters.sampler import sample_scene
from natgrad_diffusion.data.craters.scene import Crater, Scene, scene_from_json, scene_to_json


def test_scene_json_roundtrip():
    scene = sample_scene(np.random.default_rng(9))
    again = scene_from_json(scene_to_json(scene))
    assert again == scene
    np.testing.assert_array_equal(render(again, size=16), render(scene, size=16))


def test_hand_built_scene_round_trips_with_tuples_and_labels():
    crater = Crater(1.0, 2.0, 3.0, complex=False, central_peak=False, degradation=0.2, phases=(0.1, 0.2, 0.3))
    scene = Scene(
        image_km=12.0,
        sun_azimuth_deg=90.0,
        sun_elevation_deg=30.0,
        primaries=(crater,),
        background=(dataclasses.replace(crater, diameter_km=0.5), dataclasses.replace(crater, x_km=7.0)),
        seed=42,
        labels={"count": "a"},
    )
    text = scene_to_json(scene)
    assert " " not in text  # compact
    payload = json.loads(text)
    assert payload["seed"] == 42 and payload["primaries"][0]["phases"] == [0.1, 0.2, 0.3]
    again = scene_from_json(text)
    assert again == scene
    assert isinstance(again.primaries, tuple) and isinstance(again.background, tuple)
    assert isinstance(again.background[1].phases, tuple) and again.background[1].x_km == 7.0
    assert again.labels == {"count": "a"}


def test_defaults_and_immutability():
    crater = Crater(0.0, 0.0, 1.0, complex=False, central_peak=False, degradation=0.0)
    assert crater.ellipticity == 0.03 and crater.phases == (0.0, 0.0, 0.0)
    scene = Scene(image_km=5.0, sun_azimuth_deg=0.0, sun_elevation_deg=45.0, primaries=(crater,))
    assert scene.background == () and scene.labels == {} and scene.transition_km == 6.5
    assert scene.vertical_exaggeration == 1.5 and scene.seed == 0
    assert Scene(5.0, 0.0, 45.0, (crater,)).labels is not scene.labels  # no shared default dict
    with pytest.raises(dataclasses.FrozenInstanceError):
        scene.seed = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        crater.diameter_km = 2.0  # type: ignore[misc]
