"""Validation report of the crater encoder against the random-init ResNet-18 (the project's current default).

Writes ``benchmarks/results/crater_encoder.md`` and ``crater_encoder.json``. Spaces: ``learned``
(:class:`~natgrad_diffusion.rewards.encoder.CraterEncoderFeatures`, 128-d, 32 px) and ``resnet18-random``
(``ResNet18Features(image_size=64)``, no weights offline → seed-0 random init, 512-d). Sections:

1. Linear probes: ``LogisticRegression`` on standardised features of fresh renders (seed 10000, never seen in
   training), stratified 75/25 split, accuracy per caption attribute; majority class and raw pixels for scale.
2. MMD² (RBF, bandwidth = median heuristic of the *evaluation* split's features) and FID. Floor: real
   validation vs real evaluation split. Gap: embedded-model samples of the 16 test prompts (× 8) vs the
   evaluation split. Each with a permutation test (pool the two sets, re-split at the same sizes, ``B`` times):
   ``z = (MMD² − mean_perm)/sd_perm`` and ``p = (1 + #{perm ≥ obs})/(B + 1)``; the gap is also given as
   ``(gap − floor)/sd_floor`` with ``sd_floor`` the permutation sd of the floor, comparable across spaces.
3. Sensitivity: Gaussian pixel noise σ ∈ {0.02, 0.05, 0.1} (and brightness/contrast changes) on the model samples
   and on the real validation crops; MMD² to the real ``reference`` split and Vendi (RBF, bandwidth = median
   heuristic of the reference split's features, fixed, as the MMD_VENDI reward fixes it; for the model samples also
   the within-prompt Vendi score, the reward's diversity term), clean vs perturbed: relative change, and ΔMMD² in
   units of the permutation sd of MMD²(validation, reference).

Usage: ``python scripts/evaluate_crater_encoder.py [--weights DIR] [--out-dir benchmarks/results]``
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from natgrad_diffusion.data.craters.mars import mars_reference_sets
from natgrad_diffusion.data.craters.render import render_batch
from natgrad_diffusion.rewards import (
    frechet_distance_features,
    median_heuristic_bandwidth,
    mmd2_unbiased,
    vendi_score,
    within_prompt_vendi_score,
)
from natgrad_diffusion.rewards.encoder import CraterEncoderFeatures
from natgrad_diffusion.rewards.features import FeatureExtractor, ResNet18Features
from natgrad_diffusion.rewards.grain import grain_ratio

REPO = Path(__file__).resolve().parents[1]
PROBE_ATTRS = ("size", "direction", "freshness", "count", "morphology", "elevation")
NOISE = (0.02, 0.05, 0.1)
PHOTOMETRIC = {"brightness +0.1": (1.0, 0.1), "contrast x0.7": (0.7, 0.0), "contrast x1.3": (1.3, 0.0)}


def spaces(weights: str | None) -> dict[str, FeatureExtractor]:
    """The two feature spaces compared (the ResNet's "no pretrained weights" warning is expected and silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        resnet = ResNet18Features(image_size=64)
    return {"learned": CraterEncoderFeatures(weights), "resnet18-random": resnet}


def add_noise(images: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """uint8 images + Gaussian pixel noise of std ``sigma`` (in units of the full range), rounded and clipped."""
    rng = np.random.default_rng(seed)
    x = images.astype(np.float64) + 255.0 * sigma * rng.standard_normal(images.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def photometric(images: np.ndarray, contrast: float, brightness: float) -> np.ndarray:
    """``(x − mean_image)·contrast + mean_image + brightness`` on ``[0, 1]`` pixels, per image, back to uint8."""
    x = images.astype(np.float64) / 255.0
    m = x.mean(axis=(1, 2), keepdims=True)
    return np.clip(np.round(((x - m) * contrast + m + brightness) * 255.0), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------------------
# 1. linear probes
# ----------------------------------------------------------------------------------------------------------------------


def linear_probe(features: np.ndarray, labels: list[str], seed: int = 0) -> float:
    """Test accuracy of a logistic regression on standardised features (stratified 75/25 split, seeded)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(labels)
    xtr, xte, ytr, yte = train_test_split(features, y, test_size=0.25, random_state=seed, stratify=y)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=1.0))
    clf.fit(xtr, ytr)
    return float(clf.score(xte, yte))


def probe_section(extractors: dict[str, FeatureExtractor], n: int, seed: int = 10_000) -> dict:
    """Probe accuracies ``{attribute: {space: acc}}`` on ``n`` fresh renders, plus majority class and raw pixels."""
    images, _, scenes = render_batch(n, seed=seed, size=32, diversity=1.0)
    feats = {name: ex(images) for name, ex in extractors.items()}
    feats["pixels (32x32)"] = images.reshape(n, -1).astype(np.float32)
    out: dict = {}
    for attr in PROBE_ATTRS:
        labels = [s.labels[attr] for s in scenes]
        _, counts = np.unique(labels, return_counts=True)
        out[attr] = {"majority": float(counts.max() / counts.sum())}
        out[attr].update({name: linear_probe(f, labels) for name, f in feats.items()})
    return {"n": n, "seed": seed, "accuracy": out}


# ----------------------------------------------------------------------------------------------------------------------
# 2. MMD floor and gap
# ----------------------------------------------------------------------------------------------------------------------


def permutation_test(x: np.ndarray, y: np.ndarray, bandwidth: float, n_perm: int, seed: int = 0) -> dict:
    """MMD²(x, y) and its permutation null (pool, re-split at the same sizes): mean, sd, z and p-value."""
    obs = mmd2_unbiased(x, y, bandwidth=bandwidth)
    pool, n = np.concatenate([x, y]), len(x)
    rng = np.random.default_rng(seed)
    null = np.empty(n_perm)
    for b in range(n_perm):
        idx = rng.permutation(len(pool))
        null[b] = mmd2_unbiased(pool[idx[:n]], pool[idx[n:]], bandwidth=bandwidth)
    sd = float(null.std(ddof=1))
    return {
        "mmd2": obs,
        "null_mean": float(null.mean()),
        "null_sd": sd,
        "z": (obs - float(null.mean())) / sd,
        "p": float((1 + (null >= obs).sum()) / (n_perm + 1)),
    }


def gap_section(feats: dict[str, np.ndarray], n_perm: int) -> dict:
    """Floor (validation vs evaluation) and gap (model vs evaluation) in one space: MMD² tests and FID."""
    bw = median_heuristic_bandwidth(feats["evaluation"])
    floor = permutation_test(feats["validation"], feats["evaluation"], bw, n_perm, seed=1)
    gap = permutation_test(feats["model"], feats["evaluation"], bw, n_perm, seed=2)
    return {
        "bandwidth": bw,
        "floor": floor,
        "gap": gap,
        "gap_in_floor_sd": (gap["mmd2"] - floor["mmd2"]) / floor["null_sd"],
        "fid_floor": frechet_distance_features(feats["validation"], feats["evaluation"]),
        "fid_gap": frechet_distance_features(feats["model"], feats["evaluation"]),
    }


# ----------------------------------------------------------------------------------------------------------------------
# 3. sensitivity to pixel noise and photometric changes
# ----------------------------------------------------------------------------------------------------------------------


def _perturbations() -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    out: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        f"noise {s}": (lambda im, s=s: add_noise(im, s, seed=123)) for s in NOISE
    }
    out.update({k: (lambda im, c=c, b=b: photometric(im, c, b)) for k, (c, b) in PHOTOMETRIC.items()})
    return out


def _metrics(f: np.ndarray, ref: np.ndarray, bw: float, prompt_ids: np.ndarray | None) -> dict:
    """MMD² to ``ref``, Vendi (RBF, bandwidth ``bw``) and, with prompt ids, the within-prompt Vendi score."""
    out = {"mmd2": mmd2_unbiased(f, ref, bandwidth=bw), "vendi": vendi_score(f, kernel="rbf", bandwidth=bw)}
    if prompt_ids is not None:
        out["vendi_wp"] = within_prompt_vendi_score(f, prompt_ids, kernel="rbf", bandwidth=bw)
    return out


def sensitivity_section(ex: FeatureExtractor, sets: dict[str, tuple], reference: np.ndarray, n_perm: int) -> dict:
    """For each set ``(images, prompt_ids | None)`` and perturbation: MMD² to the reference, RBF Vendi (reference
    bandwidth) and within-prompt Vendi, clean vs perturbed, as relative changes (and ΔMMD² in permutation sds)."""
    ref = ex(reference)
    bw = median_heuristic_bandwidth(ref)
    unit = permutation_test(ex(sets["real validation"][0]), ref, bw, n_perm, seed=3)["null_sd"]
    out: dict = {"bandwidth": bw, "mmd_unit_sd": unit, "sets": {}}
    for set_name, (images, pid) in sets.items():
        clean = _metrics(ex(images), ref, bw, pid)
        rows = {"clean": {**clean, "grain_ratio": grain_ratio(images, reference)}}
        for name, fn in _perturbations().items():
            pert = fn(images)
            m = _metrics(ex(pert), ref, bw, pid)
            rows[name] = {**m, "grain_ratio": grain_ratio(pert, reference)}
            rows[name]["mmd2_rel"] = (m["mmd2"] - clean["mmd2"]) / abs(clean["mmd2"])
            rows[name]["mmd2_delta_in_sd"] = (m["mmd2"] - clean["mmd2"]) / unit
            for k in ("vendi", "vendi_wp"):
                if k in m:
                    rows[name][f"{k}_rel"] = (m[k] - clean[k]) / clean[k]
        out["sets"][set_name] = rows
    return out


# ----------------------------------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------------------------------


def _f(x: float, nd: int = 3) -> str:
    return f"{x:.{nd}g}" if abs(x) < 1e-3 or abs(x) >= 1e4 else f"{x:.{nd}f}"


def _probe_table(res: dict) -> list[str]:
    acc = res["probe"]["accuracy"]
    cols = list(next(iter(acc.values())))
    lines = ["| attribute | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    lines += [f"| {a} | " + " | ".join(f"{acc[a][c]:.3f}" for c in cols) + " |" for a in acc]
    return lines


def _gap_table(res: dict) -> list[str]:
    lines = [
        "| space | floor MMD² (val vs eval) | floor z | floor p | gap MMD² (model vs eval) | gap z | gap p "
        "| (gap − floor)/sd_floor | FID floor | FID gap | FID gap/floor |",
        "|---" * 11 + "|",
    ]
    for name, g in res["gap"].items():
        fl, gp = g["floor"], g["gap"]
        lines.append(
            f"| {name} | {_f(fl['mmd2'])} | {fl['z']:.2f} | {fl['p']:.3f} | {_f(gp['mmd2'])} | {gp['z']:.1f} "
            f"| {gp['p']:.3f} | {g['gap_in_floor_sd']:.1f} | {_f(g['fid_floor'])} | {_f(g['fid_gap'])} "
            f"| {g['fid_gap'] / g['fid_floor']:.2f} |"
        )
    return lines


def _sensitivity_table(res: dict, set_name: str) -> list[str]:
    names = list(res["sensitivity"])
    rows0 = res["sensitivity"][names[0]]["sets"][set_name]
    wp = "vendi_wp" in rows0["clean"]
    cols = ["MMD² rel.", "ΔMMD²/sd", "Vendi rel."] + (["Vendi-within-prompt rel."] if wp else [])
    lines = ["| perturbation | grain ratio | " + " | ".join(f"{n}: {c}" for n in names for c in cols) + " |"]
    lines.append("|---" * (2 + len(cols) * len(names)) + "|")
    clean_cells = []
    for n in names:
        c = res["sensitivity"][n]["sets"][set_name]["clean"]
        clean_cells += [_f(c["mmd2"]), "–", f"{c['vendi']:.2f}"] + ([f"{c['vendi_wp']:.2f}"] if wp else [])
    lines.append(f"| clean (values) | {rows0['clean']['grain_ratio']:.2f} | " + " | ".join(clean_cells) + " |")
    for pert in list(rows0)[1:]:
        cells = []
        for n in names:
            r = res["sensitivity"][n]["sets"][set_name][pert]
            cells += [f"{r['mmd2_rel']:+.2f}", f"{r['mmd2_delta_in_sd']:+.1f}", f"{r['vendi_rel']:+.3f}"]
            cells += [f"{r['vendi_wp_rel']:+.3f}"] if wp else []
        lines.append(f"| {pert} | {rows0[pert]['grain_ratio']:.2f} | " + " | ".join(cells) + " |")
    return lines


def write_report(res: dict, out_dir: Path) -> Path:
    """``crater_encoder.md`` (tables) and ``crater_encoder.json`` (everything) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "crater_encoder.json").write_text(json.dumps(res, indent=2) + "\n")
    md = [
        "# Crater encoder vs random-init ResNet-18",
        "",
        "Generated by `scripts/evaluate_crater_encoder.py` (see its docstring for the exact definitions).",
        f"Spaces: **learned** = `{res['extractors']['learned']['weights']}` "
        f"({res['extractors']['learned']['dim']}-d, {res['extractors']['learned']['steps']} VICReg steps); "
        f"**resnet18-random** = `ResNet18Features(image_size=64)`, weights "
        f"`{res['extractors']['resnet18-random']['weights']}` (512-d). Wall time {res['seconds']:.0f} s.",
        "",
        f"## 1. Linear probes on caption attributes ({res['probe']['n']} fresh renders, seed {res['probe']['seed']}, "
        "75/25 stratified split)",
        "",
        *_probe_table(res),
        "",
        f"## 2. MMD² floor and real-vs-model gap ({res['n_perm']} permutations; bandwidth: median heuristic of "
        "the evaluation split)",
        "",
        f"Sets: real validation ({res['sizes']['validation']}), real evaluation ({res['sizes']['evaluation']}), "
        f"model samples ({res['sizes']['model']} = 16 test prompts × {res['images_per_prompt']}, 10 DDIM steps, "
        "guidance 2). z = (MMD² − permutation mean)/permutation sd; (gap − floor)/sd_floor puts the gap in units "
        "of the real-vs-real spread, comparable between the spaces. FID with 57–128 samples in 128/512 dimensions "
        "is rank-deficient and biased: for information.",
        "",
        *_gap_table(res),
        "",
        "## 3. Sensitivity to pixel noise and photometric changes",
        "",
        "MMD² to the real reference split and Vendi (RBF), both with the bandwidth fixed to the median heuristic "
        "of the reference split's features. Relative change = (perturbed − clean)/|clean|; ΔMMD²/sd = change in "
        "units of the permutation sd of MMD²(real validation, reference) in that space. Grain ratio: "
        "`rewards.grain.grain_ratio` vs the reference split (feature-free).",
    ]
    for set_name in res["sensitivity"]["learned"]["sets"]:
        md += ["", f"### {set_name}", "", *_sensitivity_table(res, set_name)]
    md += ["", "## Reading", "", *res["reading"], ""]
    path = out_dir / "crater_encoder.md"
    path.write_text("\n".join(md))
    return path


def reading(res: dict) -> list[str]:
    """Plain-language bullets derived from the numbers (which space wins where), plus the caveats."""
    acc, sens, gap = res["probe"]["accuracy"], res["sensitivity"], res["gap"]
    out = []
    for a in PROBE_ATTRS:
        lr, rr = acc[a]["learned"], acc[a]["resnet18-random"]
        verdict = "better" if lr > rr + 0.01 else ("WORSE" if lr < rr - 0.01 else "about the same")
        out.append(f"- Probe `{a}`: learned {lr:.3f} vs random ResNet {rr:.3f} → learned is {verdict}.")
    for name, g in gap.items():
        out.append(
            f"- {name}: real-vs-real floor p = {g['floor']['p']:.3f} (z = {g['floor']['z']:.2f}); model-vs-real gap "
            f"z = {g['gap']['z']:.1f} (p = {g['gap']['p']:.3f}, the smallest attainable is {1 / (res['n_perm'] + 1):.3f}), "
            f"(gap − floor)/sd_floor = {g['gap_in_floor_sd']:.1f}."
        )
    lg, rg = gap["learned"]["gap_in_floor_sd"], gap["resnet18-random"]["gap_in_floor_sd"]
    out.append(
        f"- Both spaces separate the model samples from real craters far beyond the real-vs-real spread; in floor "
        f"units the learned space shows the {'smaller' if lg < rg else 'larger'} gap ({lg:.1f} vs {rg:.1f} sd)."
    )
    for set_name in sens["learned"]["sets"]:
        row = {n: sens[n]["sets"][set_name]["noise 0.05"] for n in sens}
        wp = "vendi_wp_rel" in row["learned"]
        out.append(
            f"- Noise σ = 0.05 on {set_name}: Vendi {row['learned']['vendi_rel']:+.1%} (learned) vs "
            f"{row['resnet18-random']['vendi_rel']:+.1%} (random ResNet); ΔMMD² {row['learned']['mmd2_delta_in_sd']:+.1f}"
            f" sd vs {row['resnet18-random']['mmd2_delta_in_sd']:+.1f} sd"
            + (
                f"; within-prompt Vendi {row['learned']['vendi_wp_rel']:+.1%} vs "
                f"{row['resnet18-random']['vendi_wp_rel']:+.1%}."
                if wp
                else "."
            )
        )
    return out + _noise_bullets(sens) + CAVEATS


def _noise_bullets(sens: dict) -> list[str]:
    """What σ = 0.05 noise on the model samples does to MMD² and Vendi in each space, in words."""
    row = {n: sens[n]["sets"]["model samples"]["noise 0.05"] for n in sens}
    out = []
    for n, r in row.items():
        towards = r["mmd2_delta_in_sd"] < 0
        out.append(
            f"- {n}: σ = 0.05 noise moves the model samples {'TOWARDS' if towards else 'away from'} the real craters "
            f"(ΔMMD² {r['mmd2_delta_in_sd']:+.1f} sd): grain is {'rewarded' if towards else 'not rewarded'} by the "
            "MMD term there."
        )
    lv, rv = row["learned"]["vendi_rel"], row["resnet18-random"]["vendi_rel"]
    if abs(lv) > abs(rv):
        out.append(
            f"- Weakness of the learned space: on the sharp, renders-like model samples noise changes the Vendi score "
            f"by {lv:+.1%}, more than in the random-ResNet space ({rv:+.1%}); "
            + (
                "the embeddings of noisy images contract, so a noise-adding policy loses Vendi (penalised, not "
                "rewarded), but the learned Vendi is not noise-invariant for such images."
                if lv < 0
                else "noise reads as variety there."
            )
        )
    return out


CAVEATS = [
    "- Caveats: the encoder was trained on renders of the same generator as the probe set (other seeds) and on the "
    "reference split, so the probes and the reference-split MMD favour it by construction; the random ResNet saw "
    "nothing. The validation and evaluation splits were never used in training. Brightness and contrast were "
    "training augmentations, so the learned space is meant to be (partly) blind to them: a policy that only shifts "
    "the global brightness is barely penalised there.",
]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="validation report of the crater encoder")
    p.add_argument("--weights", default=None, help="encoder directory (default: the shipped one)")
    p.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--n-probe", type=int, default=2000)
    p.add_argument("--images-per-prompt", type=int, default=8)
    p.add_argument("--perms", type=int, default=500)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.monotonic()
    extractors = spaces(a.weights)
    meta = {k: dict(ex.metadata) for k, ex in extractors.items()}
    w = Path(meta["learned"]["weights"])
    meta["learned"]["weights"] = str(w.relative_to(REPO)) if w.is_relative_to(REPO) else str(w)
    res: dict = {"extractors": meta, "n_perm": a.perms}
    res["probe"] = probe_section(extractors, a.n_probe)
    mars = mars_reference_sets(size=32)
    model_images = sample_model(a.images_per_prompt)
    sets = {"validation": mars["validation"].images, "evaluation": mars["evaluation"].images, "model": model_images}
    res["sizes"] = {k: len(v) for k, v in sets.items()}
    res["images_per_prompt"] = a.images_per_prompt
    res["gap"] = {n: gap_section({k: ex(v) for k, v in sets.items()}, a.perms) for n, ex in extractors.items()}
    pid = np.repeat(np.arange(len(model_images) // a.images_per_prompt), a.images_per_prompt)
    pert_sets = {"model samples": (model_images, pid), "real validation": (mars["validation"].images, None)}
    res["sensitivity"] = {
        n: sensitivity_section(ex, pert_sets, mars["reference"].images, a.perms) for n, ex in extractors.items()
    }
    res["seconds"] = time.monotonic() - t0
    res["reading"] = reading(res)
    path = write_report(res, a.out_dir)
    print(path.read_text())


def sample_model(images_per_prompt: int) -> np.ndarray:
    """uint8 ``(16·k, 32, 32)`` samples of the embedded crater model for the test prompts (seed 0, 10 steps)."""
    from natgrad_diffusion.training.loop import load_model, sample_images

    prompts_file = REPO / "natgrad_diffusion" / "assets" / "prompts" / "crater_test.txt"
    prompts = [s for s in prompts_file.read_text().splitlines() if s.strip()]
    images, _ = sample_images(
        load_model(None), prompts, images_per_prompt=images_per_prompt, steps=10, guidance_scale=2.0, eta=0.0, seed=0
    )
    return images


if __name__ == "__main__":
    main()
