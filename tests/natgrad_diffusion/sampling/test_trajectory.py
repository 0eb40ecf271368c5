import pytest
import torch

from natgrad_diffusion.sampling.ddim import sample
from natgrad_diffusion.sampling.trajectory import collate


@pytest.fixture
def traj(components):
    return sample(components, ["a", "b"], num_images_per_prompt=2, num_inference_steps=2, guidance_scale=2.0, eta=1.0)


def test_shapes_and_properties(traj):
    assert traj.num_images == 4 and traj.num_steps == 2
    assert traj.latents.shape == (4, 3, 4, 8, 8) and traj.pred_original.shape == (4, 2, 4, 8, 8)
    assert traj.image_prompts == ["a", "a", "b", "b"]
    assert traj.images.dtype == torch.uint8
    assert torch.equal((traj.images_float() * 255).round().to(torch.uint8), traj.images)  # [0, 1], exactly /255
    assert traj.nbytes() > traj.latents.numel() * 4
    assert traj.latents.device.type == "cpu"


def test_index_collate_roundtrip(traj):
    a, b = traj.index([0, 3]), traj.index(slice(1, 3))
    assert a.image_prompts == ["a", "b"] and b.image_prompts == ["a", "b"]
    both = collate([a, b])
    assert both.num_images == 4 and both.image_prompts == ["a", "b", "a", "b"]
    assert torch.equal(both.latents, traj.latents[[0, 3, 1, 2]])
    assert torch.equal(both.log_probs, traj.log_probs[[0, 3, 1, 2]])


def test_to_storage_and_validation(traj):
    half = traj.to_storage(torch.float16)
    assert half.latents.dtype == torch.float16 and half.prompt_embeds.dtype == torch.float16
    assert half.log_probs.dtype == torch.float32
    with pytest.raises(ValueError, match="rows"):
        type(traj)(**{**traj.__dict__, "eta": torch.ones(3)})
    with pytest.raises(ValueError):
        collate([])
