"""Crater renderer: determinism, shading, RGB tint, re-exports (captions, scenes, terrain, sampler: their own files)."""

from __future__ import annotations

import numpy as np

from natgrad_diffusion.data.craters.render import Crater, Scene, render, render_batch, sample_scene, shade


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


def test_rgb_tint():
    scene = sample_scene(np.random.default_rng(9))
    rgb = render(scene, size=16, rgb=True)
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    assert rgb[..., 0].mean() > rgb[..., 2].mean()  # reddish


def test_render_re_exports_the_public_names_of_the_split_modules():
    from natgrad_diffusion.data.craters import captions, render, sampler, scene, terrain

    for module in (captions, sampler, scene, terrain):
        for name in module.__all__:
            if name != "fractal_field":
                assert getattr(render, name) is getattr(module, name), name
    assert set(render.__all__) <= set(dir(render))
