"""K-FAC preconditioning of CG, measured: the CG iterations each preconditioner needs to reach *the same residual*,
and the time of the solve at that residual (building the preconditioner included).

    python benchmarks/kfac_cg.py            # Gaussian and categorical MLPs, CNN → results/kfac_cg.md

The systems are the curvature benchmark's (``benchmarks/curvature.py``: sb3-contrib policies with a filled rollout
buffer, damping and the sb3 scaling as there): :math:`(F + \\lambda I)s = g` with natgrad's Fisher product.  The
target residual is the one plain CG reaches in 10 iterations (the update's budget); each preconditioner runs until
its true residual :math:`\\lVert g - (F+\\lambda I)x\\rVert` is at or below it (at most 200 iterations).  K-FAC's
factors come from one extra forward and one backward per output dimension (``exact=True``); the time column
includes them.  One torch thread, median of 5 repeats.
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
    for k in range(1, 201):
        res = natgrad.conjugate_gradient(fvp, b, maxiter=k, rtol=0.0, M=m)
        if true_residual(fvp, b, res.x) <= target:
            break
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
    args.out.write_text("\n".join(lines) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
