"""Where does a trust region pay in diffusion fine-tuning?  TRPO vs PPO vs the KL-regularised policy gradient on the
two-stage recipe, judged by what neither stage optimised.

The successor of ``trpo_vs_ppo.py`` (removed; at commit 605eb3a; it asked "does TRPO reach a higher reward?" in the reward's own space).
TRPO's claim is monotone, predictable progress; this measures it.

* **Start**: the supervised model of the main job (``natgrad_diffusion.supervised.stage.finetune`` on the real
  crops, seed 0, the job's settings), trained once into ``WORK/supervised`` and shared by every run.
* **Methods**: TRPO (natgrad; knob ``max_kl``), PPO tuned (knob ``ppo_lr`` at 4 epochs, clip 0.2), PPO with DDPO's
  recipe (fixed), the KL-regularised policy gradient of DPOK (``--algorithm klpg``; knob ``klpg_beta``, one epoch
  at the learning rate PPO's tuning selected), TRPO with K-FAC (``LORA_UNET``, at TRPO's selected ``max_kl``), and
  no RL: the supervised model itself (equal images) and the supervised stage run on for as long as a TRPO run takes
  (equal wall time).
* **Tuning** on a tuning seed used nowhere else, grids ×3 apart; a best setting at the edge of its grid adds the next
  point beyond it (``--extend`` times).  **Selection** on the *validation* split only: the lowest classifier
  two-sample accuracy (real validation crops vs generated), ties within the best run's fold SD broken by the highest
  ResNet-18 coverage.  The reward is never used to select.
* **Final runs**: the selected settings on ``--seeds``, judged on the *evaluation* split at every stop
  (``--stop-every`` episodes: the curves against wall time and KL from the start) and at the end (equal images).
  Equal wall time: every method judged at its last stop within the shortest method's mean wall time.
* **Report** (``benchmarks/results/trust_region_study.{md,json}``, frontier PNGs): final judges mean ± SD with
  Welch's p against TRPO; robustness (the fraction of each grid that improves on the start by the two-sample test
  *and* coverage with crater presence not lower; the spread over seeds; the change across a ×3 step of the knob);
  predictability (realised KL per update against the target; KL from the start); cost (seconds per update; wall
  time to the supervised model's coverage + 10 %).

Every run is a subprocess on one torch thread (``--parallel`` at a time) writing ``study.json`` in its folder; a
finished run is reused and an interrupted one continues from its last checkpoint, so the study resumes.

    python benchmarks/trust_region_study.py                      # LORA_UNET (see the results file for its time)
    python benchmarks/trust_region_study.py --modes LORA_UNET,DIVERSITY_POLICY,SCHEDULER_POLICY
    python benchmarks/trust_region_study.py --quick              # minutes: tiny runs, the whole pipeline (tests)
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import welch  # noqa: E402

from natgrad_diffusion.core.logs import atomic_write_text  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TUNING_SEED = 100
#: method → (fixed settings, knob, grid); "klpg_lr" is filled in from PPO's selection
KNOBS: dict[str, tuple[dict[str, Any], str, list[float]]] = {
    "TRPO": ({"algorithm": "trpo"}, "max_kl", [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]),
    "PPO (tuned)": ({"algorithm": "ppo", "ppo_epochs": 4}, "ppo_lr", [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]),
    "KL-regularised PG": ({"algorithm": "klpg", "klpg_epochs": 1}, "klpg_beta", [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]),
}
DDPO = {"algorithm": "ppo", "ppo_mean_logprob": True, "ppo_clip_range": 1e-4, "ppo_lr": 3e-4, "ppo_adv_clip": 5.0}
#: the judges of the report: (key, label, lower is better)
JUDGES = [("two_sample", "two-sample acc.", True), ("resnet18/coverage", "coverage resnet18", False),
          ("resnet18/precision", "precision resnet18", False), ("resnet18/recall", "recall resnet18", False),
          ("resnet18/mmd2", "MMD² resnet18", True), ("pixels/mmd2", "MMD² pixels", True),
          ("spectrum/mmd2", "MMD² spectrum", True), ("resnet18/vendi_within_prompt", "Vendi within caption resnet18", False),
          ("crater/mmd2", "MMD² crater*", True), ("crater_present", "crater present", False),
          ("caption_fidelity", "caption fidelity", False), ("memorisation", "memorisation", True)]  # fmt: skip
MODES = ("LORA_UNET", "DIVERSITY_POLICY", "SCHEDULER_POLICY")
QUICK = {"steps": 2, "batch_size": 4, "images_per_prompt": 2}


# ---------------------------------------------------------------------------------------------------- the worker
def _judge(config: Any, components: Any, policy: Any, split: str, n: int | None) -> dict[str, float]:
    from natgrad_diffusion.recipe import RecipeJudge
    from natgrad_diffusion.training.checks import resolve_defaults

    judge = RecipeJudge(resolve_defaults(config), components.image_shape(), n, split)
    return judge.judge(judge.sample(components, policy))


def _log_summary(run_dir: Path) -> dict[str, Any]:
    from natgrad_diffusion.core.logs import read_csv

    rows = read_csv(run_dir / "train.csv")
    num = lambda r, k: float(r[k]) if r.get(k) not in ("", None) else math.nan  # noqa: E731
    return {"episode": [int(r["episode"]) for r in rows], "kl": [num(r, "kl") for r in rows],
            "max_kl": [num(r, "max_kl") for r in rows], "time_update_s": [num(r, "time_update_s") for r in rows],
            "wall_s": [num(r, "wall_s") for r in rows], "kl_start": [num(r, "kl_start") for r in rows]}  # fmt: skip


def worker(spec: dict[str, Any]) -> None:
    """One run of the study in this process (module docstring): train to each stop, judge, record."""
    import warnings
    from dataclasses import replace

    import torch

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    out = Path(spec["out"])
    record_path = out.with_name(out.name + ".study.json")
    record = json.loads(record_path.read_text()) if record_path.is_file() else {"spec": spec, "stops": {}}
    if spec["kind"] == "supervised":
        _supervised_worker(spec, record, record_path)
        return
    from natgrad_diffusion.core.config import TRAINING
    from natgrad_diffusion.core.flat_settings import with_settings
    from natgrad_diffusion.training.loop import train

    base = replace(TRAINING, model=spec["model"], mode=spec["mode"], seed=spec["seed"], threads=1, evaluate=False,
                   eval_baselines=False, checkpoint_every=spec["stops"][0], grid_every=10_000, out=str(out))  # fmt: skip
    base = with_settings(base, {**spec.get("job", {}), **spec["settings"]})
    for stop in spec["stops"]:
        if str(stop) in record["stops"]:
            continue
        result = train(replace(base, episodes=stop), resume=True, progress=False, log=None)
        log = _log_summary(out)
        entry = {"episodes": stop, "wall_s": log["wall_s"][-1], "kl_start": log["kl_start"][-1]}
        if spec["judge_stops"] or stop == spec["stops"][-1]:
            entry["judges"] = _judge(base, result.components, result.policy, spec["split"], spec["n"])
        record["stops"][str(stop)] = entry
        record["log"] = log
        atomic_write_text(record_path, json.dumps(record, indent=1))
    record["done"] = True
    atomic_write_text(record_path, json.dumps(record, indent=1))


def _supervised_worker(spec: dict[str, Any], record: dict[str, Any], record_path: Path) -> None:
    """The start model (``steps`` of the supervised stage), judged on both splits; ``seconds`` of training recorded."""
    from dataclasses import replace

    from natgrad_diffusion.core.config import SUPERVISED, TRAINING
    from natgrad_diffusion.core.flat_settings import with_settings
    from natgrad_diffusion.sampling.models import DEFAULT_MODEL_DIR, load_model
    from natgrad_diffusion.supervised.stage import SUPERVISED_FILE, finetune, training_set

    out = Path(spec["out"])
    if not (out / SUPERVISED_FILE).is_file():
        sup = replace(SUPERVISED, seed=0, threads=1, **({"steps": spec["steps"]} if spec.get("steps") else {}))
        result = finetune(load_model(None), training_set("mars"), out, sup, overwrite=True, progress=False,
                          source=str(DEFAULT_MODEL_DIR), say=lambda _m: None)  # fmt: skip
        record["seconds"], record["steps"] = result.seconds, result.steps
    config = with_settings(replace(TRAINING, model=str(out), threads=1), spec.get("job", {}))
    components = load_model(str(out))
    for split in ("validation", "evaluation"):
        record.setdefault("judges", {})[split] = _judge(config, components, None, split, spec["n"])
    record["done"] = True
    atomic_write_text(record_path, json.dumps(record, indent=1))


# ---------------------------------------------------------------------------------------------------- the driver
def _record(out: Path) -> dict[str, Any]:
    path = out.with_name(out.name + ".study.json")
    return json.loads(path.read_text()) if path.is_file() else {}


def run_all(specs: list[dict[str, Any]], parallel: int) -> None:
    """Start every unfinished run, ``parallel`` at a time; a failure stops the study naming its log."""
    todo = [s for s in specs if not _record(Path(s["out"])).get("done")]
    running: list[tuple[dict[str, Any], subprocess.Popen]] = []
    while todo or running:
        while todo and len(running) < parallel:
            spec = todo.pop(0)
            out = Path(spec["out"])
            out.parent.mkdir(parents=True, exist_ok=True)
            log = open(out.with_name(out.name + ".log"), "a")
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
            running.append((spec, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)))
            print(f"started {spec['name']}", flush=True)
        time.sleep(1)
        for spec, proc in list(running):
            if proc.poll() is not None:
                running.remove((spec, proc))
                if proc.returncode:
                    raise SystemExit(f"run {spec['name']} failed; see {spec['out']}.log")
                print(f"done {spec['name']}", flush=True)


def select(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The row with the lowest validation two-sample accuracy; within its fold SD, the highest ResNet-18 coverage."""
    best = min(rows, key=lambda r: r["judges"]["two_sample"])
    sd = best["judges"].get("two_sample_sd", 0.0)
    sd = sd if math.isfinite(sd) else 0.0
    tied = [r for r in rows if r["judges"]["two_sample"] <= best["judges"]["two_sample"] + sd]
    return max(tied, key=lambda r: r["judges"].get("resnet18/coverage", -math.inf))


def improves(j: dict[str, float], start: dict[str, float]) -> bool:
    """Better than the start by the two-sample test and coverage, with crater presence not lower."""
    return (j["two_sample"] < start["two_sample"] and j["resnet18/coverage"] > start["resnet18/coverage"]
            and j["crater_present"] >= start["crater_present"])  # fmt: skip


class Study:
    """The runs of one policy mode and what the report needs from them."""

    def __init__(self, args: argparse.Namespace, mode: str, supervised: dict[str, Any]) -> None:
        self.args, self.mode, self.supervised = args, mode, supervised
        self.work = args.work / mode
        self.job = QUICK if args.quick else {}

    def spec(self, name: str, settings: dict[str, Any], seed: int, folder: str, final: bool) -> dict[str, Any]:
        a = self.args
        episodes = a.final_episodes if final else a.tune_episodes
        every = a.stop_every if final else episodes
        stops = list(range(every, episodes + 1, every)) or [episodes]
        if stops[-1] != episodes:
            stops.append(episodes)
        return {"kind": "run", "name": f"{self.mode} {name} seed {seed}", "mode": self.mode, "seed": seed,
                "settings": settings, "job": self.job, "stops": stops, "judge_stops": final,
                "split": "evaluation" if final else "validation", "n": a.n, "out": str(self.work / folder),
                "model": str(a.work / "supervised")}  # fmt: skip

    def tune(self, method: str, fixed: dict[str, Any]) -> dict[str, Any]:
        """The method's grid on the tuning seed, extended past an edge optimum; every row and the selection."""
        _, knob, grid = KNOBS[method]
        grid = grid[:2] if self.args.quick else list(grid)
        slug = method.split()[0].lower()
        for _ in range(self.args.extend + 1):
            specs = [self.spec(f"tune {method} {knob}={v:g}", {**fixed, knob: v}, TUNING_SEED,
                               f"tune/{slug}_{knob}_{v:g}", False) for v in grid]  # fmt: skip
            run_all(specs, self.args.parallel)
            rows = [{"value": v, "settings": s["settings"], "judges": _record(Path(s["out"]))["stops"][str(s["stops"][-1])]["judges"],
                     "kl_start": _record(Path(s["out"]))["stops"][str(s["stops"][-1])]["kl_start"]}
                    for v, s in zip(grid, specs)]  # fmt: skip
            chosen = select(rows)
            at_edge = chosen["value"] in (grid[0], grid[-1])
            if not at_edge or self.args.quick:
                break
            grid = [grid[0] / 3, *grid] if chosen["value"] == grid[0] else [*grid, grid[-1] * 3]
        return {"knob": knob, "rows": rows, "selected": chosen, "at_edge": at_edge}

    def finals(self, methods: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        specs = {m: [self.spec(m, s, seed, f"final/{_slug(m)}_{seed}", True) for seed in self.args.seeds]
                 for m, s in methods.items()}  # fmt: skip
        run_all([s for ss in specs.values() for s in ss], self.args.parallel)
        return {m: [_record(Path(s["out"])) for s in ss] for m, ss in specs.items()}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def run_mode(args: argparse.Namespace, mode: str, supervised: dict[str, Any]) -> dict[str, Any]:
    """Tune, select and run the finals of one mode; the numbers of its report section."""
    study = Study(args, mode, supervised)
    tuning = {
        "TRPO": study.tune("TRPO", KNOBS["TRPO"][0]),
        "PPO (tuned)": study.tune("PPO (tuned)", KNOBS["PPO (tuned)"][0]),
    }
    ppo_lr = tuning["PPO (tuned)"]["selected"]["value"]
    tuning["KL-regularised PG"] = study.tune("KL-regularised PG", {**KNOBS["KL-regularised PG"][0], "klpg_lr": ppo_lr})
    methods = {m: t["selected"]["settings"] for m, t in tuning.items()}
    methods["PPO (DDPO recipe)"] = DDPO
    if mode == "LORA_UNET" and not args.quick and not args.no_kfac:
        methods["TRPO + K-FAC"] = {**methods["TRPO"], "preconditioner": "kfac"}
    finals = study.finals(methods)
    return {"tuning": tuning, "methods": methods, "finals": finals}


def longer_supervised(args: argparse.Namespace, trpo_wall_s: float, supervised: dict[str, Any]) -> dict[str, Any]:
    """The supervised stage run on for as long as a TRPO run took (its steps scaled by the wall time)."""
    per_step = supervised["seconds"] / supervised["steps"]
    steps = supervised["steps"] + max(1, round(trpo_wall_s / per_step))
    spec = {"kind": "supervised", "name": f"supervised, {steps} steps", "steps": steps, "n": args.n,
            "job": QUICK if args.quick else {}, "out": str(args.work / "supervised_longer")}  # fmt: skip
    run_all([spec], 1)
    return _record(Path(spec["out"]))


# ---------------------------------------------------------------------------------------------------- the numbers
def _final_judges(records: list[dict[str, Any]]) -> list[dict[str, float]]:
    return [r["stops"][max(r["stops"], key=int)]["judges"] for r in records]


def _at_wall(record: dict[str, Any], wall: float) -> dict[str, float] | None:
    """The judges at the run's last stop within ``wall`` seconds of training."""
    stops = [s for s in record["stops"].values() if s["wall_s"] <= wall * 1.02 and "judges" in s]
    return max(stops, key=lambda s: s["wall_s"])["judges"] if stops else None


def summarise(mode_data: dict[str, Any], supervised: dict[str, Any], longer: dict[str, Any] | None) -> dict[str, Any]:
    """Every table of one mode: final judges, Welch's p vs TRPO, equal wall time, robustness, predictability, cost."""
    finals = mode_data["finals"]
    start_val = supervised["judges"]["validation"]
    start_eval = supervised["judges"]["evaluation"]
    rows: dict[str, dict[str, Any]] = {"supervised (no RL, equal images)": {"seeds": [start_eval]}}
    walls = {m: float(np.mean([r["log"]["wall_s"][-1] for r in recs])) for m, recs in finals.items()}
    budget = min(walls.values())
    equal_time: dict[str, dict[str, Any]] = {}
    for m, recs in finals.items():
        rows[m] = {"seeds": _final_judges(recs)}
        at = [j for j in (_at_wall(r, budget) for r in recs) if j is not None]
        equal_time[m] = {"seeds": at}
    if longer is not None:
        rows["supervised run on (no RL, equal wall time)"] = {"seeds": [longer["judges"]["evaluation"]]}
        equal_time["supervised run on (no RL, equal wall time)"] = rows["supervised run on (no RL, equal wall time)"]
    for table in (rows, equal_time):
        for row in table.values():
            row["mean"] = {k: float(np.mean([s[k] for s in row["seeds"]])) for k, _, _ in JUDGES if row["seeds"]}
            row["sd"] = {k: float(np.std([s[k] for s in row["seeds"]], ddof=1)) if len(row["seeds"]) > 1 else math.nan
                         for k, _, _ in JUDGES}  # fmt: skip
    pvals = {m: {k: welch([s[k] for s in rows["TRPO"]["seeds"]], [s[k] for s in rows[m]["seeds"]])[1]
                 for k, _, _ in JUDGES} for m in rows if m != "TRPO"}  # fmt: skip
    robustness, predictability, cost = {}, {}, {}
    cover_goal = 1.1 * start_eval["resnet18/coverage"]
    for m, recs in finals.items():
        t = mode_data["tuning"].get(m)
        ok = [improves(r["judges"], start_val) for r in t["rows"]] if t else []
        spread3 = _knob_spread(t) if t else math.nan
        finals_j = _final_judges(recs)
        robustness[m] = {"grid_improving": (sum(ok), len(ok)), "seed_sd_two_sample": float(np.std([j["two_sample"] for j in finals_j], ddof=1)) if len(finals_j) > 1 else math.nan,
                         "seed_sd_coverage": float(np.std([j["resnet18/coverage"] for j in finals_j], ddof=1)) if len(finals_j) > 1 else math.nan,
                         "knob_x3_two_sample": spread3}  # fmt: skip
        kl = np.asarray([k for r in recs for k in r["log"]["kl"] if math.isfinite(k)])
        target = np.asarray([mk for r in recs for k, mk in zip(r["log"]["kl"], r["log"]["max_kl"]) if math.isfinite(k)])
        ratio = kl / target if target.size == kl.size and np.isfinite(target).all() and target.size else None
        kl_start = [r["log"]["kl_start"][-1] for r in recs]
        predictability[m] = {"kl_median": float(np.median(kl)) if kl.size else math.nan,
                             "kl_p90": float(np.quantile(kl, 0.9)) if kl.size else math.nan,
                             "kl_over_target_median": float(np.median(ratio)) if ratio is not None else None,
                             "kl_over_target_max": float(np.max(ratio)) if ratio is not None else None,
                             "kl_start_mean": float(np.mean(kl_start)), "kl_start_sd": float(np.std(kl_start, ddof=1)) if len(kl_start) > 1 else math.nan}  # fmt: skip
        reach = [_time_to(r, "resnet18/coverage", cover_goal) for r in recs]
        cost[m] = {"s_per_update": float(np.nanmean([x for r in recs for x in r["log"]["time_update_s"]])),
                   "wall_s": walls[m], "reached": sum(x is not None for x in reach), "runs": len(reach),
                   "time_to_coverage_s": float(np.mean([x for x in reach if x is not None])) if any(x is not None for x in reach) else None}  # fmt: skip
    return {"rows": rows, "welch_p": pvals, "equal_time": equal_time, "budget_s": budget, "robustness": robustness,
            "predictability": predictability, "cost": cost, "cover_goal": cover_goal, "start_validation": start_val}  # fmt: skip


def _knob_spread(tuning: dict[str, Any]) -> float:
    """The largest change of the validation two-sample accuracy between the selected setting and a ×3 neighbour."""
    values = sorted(r["value"] for r in tuning["rows"])
    by = {r["value"]: r["judges"]["two_sample"] for r in tuning["rows"]}
    i = values.index(tuning["selected"]["value"])
    near = [values[j] for j in (i - 1, i + 1) if 0 <= j < len(values)]
    return max((abs(by[v] - by[values[i]]) for v in near), default=math.nan)


def _time_to(record: dict[str, Any], key: str, goal: float) -> float | None:
    """Wall seconds of training to the first stop whose ``key`` reaches ``goal`` (``None``: never)."""
    for stop in sorted(record["stops"].values(), key=lambda s: s["episodes"]):
        if "judges" in stop and stop["judges"][key] >= goal:
            return float(stop["wall_s"])
    return None


# ---------------------------------------------------------------------------------------------------- the report
def frontier_plot(mode: str, mode_data: dict[str, Any], start: dict[str, float], out: Path) -> Path:
    """Each judge against the KL from the start, one line per method over its tuning grid (validation split)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for ax, (key, label) in zip(axes, (("two_sample", "two-sample acc. ↓"), ("resnet18/coverage", "coverage resnet18 ↑"),
                                       ("crater_present", "crater present ↑"))):  # fmt: skip
        for method, t in mode_data["tuning"].items():
            pts = sorted((r["kl_start"], r["judges"][key], r["value"]) for r in t["rows"])
            line = ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"{method} ({t['knob']})")[0]
            for x, y, v in pts:
                ax.annotate(f"{v:g}", (x, y), fontsize=6, color=line.get_color())
        ax.axhline(start[key], color="grey", ls="--", lw=1, label="supervised start")
        ax.set_xscale("log")
        ax.set_xlabel("KL from the start, nats per decision (end of the tuning run)")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{mode}: validation judges against the distance from the start, over each method's grid", fontsize=10)
    fig.tight_layout()
    path = out.parent / f"{out.stem}_{mode.lower()}_frontier.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _stop_value(entry: dict[str, Any], key: str) -> float:
    return entry["kl_start"] if key == "kl_start" else entry["judges"][key]


def curves_plot(mode: str, mode_data: dict[str, Any], start: dict[str, float], out: Path) -> Path:
    """The final runs over their stops (evaluation split; mean over seeds): KL from the start, the two-sample
    accuracy and coverage against the wall time of training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    panels = (("kl_start", "KL from the start, nats per decision"), ("two_sample", "two-sample acc. ↓"),
              ("resnet18/coverage", "coverage resnet18 ↑"))  # fmt: skip
    for method, records in mode_data["finals"].items():
        stops = sorted({int(k) for r in records for k in r["stops"]})
        wall = [np.mean([r["stops"][str(k)]["wall_s"] for r in records]) for k in stops]
        for ax, (key, label) in zip(axes, panels):
            y = [np.mean([_stop_value(r["stops"][str(k)], key) for r in records]) for k in stops]
            ax.plot([0.0, *wall], [0.0 if key == "kl_start" else start[key], *y], "o-", label=method)
            ax.set_title(label, fontsize=9)
            ax.set_xlabel("wall time of training, s (one thread)")
            ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(
        f"{mode}: the final runs over time (evaluation split, mean over seeds; t = 0 is the start)", fontsize=10
    )
    fig.tight_layout()
    path = out.parent / f"{out.stem}_{mode.lower()}_curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _cell(mean: float, sd: float) -> str:
    return f"{mean:.4g}" if not math.isfinite(sd) else f"{mean:.4g} ± {sd:.2g}"


def mode_markdown(mode: str, data: dict[str, Any], s: dict[str, Any], plot: Path, curves: Path) -> list[str]:
    head = "| | " + " | ".join(f"{lab} {'↓' if low else '↑'}" for _, lab, low in JUDGES) + " |"
    rule = "|---|" + "---:|" * len(JUDGES)
    lines = [f"## {mode}", "", "### Tuning (tuning seed, validation split; selection: lowest two-sample accuracy, ties "
             "within its fold SD by coverage)", "", "| method | knob | value | two-sample acc. ↓ | coverage ↑ | crater "
             "present ↑ | KL from start | improves on the start |", "|---|---|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for m, t in data["tuning"].items():
        for r in t["rows"]:
            j = r["judges"]
            mark = " **selected**" if r["value"] == t["selected"]["value"] else ""
            lines.append(f"| {m} | {t['knob']} | {r['value']:g}{mark} | {j['two_sample']:.3f} | "
                         f"{j['resnet18/coverage']:.3f} | {j['crater_present']:.3f} | {r['kl_start']:.3g} | "
                         f"{'yes' if improves(j, s['start_validation']) else 'no'} |")  # fmt: skip
        if t["at_edge"]:
            lines.append(f"| {m} | {t['knob']} | **the best is still at the grid's edge** | | | | | |")
    sv = s["start_validation"]
    lines += ["", f"The start (supervised) on the validation split: two-sample {sv['two_sample']:.3f}, coverage "
              f"{sv['resnet18/coverage']:.3f}, crater present {sv['crater_present']:.3f}.", "",
              f"![frontier]({plot.name})", "", "### Final judges, equal images (evaluation split; mean ± SD over seeds)",
              "", head, rule]  # fmt: skip
    for name, row in s["rows"].items():
        lines.append(f"| {name} | " + " | ".join(_cell(row["mean"][k], row["sd"][k]) for k, _, _ in JUDGES) + " |")
    lines += ["", "Welch's p against TRPO:", "", head.replace("| |", "| against |", 1), rule]
    for name, ps in s["welch_p"].items():
        lines.append(f"| {name} | " + " | ".join(f"{ps[k]:.2g}" for k, _, _ in JUDGES) + " |")
    lines += ["", f"![curves]({curves.name})"]
    lines += ["", f"### Equal wall time ({s['budget_s']:.0f} s of training: each run at its last stop within it)", "",
              head, rule]  # fmt: skip
    for name, row in s["equal_time"].items():
        cells = [_cell(row["mean"][k], row["sd"][k]) if row["seeds"] else "—" for k, _, _ in JUDGES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "### Robustness, predictability, cost", "", "| method | grid improving on the start | seed SD two-sample "
              "| seed SD coverage | ×3 knob: largest two-sample change | KL per update median [p90] | realised / "
              "target KL median (max) | KL from start at the end | s / update | wall s / run | to coverage "
              f"{s['cover_goal']:.3f} (supervised + 10 %) |", "|---|---|---:|---:|---:|---|---|---|---:|---:|---|"]  # fmt: skip
    for m in s["robustness"]:
        r, p, c = s["robustness"][m], s["predictability"][m], s["cost"][m]
        target = (f"{p['kl_over_target_median']:.2f} ({p['kl_over_target_max']:.2f})"
                  if p["kl_over_target_median"] is not None else "no target")  # fmt: skip
        reach = (f"{c['time_to_coverage_s']:.0f} s ({c['reached']}/{c['runs']} runs)" if c["reached"]
                 else f"not reached (0/{c['runs']})")  # fmt: skip
        grid = f"{r['grid_improving'][0]}/{r['grid_improving'][1]}" if r["grid_improving"][1] else "(fixed)"
        lines.append(f"| {m} | {grid} | {r['seed_sd_two_sample']:.3f} | {r['seed_sd_coverage']:.3f} | "
                     f"{r['knob_x3_two_sample']:.3f} | {p['kl_median']:.3g} [{p['kl_p90']:.3g}] | {target} | "
                     f"{_cell(p['kl_start_mean'], p['kl_start_sd'])} | {c['s_per_update']:.2f} | {c['wall_s']:.0f} | "
                     f"{reach} |")  # fmt: skip
    return [*lines, ""]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="tiny runs (minutes): the whole pipeline")
    p.add_argument("--modes", default="LORA_UNET", help="comma-separated policy modes")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="final-run seeds (default 0 1 2 3 4)")
    p.add_argument("--tune-episodes", type=int, default=None, help="episodes of a tuning run (default 10)")
    p.add_argument("--final-episodes", type=int, default=None, help="episodes of a final run (default 20)")
    p.add_argument("--stop-every", type=int, default=None, help="judge the final runs every N episodes (default 5)")
    p.add_argument("--extend", type=int, default=1, help="grid extensions past an edge optimum")
    p.add_argument("--n", type=int, default=None, help="images per judgement (default: the validation crops')")
    p.add_argument("--parallel", type=int, default=2, help="runs at a time (one torch thread each)")
    p.add_argument("--no-longer-supervised", action="store_true", help="skip the equal-wall-time supervised row")
    p.add_argument("--no-kfac", action="store_true", help="skip the final runs of TRPO with K-FAC (LORA_UNET)")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "trust_region_study")
    p.add_argument("--out", type=Path, default=RESULTS / "trust_region_study.md")
    a = p.parse_args(argv)
    for name in ("tune_episodes", "final_episodes", "stop_every", "n", "parallel", "extend"):
        value = getattr(a, name)
        if value is not None and value < (0 if name == "extend" else 1):
            p.error(f"--{name.replace('_', '-')} must be >= {0 if name == 'extend' else 1}, got {value}")
    if a.seeds is not None and (not a.seeds or len(a.seeds) != len(set(a.seeds)) or TUNING_SEED in a.seeds):
        p.error(f"--seeds must be distinct and not the tuning seed {TUNING_SEED}, got {a.seeds}")
    unknown = [m for m in a.modes.split(",") if m and m not in MODES]
    if unknown or not any(a.modes.split(",")):
        p.error(f"--modes takes a comma-separated subset of {', '.join(MODES)}, got {a.modes!r}")
    quick = {"seeds": [0, 1], "tune_episodes": 2, "final_episodes": 2, "stop_every": 1, "n": 8}
    full = {"seeds": [0, 1, 2, 3, 4], "tune_episodes": 10, "final_episodes": 20, "stop_every": 5, "n": None}
    for k, v in (quick if a.quick else full).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    return a


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return
    start = time.time()
    sup_spec = {"kind": "supervised", "name": "supervised start", "n": args.n, "job": QUICK if args.quick else {},
                "out": str(args.work / "supervised"), **({"steps": 8} if args.quick else {})}  # fmt: skip
    run_all([sup_spec], 1)
    supervised = _record(Path(sup_spec["out"]))
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "supervised": supervised, "modes": {}}
    sections: list[str] = []
    for mode in [m for m in args.modes.split(",") if m]:
        data = run_mode(args, mode, supervised)
        longer = None
        if not args.no_longer_supervised and mode == "LORA_UNET":
            trpo_wall = float(np.mean([r["log"]["wall_s"][-1] for r in data["finals"]["TRPO"]]))
            longer = longer_supervised(args, trpo_wall, supervised)
        s = summarise(data, supervised, longer)
        plot = frontier_plot(mode, data, s["start_validation"], args.out)
        curves = curves_plot(mode, data, supervised["judges"]["evaluation"], args.out)
        sections += mode_markdown(mode, data, s, plot, curves)
        report["modes"][mode] = {"data": data, "summary": s}
    process_s = sum(sum(r["log"]["wall_s"][-1] for recs in m["data"]["finals"].values() for r in recs)
                    for m in report["modes"].values())  # fmt: skip
    header = ["# Where does a trust region pay? TRPO vs PPO vs KL-regularised PG on the two-stage recipe", "",
              f"`python benchmarks/{Path(__file__).name} {' '.join(argv if argv is not None else sys.argv[1:])}` — "
              f"{platform.machine()}, one torch thread per run, {args.parallel} runs at a time; seeds {args.seeds}, "
              f"tuning seed {TUNING_SEED}; {args.tune_episodes} episodes per tuning run, {args.final_episodes} per "
              f"final run; this invocation {(time.time() - start) / 60:.0f} min (earlier invocations' runs reused; "
              f"the final runs' training alone {process_s / 3600:.1f} process-hours).", ""]  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(header + sections))
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
