"""The two-stage job over several seeds: every row × every judge, mean ± SD, Welch's p, and the issue's goals.

For each seed this runs the job of ``examples/crater_finetune.py`` (``natgrad_diffusion.recipe.run_recipe``) with
the extra row "pretrained + TRPO" (today's recipe: RL straight from the pretrained model), into
``runs/recipe_seeds/seed<S>`` (resumable: a finished seed is reused).  Then it writes
``benchmarks/results/recipe_seeds.{json,md}``: every row's mean ± SD over the seeds, Welch's t-test p for the three
comparisons that matter (supervised + TRPO against pretrained, against supervised only, and against pretrained +
TRPO), and whether each goal of the supervised-stage issue is met.

    python benchmarks/recipe_seeds.py                 # seeds 0, 1, 2 (about 13 min per seed on 2 idle cores)
    python benchmarks/recipe_seeds.py --seeds 0       # one seed
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import welch  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
MAIN = "supervised + TRPO"
COMPARED = ("pretrained", "supervised", "pretrained + TRPO")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "recipe_seeds")
    p.add_argument("--out", type=Path, default=RESULTS / "recipe_seeds.json")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the RL stages and the judges")
    p.add_argument("--supervised-threads", type=int, default=2)
    return p.parse_args(argv)


def welch_p(a: list[float], b: list[float]) -> float:
    """Two-sided Welch's t-test p-value (``nan`` with fewer than two values per side or no spread)."""
    return welch(a, b)[1]


def goals(mean: dict[str, dict[str, float]], unseen: list[str]) -> list[tuple]:
    """``(goal, met, evidence)`` for each goal of the supervised-stage issue (on the seed means)."""
    m, p, s = mean[MAIN], mean["pretrained"], mean["supervised"]
    out = [("two-sample accuracy ≤ 0.70", m["two_sample"] <= 0.70, f"{m['two_sample']:.3f}")]
    for space in unseen:
        key = f"{space}/mmd2"
        cut = 1 - m[key] / p[key] if p[key] > 0 else math.nan
        out.append((f"MMD² {space} ≥ 50 % below pretrained", cut >= 0.5, f"{p[key]:.4g} → {m[key]:.4g} ({cut:+.0%})"))
    out.append(("crater present not below pretrained", m["crater_present"] >= p["crater_present"],
                f"{p['crater_present']:.3f} → {m['crater_present']:.3f}"))  # fmt: skip
    out.append(("two-sample not worse than supervised (within its fold SD)",
                m["two_sample"] <= s["two_sample"] + mean["supervised"].get("two_sample_sd", 0),
                f"{s['two_sample']:.3f} → {m['two_sample']:.3f}"))  # fmt: skip
    for key in ("resnet18/coverage", "resnet18/recall"):
        gain = m[key] / s[key] - 1 if s[key] > 0 else math.inf
        out.append((f"{key} ≥ 20 % above supervised", gain >= 0.2, f"{s[key]:.3f} → {m[key]:.3f} ({gain:+.0%})"))
    vendi = "resnet18/vendi_within_prompt"
    out.append(("within-caption Vendi above supervised", m[vendi] > s[vendi], f"{s[vendi]:.3f} → {m[vendi]:.3f}"))
    out.append(("memorisation not above supervised", m["memorisation"] <= s["memorisation"],
                f"{s['memorisation']:.3f} → {m['memorisation']:.3f}"))  # fmt: skip
    out.append(("caption fidelity not below supervised", m["caption_fidelity"] >= s["caption_fidelity"],
                f"{s['caption_fidelity']:.3f} → {m['caption_fidelity']:.3f}"))  # fmt: skip
    return out


def run_seed(seed: int, args: argparse.Namespace) -> dict:
    from natgrad_diffusion.core.config import SUPERVISED
    from natgrad_diffusion.recipe import RecipeConfig, run_recipe

    defaults = RecipeConfig()
    config = RecipeConfig(out=str(args.runs / f"seed{seed}"), supervised=replace(SUPERVISED, threads=args.supervised_threads),
                          rl=replace(defaults.rl, seed=seed, threads=args.threads), rl_from_pretrained=True)  # fmt: skip
    start = time.perf_counter()
    result = run_recipe(config, resume=True, progress=False, say=lambda m: print(f"[seed {seed}] {m}", flush=True))
    return {"seed": seed, "rows": result.rows, "columns": result.columns, "seconds": result.seconds,
            "wall_s": time.perf_counter() - start}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    done = json.loads(args.out.read_text()) if args.out.exists() else {"seeds": {}}
    for seed in args.seeds:
        if str(seed) not in done["seeds"]:
            done["seeds"][str(seed)] = run_seed(seed, args)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(done, indent=1) + "\n")
    runs = [done["seeds"][str(s)] for s in args.seeds]
    columns = [tuple(c) for c in runs[0]["columns"]]
    names = list(runs[0]["rows"])
    values = {r: {k: [run["rows"][r].get(k, math.nan) for run in runs] for k, _ in columns} for r in names}
    mean = {r: {k: float(np.mean(v)) for k, v in cols.items()} for r, cols in values.items()}
    sd = {r: {k: float(np.std(v, ddof=1)) if len(v) > 1 else math.nan for k, v in cols.items()} for r, cols in values.items()}
    for r in names:
        mean[r]["two_sample_sd"] = float(np.mean([run["rows"][r].get("two_sample_sd", math.nan) for run in runs]))
    pvals = {other: {k: welch_p(values[MAIN][k], values[other][k]) for k, _ in columns} for other in COMPARED
             if other in values}  # fmt: skip
    unseen = [k.split("/")[0] for k, lab in columns if k.endswith("/mmd2") and "*" not in lab]
    met = goals(mean, unseen)
    done.update({"mean": mean, "sd": sd, "welch_p": pvals, "goals": [list(g) for g in met],
                 "machine": f"{platform.machine()}, RL {args.threads} thread(s), supervised {args.supervised_threads}"})  # fmt: skip
    args.out.write_text(json.dumps(done, indent=1) + "\n")
    text = report(args.seeds, columns, mean, sd, pvals, met, runs, done["machine"])
    args.out.with_suffix(".md").write_text(text)
    table = text.split("\n\n")[2]  # the rows × judges table alone, for the tutorial
    args.out.with_name(args.out.stem + "_table.md").write_text(table + "\n")
    print(args.out.with_suffix(".md").read_text())


def report(seeds, columns, mean, sd, pvals, met, runs, machine) -> str:
    lines = [
        "# The two-stage job over seeds",
        "",
        f"`python benchmarks/recipe_seeds.py --seeds {' '.join(map(str, seeds))}` ({machine}).  Every row samples the "
        "same captions with the same seeds and is judged against the held-out evaluation region; cells are mean ± SD "
        f"over {len(seeds)} seed(s).  * marks the reward's own space.",
        "",
        "| row | " + " | ".join(label for _, label in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for r in mean:
        # a row that is the same in every seed (the real crops, the pretrained model and its baselines) shows its value
        cells = [f"{mean[r][k]:.4g} ± {sd[r][k]:.2g}" if sd[r][k] > 1e-9 * max(1.0, abs(mean[r][k])) else f"{mean[r][k]:.4g}"
                 for k, _ in columns]  # fmt: skip
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    lines += ["", f"Welch's p of {MAIN} against each row:", "", "| against | " + " | ".join(lab for _, lab in columns)
              + " |", "|---|" + "---:|" * len(columns)]  # fmt: skip
    for other, ps in pvals.items():
        lines.append(f"| {other} | " + " | ".join(f"{ps[k]:.2g}" for k, _ in columns) + " |")
    lines += ["", "Goals (on the seed means):", ""]
    lines += [f"- {'met' if ok else '**not met**'}: {goal} ({evidence})" for goal, ok, evidence in met]
    secs = {k: np.mean([run["seconds"].get(k, 0) for run in runs]) / 60 for k in runs[0]["seconds"]}
    lines += ["", "Minutes per seed (mean): " + ", ".join(f"{k} {v:.1f}" for k, v in secs.items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
