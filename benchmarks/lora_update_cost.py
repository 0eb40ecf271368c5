"""Cost of the crater job's LoRA TRPO update on the embedded model, one torch thread.

Measures, on one chunk of 16 decisions (image × denoising step) of a real rollout: one forward + backward of the
surrogate, and one Fisher-vector product with each method of :func:`natgrad_diffusion.training.chunked_trpo.chunked_fisher`
(``reverse``: the chunk's graph built once, two backward passes per product; ``jvp``: ``torch.func`` jvp + vjp,
recomputed per product) — medians of 5 after a warm-up — and then whole updates on the same rollout (parameters
restored between them): TRPO with the job's default settings (a quarter of the decisions per update), TRPO on all
the decisions, and PPO (default settings: one epoch, and four epochs) on all the decisions.  Writes ``benchmarks/results/lora_update_cost.md``.

    python benchmarks/lora_update_cost.py
"""

from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch
from common import lora_job_rollout

from natgrad_diffusion.core.config import PPO
from natgrad_diffusion.sampling.ddim import step_distribution
from natgrad_diffusion.training.agents import PPOAgent, TRPOAgent
from natgrad_diffusion.training.chunked_trpo import chunked_fisher, importance_ratio

OUT = Path(__file__).resolve().parent / "results" / "lora_update_cost.md"


def median_seconds(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def whole_updates(agent, rollout, comps, policy, cfg, sampling) -> dict[str, tuple[float, float, str]]:
    """Seconds, KL and acceptance of whole updates on one rollout, the policy's parameters restored after each."""
    params = policy.trainable_parameters()
    saved = {k: v.detach().clone() for k, v in params.items()}
    trpo_all = TRPOAgent(comps, policy, agent.reward_fn, sampling=sampling, trust_region=cfg.trust_region,
                         chunks=replace(cfg.chunks, decision_subsample=1.0))  # fmt: skip
    candidates = {
        "TRPO, job settings (a quarter of the decisions)": agent,
        "TRPO, all decisions": trpo_all,
        "PPO, 1 epoch, all decisions": PPOAgent(comps, policy, agent.reward_fn, sampling=sampling, ppo=PPO),
        "PPO, 4 epochs, all decisions": PPOAgent(comps, policy, agent.reward_fn, sampling=sampling,
                                                 ppo=replace(PPO, epochs=4)),
    }  # fmt: skip
    out = {}
    for name, candidate in candidates.items():
        start = time.perf_counter()
        stats = candidate.update_policy(rollout)["policy"]
        out[name] = (time.perf_counter() - start, stats["kl"], str(stats.get("accepted", "—")))
        with torch.no_grad():
            for k, v in params.items():
                v.copy_(saved[k])
    return out


def main() -> None:
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    cfg, comps, policy, agent, rollout = lora_job_rollout()
    sampling = agent.sampling
    d, adv = rollout.decisions.select(slice(0, 16)), rollout.advantages[:16]
    params = policy.trainable_parameters()
    leaves = list(params.values())

    def forward_backward() -> None:
        mean, std = policy.step_mean_std(params, d)  # type: ignore[attr-defined]
        loss = -(importance_ratio(step_distribution(mean, std), d) * adv).mean()
        torch.autograd.grad(loss, leaves)

    v = [torch.randn_like(p) for p in leaves]
    rows = {"forward + backward": median_seconds(forward_backward)}
    for method in ("reverse", "jvp"):
        chunks = replace(cfg.chunks, fvp_method=method, fvp_chunk=16)
        op = chunked_fisher(policy, params, d, chunks, 0.1, subsample=None, generator=torch.Generator())
        rows[f"Fisher-vector product ({method})"] = median_seconds(lambda op=op: op(v))
    base = rows["forward + backward"]
    lines = ["# LoRA TRPO update cost (embedded crater model, one thread)", "",
             "`python benchmarks/lora_update_cost.py`: one 16-decision chunk of a real rollout; medians of 5.", "",
             "| | seconds | × forward + backward |", "|---|---:|---:|"]  # fmt: skip
    lines += [f"| {k} | {t:.3f} | {t / base:.2f} |" for k, t in rows.items()]
    updates = whole_updates(agent, rollout, comps, policy, cfg, sampling)
    ppo = updates["PPO, 1 epoch, all decisions"][0]
    lines += ["", f"Whole updates on the same rollout ({len(rollout.decisions)} decisions: the stochastic steps of "
              f"{cfg.batch_size} images × {cfg.steps} DDIM steps; TRPO: Fisher on {cfg.chunks.fvp_subsample} decisions with "
              f"`{cfg.chunks.fvp_method}`, {cfg.trust_region.cg_iters} CG iterations, max KL "
              f"{cfg.trust_region.max_kl}; PPO: minibatch {PPO.minibatch}, lr {PPO.lr}):", "",
              "| update | seconds | × PPO (1 epoch, all decisions) | KL | accepted |", "|---|---:|---:|---:|---|"]  # fmt: skip
    lines += [f"| {k} | {t:.1f} | {t / ppo:.2f} | {kl:.4f} | {acc} |" for k, (t, kl, acc) in updates.items()]
    lines.append("")
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
