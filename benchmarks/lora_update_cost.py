"""Cost of the crater job's LoRA TRPO update on the embedded model, one torch thread.

Measures, on one chunk of 16 decisions (image × denoising step) of a real rollout: one forward + backward of the
surrogate, and one Fisher-vector product with each method of :func:`natgrad_diffusion.chunked_trpo.chunked_fisher`
(``reverse``: the chunk's graph built once, two backward passes per product; ``jvp``: ``torch.func`` jvp + vjp,
recomputed per product) — medians of 5 after a warm-up — and then one whole update of the job's default settings.
Writes ``benchmarks/results/lora_update_cost.md``.

    python benchmarks/lora_update_cost.py
"""

from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch

from natgrad_diffusion.agents import TRPOAgent
from natgrad_diffusion.chunked_trpo import chunked_fisher, importance_ratio
from natgrad_diffusion.config import SAMPLING, TRAINING
from natgrad_diffusion.job import load_model, resolve_defaults
from natgrad_diffusion.policies import make_policy
from natgrad_diffusion.sampling import step_distribution

OUT = Path(__file__).resolve().parent / "results" / "lora_update_cost.md"
PROMPT = "a fresh medium bowl-shaped crater, lit from the west, high sun"


def median_seconds(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    cfg = resolve_defaults(TRAINING)
    comps = load_model(None)
    torch.manual_seed(0)
    policy = make_policy("lora", comps, **cfg.policy_options)
    sampling = replace(SAMPLING, num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale, eta=cfg.eta,
                       images_per_prompt=cfg.images_per_prompt)  # fmt: skip
    agent = TRPOAgent(comps, policy, lambda im, p: im.mean(dim=(1, 2, 3)), sampling=sampling,
                      trust_region=cfg.trust_region, chunks=cfg.chunks)  # fmt: skip
    rollout = agent.collect([PROMPT] * (cfg.batch_size // cfg.images_per_prompt))
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
    start = time.perf_counter()
    stats = agent.update_policy(rollout)["policy"]
    update = time.perf_counter() - start
    base = rows["forward + backward"]
    lines = ["# LoRA TRPO update cost (embedded crater model, one thread)", "",
             "`python benchmarks/lora_update_cost.py`: one 16-decision chunk of a real rollout; medians of 5.", "",
             "| | seconds | × forward + backward |", "|---|---:|---:|"]  # fmt: skip
    lines += [f"| {k} | {t:.3f} | {t / base:.2f} |" for k, t in rows.items()]
    lines += ["", f"One whole update with the job's settings ({len(rollout.decisions)} decisions, a quarter of them "
              f"per update, Fisher on {cfg.chunks.fvp_subsample} with `{cfg.chunks.fvp_method}`, "
              f"{cfg.trust_region.cg_iters} CG iterations): {update:.1f} s, KL {stats['kl']:.4f} "
              f"(max {cfg.trust_region.max_kl}), accepted {stats['accepted']}.", ""]  # fmt: skip
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
