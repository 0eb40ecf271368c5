import warnings

import pytest
import torch

import natgrad
from natgrad_diffusion.sampling.components import math_attention
from natgrad_diffusion.sampling.ddim import sample
from natgrad_diffusion.sampling.policies import LoRAPolicy, load_policy, make_policy

from ...conftest import PROMPTS

KW = dict(num_images_per_prompt=2, num_inference_steps=3, guidance_scale=3.0, eta=1.0)


def _randomize(policy, scale=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.trainable_parameters().values():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


def test_only_lora_parameters_train(components):
    policy = make_policy("lora", components, rank=2, alpha=4.0)
    trainable = policy.trainable_parameters()
    assert trainable and all("lora_" in n for n in trainable)
    assert all(p.requires_grad for p in trainable.values())
    frozen = [n for n, p in components.unet.named_parameters() if p.requires_grad and n not in trainable]
    assert frozen == []
    targets = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}
    assert targets <= {"to_q", "to_k", "to_v", "0"}


def test_refuses_deterministic_sampling(components):
    policy = make_policy("lora", components)
    with pytest.raises(ValueError, match="eta > 0"):
        sample(components, PROMPTS, num_inference_steps=2, eta=0.0, hook=policy)
    traj = sample(components, PROMPTS, num_inference_steps=2, eta=0.0)
    with pytest.raises(ValueError, match="eta > 0"):
        policy.decisions(traj)


def test_decisions_recompute_recorded_log_probs(components):
    policy = make_policy("lora", components)
    _randomize(policy)
    traj = sample(components, PROMPTS, hook=policy, **KW)
    d = policy.decisions(traj)
    assert len(d) == traj.num_images * traj.num_steps
    assert torch.equal(d.per_decision["step_index"][:3], torch.arange(3))
    lp = policy.log_prob(policy.detached_parameters(), d)
    torch.testing.assert_close(lp, d.log_probs, rtol=1e-5, atol=1e-3)
    # the log-prob moves with the LoRA parameters
    shifted = {k: v * 1.5 for k, v in policy.detached_parameters().items()}
    assert not torch.allclose(policy.log_prob(shifted, d), lp, atol=1e-2)


def test_saved_lora_reloads_bit_for_bit_through_the_pipeline(make_components, tmp_path):
    comps = make_components()
    policy = LoRAPolicy(comps, rank=2, alpha=8.0)  # alpha != rank: the scale must survive the round trip
    _randomize(policy, 0.3)
    trained = sample(comps, PROMPTS, seed=11, **KW)
    policy.save(tmp_path / "lora")
    assert (tmp_path / "lora" / "pytorch_lora_weights.safetensors").is_file()

    fresh = make_components()
    pipe = fresh.to_pipeline()
    pipe.set_progress_bar_config(disable=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.load_lora_weights(tmp_path / "lora")
    reloaded = sample(fresh, PROMPTS, seed=11, **KW)
    assert torch.equal(reloaded.images, trained.images)
    assert torch.equal(reloaded.final_latents, trained.final_latents)
    gens = [torch.Generator().manual_seed(11 + i) for i in range(4)]
    images = pipe(PROMPTS, generator=gens, output_type="pt", **KW).images
    assert torch.equal((images * 255).round().to(torch.uint8), trained.images)

    again = make_components()
    loaded = load_policy(tmp_path / "lora", again)
    assert isinstance(loaded, LoRAPolicy) and loaded.rank == 2 and loaded.alpha == 8.0
    assert torch.equal(sample(again, PROMPTS, seed=11, **KW).final_latents, trained.final_latents)
    base = sample(make_components(), PROMPTS, seed=11, **KW)
    assert not torch.equal(base.final_latents, trained.final_latents)


def _fisher_setup(comps, rank, targets, storage="float32"):
    policy = LoRAPolicy(comps, rank=rank, alpha=float(rank), target_modules=targets)
    _randomize(policy, 0.3, seed=1)
    traj = sample(comps, PROMPTS, storage_dtype=storage, **{**KW, "num_images_per_prompt": 1, "num_inference_steps": 2})
    d = policy.decisions(traj)
    names = list(policy.trainable_parameters())
    leaves = [p.detach() for p in policy.trainable_parameters().values()]

    def model_fn(p_list, *tensors):
        return policy.distribution(dict(zip(names, p_list)), d.from_tensors(tensors))

    return policy, d, leaves, model_fn


def test_fvp_equals_double_backprop_kl_hessian_float32(make_components):
    comps = make_components()
    _, d, leaves, model_fn = _fisher_setup(comps, rank=2, targets=("to_q", "to_k", "to_v", "to_out.0"))
    g = torch.Generator().manual_seed(0)
    with math_attention():
        jvp = natgrad.fisher_vector_product(model_fn, leaves, *d.tensors(), method="jvp", chunk_size=2)
        hvp = natgrad.fisher_vector_product(model_fn, leaves, *d.tensors(), method="kl_hvp")
        for _ in range(3):
            v = [torch.randn(p.shape, generator=g) for p in leaves]
            a, b = torch.cat([t.flatten() for t in jvp(v)]), torch.cat([t.flatten() for t in hvp(v)])
            assert float((a - b).norm() / b.norm()) < 1e-4


def test_fvp_equals_dense_fisher_float64(make_components):
    comps = make_components(pixel_space=True, dtype=torch.float64, sample_size=4, block_out_channels=(4, 8))
    policy, d, leaves, model_fn = _fisher_setup(comps, rank=1, targets=("to_q",), storage=torch.float64)
    names = list(policy.trainable_parameters())
    sizes = [p.numel() for p in leaves]
    flat0 = torch.cat([p.flatten() for p in leaves])

    def mean_of(flat):
        parts = torch.split(flat, sizes)
        params = {n: t.view_as(p) for n, t, p in zip(names, parts, leaves)}
        return policy.step_mean_std(params, d)[0]

    with math_attention():
        jac = torch.func.jacrev(mean_of)(flat0).reshape(len(d), -1, flat0.numel())  # (M, C·h·w, P)
        _, std = policy.step_mean_std(dict(zip(names, leaves)), d)
        inv_var = std.reshape(-1, 1, 1).double() ** -2
        dense = torch.einsum("mop,moq->pq", jac * inv_var, jac) / len(d)
        op = natgrad.fisher_vector_product(model_fn, leaves, *d.tensors(), method="jvp")
        chunked = natgrad.fisher_vector_product(model_fn, leaves, *d.tensors(), method="jvp", chunk_size=1)
        assert dense.dtype == torch.float64 and dense.shape[0] == flat0.numel() > 10
        torch.testing.assert_close(op.to_dense(), dense, rtol=1e-9, atol=1e-9 * float(dense.abs().max()))
        v = torch.randn(flat0.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        out = chunked([t.view_as(p) for t, p in zip(torch.split(v, sizes), leaves)])
        torch.testing.assert_close(torch.cat([t.flatten() for t in out]), dense @ v, rtol=1e-9, atol=1e-12)
