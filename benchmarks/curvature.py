"""Speed of the second-order machinery: natgrad vs sb3-contrib's TRPO vs curvlinops.

    python benchmarks/curvature.py                 # full run at 1 thread, writes benchmarks/results/curvature.md
    python benchmarks/curvature.py --quick         # fewer repeats, no memory workers (smoke test)
    python benchmarks/curvature.py --cases gaussian_mlp categorical_mlp --threads 2

Its peers: ``pip install -c constraints.txt -e ".[bench]"`` (sb3-contrib) and, for curvlinops,
``pip install -c constraints.txt --no-deps -r benchmarks/curvlinops-requirements.txt`` (without the torchvision its
backpack dependency declares, which does not load beside the CPU torch; curvlinops does not need it).

All timings of one table are taken in one process, interleaved round-robin, as the
median over repeats; ratios are natgrad / peer (below 1 means natgrad is faster).
Every method works on the *same* sb3-contrib policy object and the same batch:

* Fisher-vector product per CG iteration (setup excluded, reported separately), on the flat
  ``(P,)`` vector that CG works on: natgrad's products (``reverse`` = default, ``jvp``,
  ``linearize``, ``kl_hvp``; ``FisherOperator.flat``), sb3-contrib's
  ``TRPO.hessian_vector_product`` on the first-derivative graph built by its own
  ``_compute_actor_grad`` (double backprop of the mean KL), and, when it is installed, curvlinops'
  ``GGNLinearOperator`` matvec (mean / logits network with ``MSELoss`` / ``CrossEntropyLoss``,
  which is the same Jᵀ F_out J up to a constant; it has no log-std parameter).
* A whole policy update (gradient + up to 15 CG iterations + line search) against
  ``TRPO.train()`` on the same filled rollout buffer, critic epochs off on both sides, by two
  natgrad paths: what a user writes, ``TrustRegionOptimizer(policy.parameters())`` and a closure
  (the value head's parameters take no part), and ``TrustRegionOptimizer(actor_params,
  model=policy)``, which times the product methods on its first step and keeps the cheapest.
* Peak memory, in a fresh worker process that has built the same model and batch: the peak
  resident set size while the setup and 20 products (or 3 updates) run, minus the resident size
  before them (sampled every 0.5 ms), and the peak of the bytes held by tensors during one run
  (the running sum of the profiler's allocation events).  The RSS also counts where the heap
  places the allocations (freed heap pages touched again); the tensor peak is exact.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

import natgrad

RESULTS = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------- problems
class SpacesEnv(gym.Env):
    """A do-nothing environment that only carries observation / action spaces (and random data)."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space):
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed: int | None = None, options: Any = None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), float(self.np_random.standard_normal()), False, False, {}


CASES: dict[str, dict[str, Any]] = {
    "gaussian_mlp": dict(
        title="Gaussian MLP 17-64-64-6, batch 2048",
        obs=gym.spaces.Box(-np.inf, np.inf, (17,), np.float32),
        act=gym.spaces.Box(-1, 1, (6,), np.float32),
        batch=2048,
        policy="MlpPolicy",
    ),
    "categorical_mlp": dict(
        title="Categorical MLP 4-64-64-2, batch 2048",
        obs=gym.spaces.Box(-np.inf, np.inf, (4,), np.float32),
        act=gym.spaces.Discrete(2),
        batch=2048,
        policy="MlpPolicy",
    ),
    "cnn": dict(
        title="CNN (sb3 NatureCNN) over 84×84 images, 6 actions, batch 256",
        obs=gym.spaces.Box(0, 255, (1, 84, 84), np.uint8),
        act=gym.spaces.Discrete(6),
        batch=256,
        policy="CnnPolicy",
    ),
}

DAMPING, MAX_KL, CG_ITERS = 0.1, 0.01, 15


@dataclass
class Problem:
    model: Any  # sb3_contrib.TRPO with a filled rollout buffer
    obs: torch.Tensor
    actions: torch.Tensor
    old_log_prob: torch.Tensor
    advantages: torch.Tensor
    actor_params: list[nn.Parameter]
    discrete: bool
    kl_scale: int  # sb3-contrib averages a Gaussian's KL over the A action dimensions: natgrad gets A·max_kl, A·damping


def make_problem(case: str, seed: int = 0) -> Problem:
    from sb3_contrib import TRPO

    spec = CASES[case]
    torch.manual_seed(seed)
    env = SpacesEnv(spec["obs"], spec["act"])
    model = TRPO(
        spec["policy"],
        env,
        n_steps=spec["batch"],
        batch_size=spec["batch"],
        n_critic_updates=0,
        cg_max_steps=CG_ITERS,
        cg_damping=DAMPING,
        target_kl=MAX_KL,
        seed=seed,
        device="cpu",
        verbose=0,
    )
    with warnings.catch_warnings():
        # n_critic_updates=0: sb3-contrib's TRPO.train() logs np.mean of its (empty) list of value losses, which warns
        # "Mean of empty slice"; only its log is affected
        warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
        warnings.filterwarnings("ignore", "invalid value encountered in scalar divide", RuntimeWarning)
        model.learn(total_timesteps=spec["batch"])  # fills the rollout buffer (and takes one update)
    data = next(model.rollout_buffer.get(batch_size=None))
    discrete = isinstance(spec["act"], gym.spaces.Discrete)
    actions = data.actions.long().flatten() if discrete else data.actions
    adv = data.advantages
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    actor = [p for n, p in model.policy.named_parameters() if "value" not in n]
    kl_scale = 1 if discrete else int(np.prod(spec["act"].shape))
    return Problem(model, data.observations, actions, data.old_log_prob, adv, actor, discrete, kl_scale)


def distribution(problem: Problem) -> torch.distributions.Distribution:
    return problem.model.policy.get_distribution(problem.obs).distribution


def log_prob(problem: Problem, dist: torch.distributions.Distribution) -> torch.Tensor:
    lp = dist.log_prob(problem.actions)
    return lp if problem.discrete else lp.sum(-1)


def closure_for(problem: Problem) -> Callable[[], tuple[torch.Tensor, torch.distributions.Distribution]]:
    def closure():
        dist = distribution(problem)
        ratio = torch.exp(log_prob(problem, dist) - problem.old_log_prob)
        return -(ratio * problem.advantages).mean(), dist

    return closure


# ----------------------------------------------------------------------------- products
# every setup returns a product on flat (P,) vectors, the layout CG works on
FlatProduct = Callable[[torch.Tensor], Any]


def natgrad_graph(problem: Problem, method: str) -> Callable[[], FlatProduct]:
    def setup():
        op = natgrad.graph_fisher_vector_product(
            distribution(problem), problem.actor_params, damping=DAMPING, method=method
        )
        return op.flat

    return setup


def natgrad_functional(problem: Problem, method: str) -> Callable[[], FlatProduct]:
    policy = problem.model.policy
    names = {id(p): n for n, p in policy.named_parameters()}
    keys = [names[id(p)] for p in problem.actor_params]

    def model_fn(params: dict[str, torch.Tensor], obs: torch.Tensor):
        with natgrad.swap_parameters(policy, params):
            return policy.get_distribution(obs).distribution

    def setup():
        params = {k: p.detach() for k, p in zip(keys, problem.actor_params)}
        return natgrad.fisher_vector_product(model_fn, params, problem.obs, damping=DAMPING, method=method).flat

    return setup


def sb3_hvp(problem: Problem) -> Callable[[], FlatProduct]:
    from stable_baselines3.common.distributions import kl_divergence

    model = problem.model

    def setup():
        with torch.no_grad():
            old = copy.copy(model.policy.get_distribution(problem.obs))
        dist = model.policy.get_distribution(problem.obs)
        ratio = torch.exp(dist.log_prob(problem.actions) - problem.old_log_prob)
        objective = (problem.advantages * ratio).mean()
        kl = kl_divergence(dist, old).mean()
        params, _, grad_kl, _ = model._compute_actor_grad(kl, objective)
        return partial(model.hessian_vector_product, params, grad_kl)

    return setup


class _MeanNet(nn.Module):
    """The sb3 policy's mean / logits path as a plain module (what curvlinops needs)."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.policy = policy

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        p = self.policy
        feats = p.extract_features(obs, p.pi_features_extractor)
        return p.action_net(p.mlp_extractor.forward_actor(feats))


def curvlinops_ggn(problem: Problem) -> tuple[Callable[[], FlatProduct], list[nn.Parameter]] | None:
    """curvlinops' GGN product, or None when curvlinops is not installed."""
    try:
        from curvlinops import GGNLinearOperator
    except ImportError:
        return None

    # curvlinops rewires the parameters of the module it is given; hand it a copy of the policy
    net = _MeanNet(copy.deepcopy(problem.model.policy))
    params = [p for n, p in net.policy.named_parameters() if "value" not in n and n != "log_std"]
    loss = nn.CrossEntropyLoss() if problem.discrete else nn.MSELoss()
    target = problem.actions

    def setup():
        op = GGNLinearOperator(net, loss, params, [(problem.obs, target)], check_deterministic=False)
        return lambda v: op @ v

    return setup, params


# ----------------------------------------------------------------------------- timing helpers
def median_ms(samples: list[float]) -> float:
    return 1e3 * statistics.median(samples)


def time_products(
    setups: dict[str, tuple[Callable, list[torch.Tensor]]], repeats: int, warmup: int = 3
) -> dict[str, dict[str, float]]:
    """Round-robin timing so that machine noise hits every method alike."""
    ops, vecs = {}, {}
    setup_times: dict[str, list[float]] = {k: [] for k in setups}
    for name, (setup, like) in setups.items():
        for _ in range(3):
            t = time.perf_counter()
            ops[name] = setup()
            setup_times[name].append(time.perf_counter() - t)
        g = torch.Generator().manual_seed(1)
        vecs[name] = torch.randn(sum(p.numel() for p in like), generator=g, dtype=like[0].dtype)
        for _ in range(warmup):
            ops[name](vecs[name])
    prod_times: dict[str, list[float]] = {k: [] for k in setups}
    for _ in range(repeats):
        for name in setups:
            t = time.perf_counter()
            ops[name](vecs[name])
            prod_times[name].append(time.perf_counter() - t)
    return {k: {"product_ms": median_ms(prod_times[k]), "setup_ms": median_ms(setup_times[k])} for k in setups}


def product_methods(problem: Problem) -> dict[str, tuple[Callable, list[torch.Tensor]]]:
    like = [p.detach() for p in problem.actor_params]
    methods = {
        "natgrad reverse": (natgrad_graph(problem, "reverse"), like),
        "natgrad jvp": (natgrad_functional(problem, "jvp"), like),
        "natgrad linearize": (natgrad_functional(problem, "linearize"), like),
        "natgrad kl_hvp": (natgrad_graph(problem, "kl_hvp"), like),
        "sb3-contrib hvp": (sb3_hvp(problem), like),
    }
    curvlinops = curvlinops_ggn(problem)
    if curvlinops is not None:
        cl_setup, cl_params = curvlinops
        methods["curvlinops GGN"] = (cl_setup, [p.detach() for p in cl_params])
    return methods


# ----------------------------------------------------------------------------- whole update
def natgrad_optimizer(problem: Problem, path: str = "model") -> natgrad.TrustRegionOptimizer:
    """natgrad set up to solve sb3-contrib's system: its CG stopping rule (‖r‖² < 1e-10), its acceptance
    test (any improvement), and its per-action-dimension KL for Gaussians (``kl_scale``).

    ``path="plain"``: what a user writes, ``TrustRegionOptimizer(policy.parameters())`` (the value head's
    parameters are passed too and take no part); ``path="model"``: the actor's parameters with
    ``model=policy``, which times the product methods on the first step and keeps the cheapest."""
    settings = dict(
        max_kl=problem.kl_scale * MAX_KL,
        damping=problem.kl_scale * DAMPING,
        cg_iters=CG_ITERS,
        cg_atol=1e-5,
        accept_ratio=0.0,
    )
    if path == "plain":
        return natgrad.TrustRegionOptimizer(problem.model.policy.parameters(), **settings)
    return natgrad.TrustRegionOptimizer(problem.actor_params, model=problem.model.policy, **settings)


UPDATES = {
    "plain": "natgrad `TrustRegionOptimizer(policy.parameters())` + closure",
    "model": "natgrad `TrustRegionOptimizer(actor_params, model=policy)`",
    "sb3": "sb3-contrib `TRPO.train()` (n_critic_updates=0)",
}


def time_updates(problem: Problem, repeats: int) -> dict[str, Any]:
    """Whole updates from the same parameters, natgrad's two paths and sb3-contrib interleaved; the first
    round (natgrad's automatic choice happens there) is a warm-up."""
    model = problem.model
    snapshot = copy.deepcopy(model.policy.state_dict())
    closure = closure_for(problem)
    opts = {path: natgrad_optimizer(problem, path) for path in ("plain", "model")}
    runs: dict[str, Callable[[], Any]] = {path: partial(opt.step, closure) for path, opt in opts.items()}
    runs["sb3"] = model.train
    times: dict[str, list[float]] = {k: [] for k in runs}
    cg_iters: dict[str, list[int]] = {k: [] for k in opts}
    for r in range(repeats + 1):
        for name, run in runs.items():
            model.policy.load_state_dict(snapshot)
            t = time.perf_counter()
            info = run()
            dt = time.perf_counter() - t
            if r:
                times[name].append(dt)
                if name in cg_iters:
                    cg_iters[name].append(info.cg_iterations)
    model.policy.load_state_dict(snapshot)
    out: dict[str, Any] = {k: {"update_ms": median_ms(v)} for k, v in times.items()}
    for path, opt in opts.items():
        out[path]["cg_iterations"] = statistics.median(cg_iters[path])
        out[path]["fvp_method"] = opt.tuned_fvp_method or "reverse"
    out["timings_ms"] = {
        m: {"setup": 1e3 * t.setup, "product": 1e3 * t.product, "error": t.error}
        for m, t in (opts["model"].fvp_timings or {}).items()
    }
    return out


# ----------------------------------------------------------------------------- memory workers
class PeakRSS:
    """Peak resident set size while the block runs, sampled every 0.5 ms from /proc/self/statm,
    minus the resident size at entry (after returning freed heap memory to the OS)."""

    def __enter__(self) -> PeakRSS:
        import ctypes
        import threading

        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
        self.page = resource.getpagesize()
        self.base = self._rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self.page

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(0.0005)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def increase_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def peak_tensor_mb(run: Callable[[], Any]) -> float:
    """Peak of the bytes held by tensors while ``run()`` runs, above those held at its start: the running sum
    of the profiler's allocation events (exact, and free of the heap's placement and fragmentation, which the
    resident set size also counts)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak / 2**20


def worker(case: str, method: str) -> dict[str, float]:
    """Runs in a fresh process: peak-RSS increase of `method` over the shared setup, then its peak tensor
    memory (a second run under the profiler)."""
    torch.set_num_threads(THREADS)
    problem = make_problem(case)
    if method.startswith("update:"):
        which = method.split(":", 1)[1]
        opt = natgrad_optimizer(problem, which) if which in ("plain", "model") else None
        closure = closure_for(problem)
        if opt is not None:
            opt.step(closure)  # the automatic method choice happens on the first step: not measured

        def run(n: int) -> None:
            for _ in range(n):
                opt.step(closure) if opt is not None else problem.model.train()

    else:
        setup, like = product_methods(problem)[method]
        v = torch.randn(sum(p.numel() for p in like), dtype=like[0].dtype)

        def run(n: int) -> None:
            op = setup()
            for _ in range(20 * n):
                op(v)

    with PeakRSS() as mem:
        run(3)
    return {"peak_rss_increase_mb": mem.increase_mb, "peak_tensor_mb": peak_tensor_mb(partial(run, 1))}


def memory(case: str, method: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", case, method, "--threads", str(THREADS)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main
THREADS = 1


def run_case(case: str, repeats: int, quick: bool) -> tuple[list[str], dict[str, Any]]:
    """Time one problem; its markdown section and its JSON summary."""
    problem = make_problem(case)
    n_params = sum(p.numel() for p in problem.actor_params)
    prod = time_products(product_methods(problem), repeats)
    upd = time_updates(problem, max(3, repeats // 3))
    mem: dict[str, dict[str, float]] = {}
    if not quick:
        for method in [*prod, "update:plain", "update:model", "update:sb3"]:
            mem[method] = memory(case, method)
    chosen = upd["model"]["fvp_method"]  # the model= optimizer's choice after its updates
    ours = prod[f"natgrad {chosen}"]["product_ms"]
    lines = [f"## {CASES[case]['title']} ({n_params} policy parameters)", ""]
    lines += product_table(prod, mem, chosen, upd["timings_ms"])
    lines += update_table(upd, mem)
    summary = {
        "auto_method": chosen,
        "products": prod,
        "updates": upd,
        "memory_mb": mem,
        "ratio_product_vs_sb3": ours / prod["sb3-contrib hvp"]["product_ms"],
        "ratio_update_vs_sb3": {path: upd[path]["update_ms"] / upd["sb3"]["update_ms"] for path in ("plain", "model")},
    }
    if "curvlinops GGN" in prod:
        summary["ratio_product_vs_curvlinops"] = ours / prod["curvlinops GGN"]["product_ms"]
    ratios = summary["ratio_update_vs_sb3"]
    print(
        f"{case}: product {ours:.3f} ms = {summary['ratio_product_vs_sb3']:.2f}× sb3; update plain "
        f"{upd['plain']['update_ms']:.1f} ms = {ratios['plain']:.2f}× sb3, model= ({chosen}) "
        f"{upd['model']['update_ms']:.1f} ms = {ratios['model']:.2f}× sb3 ({upd['sb3']['update_ms']:.1f} ms); "
        f"peak memory (RSS / tensors) plain {mb(mem, 'update:plain')}, model= {mb(mem, 'update:model')}, "
        f"sb3 {mb(mem, 'update:sb3')} MB",
        flush=True,
    )
    return lines, summary


def product_table(
    prod: dict[str, dict[str, float]], mem: dict[str, dict[str, float]], chosen: str, timings: dict[str, Any]
) -> list[str]:
    """The per-product table, ratios against the product of natgrad's automatic choice."""
    ours_name = f"natgrad {chosen}"
    ours = prod[ours_name]["product_ms"]
    seen = ", ".join(
        f"`{m}` {t['setup']:.1f} + k × {t['product']:.2f} ms" if not t["error"] else f"`{m}` failed ({t['error']})"
        for m, t in timings.items()
    )
    lines = [
        f"natgrad's automatic choice on this model (`model=policy`): `{chosen}` (the reference of the ratio "
        f"column); the optimizer's first-step timings, setup + k products: {seen}.",
        "",
        "| Fisher-vector product | per product (ms) | ratio natgrad / this | setup (ms) "
        "| peak memory (MB): RSS increase / tensors |",
        "|---|---|---|---|---|",
    ]
    for name, r in prod.items():
        m = mb(mem, name)
        label = f"**{name}** (auto)" if name == ours_name else name
        lines.append(f"| {label} | {r['product_ms']:.3f} | {ours / r['product_ms']:.2f} | {r['setup_ms']:.2f} | {m} |")
    if "curvlinops GGN" not in prod:
        lines += ["", "(curvlinops is not installed: no GGN row.)"]
    return lines


def mb(mem: dict[str, dict[str, float]], key: str) -> str:
    """Peak memory in MB, ``RSS increase / tensors``, or a dash when not measured (``--quick``)."""
    if key not in mem:
        return "—"
    return f"{mem[key]['peak_rss_increase_mb']:.1f} / {mem[key]['peak_tensor_mb']:.1f}"


def update_table(upd: dict[str, Any], mem: dict[str, dict[str, float]]) -> list[str]:
    """The whole-update table: natgrad's two paths and sb3-contrib, time and peak memory."""
    sb3 = upd["sb3"]["update_ms"]
    lines = [
        "",
        f"| whole policy update (up to {CG_ITERS} CG iterations + line search) | time (ms) | ratio natgrad / sb3 "
        "| CG iterations | peak memory (MB): RSS increase / tensors |",
        "|---|---|---|---|---|",
    ]
    for path in ("plain", "model", "sb3"):
        r = upd[path]
        label = UPDATES[path] + (f" (chose `{r['fvp_method']}`)" if path == "model" else "")
        ratio = f"**{r['update_ms'] / sb3:.2f}**" if path != "sb3" else "1"
        iters = f"{r['cg_iterations']:g}" if "cg_iterations" in r else "—"
        lines.append(f"| {label} | {r['update_ms']:.1f} | {ratio} | {iters} | {mb(mem, f'update:{path}')} |")
    return [*lines, ""]


def main() -> None:
    global THREADS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repeats, no memory workers")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: the CI machine's 2 cores are shared by other jobs)"
    )
    parser.add_argument("--out", default=str(RESULTS / "curvature.md"))
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    THREADS = args.threads
    torch.set_num_threads(THREADS)
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return
    repeats = 5 if args.quick else 30
    lines = [
        "# Curvature benchmark: natgrad vs sb3-contrib vs curvlinops",
        "",
        f"`python benchmarks/curvature.py` — {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {THREADS} thread{'s' if THREADS > 1 else ''}, float32, damping {DAMPING}, "
        f"{'quick run' if args.quick else f'median of {repeats} repeats'}.  Ratios are natgrad / peer "
        "(< 1: natgrad faster); every table's timings were taken interleaved in one process.",
        "",
    ]
    summary: dict[str, Any] = {}
    for case in args.cases:
        case_lines, summary[case] = run_case(case, repeats, args.quick)
        lines += case_lines
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
