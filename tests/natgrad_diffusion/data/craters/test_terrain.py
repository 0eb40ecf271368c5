"""Crater terrain: morphometry laws, radial profiles, fractal texture and the heightmap."""

from __future__ import annotations

import numpy as np
import pytest

from natgrad_diffusion.data.craters.scene import Crater, Scene
from natgrad_diffusion.data.craters.terrain import (
    depth_km,
    floor_fraction,
    fractal_field,
    heightmap,
    radial_profile,
    rim_height_km,
)


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


def test_complex_depth_is_capped_and_floor_fraction_is_clipped():
    assert depth_km(2.0, True) == pytest.approx(0.4)  # 0.36·2^0.49 ≈ 0.506 would be deeper than 0.2 D
    assert depth_km(50.0, True) == pytest.approx(0.36 * 50.0**0.49)
    assert floor_fraction(30.0) == pytest.approx(0.187 * 30.0**0.249)
    assert floor_fraction(1.0) == 0.25 and floor_fraction(1e4) == 0.7


def test_fractal_field_is_zero_mean_unit_rms_and_rougher_for_a_flatter_spectrum():
    f = fractal_field(np.random.default_rng(0), 64, 2.6)
    assert f.shape == (64, 64) and f.dtype == np.float64
    assert abs(f.mean()) < 1e-12 and f.std() == pytest.approx(1.0)
    np.testing.assert_array_equal(f, fractal_field(np.random.default_rng(0), 64, 2.6))
    assert not np.array_equal(f, fractal_field(np.random.default_rng(1), 64, 2.6))
    rough = np.abs(np.diff(fractal_field(np.random.default_rng(0), 64, 1.5), axis=1)).mean()
    smooth = np.abs(np.diff(fractal_field(np.random.default_rng(0), 64, 3.5), axis=1)).mean()
    assert smooth < 0.5 * rough


def test_heightmap_of_texture_only_and_of_one_crater():
    empty = Scene(image_km=16.0, sun_azimuth_deg=270.0, sun_elevation_deg=20.0, primaries=(), texture_rms_km=0.0)
    np.testing.assert_array_equal(heightmap(empty, 16), np.zeros((16, 16)))
    textured = Scene(16.0, 270.0, 20.0, (), texture_rms_km=0.02, seed=3)
    z = heightmap(textured, 32)
    assert z.shape == (32, 32) and z.std() == pytest.approx(0.02)
    np.testing.assert_array_equal(z, heightmap(textured, 32))
    crater = Crater(8.0, 8.0, 6.0, complex=False, central_peak=False, degradation=0.0, ellipticity=0.0)
    z = heightmap(Scene(16.0, 270.0, 20.0, (crater,), texture_rms_km=0.0), 64)
    _, profile = radial_profile(crater)
    assert np.unravel_index(np.argmin(z), z.shape) in {(31, 31), (31, 32), (32, 31), (32, 32)}  # centre 31.5 px
    assert z.min() == pytest.approx(profile.min(), rel=0.01) and z.max() == pytest.approx(profile.max(), rel=0.01)
    # a round crater (no rim irregularity) in the middle: mirror-symmetric
    np.testing.assert_allclose(z, z.T, atol=1e-12)
    np.testing.assert_allclose(z, z[::-1, ::-1], atol=1e-12)
