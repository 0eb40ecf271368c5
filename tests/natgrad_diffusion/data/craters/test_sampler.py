"""Random crater scenes: determinism, the bands behind the caption words, the diversity knob."""

from __future__ import annotations

import numpy as np
import pytest

from natgrad_diffusion.data.craters.captions import caption_for
from natgrad_diffusion.data.craters.render import render_batch
from natgrad_diffusion.data.craters.sampler import (
    AZIMUTH_JITTER_DEG,
    DIRECTION_AZIMUTH,
    ELEVATION_BAND,
    FRESHNESS_BAND,
    NUM_PRIMARIES,
    SIZE_FRACTION,
    TRANSITION_KM,
    sample_scene,
)


def test_diversity_zero_fixes_the_attributes():
    base = {
        "count": "two",
        "freshness": "degraded",
        "size": "small",
        "morphology": "bowl-shaped",
        "direction": "north",
        "elevation": "high",
    }
    _, caps, _ = render_batch(6, seed=3, size=16, diversity=0.0, base=base)
    assert set(caps) == {caption_for(base)}


def test_same_generator_state_same_scene_and_the_seed_argument():
    a = sample_scene(np.random.default_rng(7))
    assert a == sample_scene(np.random.default_rng(7))
    assert a != sample_scene(np.random.default_rng(8))
    fixed = sample_scene(np.random.default_rng(7), seed=123)
    assert fixed.seed == 123 and fixed.primaries == a.primaries  # only the texture seed is replaced


def test_full_diversity_draws_inside_the_bands_of_the_caption_words():
    for i in range(60):
        scene = sample_scene(np.random.default_rng([11, i]))
        labels = scene.labels
        main = scene.primaries[0]
        # the main crater comes first; the others are no larger (exactly: frac · (D / frac) may round above D)
        assert main.diameter_km == max(c.diameter_km for c in scene.primaries)
        lo, hi = SIZE_FRACTION[labels["size"]]
        assert lo <= main.diameter_km / scene.image_km <= hi
        lo, hi = FRESHNESS_BAND[labels["freshness"]]
        assert lo <= main.degradation <= hi
        lo, hi = ELEVATION_BAND[labels["elevation"]]
        assert lo <= scene.sun_elevation_deg <= hi
        offset = (scene.sun_azimuth_deg - DIRECTION_AZIMUTH[labels["direction"]] + 180.0) % 360.0 - 180.0
        assert abs(offset) <= AZIMUTH_JITTER_DEG
        lo, hi = NUM_PRIMARIES[labels["count"]]
        assert lo <= len(scene.primaries) <= hi
        assert TRANSITION_KM[0] <= scene.transition_km <= TRANSITION_KM[1]
        for c in scene.primaries + scene.background:
            assert c.complex == (c.diameter_km > scene.transition_km)
            assert not c.central_peak or c.complex
        for c in scene.background:
            assert scene.image_km / 24.0 <= c.diameter_km <= scene.image_km * 0.1 + 1e-9
        assert scene.vertical_exaggeration >= 1.0


def test_diversity_zero_takes_the_default_base_and_the_middle_of_every_band():
    scenes = [sample_scene(np.random.default_rng(i), diversity=0.0, base={"size": "large"}) for i in range(3)]
    for scene in scenes:
        assert scene.labels == {
            "count": "a",
            "freshness": "fresh",
            "size": "large",
            "morphology": "central peak",
            "direction": "west",
            "elevation": "low",
        }
        assert scene.sun_azimuth_deg == 270.0 and scene.sun_elevation_deg == pytest.approx(19.0)
        assert scene.primaries[0].diameter_km / scene.image_km == pytest.approx(0.56)
        assert scene.transition_km == pytest.approx(6.5)
    assert len({s.seed for s in scenes}) == 3  # the texture still differs
    # out-of-range diversity is clipped
    assert sample_scene(np.random.default_rng(0), diversity=-1.0) == sample_scene(np.random.default_rng(0), 0.0)
    assert sample_scene(np.random.default_rng(0), diversity=5.0) == sample_scene(np.random.default_rng(0), 1.0)
