"""What each speed technique buys, measured: sub-sampled products, CG warm start, Jacobi preconditioning, torch.compile.

    python benchmarks/techniques.py            # writes benchmarks/results/techniques.md

(The product *methods* — reverse / jvp / linearize / kl_hvp — are compared in curvature.py.)

* Sub-sampling the batch for the Fisher products only (``fisher_closure``): time per
  product and the quality of the resulting step (cosine to the full-batch CG direction,
  KL of the accepted step), on the Gaussian MLP 17-64-64-6 with batch 2048.
* Warm-starting CG from the previous update's solution: CG residual after the fixed
  number of iterations and the return reached, on Pendulum-v1 runs of the example agent.
* A diagonal (Jacobi) preconditioner from a Monte-Carlo Fisher diagonal: condition number
  of the damped Fisher with and without it, and CG residual after k iterations.
* ``torch.compile`` (inductor, CPU) of a torch.func jvp + vjp product, against the same product
  eager and natgrad's own products: time per product, compile time, break-even.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.distributions import Independent, Normal
from torch.func import functional_call

import natgrad
from natgrad.preconditioners import diagonal_fisher, jacobi_preconditioner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))


def gaussian_problem(seed: int = 0, n: int = 2048):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(17, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 6))
    log_std = nn.Parameter(torch.full((6,), -0.5))
    obs = torch.randn(n, 17)

    def policy(x: torch.Tensor):
        return Independent(Normal(net(x), log_std.exp()), 1)

    with torch.no_grad():
        d = policy(obs)
        act = d.sample()
        old = d.log_prob(act)
    # advantages correlated with the actions, so the gradient is informative
    adv = (act * torch.randn(6)).sum(-1)
    adv = (adv - adv.mean()) / adv.std()
    params = [*net.parameters(), log_std]

    def closure():
        dist = policy(obs)
        return -(torch.exp(dist.log_prob(act) - old) * adv).mean(), dist

    return net, log_std, params, policy, obs, closure


def subsampling(repeats: int) -> list[str]:
    lines = [
        "## Sub-sampled Fisher-vector products",
        "",
        "Gaussian MLP 17-64-64-6, batch 2048, 10 CG iterations, damping 0.1.  The gradient always uses the "
        "full batch; only the curvature products use every k-th sample.",
        "",
        "| products on | ms / product | cosine to full-batch step | KL of accepted step | accepted |",
        "|---|---|---|---|---|",
    ]
    _, _, params, policy, obs, closure = gaussian_problem()
    snapshot = [p.detach().clone() for p in params]
    ref_step = None
    for k in (1, 2, 4, 8):
        sub = obs[::k]
        with torch.no_grad():
            for p, s in zip(params, snapshot):
                p.copy_(s)
        dist = policy(sub)
        op = natgrad.graph_fisher_vector_product(dist, params, damping=0.1)
        v = [torch.randn_like(p) for p in params]
        op(v)
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            op(v)
            ts.append(time.perf_counter() - t)
        del op, dist
        opt = natgrad.TrustRegionOptimizer(params, max_kl=0.01, damping=0.1)
        info = opt.step(closure, fisher_closure=(lambda sub=sub: policy(sub)) if k > 1 else None)
        step = torch.cat([(p.detach() - s).reshape(-1) for p, s in zip(params, snapshot)])
        if ref_step is None:
            ref_step = step
        cos = float(step @ ref_step / (step.norm() * ref_step.norm() + 1e-30))
        lines.append(
            f"| {2048 // k} samples (k={k}) | {1e3 * statistics.median(ts):.3f} | {cos:.3f} | "
            f"{info.kl:.4f} | {info.accepted} |"
        )
    return [*lines, ""]


def preconditioning() -> list[str]:
    net, log_std, _, _, obs, _ = gaussian_problem()
    pdict = {**{k: v.detach() for k, v in net.named_parameters()}, "log_std": log_std.detach()}

    def model_fn(p, x):
        mu = functional_call(net, {k: v for k, v in p.items() if k != "log_std"}, (x,))
        return Independent(Normal(mu, p["log_std"].exp()), 1)

    op = natgrad.fisher_vector_product(model_fn, pdict, obs, damping=0.1)
    torch.manual_seed(0)
    t = time.perf_counter()
    diag = diagonal_fisher(model_fn, pdict, obs, samples=1)
    t_diag = time.perf_counter() - t
    m_inv = jacobi_preconditioner(diag, 0.1)
    dense = op.to_dense().double()
    d = torch.cat([v.reshape(-1) for v in diag.values()]).double() + 0.1
    scale = torch.diag(d.rsqrt())
    cond = lambda a: float((lambda e: e.max() / e.min())(torch.linalg.eigvalsh(a)))  # noqa: E731
    g = {k: torch.randn_like(v) for k, v in pdict.items()}
    rows = []
    for it in (5, 10, 15):
        a = natgrad.conjugate_gradient(op, g, maxiter=it)
        b = natgrad.conjugate_gradient(op, g, maxiter=it, M=m_inv)
        rows.append(f"| {it} | {float(a.residual_norm):.3g} | {float(b.residual_norm):.3g} |")
    return [
        "## Jacobi preconditioning",
        "",
        f"Same network.  Condition number of F + 0.1·I: {cond(dense):.1f}; after Jacobi scaling with the "
        f"Monte-Carlo diagonal (one sampled action per state, {1e3 * t_diag:.0f} ms): "
        f"{cond(scale @ dense @ scale):.1f}.",
        "",
        "| CG iterations | residual ‖g − As‖, plain | residual, Jacobi-preconditioned |",
        "|---|---|---|",
        *rows,
        "",
    ]


def warm_start(updates: int, seeds: list[int]) -> list[str]:
    import gym_trpo

    lines = [
        "## Warm-starting CG from the previous solution",
        "",
        f"Example agent on Pendulum-v1 (rl-zoo settings), {updates} updates × 2048 steps, seeds {seeds}; "
        "mean over updates of the CG residual after the fixed 15 iterations.",
        "",
        "| CG start | mean CG residual | mean CG iterations | final mean training return |",
        "|---|---|---|---|",
    ]
    for ws in (False, True):
        res, its, rets = [], [], []
        for seed in seeds:
            import csv
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                cfg = gym_trpo.config_for(
                    "Pendulum-v1",
                    timesteps=updates * 2048,
                    seed=seed,
                    progress=False,
                    eval_episodes=1,
                    warm_start=ws,
                    out=tmp,
                )
                gym_trpo.train(cfg)
                rows = list(csv.DictReader(open(Path(tmp) / "progress.csv")))
            res += [float(r["cg_residual"]) for r in rows]
            its += [float(r["cg_iterations"]) for r in rows]
            rets.append(float(rows[-1]["mean_return_100"]))
        lines.append(
            f"| {'previous solution' if ws else 'zero'} | {statistics.mean(res):.3g} | "
            f"{statistics.mean(its):.1f} | {statistics.mean(rets):.0f} |"
        )
    return [*lines, ""]


def compiled_product(repeats: int) -> list[str]:
    """``torch.compile`` of the Gaussian ``J^T F_out J v`` written with torch.func, vs eager and natgrad."""
    net, log_std, _, _, obs, _ = gaussian_problem()
    params = {k: v.detach() for k, v in net.named_parameters()}
    inv_var = torch.exp(-2 * log_std.detach())
    n = obs.shape[0]

    def mean_of(p):
        return functional_call(net, p, (obs,))

    def product(p, v):  # J^T (I / σ² / N) J v over the mean network
        _, jv = torch.func.jvp(mean_of, (p,), (v,))
        _, vjp_fn = torch.func.vjp(mean_of, p)
        return vjp_fn(jv * inv_var / n)[0]

    def model_fn(p, x):
        return Independent(Normal(functional_call(net, p, (x,)), log_std.detach().exp()), 1)

    v = {k: torch.randn_like(t) for k, t in params.items()}

    def per_call(f) -> float:
        for _ in range(3):
            f()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        return 1e3 * statistics.median(ts)

    rows = []
    for method in ("reverse", "jvp"):
        op = natgrad.fisher_vector_product(model_fn, params, obs, method=method)
        rows.append((f"natgrad `{method}` (eager)", per_call(lambda op=op: op @ v), None))
    eager = per_call(lambda: product(params, v))
    rows.append(("torch.func jvp + vjp, eager", eager, None))
    t0 = time.perf_counter()
    compiled = torch.compile(product)
    try:
        out = compiled(params, v)
        compile_s = time.perf_counter() - t0
        ref = product(params, v)
        err = max(float((out[k] - ref[k]).abs().max() / ref[k].abs().max()) for k in ref)
        rows.append(
            (f"the same, `torch.compile` (max rel. diff {err:.1e})", per_call(lambda: compiled(params, v)), compile_s)
        )
        note = None
    except Exception as exc:  # an inductor without a C++ compiler, etc.
        note = f"`torch.compile` failed here: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    lines = [
        "## torch.compile",
        "",
        "Gaussian MLP 17-64-64-6, batch 2048, products over the mean network's parameters.",
        "",
        "| product | ms / product | compile (s) |",
        "|---|---|---|",
    ]
    for name, ms, cs in rows:
        lines.append(f"| {name} | {ms:.3f} | {'' if cs is None else f'{cs:.1f}'} |")
    if note:
        lines += ["", note]
    else:
        best_eager = min(ms for _, ms, cs in rows if cs is None)
        saved = best_eager - rows[-1][1]
        if saved > 0.05 * best_eager:
            lines += [
                "",
                f"Break-even against the fastest eager product after {rows[-1][2] * 1e3 / saved:,.0f} products.",
            ]
        else:
            lines += [
                "",
                "The compiled product is not meaningfully faster than natgrad's fastest eager product: compile does not pay.",
            ]
        lines += [
            "",
            "Compile time is with whatever inductor had in its on-disk cache; a cold first compile takes longer.",
        ]
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "techniques.md"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    lines = [
        "# What each technique buys",
        "",
        f"`python benchmarks/techniques.py` — torch {torch.__version__}, 2 threads, float32.",
        "",
    ]
    lines += subsampling(5 if args.quick else 30)
    lines += preconditioning()
    lines += warm_start(5 if args.quick else 30, [0] if args.quick else [0, 1, 2])
    lines += compiled_product(5 if args.quick else 50)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
