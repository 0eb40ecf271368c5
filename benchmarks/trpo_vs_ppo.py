"""TRPO vs PPO for diffusion fine-tuning, answered fairly: equal tuning, equal samples, two policy modes, real craters.

The job is the real-Mars crater job (``natgrad-diffusion train`` with the defaults: reward MMD_VENDI in the learned
crater space against the real reference split), in two policy modes (DIVERSITY_POLICY, LORA_UNET).

1. **Equal tuning budget.**  On a tuning seed used nowhere else, the same number of short runs per algorithm:
   TRPO over ``max_kl`` × ``damping``, PPO over ``lr`` × ``epochs``.  One selection rule for both: the
   *validation score* — the reward's own formula computed on images of the validation prompts against the
   validation split of the real crops, neither of which the reward or the final evaluation uses.  The script also
   reports what selecting by the training reward (the last episodes' mean) would have picked.
2. **Equal samples.**  The selected settings, and PPO with the recipe of public diffusion-RL code (DDPO: the
   per-dimension-mean log-prob ratio, clip 1e-4, Adam 3e-4, advantages clipped at 5), each on the same seeds with
   the same number of generated images per run; every run is evaluated on the held-out prompts against the held-out
   evaluation split in three feature spaces (the reward's and two it never sees), with the grain ratio.
3. **Report** (``benchmarks/results/trpo_vs_ppo.md`` / ``.json``, curves and KL histograms as PNG): the tuning
   grid, the selected settings, the evaluation table as mean ± std over seeds, Welch's t of TRPO vs each PPO on the
   main columns, KL per update (distribution), seconds per update and TRPO's cost per update as a multiple of PPO's.

Runs go through the ``natgrad-diffusion`` command (one process each, one torch thread, ``--parallel`` at a time) into
``--work``; a run whose results exist is reused, so an interrupted study continues where it stopped.

Usage::

    python benchmarks/trpo_vs_ppo.py                # the full study (see the results file for its wall time)
    python benchmarks/trpo_vs_ppo.py --quick        # minutes: tiny runs, the whole pipeline (the test suite runs it)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results"
DDPO = {"ppo_mean_logprob": True, "ppo_clip_range": 1e-4, "ppo_lr": 3e-4, "ppo_adv_clip": 5.0}
TRPO_GRID = [{"max_kl": k, "damping": d} for k in (0.003, 0.01, 0.03, 0.1) for d in (0.01, 0.1)]
PPO_GRID = [{"ppo_lr": lr, "ppo_epochs": e} for lr in (1e-4, 1e-3, 3e-3, 3e-2) for e in (1, 4)]
#: per mode: the settings of every run, the tuning and final episode counts (equal samples: same batch, episodes)
#: (LORA_UNET is the default job of ``natgrad_diffusion.core.config.TRAINING``; DIVERSITY_POLICY as it was the default
#: before: 32 images per episode and a critic)
MODES: dict[str, dict[str, Any]] = {
    "DIVERSITY_POLICY": {"settings": {"mode": "DIVERSITY_POLICY", "batch_size": 32, "critic": True}, "tune": 20,
                         "final": 40},
    "LORA_UNET": {"settings": {"mode": "LORA_UNET"}, "tune": 12, "final": 30},
}  # fmt: skip
QUICK = {"steps": 2, "batch_size": 4, "images_per_prompt": 2, "eval_images_per_prompt": 2, "eval_max_prompts": 2,
         "reference": "render", "reference_n": 16, "eval_features": ["pixels"], "checkpoint_every": 1, "grid_every": 1}  # fmt: skip
MAIN_COLUMNS = ("crater/mmd2", "resnet18/mmd2", "pixels/mmd2", "crater/vendi_within_prompt", "grain_ratio")


@dataclass
class Run:
    """One fine-tuning run of the study."""

    name: str
    mode: str
    algorithm: str
    seed: int
    episodes: int
    settings: dict[str, Any]
    evaluate: bool
    out: Path = field(default=Path())

    def config(self, quick: bool) -> dict[str, Any]:
        values = {"eval_baselines": False, **MODES[self.mode]["settings"], **self.settings, "algorithm": self.algorithm,
                  "seed": self.seed, "episodes": self.episodes, "evaluate": self.evaluate, "threads": 1}  # fmt: skip
        return {**values, **(QUICK if quick else {})}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny runs (minutes): checks the whole pipeline")
    p.add_argument("--modes", default="DIVERSITY_POLICY,LORA_UNET", help="comma-separated policy modes")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="final-run seeds (default: 0 1 2; --quick: 0 1)")
    p.add_argument("--tuning-seed", type=int, default=100, help="the seed of the tuning runs (used nowhere else)")
    p.add_argument("--parallel", type=int, default=2, help="runs at a time (one torch thread each)")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "trpo_vs_ppo", help="run directories")
    p.add_argument("--out", type=Path, default=RESULTS / "trpo_vs_ppo.md", help="results markdown (+ .json, PNGs)")
    args = p.parse_args(argv)
    if args.seeds is None:
        args.seeds = [0, 1] if args.quick else [0, 1, 2]
    return args


def _study_file(run: Run, suffix: str) -> Path:
    """``RUN.study.json`` (the run's settings) and ``RUN.log`` (its output), next to the run directory: a run starts
    only in a new or empty folder."""
    path = run.out.with_name(run.out.name + suffix)
    legacy = run.out / {".study.json": "study.json", ".log": "stdout.log"}[suffix]  # runs of an earlier version
    return legacy if not path.exists() and legacy.exists() else path


def _finished(run: Run) -> bool:
    meta = run.out / "run.json"
    if not meta.is_file() or "finished" not in json.loads(meta.read_text()):
        return False
    return not run.evaluate or "fine-tuned" in json.loads((run.out / "evaluation.json").read_text())


def run_all(runs: list[Run], quick: bool, parallel: int) -> None:
    """Start every unfinished run (``--overwrite``: a half-done run starts over), ``parallel`` at a time."""
    todo = [r for r in runs if not _finished(r)]
    running: list[tuple[Run, subprocess.Popen]] = []
    while todo or running:
        while todo and len(running) < parallel:
            run = todo.pop(0)
            run.out.parent.mkdir(parents=True, exist_ok=True)
            _study_file(run, ".study.json").write_text(json.dumps(run.config(quick), default=str))
            cmd = [sys.executable, "-m", "natgrad_diffusion", "train", "--config", str(_study_file(run, ".study.json")),
                   "--out", str(run.out), "--overwrite", "--no-progress"]  # fmt: skip
            log = open(_study_file(run, ".log"), "w")
            running.append((run, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)))
            print(f"started {run.name}", flush=True)
        time.sleep(2)
        for run, proc in list(running):
            if proc.poll() is not None:
                running.remove((run, proc))
                status = "done" if proc.returncode == 0 else f"FAILED ({_study_file(run, '.log')})"
                print(f"{status}: {run.name}", flush=True)
                if proc.returncode:
                    raise SystemExit(f"run {run.name} failed; see {_study_file(run, '.log')}")


def validation_score(run_dir: Path) -> float:
    """The reward's value (higher is better) on validation-prompt images of the run's policy against the
    validation split, in the reward's space: what the selection rule of the study compares."""
    import warnings

    from natgrad_diffusion.data.prompts import job_prompts
    from natgrad_diffusion.evaluation.metrics import sample_images
    from natgrad_diffusion.rewards import get_reward
    from natgrad_diffusion.rewards.reference_features import feature_extractor, reference_set
    from natgrad_diffusion.sampling.models import load_model
    from natgrad_diffusion.training.checks import load_run_config
    from natgrad_diffusion.training.loop import load_policy_from_run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = load_run_config(run_dir)
        components = load_model(config.model)
        policy = load_policy_from_run(run_dir, components)
        extractor = feature_extractor(config)
        validation = reference_set(config, "validation", components.image_shape())
        prompts = job_prompts(config, "validation")[: config.eval_max_prompts]
        images, image_prompts = sample_images(
            components, prompts, policy=policy, images_per_prompt=config.eval_images_per_prompt, steps=config.steps,
            guidance_scale=config.guidance_scale, eta=config.eta, seed=config.eval_seed + 50_000,
        )  # fmt: skip
        reward = get_reward(config.reward, extractor(validation.images), **config.reward_options)
        return float(reward(extractor(images), np.asarray(image_prompts)).value)


def training_reward(run_dir: Path, last: int = 5) -> float:
    """The mean set-level training reward of the last ``last`` episodes (what a gameable selection would use)."""
    from natgrad_diffusion.core.logs import read_csv

    rows = read_csv(run_dir / "train.csv")
    return float(np.mean([float(r["reward_value"]) for r in rows[-last:]]))


def _label(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def tuning_runs(args: argparse.Namespace, mode: str) -> dict[str, list[Run]]:
    """The tuning grid of each algorithm on the tuning seed (the same number of runs for both)."""
    episodes = 2 if args.quick else MODES[mode]["tune"]
    grids = {"trpo": TRPO_GRID[:2] if args.quick else TRPO_GRID, "ppo": PPO_GRID[:2] if args.quick else PPO_GRID}
    runs: dict[str, list[Run]] = {}
    for algorithm, grid in grids.items():
        runs[algorithm] = [
            Run(f"{mode} tune {algorithm} {_label(s)}", mode, algorithm, args.tuning_seed, episodes, s, False,
                args.work / mode / "tune" / f"{algorithm}_{i}")
            for i, s in enumerate(grid)
        ]  # fmt: skip
    return runs


def select(runs: dict[str, list[Run]]) -> dict[str, Any]:
    """Per algorithm: every run's validation score and training reward, and the settings each rule selects."""
    out: dict[str, Any] = {}
    for algorithm, group in runs.items():
        rows = [
            {"settings": r.settings, "validation": validation_score(r.out), "training_reward": training_reward(r.out)}
            for r in group
        ]
        out[algorithm] = {
            "grid": rows,
            "by_validation": max(rows, key=lambda x: x["validation"])["settings"],
            "by_training_reward": max(rows, key=lambda x: x["training_reward"])["settings"],
        }
    return out


def final_runs(args: argparse.Namespace, mode: str, chosen: dict[str, Any]) -> dict[str, list[Run]]:
    """TRPO and PPO with the selected settings, and PPO with DDPO's recipe, on every seed (equal samples)."""
    episodes = 2 if args.quick else MODES[mode]["final"]
    methods = {
        "TRPO (tuned)": ("trpo", chosen["trpo"]["by_validation"]),
        "PPO (tuned)": ("ppo", chosen["ppo"]["by_validation"]),
        "PPO (DDPO recipe)": ("ppo", DDPO),
    }
    return {
        method: [
            Run(f"{mode} {method} seed {seed}", mode, algorithm, seed, episodes, settings, True,
                args.work / mode / "final" / f"{method.split()[0].lower()}_{'ddpo' if 'DDPO' in method else 'tuned'}_{seed}")
            for seed in args.seeds
        ]
        for method, (algorithm, settings) in methods.items()
    }  # fmt: skip


def baseline_run(args: argparse.Namespace, mode: str) -> Run:
    """Zero episodes with the baselines: the pretrained model and the non-RL baselines, once per mode."""
    return Run(f"{mode} baselines", mode, "trpo", args.seeds[0], 0, {"eval_baselines": True}, True,
               args.work / mode / "baselines")  # fmt: skip


def run_seconds(run: Run) -> float:
    """Wall time of a finished run's process: from its ``.study.json`` (written at start) to its log's last write."""
    return _study_file(run, ".log").stat().st_mtime - _study_file(run, ".study.json").stat().st_mtime


def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, float)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else float("nan")


def collect(final: dict[str, list[Run]], baselines: Run) -> dict[str, Any]:
    """Every number of the report: evaluation rows (mean, std, per seed), training curves, KL, seconds/update."""
    from natgrad_diffusion.core.logs import read_csv

    base = json.loads((baselines.out / "evaluation.json").read_text())
    rows: dict[str, Any] = {
        name: {"mean": m, "std": {}, "seeds": [m]} for name, m in base.items() if name != "fine-tuned"
    }
    per_method: dict[str, Any] = {}
    for method, runs in final.items():
        evals = [json.loads((r.out / "evaluation.json").read_text())["fine-tuned"] for r in runs]
        keys = sorted(set.intersection(*(set(e) for e in evals)))
        stats = {k: _mean_std([e[k] for e in evals]) for k in keys}
        rows[method] = {"mean": {k: v[0] for k, v in stats.items()}, "std": {k: v[1] for k, v in stats.items()},
                        "seeds": evals}  # fmt: skip
        csvs = [read_csv(r.out / "train.csv") for r in runs]
        per_method[method] = {
            "samples": [[int(x["samples"]) for x in c] for c in csvs],
            "reward": [[float(x["reward_value"]) for x in c] for c in csvs],
            "batch_mmd2": [[float(x["mmd2"]) for x in c] for c in csvs],
            "kl": [float(x["kl"]) for c in csvs for x in c if x["kl"] not in ("", None)],
            "seconds_per_update": [float(x["time_update_s"]) for c in csvs for x in c],
            "seconds_per_run": [float(c[-1]["wall_s"]) for c in csvs],
        }
    return {"rows": rows, "methods": per_method}


def welch(data: dict[str, Any], a: str, b: str) -> dict[str, dict[str, float]]:
    """Welch's t and its two-sided p over seeds, method ``a`` vs ``b``, on the main columns."""
    from common import welch as welch_test

    out = {}
    for key in MAIN_COLUMNS:
        xa = [s[key] for s in data["rows"][a]["seeds"] if key in s]
        xb = [s[key] for s in data["rows"][b]["seeds"] if key in s]
        if len(xa) > 1 and len(xb) > 1:
            t, p = welch_test(xa, xb)
            out[key] = {"t": t, "p": p}
    return out


SMOOTH = 5  # episodes: the training prompts cycle, so single batches swing with their caption


def moving_mean(values: list[float], window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values (the first points average what there is)."""
    c = np.cumsum(np.insert(np.asarray(values, float), 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    return (c[idx] - c[np.maximum(idx - window, 0)]) / np.minimum(idx, window)


def plot(data: dict[str, Any], mode: str, out_dir: Path) -> list[Path]:
    """Training reward and batch MMD² against images generated (mean and min–max band over seeds); KL histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    kls = [k for m in data["methods"].values() for k in m["kl"] if k > 0]
    bins = np.geomspace(min(kls), max(kls), 40) if kls else 30
    for method, m in data["methods"].items():
        x = np.asarray(m["samples"][0])
        for ax, key in zip(axes[:2], ("reward", "batch_mmd2")):
            y = np.asarray([moving_mean(row[: len(x)], SMOOTH) for row in m[key]])
            line = ax.plot(x, y.mean(0), label=method)[0]
            ax.fill_between(x, y.min(0), y.max(0), color=line.get_color(), alpha=0.2)
        axes[2].hist([k for k in m["kl"] if k > 0], bins=bins, histtype="step", label=method)
    titles = (f"training reward (set level, mean of the last {SMOOTH} episodes) ↑",
              f"training batch MMD² to the reference (reward space, last {SMOOTH}) ↓", "KL per update")  # fmt: skip
    axes[2].set_xscale("log")
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].set_xlabel("images generated")
    axes[1].set_xlabel("images generated")
    axes[2].set_xlabel("mean KL per decision")
    axes[0].legend(fontsize=7)
    fig.suptitle(mode, fontsize=10)
    fig.tight_layout()
    path = out_dir / f"trpo_vs_ppo_{mode.lower()}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


def copy_grids(final: dict[str, list[Run]], baselines: Run, mode: str, out_dir: Path) -> list[tuple[str, str]]:
    """Seed-0 evaluation grids (one row per held-out caption) of the pretrained model and of every method."""
    import shutil

    sources = {"pretrained": baselines.out / "eval_pretrained.png"}
    sources.update({method: runs[0].out / "eval_fine-tuned.png" for method, runs in final.items()})
    grids = []
    for name, src in sources.items():
        if src.is_file():
            slug = "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")
            dst = out_dir / f"trpo_vs_ppo_{mode.lower()}_{slug}.png"
            shutil.copyfile(src, dst)
            grids.append((name, dst.name))
    return grids


def _fmt(mean: float, std: float | None) -> str:
    text = f"{mean:.4g}"
    return text if std is None or not np.isfinite(std) else f"{text} ± {std:.2g}"


def mode_markdown(
    mode: str, chosen: dict[str, Any], data: dict[str, Any], tests: dict[str, Any], grids: list[tuple[str, str]]
) -> list[str]:
    """The report section of one policy mode."""
    from natgrad_diffusion.evaluation.metrics import Spaces, table_columns

    cols = table_columns(Spaces(["crater", "resnet18", "pixels"], {}, {}, None))  # type: ignore[arg-type]
    lines = [f"## {mode}", "", "Tuning (tuning seed; validation score = the reward on validation prompts vs the "
             "validation crops, higher is better):", "", "| algorithm | settings | validation score | training reward |",
             "|---|---|---:|---:|"]  # fmt: skip
    for algorithm, c in chosen.items():
        for row in c["grid"]:
            mark = " **(selected)**" if row["settings"] == c["by_validation"] else ""
            lines.append(f"| {algorithm} | {_label(row['settings'])}{mark} | {row['validation']:.4f} | "
                         f"{row['training_reward']:.4f} |")  # fmt: skip
        lines.append(
            f"| {algorithm} | selected by the training reward instead: {_label(c['by_training_reward'])} | | |"
        )
    lines += ["", "Held-out evaluation (mean ± std over seeds; * the reward's space):", "",
              "| | " + " | ".join(label for _, label in cols) + " |", "|---|" + "---:|" * len(cols)]  # fmt: skip
    for name, row in data["rows"].items():
        cells = [_fmt(row["mean"].get(k, float("nan")), row["std"].get(k)) for k, _ in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Cost and step size:", "", "| method | s / update | s / run | KL per update: median [10 %, 90 %] |",
              "|---|---:|---:|---|"]  # fmt: skip
    for method, m in data["methods"].items():
        q = np.quantile(m["kl"], [0.5, 0.1, 0.9]) if m["kl"] else [float("nan")] * 3
        lines.append(f"| {method} | {np.mean(m['seconds_per_update']):.3g} | {np.mean(m['seconds_per_run']):.0f} | "
                     f"{q[0]:.3g} [{q[1]:.3g}, {q[2]:.3g}] |")  # fmt: skip
    trpo_s = np.mean(data["methods"]["TRPO (tuned)"]["seconds_per_update"])
    ratios = [f"{trpo_s / np.mean(m['seconds_per_update']):.2f}× {method}'s" for method, m in data["methods"].items()
              if method != "TRPO (tuned)"]  # fmt: skip
    note = ("TRPO's seconds per update on the same rollouts (same images per update; LORA_UNET's TRPO update uses a "
            "quarter of the decisions, the job's `decision_subsample`, PPO all of them in every epoch): ")  # fmt: skip
    lines += ["", note + ", ".join(ratios) + "."]
    lines += ["", "Welch's t (TRPO − other, over seeds; p two-sided):", ""]
    for other, result in tests.items():
        parts = [f"{k}: t = {v['t']:.2f}, p = {v['p']:.3f}" for k, v in result.items()]
        lines.append(f"- vs {other}: " + ("; ".join(parts) if parts else "needs ≥ 2 seeds"))
    lines += ["", f"![{mode}](trpo_vs_ppo_{mode.lower()}.png)", "", "Seed-0 grids, one row per held-out caption:", ""]
    lines += [f"- {name}: ![{name}]({file})" for name, file in grids]
    return [*lines, ""]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.time()
    report: dict[str, Any] = {"seeds": args.seeds, "tuning_seed": args.tuning_seed, "quick": args.quick, "modes": {}}
    sections: list[str] = []
    process_s = 0.0  # every run's process wall time, summed (resumed studies included)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for mode in [m for m in args.modes.split(",") if m]:
        tune = tuning_runs(args, mode)
        run_all([r for rs in tune.values() for r in rs], args.quick, args.parallel)
        chosen = select(tune)
        final = final_runs(args, mode, chosen)
        base = baseline_run(args, mode)
        run_all([base, *[r for rs in final.values() for r in rs]], args.quick, args.parallel)
        process_s += sum(run_seconds(r) for r in [base, *[r for rs in (*tune.values(), *final.values()) for r in rs]])
        data = collect(final, base)
        tests = {other: welch(data, "TRPO (tuned)", other) for other in ("PPO (tuned)", "PPO (DDPO recipe)")}
        plot(data, mode, args.out.parent)
        grids = copy_grids(final, base, mode, args.out.parent)
        sections += mode_markdown(mode, chosen, data, tests, grids)
        report["modes"][mode] = {"selection": chosen, "data": data, "welch": tests}
    minutes = (time.time() - start) / 60
    header = ["# TRPO vs PPO for diffusion fine-tuning (real Mars craters)", "",
              f"`python benchmarks/trpo_vs_ppo.py{' --quick' if args.quick else ''}` — seeds {args.seeds}, tuning seed "
              f"{args.tuning_seed}, {args.parallel} runs at a time on one torch thread each; the runs' processes took "
              f"{process_s / 60:.0f} min in total (≈ {process_s / 60 / args.parallel:.0f} min of wall time at "
              f"{args.parallel} at a time; this invocation {minutes:.0f} min, earlier invocations' runs reused).", ""]  # fmt: skip
    args.out.write_text("\n".join(header + sections))
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {args.out} ({minutes:.1f} min)")


if __name__ == "__main__":
    main()
