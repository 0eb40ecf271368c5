"""Evaluate the embedded crater model: do its samples look like craters, and do they follow their captions?

Usage::

    python scripts/evaluate_crater_model.py            # embedded model, writes docs/ files

Protocol (all seeded):

1. A fresh reference set ``R`` of ``--n`` renders (32 × 32, broad diversity, seed 10 000; the training run used
   seed 0) and a second fresh set ``R'`` (seed 20 000) whose captions are the prompts.
2. One sample per prompt from the trained model and from the *same architecture with random weights*
   (:func:`~natgrad_diffusion.data.craters.model.build_crater_model`), DDIM ``--steps`` steps, guidance ``--guidance``.
3. Features: ResNet-18 (:mod:`natgrad_diffusion.rewards.features`, whatever weights are available, recorded), the same
   L2-normalised (without pretrained weights the feature norm dominates and mostly tracks contrast), and raw
   pixels (the 32 × 32 image as a 1024-vector in [0, 1]).
4. Against ``R``: unbiased MMD² with an RBF kernel whose bandwidth is the median pairwise distance of ``R``'s
   features, and FID (Fréchet distance of Gaussian fits). ``R'`` vs ``R`` gives the real-vs-real floor.
5. Caption following: a small CNN with one head per caption attribute, trained on renders, reads the
   attributes of the samples; the accuracy is the fraction of samples whose attribute matches their prompt.

Writes ``docs/crater_model_eval.json``, ``docs/crater_model_renders.md`` (included by the docs page
``docs/crater_model_eval.md``) and the image grids
``docs/images/crater_model_samples.png`` (trained; first column: a render with the row's caption) and
``docs/images/crater_model_random_samples.png`` (random weights).

MMD², its bandwidth and FID are those of :mod:`natgrad_diffusion.rewards` (one implementation of each).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

import natgrad_diffusion
from natgrad_diffusion.data.craters.captions import ATTRIBUTES, parse_caption
from natgrad_diffusion.data.craters.model import build_crater_model, load_crater_model
from natgrad_diffusion.data.craters.reference import generate_reference_set
from natgrad_diffusion.data.craters.render import render_batch
from natgrad_diffusion.rewards import frechet_distance_features, median_heuristic_bandwidth, mmd2_unbiased

__all__ = ["evaluate", "train_attribute_classifier"]

PROMPTS_DIR = Path(natgrad_diffusion.__file__).resolve().parent / "assets" / "prompts"


# ----------------------------------------------------------------------------------------------------------------------
# attribute classifier (reads captions back from images)
# ----------------------------------------------------------------------------------------------------------------------


class _AttributeNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        c = [1, 32, 64, 96]
        layers: list[torch.nn.Module] = []
        for a, b in itertools.pairwise(c):
            layers += [torch.nn.Conv2d(a, b, 3, padding=1), torch.nn.GroupNorm(8, b), torch.nn.SiLU()]
            layers += [
                torch.nn.Conv2d(b, b, 3, padding=1),
                torch.nn.GroupNorm(8, b),
                torch.nn.SiLU(),
                torch.nn.MaxPool2d(2),
            ]
        self.body = torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.heads = torch.nn.ModuleDict({k: torch.nn.Linear(c[-1], len(v)) for k, v in ATTRIBUTES.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(x)
        return {k: head(h) for k, head in self.heads.items()}


def _labels(captions: list[str]) -> dict[str, torch.Tensor]:
    attrs = [parse_caption(c) for c in captions]
    return {k: torch.tensor([ATTRIBUTES[k].index(a[k]) for a in attrs]) for k in ATTRIBUTES}


def train_attribute_classifier(
    n_train: int = 6000, steps: int = 900, seed: int = 123, size: int = 32
) -> tuple[_AttributeNet, dict[str, float]]:
    """A CNN with one softmax head per caption attribute, trained on renders (seed ``seed``); returns it and its
    accuracy per attribute on 1000 held-out renders."""
    torch.manual_seed(seed)
    imgs, caps, _ = render_batch(n_train + 1000, seed=seed, size=size)
    x = torch.as_tensor(imgs, dtype=torch.float32).unsqueeze(1) / 127.5 - 1.0
    y = _labels(caps)
    net = _AttributeNet()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, n_train, (64,), generator=gen)
        out = net(x[idx])
        loss = sum(torch.nn.functional.cross_entropy(out[k], y[k][idx]) for k in ATTRIBUTES)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    return net, _accuracy(net, imgs[n_train:], caps[n_train:])


@torch.no_grad()
def _accuracy(net: _AttributeNet, images: np.ndarray, captions: list[str]) -> dict[str, float]:
    x = torch.as_tensor(images, dtype=torch.float32).unsqueeze(1) / 127.5 - 1.0
    y = _labels(captions)
    out = net(x)
    return {k: round(float((out[k].argmax(1) == y[k]).float().mean()), 4) for k in ATTRIBUTES}


# ----------------------------------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------------------------------


def _metrics(ref: np.ndarray, others: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    sigma = median_heuristic_bandwidth(ref)
    return {
        name: {
            "mmd2": round(mmd2_unbiased(f, ref, bandwidth=sigma), 6),
            "fid": round(frechet_distance_features(f, ref), 4),
        }
        for name, f in others.items()
    }


def _feature_metrics(args: argparse.Namespace, ref, ref2, samples: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """MMD² / FID of the fresh renders and the samples against the reference in three spaces; the extractor."""
    from natgrad_diffusion.rewards.features import ResNet18Features

    extractor = ResNet18Features(image_size=args.image_size)
    feats = {"reference": extractor(ref.images), "fresh_renders": extractor(ref2.images)}
    feats.update({k: extractor(v) for k, v in samples.items()})
    pix = {
        "reference": ref.images.reshape(len(ref), -1) / 255.0,
        "fresh_renders": ref2.images.reshape(len(ref2), -1) / 255.0,
    }
    pix.update({k: v.reshape(len(v), -1) / 255.0 for k, v in samples.items()})
    names = ("fresh_renders", "trained", "random_weights")
    unit = {k: v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12) for k, v in feats.items()}
    results = {
        "resnet18": _metrics(feats["reference"], {k: feats[k] for k in names}),
        "resnet18_l2": _metrics(unit["reference"], {k: unit[k] for k in names}),
        "pixels": _metrics(pix["reference"], {k: pix[k] for k in names}),
    }
    return results, extractor.metadata


def _caption_following(samples: dict[str, np.ndarray], prompts: list[str]) -> dict:
    t0 = time.time()
    net, render_acc = train_attribute_classifier()
    out = {
        "classifier_accuracy_on_renders": render_acc,
        "trained": _accuracy(net, samples["trained"], prompts),
        "random_weights": _accuracy(net, samples["random_weights"], prompts),
        "chance": {k: round(1.0 / len(v), 4) for k, v in ATTRIBUTES.items()},
    }
    print(f"attribute classifier trained and applied in {time.time() - t0:.0f} s", flush=True)
    return out


def _write_grids(args: argparse.Namespace, trained, random_model, samples: dict[str, np.ndarray], ref) -> Path:
    """One row per test prompt (first column a render with that caption); random-weight samples; the reference."""
    from natgrad_diffusion.evaluation.plots import save_image_grid

    grid_prompts = _grid_prompts(args.grid_rows)
    per_row = args.grid_cols
    gen = torch.Generator().manual_seed(args.seed + 1)
    rows = []
    for p in grid_prompts:
        refimg = _render_for_caption(p)
        smp = trained.sample([p] * per_row, num_inference_steps=args.steps, guidance_scale=args.guidance, generator=gen)
        rows.append(np.concatenate([refimg[None], smp]))
    grid_path = Path(args.grid)
    save_image_grid(
        np.concatenate(rows),
        grid_path,
        ncols=per_row + 1,
        row_labels=grid_prompts,
        title="crater-ddim-32 samples (first column: a render with the same caption)",
        scale=1.6,
    )
    gen = torch.Generator().manual_seed(args.seed + 1)
    rnd = random_model.sample(
        grid_prompts[:2], num_inference_steps=args.steps, guidance_scale=args.guidance, generator=gen
    )
    save_image_grid(
        np.concatenate([samples["random_weights"][:14], rnd]),
        grid_path.with_name("crater_model_random_samples.png"),
        ncols=8,
        title="same architecture, random weights",
        scale=1.6,
    )
    save_image_grid(ref.images[:64], grid_path.with_name("crater_eval_reference_grid.png"), ncols=8, scale=3)
    return grid_path


def evaluate(args: argparse.Namespace) -> dict:
    """The whole protocol of the module docstring; writes the JSON, markdown and grids and returns the report."""
    torch.set_num_threads(args.threads)
    t_start = time.time()
    ref = generate_reference_set(args.n, seed=10_000, size=32)
    ref2 = generate_reference_set(args.n, seed=20_000, size=32)
    prompts = ref2.captions
    trained = load_crater_model(args.model)
    random_model = build_crater_model(trained.config, seed=0)
    samples = {}
    for name, model in (("trained", trained), ("random_weights", random_model)):
        t0 = time.time()
        gen = torch.Generator().manual_seed(args.seed)
        samples[name] = model.sample(
            prompts, num_inference_steps=args.steps, guidance_scale=args.guidance, generator=gen
        )
        print(f"sampled {len(prompts)} images from the {name} model in {time.time() - t0:.0f} s", flush=True)
    results, extractor_meta = _feature_metrics(args, ref, ref2, samples)
    stats = {k: {"mean": round(float(v.mean()), 2), "std": round(float(v.std()), 2)} for k, v in samples.items()}
    stats["reference"] = {"mean": round(float(ref.images.mean()), 2), "std": round(float(ref.images.std()), 2)}
    caption_following = None if args.no_classifier else _caption_following(samples, prompts)
    grid_path = _write_grids(args, trained, random_model, samples, ref)
    report = {
        "model": str(args.model or "embedded (natgrad_diffusion/assets/crater-ddim-32)"),
        "model_metadata": {k: trained.metadata.get(k) for k in ("steps", "train_minutes", "final_train_loss", "seed")},
        "n": args.n,
        "reference": {"seed": 10_000, "size": 32, "diversity": "broad"},
        "prompts": "captions of a second fresh set (seed 20000)",
        "sampler": {"ddim_steps": args.steps, "guidance_scale": args.guidance, "eta": 0.0, "seed": args.seed},
        "mmd_bandwidth": "median pairwise distance of the reference features",
        "feature_extractor": extractor_meta,
        "metrics": results,
        "pixel_stats": stats,
        "caption_following": caption_following,
        "seconds": round(time.time() - t_start, 1),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    Path(args.md).write_text(_markdown(report, grid_path))
    print(json.dumps(results, indent=1))
    return report


def _grid_prompts(k: int) -> list[str]:
    path = PROMPTS_DIR / "crater_test.txt"
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
    if not lines:
        lines = render_batch(k, seed=30_000, size=32)[1]
    return lines[:k]


def _render_for_caption(caption: str, size: int = 32, tries: int = 4000) -> np.ndarray:
    """First render (seed 40 000) whose caption equals ``caption`` (rejection sampling)."""
    want = parse_caption(caption)
    for i in range(tries):
        img, cap, _ = render_batch(1, seed=40_000, size=size, diversity=0.3, base=want, start=i)
        if cap[0] == caption:
            return img[0]
    return np.full((size, size), 255, np.uint8)


def _markdown(r: dict, grid_path: Path) -> str:
    fe = r["feature_extractor"]
    src = fe["weights"] + (" (pretrained)" if fe["pretrained"] else " — no pretrained weights were available offline")
    lines = [
        "## Against fresh renders (the data it was trained on)",
        "",
        f"Made by `python scripts/evaluate_crater_model.py` ({r['seconds']:.0f} s on the 2-core CPU).",
        "",
        f"- model: {r['model']}; training: {r['model_metadata']}",
        f"- N = {r['n']} samples per model, one per prompt; prompts = {r['prompts']}",
        f"- reference: {r['n']} fresh renders {r['reference']}",
        f"- sampler: {r['sampler']}",
        f"- ResNet-18 features: {src}, input {fe['image_size']} px",
        "- MMD²: unbiased, RBF kernel, bandwidth = median pairwise distance of the reference features; "
        "FID: Fréchet distance of Gaussian fits (eigh-based matrix square root). Lower is better.",
        "",
        "| compared with the reference set | MMD² (ResNet-18) | FID (ResNet-18) | MMD² (ResNet-18, L2-normalised) "
        "| FID (ResNet-18, L2-normalised) | MMD² (pixels) | FID (pixels) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    labels = {
        "fresh_renders": "fresh renders (real-vs-real floor)",
        "trained": "**trained model samples**",
        "random_weights": "same architecture, random weights",
    }
    for k, lab in labels.items():
        a, u, b = r["metrics"]["resnet18"][k], r["metrics"]["resnet18_l2"][k], r["metrics"]["pixels"][k]
        lines.append(
            f"| {lab} | {a['mmd2']:.4f} | {a['fid']:.2f} | {u['mmd2']:.4f} | {u['fid']:.4f} "
            f"| {b['mmd2']:.4f} | {b['fid']:.2f} |"
        )
    cf = r["caption_following"]
    if cf:
        lines += [
            "",
            "Caption following: an attribute classifier (small CNN, one head per attribute) trained on renders reads",
            "the attributes of each sample; accuracy = fraction matching the prompt.",
            "",
            "| attribute | chance | classifier on held-out renders | trained model | random weights |",
            "| --- | --- | --- | --- | --- |",
        ]
        for k in ATTRIBUTES:
            lines.append(
                f"| {k} | {cf['chance'][k]:.2f} | {cf['classifier_accuracy_on_renders'][k]:.2f} | "
                f"{cf['trained'][k]:.2f} | {cf['random_weights'][k]:.2f} |"
            )
        followed = [k for k in ATTRIBUTES if cf["trained"][k] >= cf["chance"][k] + 0.15]
        ignored = [k for k in ATTRIBUTES if cf["trained"][k] < cf["chance"][k] + 0.05]
        lines += ["", f"Followed (≥ chance + 0.15): {', '.join(followed) or 'none'}."]
        if ignored:
            lines.append(
                f"**Not followed** (within 0.05 of chance or below): {', '.join(ignored)} — "
                "the samples vary in these attributes whatever the prompt says."
            )
    lines += [
        "",
        f"Pixel statistics (mean / std of uint8 values): {r['pixel_stats']}",
        "",
        f"![samples](images/{grid_path.name})",
        "",
        "![random weights](images/crater_model_random_samples.png)",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="evaluate the crater diffusion model against fresh renders")
    p.add_argument("--model", type=Path, default=None, help="model directory (default: the embedded model)")
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--steps", type=int, default=25, help="DDIM steps")
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=224, help="feature extractor input size")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is faster on a busy 2-core machine)")
    p.add_argument("--no-classifier", action="store_true")
    p.add_argument("--grid-rows", type=int, default=8)
    p.add_argument("--grid-cols", type=int, default=8)
    p.add_argument("--json", type=Path, default=Path("docs/crater_model_eval.json"))
    p.add_argument("--md", type=Path, default=Path("docs/crater_model_renders.md"))
    p.add_argument("--grid", type=Path, default=Path("docs/images/crater_model_samples.png"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    evaluate(parse_args(argv))


if __name__ == "__main__":
    main()
