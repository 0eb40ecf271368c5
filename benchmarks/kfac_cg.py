"""K-FAC preconditioning of CG, measured: the CG iterations each preconditioner needs to reach *the same residual*,
and the time of the solve at that residual (building the preconditioner included).

    python benchmarks/kfac_cg.py            # Gaussian and categorical MLPs, CNN, the LoRA UNet → results/kfac_cg.md

The systems are the curvature benchmark's (``benchmarks/curvature.py``: sb3-contrib policies with a filled rollout
buffer, damping and the sb3 scaling as there): :math:`(F + \\lambda I)s = g` with natgrad's Fisher product.  The
target residual is the one plain CG reaches in 10 iterations (the update's budget); each preconditioner runs until
its true residual :math:`\\lVert g - (F+\\lambda I)x\\rVert` is at or below it (at most 200 iterations).  Jacobi's
diagonal is a one-sample Monte-Carlo estimate (``natgrad.preconditioners``); K-FAC's factors (``nn.Linear`` and
``nn.Conv2d`` blocks) come from one forward and one backward per output dimension (``exact=True``); the time column
includes building either.  One torch thread, median of 5 repeats.  A second table runs successive steps of the
update with its own stopping rule: factors built once, from each step's own forward (``natgrad.KFAC``, no extra
forward), or as running averages (``decay=0.95``).

The LoRA UNet row is the crater job's update (embedded model, the job's settings, one real rollout): the system is the
chunked Fisher on the update's sub-sample, the target plain CG's residual after the job's 6 iterations, and K-FAC's
factors are sampled (one action per decision) in the gradient pass's own chunks; its second table gives the whole
update (``chunked_trust_region_step``) with and without K-FAC.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "benchmarks"))
from curvature import CASES, DAMPING, closure_for, distribution, make_problem  # noqa: E402

import natgrad  # noqa: E402
from natgrad.kfac import kfac_preconditioner  # noqa: E402
from natgrad.preconditioners import diagonal_fisher, jacobi_preconditioner  # noqa: E402


class _Distribution(nn.Module):
    """The sb3 policy as ``obs -> Distribution`` (a module, for ``functional_call``)."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, obs: torch.Tensor) -> torch.distributions.Distribution:
        return self.policy.get_distribution(obs).distribution


def jacobi(problem, params: list[torch.Tensor], damping: float):
    """Jacobi from a one-sample Monte-Carlo Fisher diagonal (per-sample gradients through ``torch.func.vmap``)."""
    wrapper = _Distribution(problem.model.policy)
    names = {id(p): f"policy.{n}" for n, p in problem.model.policy.named_parameters()}
    keys = [names[id(p)] for p in params]
    model_fn = lambda p, x: functional_call(wrapper, dict(zip(keys, p)), (x,))  # noqa: E731
    torch.manual_seed(0)
    return jacobi_preconditioner(diagonal_fisher(model_fn, [p.detach() for p in params], problem.obs), damping)


def true_residual(fvp, b: list[torch.Tensor], x: list[torch.Tensor]) -> float:
    ax = fvp(x)
    return float(torch.sqrt(sum(((bi - ai) ** 2).sum() for bi, ai in zip(b, ax))))


def iterations_to(fvp, b, target: float, make_m) -> tuple[int, float]:
    """The fewest CG iterations whose true residual is ≤ ``target`` (with the preconditioner ``make_m()``), and the
    median time of that solve, preconditioner built inside the timing."""
    m = make_m()
    # CG's own residual recurrence finds the iteration in one solve; the true residual (which may sit a little above
    # the recurrence's) decides, one more iteration at a time
    k = max(1, int(natgrad.conjugate_gradient(fvp, b, maxiter=200, rtol=0.0, atol=target, M=m).iterations))
    while k < 200 and true_residual(fvp, b, natgrad.conjugate_gradient(fvp, b, maxiter=k, rtol=0.0, M=m).x) > target:
        k += 1
    times = []
    for _ in range(5):
        t = time.perf_counter()
        natgrad.conjugate_gradient(fvp, b, maxiter=k, rtol=0.0, M=make_m())
        times.append(time.perf_counter() - t)
    return k, statistics.median(times)


def run_case(case: str) -> str:
    problem = make_problem(case)
    policy, params = problem.model.policy, problem.actor_params
    damping = problem.kl_scale * DAMPING
    loss, dist = closure_for(problem)()
    b = [g.detach() for g in torch.autograd.grad(loss, params, retain_graph=True)]
    fvp = natgrad.graph_fisher_vector_product(dist, params, damping=damping)
    plain = natgrad.conjugate_gradient(fvp, b, maxiter=10, rtol=0.0)
    target = true_residual(fvp, b, plain.x)
    rows = []
    for name, make_m in (("none", lambda: None), ("Jacobi", lambda: jacobi(problem, params, damping)),
                         ("K-FAC", lambda: kfac_preconditioner(policy, params, lambda: distribution(problem), damping))):  # fmt: skip
        try:
            k, seconds = iterations_to(fvp, b, target, make_m)
        except (RuntimeError, KeyError) as exc:  # vmap without a batching rule; parameters functional_call cannot name
            print(f"{case}: {name} failed: {type(exc).__name__}: {str(exc).splitlines()[0]}", flush=True)
            rows.append((name, None, None))
            continue
        rows.append((name, k, seconds))
    base = rows[0]
    lines = [f"| {CASES[case]['title']} | {name} | {k} | {base[1] / k:.2f}× | {1e3 * s:.1f} | {s / base[2]:.2f} |"
             if k is not None else f"| {CASES[case]['title']} | {name} | n/a (its diagonal did not build) | | | |"
             for name, k, s in rows]  # fmt: skip
    return "\n".join(lines)


def in_the_update(case: str, steps: int = 6) -> str:
    """``steps`` successive trust-region steps with the curvature benchmark's settings (its CG stopping rule), without
    K-FAC, with factors built once before the first step, from each step's own forward (:class:`natgrad.KFAC`), and
    as running averages: mean CG iterations and the median time of a step."""
    import copy

    from curvature import CG_ITERS, MAX_KL

    problem = make_problem(case)
    policy, params = problem.model.policy, problem.actor_params
    settings = dict(max_kl=problem.kl_scale * MAX_KL, damping=problem.kl_scale * DAMPING, cg_iters=CG_ITERS,
                    cg_atol=1e-5, accept_ratio=0.0)  # fmt: skip
    closure, snapshot = closure_for(problem), copy.deepcopy(policy.state_dict())
    build = lambda: kfac_preconditioner(policy, params, lambda: distribution(problem), settings["damping"])  # noqa: E731
    lines = []
    for mode in ("none", "K-FAC built once", "K-FAC every step", "K-FAC running (decay 0.95)"):
        policy.load_state_dict(snapshot)
        m = {"none": None, "K-FAC built once": build(), "K-FAC every step": natgrad.KFAC(policy),
             "K-FAC running (decay 0.95)": natgrad.KFAC(policy, decay=0.95)}[mode]  # fmt: skip
        iterations, seconds = [], []
        for _ in range(steps):
            t = time.perf_counter()
            info, _ = natgrad.trust_region_step(params, closure, **settings, preconditioner=m)
            seconds.append(time.perf_counter() - t)
            iterations.append(info.cg_iterations)
        lines.append(f"| {CASES[case]['title']} | {mode} | {statistics.mean(iterations):.1f} | "
                     f"{1e3 * statistics.median(seconds):.1f} |")  # fmt: skip
    return "\n".join(lines)


def lora_case() -> tuple[str, str]:
    """The LoRA UNet rows of both tables (module docstring)."""
    import warnings
    from dataclasses import replace

    from common import lora_job_rollout

    from natgrad_diffusion.training.chunked_trpo import (
        chunked_fisher,
        chunked_trust_region_step,
        fisher_subsample,
        surrogate_gradient,
    )

    warnings.simplefilter("ignore")
    cfg, _, policy, _, rollout = lora_job_rollout()
    d, adv = rollout.decisions, rollout.advantages
    params = policy.trainable_parameters()
    damping, chunk = cfg.trust_region.damping, cfg.chunks.grad_chunk
    t = time.perf_counter()
    _, grads, _ = surrogate_gradient(policy, params, d, adv, chunk)
    t_grad = time.perf_counter() - t

    def kfac_op():
        kfac = natgrad.KFAC(policy.unet, exact=False, generator=torch.Generator().manual_seed(0))
        surrogate_gradient(policy, params, d, adv, chunk, kfac=kfac)
        return kfac.build(None, damping)

    t = time.perf_counter()
    op = kfac_op()
    t_kfac = time.perf_counter() - t - t_grad  # the factors' own cost: the extra backward per chunk, the eigh
    fvp = chunked_fisher(policy, params, d, cfg.chunks, damping, subsample=fisher_subsample(cfg.chunks, len(d)),
                         generator=torch.Generator().manual_seed(0))  # fmt: skip
    b = [g.detach() for g in grads]
    plain = natgrad.conjugate_gradient(fvp, b, maxiter=cfg.trust_region.cg_iters, rtol=0.0)
    target = true_residual(fvp, b, plain.x)
    title = f"LoRA UNet (crater job update, {len(d)} decisions)"
    rows = []
    for name, m in (("none", None), ("K-FAC", op)):
        k = max(1, int(natgrad.conjugate_gradient(fvp, b, maxiter=60, rtol=0.0, atol=target, M=m).iterations))
        while k < 60 and true_residual(fvp, b, natgrad.conjugate_gradient(fvp, b, maxiter=k, rtol=0.0, M=m).x) > target:
            k += 1
        start = time.perf_counter()
        natgrad.conjugate_gradient(fvp, b, maxiter=k, rtol=0.0, M=m)
        rows.append((name, k, time.perf_counter() - start + (t_kfac if m is not None else 0.0)))
    base = rows[0]
    solve = "\n".join(f"| {title} | {name} | {k} | {base[1] / k:.2f}× | {1e3 * s:.1f} | {s / base[2]:.2f} |"
                      for name, k, s in rows)  # fmt: skip
    saved = {k: v.detach().clone() for k, v in params.items()}
    update = []
    for name in ("none", "kfac"):
        start = time.perf_counter()
        info = chunked_trust_region_step(policy, d, adv, cfg.trust_region, replace(cfg.chunks, preconditioner=name),
                                         generator=torch.Generator().manual_seed(0))  # fmt: skip
        update.append(f"| {title} | {'K-FAC' if name == 'kfac' else 'none'} | {info.cg_iterations} "
                      f"(residual {info.cg_residual:.3g}) | {1e3 * (time.perf_counter() - start):.0f} |")
        with torch.no_grad():
            for k, v in params.items():
                v.copy_(saved[k])
    return solve, "\n".join(update)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", default=["gaussian_mlp", "categorical_mlp", "cnn", "lora"],
                   choices=[*CASES, "lora"])  # fmt: skip
    p.add_argument("--out", type=Path, default=RESULTS / "kfac_cg.md")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    lines = ["# K-FAC preconditioning: CG iterations at equal residual", "",
             f"`python benchmarks/kfac_cg.py` — {platform.machine()}, one torch thread; the target residual is plain "
             "CG's after 10 iterations.", "",
             "| system | preconditioner | CG iterations to the residual | fewer iterations | solve time (ms) | time ratio |",
             "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    lora = lora_case() if "lora" in args.cases else None
    for case in [c for c in args.cases if c != "lora"]:
        lines.append(run_case(case))
        print(lines[-1], flush=True)
    if lora is not None:
        lines.append(lora[0])
    lines += ["", "In the update itself (6 successive `trust_region_step`s, CG stopping at ‖r‖ ≤ 1e-5 or 15 "
              "iterations, as in the curvature benchmark):", "",
              "| system | preconditioner | mean CG iterations | time per step (ms) |", "|---|---|---:|---:|"]  # fmt: skip
    for case in [c for c in args.cases if c != "lora"]:
        lines.append(in_the_update(case))
        print(lines[-1], flush=True)
    if lora is not None:
        lines += ["", "The crater job's LoRA update (`chunked_trust_region_step`, the job's 6 CG iterations; time of the whole "
                  "update, K-FAC's extra backward per gradient chunk included):", "",
                  "| system | preconditioner | CG iterations (final residual) | update time (ms) |", "|---|---|---|---:|",
                  lora[1]]  # fmt: skip
    args.out.write_text("\n".join(lines) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
