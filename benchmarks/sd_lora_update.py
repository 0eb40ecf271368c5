"""One LoRA TRPO update at Stable Diffusion v1.5 size (RANDOM weights): where the time goes, and peak memory against the
number of DDIM steps, with and without chunking.

    python benchmarks/sd_lora_update.py                                  # CPU, 256 px, fp32 → results/sd_lora_update.md
    python benchmarks/sd_lora_update.py --device cuda --dtype float16 --resolution 512 --out results/sd_lora_update_gpu.md

The model is :func:`natgrad_diffusion.sampling.sd_layout.sd15_components` (the published SD v1.5 architecture, ~860M
UNet parameters, random seeded weights: it measures speed and memory, never image quality).  Every configuration runs
in a fresh subprocess (a clean peak: ``VmHWM`` reset through ``/proc/self/clear_refs`` before the measured work on
the CPU, ``torch.cuda.max_memory_allocated`` on a GPU), with an address-space limit once the model is built
(``--memory-limit-gb``) so that
running out of memory is a result (the step count at which it stopped), not a dead machine.

* **Time** (per LoRA rank): on the same rollout of ``--prompts`` × ``--images`` images × ``--time-steps`` DDIM steps,
  a forward + backward of the surrogate on one chunk of ``--chunk`` decisions, a no-grad forward of it (the unit of the
  line search and of PPO's KL diagnostic), one Fisher-vector product on that chunk (``reverse``: graph built once, two
  backward passes; ``jvp``: ``torch.func`` jvp + vjp), and, for the ``--update-ranks``, the whole TRPO update (the
  job's 6 CG iterations, the Fisher on ``--fisher-decisions`` of the decisions, as ``--fvp-subsample`` does in a job)
  and one PPO epoch on all the decisions (the agent's update: one pass of forward + backward, then its KL diagnostic).
  The cost model :math:`T_{TRPO} \approx M t_{fb} + k S t_{F} + c M t_{f}` (``M`` decisions, ``k`` products, ``S``
  Fisher decisions, ``c`` line-search candidates) is printed beside the measured update.
* **Memory** (per DDIM step count): one TRPO update of two images with chunks of ``--chunk`` decisions (its work limited
  to ``--work`` decisions by ``decision_subsample``, the Fisher on ``--fisher-decisions`` of them, while the trajectory
  of every step is stored and sampled), and the same update with every chunk as large as all the decisions (no
  chunking).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import reset_peak_rss, status_kb  # noqa: E402

PROMPTS = ["a crater on mars", "two craters lit from the west"]


def _reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_peak_rss()


def _peak_gb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 1e9
    return status_kb("VmHWM") / 1e6


def _median(fn, repeats: int, sync) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _setup(spec: dict):
    import torch

    from natgrad_diffusion.core.config import CHUNKS, PPO, SAMPLING, TRAINING
    from natgrad_diffusion.sampling.policies import make_policy
    from natgrad_diffusion.sampling.sd_layout import sd15_components
    from natgrad_diffusion.training.agents import PPOAgent, TRPOAgent

    dtype = getattr(torch, spec["dtype"])
    comps = sd15_components(width=spec["width"], resolution=spec["resolution"], dtype=dtype,
                            tokenizer_dir=tempfile.mkdtemp(prefix="sd15_tokenizer_")).to(spec["device"])  # fmt: skip
    policy = make_policy("lora", comps, rank=spec["rank"])
    from dataclasses import replace

    sampling = replace(SAMPLING, num_inference_steps=spec["steps"], images_per_prompt=spec["images"],
                       guidance_scale=7.5, eta=1.0)  # fmt: skip
    m = len(spec["prompts"]) * spec["images"] * spec["steps"]
    chunk = spec["chunk"] if spec["chunked"] else m
    chunks = replace(CHUNKS, grad_chunk=chunk, fvp_chunk=chunk, eval_chunk=chunk, fvp_subsample=spec["fisher"],
                     fvp_min_decisions=1, decision_subsample=spec.get("work") or 1.0)  # fmt: skip
    reward = lambda images, prompts: images.float().mean(dim=(1, 2, 3))  # noqa: E731  (the cost does not depend on it)
    trpo = TRPOAgent(comps, policy, reward, sampling=sampling, trust_region=TRAINING.trust_region, chunks=chunks)
    ppo = PPOAgent(comps, policy, reward, sampling=sampling, ppo=replace(PPO, epochs=1, minibatch=chunk))
    return torch, comps, policy, trpo, ppo, chunks


def worker(spec: dict) -> dict:
    """One configuration, in this (fresh) process (module docstring)."""
    import torch

    torch.set_num_threads(spec["threads"])
    warnings.simplefilter("ignore")
    start = time.perf_counter()
    torch, comps, policy, trpo, ppo, chunks = _setup(spec)
    if spec["memory_limit_gb"] and not spec["device"].startswith("cuda"):  # on the sampling and the update
        limit = int(spec["memory_limit_gb"] * 1e9)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out: dict = {"spec": spec, "unet_params": sum(p.numel() for p in comps.unet.parameters()),
                 "lora_params": sum(p.numel() for p in policy.trainable_parameters().values())}  # fmt: skip
    device = spec["device"]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    try:
        rollout = trpo.collect(spec["prompts"])
        out["decisions"] = len(rollout.decisions)
        out["setup_seconds"] = time.perf_counter() - start
        if spec["kind"] == "time":
            out.update(_time_pieces(spec, policy, trpo, ppo, rollout, chunks, sync))
        else:
            _reset_peak(device)
            t = time.perf_counter()
            info = trpo.update_policy(rollout)["policy"]
            out.update(seconds=time.perf_counter() - t, peak_gb=_peak_gb(device), accepted=info["accepted"],
                       candidates=info.get("line_search_iterations"), status="ok")  # fmt: skip
    except (MemoryError, RuntimeError, OSError) as exc:  # the address-space limit, or CUDA out of memory
        if not isinstance(exc, MemoryError) and "memory" not in str(exc).lower():
            raise
        out.update(status="out of memory", error=str(exc).splitlines()[0][:160])
    return out


def _time_pieces(spec, policy, trpo, ppo, rollout, chunks, sync) -> dict:
    import torch

    from natgrad_diffusion.sampling.ddim import step_distribution
    from natgrad_diffusion.training.chunked_trpo import chunked_fisher, importance_ratio

    params = policy.trainable_parameters()
    leaves = list(params.values())
    d, adv = rollout.decisions.select(slice(0, spec["chunk"])), rollout.advantages[: spec["chunk"]]

    def forward_backward() -> None:
        mean, std = policy.step_mean_std(params, d)
        loss = -(importance_ratio(step_distribution(mean, std), d) * adv.to(mean)).mean()
        torch.autograd.grad(loss, leaves)

    def forward() -> None:
        with torch.no_grad():
            policy.step_mean_std(params, d)

    v = [torch.randn_like(p) for p in leaves]
    times = {"forward + backward": _median(forward_backward, spec["repeats"], sync),
             "no-grad forward": _median(forward, spec["repeats"], sync)}  # fmt: skip
    for method in ("reverse", "jvp"):
        from dataclasses import replace

        op = chunked_fisher(policy, params, d, replace(chunks, fvp_method=method), 0.1, subsample=None,
                            generator=torch.Generator().manual_seed(0))  # fmt: skip
        times[f"Fisher-vector product ({method})"] = _median(lambda op=op: op(v), spec["repeats"], sync)
    out: dict = {"times": times, "status": "ok"}
    if not spec["update"]:
        return out
    saved = {k: p.detach().clone() for k, p in params.items()}
    for name, agent in (("whole TRPO update", trpo), ("one PPO epoch", ppo)):
        sync()
        start = time.perf_counter()
        info = agent.update_policy(rollout)["policy"]
        sync()
        times[name] = time.perf_counter() - start
        if agent is trpo:
            out["trpo_info"] = {k: info.get(k) for k in ("accepted", "line_search_iterations", "cg_iterations", "kl")}
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(saved[k])
    return out


def launch(spec: dict, timeout: float) -> dict:
    """Run :func:`worker` in a fresh process; a crash or a kill by the kernel is reported, not raised."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"spec": spec, "status": f"timed out after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:160]
        killed = proc.returncode < 0 or proc.returncode == 137
        return {"spec": spec, "status": "out of memory (killed)" if killed else f"failed: {tail}"}
    return json.loads(lines[-1])


def fisher_count(fisher: float | int, m: int) -> int:
    """Decisions in the Fisher sub-sample of an update over ``m`` decisions (the job's rule, without its minimum)."""
    return min(m, max(1, round(fisher * m) if isinstance(fisher, float) else int(fisher)))


def cost_model(t: dict, m: int, s: int, k: int, c: int, chunk: int) -> dict:
    """The update's cost from its pieces (seconds per ``chunk`` decisions in ``t``): TRPO ≈ M t_fb + k S t_F + c M t_f,
    PPO's epoch ≈ M t_fb (+ 2 M t_f for its KL diagnostic), and the Fisher fraction S/M at which TRPO costs 2 epochs
    for a large M when the line search accepts its first candidate: (t_fb − t_f) / (k t_F)."""
    fb, fwd, fvp = (t[key] / chunk for key in ("forward + backward", "no-grad forward", "Fisher-vector product (jvp)"))
    return {"trpo": m * fb + k * s * fvp + c * m * fwd, "ppo_epoch": m * fb, "ppo_diagnostic": 2 * m * fwd,
            "fraction_for_2x": max(0.0, (fb - fwd) / (k * fvp))}  # fmt: skip


def _time_summary(r: dict, chunk: int) -> list[str]:
    t, rank = r["times"], r["spec"]["rank"]
    fb = t["forward + backward"]
    out = [f"Rank {rank}: a Fisher-vector product is {t['Fisher-vector product (jvp)'] / fb:.2f}× (jvp) / "
           f"{t['Fisher-vector product (reverse)'] / fb:.2f}× (reverse) a forward + backward of the same chunk "
           "(goal ≤ 3×)."]  # fmt: skip
    if "whole TRPO update" not in t:
        return out
    m, info = r["decisions"], r["trpo_info"]
    s = fisher_count(r["spec"]["fisher"], m)
    k, c = info["cg_iterations"], max(1, info["line_search_iterations"])
    model = cost_model(t, m, s, k, c, chunk)
    first = cost_model(t, m, s, k, 1, chunk)
    default = cost_model(t, 1000, 250, k, 1, chunk)  # the job's 25 % Fisher on a large rollout
    trpo, ppo = t["whole TRPO update"], t["one PPO epoch"]
    epoch = ppo - model["ppo_diagnostic"]
    verdict = "accepted" if info["accepted"] else "rejected"
    out[0] += (f"  The TRPO update on {m} decisions (Fisher on {s}, {k} CG products, {c} line-search candidate(s), "
               f"step {verdict}) took {trpo:.0f} s (the cost model says {model['trpo']:.0f} s): **{trpo / ppo:.2f}×** "
               f"the PPO agent's one-epoch update ({ppo:.0f} s), {trpo / epoch:.2f}× its epoch without the KL "
               f"diagnostic (≈ {epoch:.0f} s) (goal ≤ 2×).  Had the first candidate been accepted, the model gives "
               f"{first['trpo']:.0f} s: {first['trpo'] / ppo:.2f}× / {first['trpo'] / epoch:.2f}×.  By the model, "
               f"TRPO costs 2 epochs (first candidate accepted) when the Fisher runs on "
               f"{100 * model['fraction_for_2x']:.1f} % of the decisions (`--fvp-subsample "
               f"{model['fraction_for_2x']:.2f}`); the job's default, 25 %, costs "
               f"{default['trpo'] / default['ppo_epoch']:.1f}"
               " epochs on a large rollout.")  # fmt: skip
    return out


def _table(results: list[dict], spec: dict) -> list[str]:
    lines = []
    timed = [r for r in results if r["spec"]["kind"] == "time"]
    if timed:
        lines += [f"## Where the time goes ({spec['prompts_n']} prompts × {spec['images']} images × {spec['time_steps']} "
                  f"DDIM steps; chunk {spec['chunk']} decisions; medians of {spec['repeats']})", "",
                  "| LoRA rank | LoRA parameters | piece | seconds | × forward + backward |", "|---:|---:|---|---:|---:|"]  # fmt: skip
        for r in timed:
            if r["status"] != "ok":
                lines.append(f"| {r['spec']['rank']} | | {r['status']} | | |")
                continue
            base = r["times"]["forward + backward"]
            for piece, t in r["times"].items():
                lines.append(f"| {r['spec']['rank']} | {r['lora_params']:,} | {piece} | {t:.1f} | {t / base:.2f} |")
        lines.append("")
        for r in (r for r in timed if r["status"] == "ok"):
            lines += [*_time_summary(r, spec["chunk"]), ""]
    mem = [r for r in results if r["spec"]["kind"] == "memory"]
    if mem:
        lines += [f"## Peak memory of one update against the DDIM steps (2 images; chunks of {spec['chunk']} decisions, "
                  f"work limited to {spec['work']} decisions, the Fisher on {spec['fisher']:g} of them; LoRA rank {mem[0]['spec']['rank']}; address space limited "
                  f"to {spec['memory_limit_gb']:g} GB)", "",
                  "| DDIM steps | decisions | chunked | peak (GB) | update (s) | status |", "|---:|---:|---|---:|---:|---|"]  # fmt: skip
        for r in mem:
            s = r["spec"]
            peak = f"{r['peak_gb']:.2f}" if "peak_gb" in r else "—"
            secs = f"{r['seconds']:.0f}" if "seconds" in r else "—"
            lines.append(f"| {s['steps']} | {r.get('decisions', '—')} | {'yes' if s['chunked'] else 'no'} | {peak} | "
                         f"{secs} | {r['status']} |")  # fmt: skip
        chunked = [r["peak_gb"] for r in mem if r["spec"]["chunked"] and "peak_gb" in r]
        if len(chunked) > 1:
            lines += ["", f"Chunked: the peak moves {100 * (max(chunked) / min(chunked) - 1):.1f} % from the fewest to "
                      "the most steps (goal: within 10 %)."]  # fmt: skip
    return lines


def run_specs(specs: list[dict], timeout: float) -> list[dict]:
    """Every configuration in a fresh process; the runs without chunking stop at the first that runs out of memory."""
    results, stopped = [], False
    for spec in specs:
        if spec["kind"] == "memory" and not spec["chunked"] and stopped:
            results.append({"spec": spec, "status": "not run (fewer steps already ran out of memory)"})
            continue
        r = launch(spec, timeout)
        stopped = stopped or (not spec["chunked"] and r["status"] != "ok")
        results.append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "spec"} | {"kind": spec["kind"], "rank": spec["rank"],
                          "steps": spec["steps"], "chunked": spec["chunked"]}), flush=True)  # fmt: skip
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    p.add_argument("--width", type=float, default=1.0, help="channel-width factor (1: SD v1.5; tests use 1/40)")
    p.add_argument("--resolution", type=int, default=256, help="image side (256: 32×32 latents)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ranks", type=int, nargs="+", default=[4, 16])
    p.add_argument("--prompts", type=int, default=1, help="prompts of the timed rollout")
    p.add_argument("--images", type=int, default=2, help="images per prompt (>= 2: advantages are per prompt)")
    p.add_argument("--time-steps", type=int, default=8, help="DDIM steps of the timed rollout")
    p.add_argument(
        "--update-ranks",
        type=int,
        nargs="*",
        default=[4],
        help="ranks whose whole TRPO update and PPO epoch are timed (the others: the pieces only)",
    )
    p.add_argument(
        "--fisher-decisions",
        type=float,
        default=1,
        help="Fisher sub-sample of the whole updates: a count (>= 1) or a fraction (< 1)",
    )
    p.add_argument("--chunk", type=int, default=1, help="decisions per chunk")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--memory-steps", type=int, nargs="*", default=[10, 20, 50])
    p.add_argument("--memory-rank", type=int, default=4)
    p.add_argument("--work", type=int, default=2, help="decisions an update of the memory runs works on")
    p.add_argument("--no-unchunked", action="store_true", help="skip the runs without chunking")
    p.add_argument("--memory-limit-gb", type=float, default=20.0)
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per configuration")
    p.add_argument("--out", type=Path, default=RESULTS / "sd_lora_update.md")
    p.add_argument("--report-only", action="store_true", help="rewrite the markdown from the JSON of an earlier run")
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    fisher = int(args.fisher_decisions) if args.fisher_decisions >= 1 else args.fisher_decisions
    base = dict(fisher=fisher, device=args.device, dtype=args.dtype, width=args.width, resolution=args.resolution,
                threads=args.threads, chunk=args.chunk, repeats=args.repeats, memory_limit_gb=args.memory_limit_gb)  # fmt: skip
    specs = [dict(base, kind="time", rank=r, prompts=PROMPTS[: args.prompts], images=args.images,
                  steps=args.time_steps, chunked=True, update=r in args.update_ranks) for r in args.ranks]  # fmt: skip
    for steps in args.memory_steps:
        for chunked in (True, False) if not args.no_unchunked else (True,):
            specs.append(dict(base, kind="memory", rank=args.memory_rank, prompts=PROMPTS[:1], images=2, steps=steps,
                              chunked=chunked, work=args.work if chunked else None))  # fmt: skip
    start = time.perf_counter()
    command, total = " ".join(argv if argv is not None else sys.argv[1:]), None
    if args.report_only:  # the numbers of the run that wrote the JSON, under that run's command and time
        import re

        results = json.loads(args.out.with_suffix(".json").read_text())
        earlier = re.search(r"`python benchmarks/sd_lora_update.py ([^`]*)`.*?(\d+) s in all", args.out.read_text())
        command, total = (earlier.group(1), float(earlier.group(2))) if earlier else (command, float("nan"))
    else:
        results = run_specs(specs, args.timeout)
    unet = next((r["unet_params"] for r in results if "unet_params" in r), 0)
    head = [
        "# One LoRA TRPO update at Stable Diffusion v1.5 size (RANDOM weights)", "",
        f"`python benchmarks/sd_lora_update.py {command}` — "
        f"{platform.processor() or platform.machine()}, {args.device}, {args.dtype}, {args.threads} torch thread(s), "
        f"{args.resolution}×{args.resolution} images ({args.resolution // 8}×{args.resolution // 8} latents), UNet "
        f"{unet / 1e6:.0f}M parameters with random weights (scripts/make_sd15_layout.py's architecture; times and "
        f"memory only), {total if total is not None else time.perf_counter() - start:.0f} s in all, "
        f"{time.strftime('%Y-%m-%d')}.", "",
    ]  # fmt: skip
    table = _table(results, {**base, "prompts_n": args.prompts, "images": args.images, "time_steps": args.time_steps,
                             "work": args.work})  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(head + table) + "\n", encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print("\n".join(head + table))


if __name__ == "__main__":
    main()
