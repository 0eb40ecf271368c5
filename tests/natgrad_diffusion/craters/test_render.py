"""Crater renderer: determinism, captions from true parameters, morphometry, shading."""

from __future__ import annotations

import re

import numpy as np
import pytest

from natgrad_diffusion.craters.render import (
    ATTRIBUTES,
    VOCABULARY,
    Crater,
    Scene,
    caption_attributes,
    caption_for,
    depth_km,
    parse_caption,
    radial_profile,
    render,
    render_batch,
    rim_height_km,
    sample_scene,
    scene_from_json,
    scene_to_json,
    shade,
)


def test_render_is_deterministic_per_seed_and_independent_of_batch_size():
    a, ca, _ = render_batch(3, seed=5, size=32)
    b, cb, _ = render_batch(3, seed=5, size=32)
    c, _, _ = render_batch(2, seed=5, size=32)
    d, _, _ = render_batch(3, seed=6, size=32)
    assert a.dtype == np.uint8 and a.shape == (3, 32, 32)
    np.testing.assert_array_equal(a, b)
    assert ca == cb
    np.testing.assert_array_equal(a[:2], c)
    assert not np.array_equal(a, d)
    assert len({img.tobytes() for img in a}) == 3  # three different images


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


def test_simple_crater_morphometry_follows_pike_1977():
    D = 3.0
    x, z = radial_profile(Crater(0, 0, D, complex=False, central_peak=False, degradation=0.0))
    h, d = rim_height_km(D), depth_km(D, False)
    assert d == pytest.approx(0.2 * D)
    assert h == pytest.approx(0.036 * D**1.014)
    assert z.min() == pytest.approx(h - d, rel=0.05)  # floor below the plains by d - h
    rim = x[np.argmax(z)]
    assert 0.9 < rim < 1.1 and z.max() == pytest.approx(h, rel=0.15)
    assert abs(z[-1]) < 1e-12  # undisturbed plains far away
    # ejecta thin outwards
    i2, i25 = np.searchsorted(x, 1.5), np.searchsorted(x, 2.5)
    assert z.max() > z[i2] > z[i25] > 0


def test_complex_crater_has_flat_floor_or_central_peak_and_degradation_fills_it():
    D = 30.0
    x, peak = radial_profile(Crater(0, 0, D, complex=True, central_peak=True, degradation=0.0))
    _, flat = radial_profile(Crater(0, 0, D, complex=True, central_peak=False, degradation=0.0))
    _, old = radial_profile(Crater(0, 0, D, complex=True, central_peak=False, degradation=0.8))
    d = depth_km(D, True)
    assert d == pytest.approx(0.36 * D**0.49) and d < 0.2 * D  # complex craters are shallower
    i_mid = np.searchsorted(x, 0.25)
    assert peak[0] - peak[i_mid] > 0.2 * d  # central peak
    assert abs(flat[0] - flat[i_mid]) < 0.02 * d  # flat floor
    depth = lambda z: z.max() - z.min()  # noqa: E731
    assert depth(old) < 0.7 * depth(flat)


def test_shading_flat_ground_is_one_and_low_sun_casts_shadows_inside_a_crater():
    z = np.zeros((32, 32))
    np.testing.assert_allclose(shade(z, 0.5, 270.0, 20.0), 1.0)
    scene = Scene(
        image_km=16.0,
        sun_azimuth_deg=270.0,  # sun in the west
        sun_elevation_deg=15.0,
        primaries=(Crater(8.0, 8.0, 6.0, complex=False, central_peak=False, degradation=0.0),),
        texture_rms_km=0.0,
    )
    img = render(scene, size=32, supersample=1).astype(float)
    row = img[16]  # through the centre, west → east
    west_wall, east_wall = row[10:15].mean(), row[19:22].mean()  # rim at columns 10 and 22
    assert west_wall < 0.3 * row[0]  # inner wall facing away from the sun: shadow
    assert east_wall > row[0]  # inner wall facing the sun: brighter than the plains


def test_scene_json_roundtrip_and_rgb_tint():
    scene = sample_scene(np.random.default_rng(9))
    again = scene_from_json(scene_to_json(scene))
    assert again == scene
    np.testing.assert_array_equal(render(again, size=16), render(scene, size=16))
    rgb = render(scene, size=16, rgb=True)
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    assert rgb[..., 0].mean() > rgb[..., 2].mean()  # reddish


def test_render_re_exports_the_public_names_of_the_split_modules():
    from natgrad_diffusion.craters import captions, render, sampler, scene, terrain

    for module in (captions, sampler, scene, terrain):
        for name in module.__all__:
            if name != "fractal_field":
                assert getattr(render, name) is getattr(module, name), name
    assert set(render.__all__) <= set(dir(render))
