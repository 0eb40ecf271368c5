"""Grain statistic: zero for constant images, the white-noise share of frequencies, low for smooth images,
rising with added noise; the set-level ratio."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from natgrad_diffusion.rewards.grain import grain_ratio, high_frequency_energy, white_noise_fraction


def blob(size: int = 32, sigma: float = 4.0) -> np.ndarray:
    r, c = np.mgrid[0:size, 0:size] - (size - 1) / 2
    return 0.2 + 0.6 * np.exp(-(r**2 + c**2) / (2 * sigma**2))


@pytest.mark.parametrize("window", [True, False])
def test_constant_images_have_no_high_frequency_energy(window):
    imgs = np.stack([np.full((32, 32), v) for v in (0.0, 0.3, 0.7, 1.0)])
    np.testing.assert_array_equal(high_frequency_energy(imgs, window=window), 0.0)
    np.testing.assert_array_equal(high_frequency_energy(np.full((3, 16, 24), 77, np.uint8), window=window), 0.0)


@pytest.mark.parametrize("window", [True, False])
@pytest.mark.parametrize("cutoff", [0.1, 0.25, 0.4])
def test_white_noise_matches_the_share_of_frequencies_above_the_cutoff(window, cutoff):
    noise = np.random.default_rng(0).normal(0.5, 0.1, size=(400, 32, 32))
    # continuum share of the square [-1/2, 1/2]² outside the disc of radius c (c ≤ 1/2)
    expected = 1.0 - math.pi * cutoff**2
    assert white_noise_fraction(32, 32, cutoff) == pytest.approx(expected, abs=0.02)
    hf = high_frequency_energy(noise, cutoff, window=window)
    assert hf.shape == (400,) and np.all((hf >= 0) & (hf <= 1))
    assert hf.mean() == pytest.approx(expected, abs=0.025)


def test_smooth_blob_is_low_and_noise_raises_it_monotonically():
    base = blob()
    assert high_frequency_energy(base)[0] < 1e-6
    assert high_frequency_energy(base, window=False)[0] < 1e-6
    z = np.random.default_rng(1).normal(size=base.shape)
    sigmas = [0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5]
    hf = high_frequency_energy(np.stack([base + s * z for s in sigmas]))
    assert np.all(np.diff(hf) > 0), hf
    assert hf[-1] > 0.5 > hf[1]  # approaches the white-noise share (0.8) as noise dominates


def test_inputs_uint8_torch_and_channels_agree():
    rng = np.random.default_rng(2)
    u8 = rng.integers(0, 256, size=(5, 16, 16), dtype=np.uint8)
    ref = high_frequency_energy(u8.astype(np.float64) / 255.0)
    np.testing.assert_allclose(high_frequency_energy(u8), ref)
    np.testing.assert_allclose(high_frequency_energy(torch.from_numpy(u8)), ref)
    np.testing.assert_allclose(high_frequency_energy(np.repeat(u8[..., None], 3, axis=-1)), ref)
    np.testing.assert_allclose(high_frequency_energy(u8[0]), ref[:1])
    for bad in (np.zeros(5), np.zeros((2, 1, 8)), np.full((1, 4, 4), np.nan)):
        with pytest.raises(ValueError):
            high_frequency_energy(bad)
    with pytest.raises(ValueError, match="cutoff"):
        high_frequency_energy(u8, cutoff=0.8)


def test_grain_ratio():
    rng = np.random.default_rng(3)
    smooth = np.stack([blob(sigma=s) for s in (3.0, 4.0, 5.0)]) + 0.01 * rng.normal(size=(3, 32, 32))
    assert grain_ratio(smooth, smooth) == pytest.approx(1.0)
    noisy = smooth + 0.05 * rng.normal(size=smooth.shape)
    ratio = grain_ratio(noisy, smooth)
    assert ratio > 2.0
    assert grain_ratio(smooth, noisy) == pytest.approx(1.0 / ratio)
    with pytest.raises(ValueError, match="no high-frequency power"):
        grain_ratio(smooth, np.full((2, 32, 32), 0.5))
