"""Where the time of one ``TrustRegionOptimizer.step`` goes (the plain path a user writes), by cProfile.

    python benchmarks/update_profile.py                        # Gaussian MLP of benchmarks/curvature.py
    python benchmarks/update_profile.py --case categorical_mlp --steps 50

Profiles ``--steps`` updates of ``TrustRegionOptimizer(policy.parameters())`` + closure from the same parameters
(one thread) and reports the cumulative time of each phase per step: the Fisher-vector products, CG without its
products, the first closure forward, the line search (its forwards included), the Fisher operator's setup, and
the gradient with the rest of the step.  Writes ``benchmarks/results/update_profile_<case>.md``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from curvature import closure_for, make_problem, natgrad_optimizer  # noqa: E402

#: function → (module file suffix, function name); a phase's time is its function's cumulative time
PHASES = {
    "step": ("natgrad/optimizer.py", "step"),
    "products": ("natgrad/fisher.py", "flat"),
    "cg": ("natgrad/cg.py", "_solve"),
    "closure": ("natgrad/closure.py", "call_closure"),
    "setup": ("natgrad/closure.py", "fisher_from_closure"),
    "line_search": ("natgrad/backtracking.py", "line_search"),
    "evaluate": ("natgrad/trust_region.py", "evaluate"),
}


def cumulative(stats: pstats.Stats) -> dict[str, float]:
    """Seconds per phase of :data:`PHASES` (cumulative time of the phase's function)."""
    out = dict.fromkeys(PHASES, 0.0)
    for (path, _, name), (_, _, _, cum, _) in stats.stats.items():  # type: ignore[attr-defined]
        for phase, (suffix, fn) in PHASES.items():
            if name == fn and path.endswith(suffix):
                out[phase] += cum
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", default="gaussian_mlp", choices=["gaussian_mlp", "categorical_mlp"])
    p.add_argument("--steps", type=int, default=30)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    problem = make_problem(args.case)
    snapshot = {k: v.clone() for k, v in problem.model.policy.state_dict().items()}
    opt = natgrad_optimizer(problem, "plain")
    closure = closure_for(problem)
    opt.step(closure)  # warm-up
    profiler = cProfile.Profile()
    for _ in range(args.steps):
        problem.model.policy.load_state_dict(snapshot)
        profiler.enable()
        opt.step(closure)
        profiler.disable()
    ms = {k: 1e3 * v / args.steps for k, v in cumulative(pstats.Stats(profiler)).items()}
    total = ms["step"]
    rows = {
        "Fisher-vector products": ms["products"],
        "CG bookkeeping (without its products)": ms["cg"] - ms["products"],
        "first closure forward (loss and distribution)": ms["closure"] - ms["evaluate"],
        "line search (its forwards, KL, parameter updates)": ms["line_search"],
        "Fisher operator setup": ms["setup"],
    }
    rows["gradient and the rest (Python overhead of the step)"] = total - sum(rows.values())
    lines = [f"# Where one update's time goes ({args.case}, plain `TrustRegionOptimizer` + closure, 1 thread)", "",
             f"`python benchmarks/update_profile.py --case {args.case} --steps {args.steps}` (cProfile; its overhead "
             f"inflates Python-heavy parts).  One step: {total:.1f} ms.", "",
             "| phase | ms / step | share |", "|---|---:|---:|"]  # fmt: skip
    lines += [f"| {k} | {v:.2f} | {v / total:.0%} |" for k, v in rows.items()]
    out = ROOT / "benchmarks" / "results" / f"update_profile_{args.case}.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
