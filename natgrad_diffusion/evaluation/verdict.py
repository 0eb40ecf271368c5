"""The end of a run in words: the before/after table, what went up and down, and where the outputs are.

A new user reads this first; :func:`summary` says whether the fine-tuning did what it was asked (the reward's two
goals: match the reference, vary the images of a prompt), what the "initial policy" row means, and marks the
numbers of a ``--test-mode`` run as a smoke test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..sampling.sd_layout import is_random_layout
from .metrics import EVAL_METRICS, format_metrics_table

__all__ = ["changes", "judged_line", "recipe_summary", "summary"]


def changes(
    before: dict[str, float],
    after: dict[str, float],
    columns: Sequence[tuple[str, str]] = EVAL_METRICS,
    rel_tol: float = 0.02,
) -> dict[str, list[str]]:
    """``{"better": [...], "worse": [...], "same": [...]}``: each column's move from ``before`` to ``after`` (relative
    change below ``rel_tol`` counts as the same), as ``"name a → b"`` strings.  A label ending in ``↓`` is better
    lower, ``↑`` higher; a grain ratio is better closer to 1; other columns are left out."""
    out: dict[str, list[str]] = {"better": [], "worse": [], "same": []}
    for key, label in columns:
        a, b = before.get(key, math.nan), after.get(key, math.nan)
        directed = key == "grain_ratio" or label.endswith(("↓", "↑"))
        if not (directed and math.isfinite(a) and math.isfinite(b)):
            continue
        name = label.rstrip(" ↑↓")
        text = f"{name} {a:.3g} → {b:.3g}"
        if abs(b - a) <= rel_tol * max(abs(a), abs(b), 1e-12):
            out["same"].append(text)
        elif key == "grain_ratio":
            out["better" if abs(b - 1) < abs(a - 1) else "worse"].append(text)
        else:
            out["better" if (b < a) == label.endswith("↓") else "worse"].append(text)
    return out


def _verdict(evaluation: dict[str, dict[str, float]], columns: Sequence[tuple[str, str]]) -> list[str]:
    moved = changes(evaluation["pretrained"], evaluation["fine-tuned"], columns)
    lines = [
        "Fine-tuned vs pretrained: "
        + (f"better: {', '.join(moved['better'])}" if moved["better"] else "nothing improved")
        + (f"; worse: {', '.join(moved['worse'])}" if moved["worse"] else "; nothing got worse")
        + "."
    ]
    if "initial policy" in evaluation:
        from_start = changes(evaluation["initial policy"], evaluation["fine-tuned"], columns)
        lines.append(
            "The 'initial policy' row is the untrained policy (its random initial actions, before any update); "
            f"what training itself changed: {len(from_start['better'])} metric(s) better, "
            f"{len(from_start['worse'])} worse than that row."
        )
    return lines


def summary(result: Any) -> str:
    """The text that ends ``natgrad-diffusion train`` and the crater example (``result``: a
    :class:`~natgrad_diffusion.training.loop.TrainResult`)."""
    c, run = result.config, result.run_dir
    head = (
        f"{run}: {result.episodes} episodes of {c.mode} with {c.algorithm.upper()} (reward {c.reward}), "
        f"{c.batch_size} images × {c.steps} DDIM steps each"
    )
    lines = [head]
    if c.test_mode:
        lines.append("SMOKE TEST (--test-mode): tiny sets and 2 steps; the numbers below only show that it runs.")
    if c.model is not None and is_random_layout(c.model):
        lines.append(f"RANDOM WEIGHTS: {c.model} is the Stable Diffusion v1.5 layout of scripts/make_sd15_layout.py, "
                     "not a trained model; only the times and memory of this run mean anything.")  # fmt: skip
    if result.evaluation:
        fe = result.feature_extractor
        lines += ["", f"Held-out prompts, features: {fe.get('name')} ({fe.get('weights')})", ""]
        columns = result.columns or EVAL_METRICS
        lines.append(format_metrics_table(result.evaluation, columns=columns))
        if any(label.rstrip(" ↑↓").endswith("*") for _, label in columns):
            reward_space = next(label for _, label in columns if "*" in label).split()[-2].rstrip("*")
            lines.append(f"* the space the reward used ({reward_space}); the other spaces never entered training.")
        if "fine-tuned" in result.evaluation and "pretrained" in result.evaluation:
            lines += ["", *_verdict(result.evaluation, columns)]
        for baseline in [k for k in result.evaluation if k.startswith("pretrained ") or k.startswith("pretrained,")]:
            moved = changes(result.evaluation[baseline], result.evaluation.get("fine-tuned", {}), columns)
            lines.append(
                f"Fine-tuned vs '{baseline}': {len(moved['better'])} column(s) better, {len(moved['worse'])} worse."
            )
        lines += [
            "",
            f"Grids (one row per prompt): {run}/eval_comparison.png (real | pretrained | fine-tuned), "
            f"{run}/eval_pretrained.png, {run}/eval_fine-tuned.png; "
            f"training curves: {run}/plots/training_curves.png; per-episode log: {run}/train.csv.",
        ]
    else:
        lines.append(f"No evaluation (--no-evaluate); per-episode log: {run}/train.csv.")
    if result.episodes == 0:
        lines.append("0 episodes: nothing was trained (the fine-tuned row equals the initial policy).")
    return "\n".join(lines)


def judged_line(
    rows: dict[str, dict[str, float]], columns: Sequence[tuple[str, str]], after: str, before: str
) -> str:
    """One line: which judges (every column but the reward's own, marked ``*``) moved from row ``before`` to row
    ``after``, better and worse, with both values."""
    judges = [(k, lab) for k, lab in columns if "*" not in lab]
    moved = changes(rows[before], rows[after], judges)
    total = sum(len(v) for v in moved.values())
    text = f"{after} vs {before}: better on {len(moved['better'])} of {total} judges"
    text += f" ({'; '.join(moved['better'])})" if moved["better"] else ""
    text += f", worse on {len(moved['worse'])}" + (f" ({'; '.join(moved['worse'])})" if moved["worse"] else "")
    return text + (f", unchanged on {len(moved['same'])}." if moved["same"] else ".")


def recipe_summary(result: Any) -> str:
    """The text that ends the two-stage job (``result``: a :class:`~natgrad_diffusion.recipe.RecipeResult`): the
    table, one overall line per comparison that matters (the job against the pretrained model, and what the RL stage
    added to the supervised stage), and where the outputs are."""
    rows, columns, out = result.rows, result.columns, result.out
    lines = [
        f"{out}: supervised stage + TRPO; every row: the same {result.n} captions and seeds, judged against the "
        "held-out evaluation region",
        "",
        format_metrics_table(rows, columns=columns),
        "* the reward's own space; every other column is a judge neither stage optimised.",
        "",
    ]
    for after, before in (("supervised + TRPO", "pretrained"), ("supervised + TRPO", "supervised"),
                          ("supervised", "pretrained"), ("pretrained + TRPO", "pretrained")):  # fmt: skip
        if after in rows and before in rows:
            lines.append(judged_line(rows, columns, after, before))
    minutes = ", ".join(f"{k} {v / 60:.1f} min" for k, v in result.seconds.items())
    lines += ["", f"Time: {minutes}.", f"Table: {out}/evaluation.md; grid (real | pretrained | supervised | "
              f"supervised + TRPO): {out}/eval_comparison.png; stages: {out}/supervised, {out}/rl."]  # fmt: skip
    return "\n".join(lines)
