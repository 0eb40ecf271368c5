"""The agents' reward function: images → uint8 → features → the set-level reward's per-image credits."""

import numpy as np
import pytest
import torch

from natgrad_diffusion.rewards import get_reward
from natgrad_diffusion.rewards.feature_reward import FeatureReward, images_uint8


def test_images_become_uint8_in_the_layout_of_their_channels():
    x = torch.tensor([0.0, 0.5, 1.0, 1.7, -0.2]).view(1, 1, 1, 5)
    assert images_uint8(x).tolist() == [[[0, 128, 255, 255, 0]]]  # rounded, clamped to [0, 1] first
    rgb = torch.rand(2, 3, 4, 4)
    assert images_uint8(rgb).shape == (2, 4, 4, 3)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        images_uint8(torch.rand(1, 2, 4, 4))


def test_each_image_gets_the_credit_of_the_reward_on_the_whole_batch():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(20, 4))
    seen = []

    def extractor(images: np.ndarray) -> np.ndarray:  # features: the mean brightness in 4 columns of the image
        seen.append(images.dtype)
        return np.stack([images[..., i::4].mean(axis=(1, 2)) / 64.0 - 2.0 for i in range(4)], axis=1)

    reward = get_reward("MMD", reference)
    fn = FeatureReward(extractor, reward)
    images = torch.rand(6, 1, 8, 8)
    prompts = ["a", "a", "b", "b", "c", "c"]
    per_image = fn(images, prompts)
    feats = extractor(images_uint8(images))
    direct = reward(feats.astype(np.float64), np.asarray(prompts))
    assert seen[0] == np.uint8 and per_image.dtype == torch.float32 and per_image.shape == (6,)
    np.testing.assert_allclose(per_image.numpy(), direct.per_image, rtol=1e-6)
    assert fn.last["value"] == pytest.approx(direct.value) and fn.last["prompts"] == prompts
    assert fn.last["features"].shape == (6, 4) and fn.last["seconds"] >= 0
    assert fn.features(images).shape == (6, 4)  # the critic's feature_fn
