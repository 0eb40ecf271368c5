"""K-FAC preconditioning of CG, measured: the CG iterations each preconditioner needs to reach *the same residual*,
and the time of the solve at that residual (building the preconditioner included).

    python benchmarks/kfac_cg.py            # Gaussian and categorical MLPs, CNN → results/kfac_cg.md

The systems are the curvature benchmark's (``benchmarks/curvature.py``: sb3-contrib policies with a filled rollout
buffer, damping and the sb3 scaling as there): :math:`(F + \\lambda I)s = g` with natgrad's Fisher product.  The
target residual is the one plain CG reaches in 10 iterations (the update's budget); each preconditioner runs until
its true residual :math:`\\lVert g - (F+\\lambda I)x\\rVert` is at or below it (at most 200 iterations).  K-FAC's
factors come from one extra forward and one backward per output dimension (``exact=True``); the time column
includes them.  One torch thread, median of 5 repeats.  A second table runs successive steps of the update with its
own stopping rule, with the factors built once or at every step.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "benchmarks"))
from curvature import CASES, DAMPING, closure_for, distribution, make_problem  # noqa: E402

import natgrad  # noqa: E402
from natgrad.kfac import kfac_preconditioner  # noqa: E402


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
    for name, make_m in (("none", lambda: None),
                         ("K-FAC", lambda: kfac_preconditioner(policy, params, lambda: distribution(problem), damping))):  # fmt: skip
        k, seconds = iterations_to(fvp, b, target, make_m)
        rows.append((name, k, seconds))
    base = rows[0]
    lines = [f"| {CASES[case]['title']} | {name} | {k} | {base[1] / k:.2f}× | {1e3 * s:.1f} | {s / base[2]:.2f} |"
             for name, k, s in rows]  # fmt: skip
    return "\n".join(lines)


def in_the_update(case: str, steps: int = 6) -> str:
    """``steps`` successive trust-region steps with the curvature benchmark's settings (its CG stopping rule), without
    K-FAC, with factors built once before the first step, and rebuilt at every step: mean CG iterations and the
    median time of a step."""
    import copy

    from curvature import CG_ITERS, MAX_KL

    problem = make_problem(case)
    policy, params = problem.model.policy, problem.actor_params
    settings = dict(max_kl=problem.kl_scale * MAX_KL, damping=problem.kl_scale * DAMPING, cg_iters=CG_ITERS,
                    cg_atol=1e-5, accept_ratio=0.0)  # fmt: skip
    closure, snapshot = closure_for(problem), copy.deepcopy(policy.state_dict())
    build = lambda: kfac_preconditioner(policy, params, lambda: distribution(problem), settings["damping"])  # noqa: E731
    lines = []
    for mode in ("none", "K-FAC built once", "K-FAC every step"):
        policy.load_state_dict(snapshot)
        m = build() if mode == "K-FAC built once" else None
        iterations, seconds = [], []
        for _ in range(steps):
            t = time.perf_counter()
            if mode == "K-FAC every step":
                m = build()
            info, _ = natgrad.trust_region_step(params, closure, **settings, preconditioner=m)
            seconds.append(time.perf_counter() - t)
            iterations.append(info.cg_iterations)
        lines.append(f"| {CASES[case]['title']} | {mode} | {statistics.mean(iterations):.1f} | "
                     f"{1e3 * statistics.median(seconds):.1f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", default=["gaussian_mlp", "categorical_mlp", "cnn"], choices=list(CASES))
    p.add_argument("--out", type=Path, default=RESULTS / "kfac_cg.md")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    lines = ["# K-FAC preconditioning: CG iterations at equal residual", "",
             f"`python benchmarks/kfac_cg.py` — {platform.machine()}, one torch thread; the target residual is plain "
             "CG's after 10 iterations.", "",
             "| system | preconditioner | CG iterations to the residual | fewer iterations | solve time (ms) | time ratio |",
             "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for case in args.cases:
        lines.append(run_case(case))
        print(lines[-1], flush=True)
    lines += ["", "In the update itself (6 successive `trust_region_step`s, CG stopping at ‖r‖ ≤ 1e-5 or 15 "
              "iterations, as in the curvature benchmark):", "",
              "| system | preconditioner | mean CG iterations | time per step (ms) |", "|---|---|---:|---:|"]  # fmt: skip
    for case in [c for c in args.cases if c != "cnn"]:
        lines.append(in_the_update(case))
        print(lines[-1], flush=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
