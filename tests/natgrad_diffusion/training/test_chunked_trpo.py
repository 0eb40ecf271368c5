"""The memory-bounded LoRA TRPO step: decision sub-samples, the two Fisher methods, DDPO's ratio."""

from dataclasses import replace

import torch

from natgrad_diffusion.core.config import CHUNKS, SAMPLING
from natgrad_diffusion.sampling.ddim import step_distribution
from natgrad_diffusion.sampling.policies import make_policy
from natgrad_diffusion.training.agents import TRPOAgent
from natgrad_diffusion.training.chunked_trpo import chunked_fisher, decision_subsample, importance_ratio

from ..conftest import PROMPTS

SAMPLING_TINY = replace(SAMPLING, num_inference_steps=3, images_per_prompt=3, guidance_scale=3.0, eta=1.0)


def _rollout(make_components):
    comps = make_components()
    policy = make_policy("lora", comps)
    agent = TRPOAgent(comps, policy, lambda images, prompts: images.mean(dim=(1, 2, 3)), sampling=SAMPLING_TINY)
    return policy, agent.collect(PROMPTS)


def test_decision_subsample_draws_a_sorted_share_without_replacement(make_components):
    _, rollout = _rollout(make_components)
    d, adv = rollout.decisions, rollout.advantages
    m = len(d)
    sub, sub_adv = decision_subsample(d, adv, replace(CHUNKS, decision_subsample=0.5), torch.Generator().manual_seed(0))
    assert len(sub) == round(0.5 * m) and sub_adv.shape == (len(sub),)
    index = [int(torch.nonzero((d.actions == a).flatten(1).all(1))[0]) for a in sub.actions]
    assert index == sorted(set(index))  # distinct decisions, in their order
    assert torch.equal(sub_adv, adv[index])
    same, _ = decision_subsample(d, adv, CHUNKS, torch.Generator())  # the default keeps every decision
    assert same is d


def test_reverse_and_jvp_fisher_products_agree(make_components):
    policy, rollout = _rollout(make_components)
    params = policy.trainable_parameters()
    v = [torch.randn_like(p) for p in params.values()]
    products = {}
    for method in ("jvp", "reverse"):
        chunks = replace(CHUNKS, fvp_method=method, fvp_chunk=4)
        fvp = chunked_fisher(
            policy, params, rollout.decisions, chunks, 0.1, subsample=None, generator=torch.Generator()
        )
        products[method] = torch.cat([t.reshape(-1) for t in fvp(v)])
    a, b = products["reverse"], products["jvp"]
    assert (a - b).norm() / b.norm() < 1e-4  # the same operator up to float32 round-off


def test_per_dimension_ratio_is_the_root_of_the_summed_ratio(make_components):
    policy, rollout = _rollout(make_components)
    chunk = rollout.decisions.select(slice(0, 4))
    with torch.no_grad():
        mean, std = policy.step_mean_std(policy.trainable_parameters(), chunk)
        dist = step_distribution(mean + 0.01, std)  # a nearby policy
        summed, per_dim = importance_ratio(dist, chunk), importance_ratio(dist, chunk, per_dimension=True)
    dims = chunk.actions[0].numel()
    torch.testing.assert_close(per_dim, summed ** (1.0 / dims), rtol=1e-5, atol=1e-7)
    assert not torch.allclose(per_dim, summed)


def test_kfac_preconditions_the_lora_update_from_its_own_gradient_pass(make_components):
    """chunks.preconditioner="kfac": factors of every LoRA layer from the gradient chunks' forwards (sampled actions
    from the update's generator: the global random state is untouched), the update still solves and steps."""
    import natgrad
    from natgrad_diffusion.training.chunked_trpo import chunked_trust_region_step, surrogate_gradient

    policy, rollout = _rollout(make_components)
    params = policy.trainable_parameters()
    kfac = natgrad.KFAC(policy.unet, exact=False, generator=torch.Generator().manual_seed(0))
    state = torch.get_rng_state()
    plain = surrogate_gradient(policy, params, rollout.decisions, rollout.advantages, 4)
    with_kfac = surrogate_gradient(policy, params, rollout.decisions, rollout.advantages, 4, kfac=kfac)
    assert torch.equal(torch.get_rng_state(), state)
    assert plain[0] == with_kfac[0] and all(torch.equal(a, b) for a, b in zip(plain[1], with_kfac[1]))
    op = kfac.build(None, 0.1)
    assert op.identity_params == 0 and len(op.layers) == len(params)  # a block per lora_A / lora_B (bias-free)
    config = natgrad.TrustRegionConfig(max_kl=0.05, cg_iters=6)
    info = chunked_trust_region_step(policy, rollout.decisions, rollout.advantages, config,
                                     replace(CHUNKS, preconditioner="kfac", grad_chunk=4),
                                     generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert info.identity_params == 0 and info.cg_iterations >= 1 and 0 <= info.kl <= 0.05 * 1.5
