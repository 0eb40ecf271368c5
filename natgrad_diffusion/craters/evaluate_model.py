"""Evaluate the embedded crater model: do its samples look like craters, and do they follow their captions?

Usage::

    python -m natgrad_diffusion.craters.evaluate_model            # embedded model, writes docs/ files

Protocol (all seeded):

1. A fresh reference set ``R`` of ``--n`` renders (32 × 32, broad diversity, seed 10 000; the training run used
   seed 0) and a second fresh set ``R'`` (seed 20 000) whose captions are the prompts.
2. One sample per prompt from the trained model and from the *same architecture with random weights*
   (:func:`~natgrad_diffusion.craters.model.build_crater_model`), DDIM ``--steps`` steps, guidance ``--guidance``.
3. Features: ResNet-18 (:mod:`natgrad_diffusion.features`, whatever weights are available, recorded), the same
   L2-normalised (without pretrained weights the feature norm dominates and mostly tracks contrast), and raw
   pixels (the 32 × 32 image as a 1024-vector in [0, 1]).
4. Against ``R``: unbiased MMD² with an RBF kernel whose bandwidth is the median pairwise distance of ``R``'s
   features, and FID (Fréchet distance of Gaussian fits). ``R'`` vs ``R`` gives the real-vs-real floor.
5. Caption following: a small CNN with one head per caption attribute, trained on renders, reads the
   attributes of the samples; the accuracy is the fraction of samples whose attribute matches their prompt.

Writes ``docs/crater_model_eval.json``, ``docs/crater_model_eval.md`` and the image grids
``docs/images/crater_model_samples.png`` (trained; first column: a render with the row's caption) and
``docs/images/crater_model_random_samples.png`` (random weights).

The MMD / FID helpers here are for this evaluation only; the reward functions live in
``natgrad_diffusion.rewards``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

from natgrad_diffusion.craters.model import build_crater_model, load_crater_model
from natgrad_diffusion.craters.reference import generate_reference_set
from natgrad_diffusion.craters.render import ATTRIBUTES, parse_caption, render_batch

__all__ = [
    "fid",
    "median_bandwidth",
    "mmd2_unbiased",
    "sqrtm_psd",
    "train_attribute_classifier",
]

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "assets" / "prompts"


# ----------------------------------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------------------------------


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def median_bandwidth(ref: np.ndarray) -> float:
    """Median heuristic: ``σ = median_{i<j} ||r_i - r_j||`` over the reference features."""
    d = _sq_dists(ref, ref)
    iu = np.triu_indices(len(ref), 1)
    return float(np.sqrt(np.median(d[iu])))


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """Unbiased MMD² (Gretton et al. 2012) with ``k(a, b) = exp(-||a - b||² / (2σ²))``.

    ``MMD²_u = Σ_{i≠j} k(x_i,x_j)/(m(m-1)) + Σ_{i≠j} k(y_i,y_j)/(n(n-1)) - 2 Σ_{ij} k(x_i,y_j)/(mn)``;
    may be slightly negative when the two distributions are equal.
    """
    m, n = len(x), len(y)
    g = 1.0 / (2.0 * sigma * sigma)
    kxx, kyy, kxy = np.exp(-g * _sq_dists(x, x)), np.exp(-g * _sq_dists(y, y)), np.exp(-g * _sq_dists(x, y))
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2.0 * kxy.mean()
    )


def sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix via ``eigh`` (negative
    round-off eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh((a + a.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def fid(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits (Heusel et al. 2017):
    ``||μ_x - μ_y||² + tr(Σ_x + Σ_y - 2 (Σ_x^{1/2} Σ_y Σ_x^{1/2})^{1/2})``, computed with eigendecompositions
    (``tr M^{1/2}`` of the PSD ``M = Σ_x^{1/2} Σ_y Σ_x^{1/2}`` is the sum of the square roots of its eigenvalues)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    mx, my = x.mean(0), y.mean(0)
    cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    sx = sqrtm_psd(cx)
    m = sx @ cy @ sx
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2.0), 0.0, None)).sum()
    return float(((mx - my) ** 2).sum() + np.trace(cx) + np.trace(cy) - 2.0 * tr_sqrt)


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
    sigma = median_bandwidth(ref)
    return {
        name: {"mmd2": round(mmd2_unbiased(f, ref, sigma), 6), "fid": round(fid(f, ref), 4)}
        for name, f in others.items()
    }


def evaluate(args: argparse.Namespace) -> dict:
    from natgrad_diffusion.features import ResNet18Features
    from natgrad_diffusion.plots import save_image_grid

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
    stats = {k: {"mean": round(float(v.mean()), 2), "std": round(float(v.std()), 2)} for k, v in samples.items()}
    stats["reference"] = {"mean": round(float(ref.images.mean()), 2), "std": round(float(ref.images.std()), 2)}

    caption_following = None
    if not args.no_classifier:
        t0 = time.time()
        net, render_acc = train_attribute_classifier()
        caption_following = {
            "classifier_accuracy_on_renders": render_acc,
            "trained": _accuracy(net, samples["trained"], prompts),
            "random_weights": _accuracy(net, samples["random_weights"], prompts),
            "chance": {k: round(1.0 / len(v), 4) for k, v in ATTRIBUTES.items()},
        }
        print(f"attribute classifier trained and applied in {time.time() - t0:.0f} s", flush=True)

    # image grids: one row per test prompt, first column a render with that caption
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
        grid_prompts[:2] * 1, num_inference_steps=args.steps, guidance_scale=args.guidance, generator=gen
    )
    save_image_grid(
        np.concatenate([samples["random_weights"][:14], rnd]),
        Path(args.grid).with_name("crater_model_random_samples.png"),
        ncols=8,
        title="same architecture, random weights",
        scale=1.6,
    )
    save_image_grid(ref.images[:64], Path(args.grid).with_name("crater_eval_reference_grid.png"), ncols=8, scale=3)

    report = {
        "model": str(args.model or "embedded (natgrad_diffusion/assets/crater-ddim-32)"),
        "model_metadata": {k: trained.metadata.get(k) for k in ("steps", "train_minutes", "final_train_loss", "seed")},
        "n": args.n,
        "reference": {"seed": 10_000, "size": 32, "diversity": "broad"},
        "prompts": "captions of a second fresh set (seed 20000)",
        "sampler": {"ddim_steps": args.steps, "guidance_scale": args.guidance, "eta": 0.0, "seed": args.seed},
        "mmd_bandwidth": "median pairwise distance of the reference features",
        "feature_extractor": extractor.metadata,
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
        "# Embedded crater model: evaluation",
        "",
        f"Made by `python -m natgrad_diffusion.craters.evaluate_model` ({r['seconds']:.0f} s on the 2-core CPU).",
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


def write_markdown(json_path: str | Path, md_path: str | Path, grid_path: str | Path) -> None:
    """Re-write the markdown note from an evaluation JSON (no sampling)."""
    r = json.loads(Path(json_path).read_text())
    Path(md_path).write_text(_markdown(r, Path(grid_path)))


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
    p.add_argument("--md", type=Path, default=Path("docs/crater_model_eval.md"))
    p.add_argument("--grid", type=Path, default=Path("docs/images/crater_model_samples.png"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    evaluate(parse_args(argv))


if __name__ == "__main__":
    main()
