"""Plots of image sets and their features: PCA / t-SNE scatter coloured by caption attributes, image grids.

scikit-learn is not a dependency: :func:`pca_2d` is an SVD and :func:`tsne_2d` is a small exact t-SNE
(van der Maaten & Hinton 2008) in numpy, fine for up to a few hundred points (``O(N²)`` memory and time per
iteration).

CLI::

    python -m natgrad_diffusion.plots FEATURES.npz --reference REF.npz --out-dir docs/images --prefix crater_reference
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from natgrad_diffusion.craters.render import ATTRIBUTES, parse_caption

__all__ = [
    "caption_attribute_table",
    "make_grid",
    "pca_2d",
    "plot_embedding",
    "save_image_grid",
    "tsne_2d",
]


def pca_2d(x: np.ndarray) -> np.ndarray:
    """Projection of ``x`` ``(N, D)`` on its first two principal components, ``(N, 2)`` (signs fixed so that the
    largest-magnitude loading of each component is positive)."""
    x = np.asarray(x, np.float64)
    xc = x - x.mean(0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    v = vt[:2]
    sign = np.sign(v[np.arange(len(v)), np.abs(v).argmax(1)])
    y = xc @ (v * sign[:, None]).T
    if y.shape[1] < 2:
        y = np.pad(y, ((0, 0), (0, 2 - y.shape[1])))
    return y


def _binary_search_p(d2: np.ndarray, perplexity: float, tol: float = 1e-5, iters: int = 60) -> np.ndarray:
    """Row-conditional affinities ``p_{j|i} ∝ exp(-β_i d²_ij)`` with ``β_i`` chosen so that ``2^H(P_i) = perplexity``."""
    n = d2.shape[0]
    p = np.zeros((n, n))
    target = np.log(perplexity)
    for i in range(n):
        di = np.delete(d2[i], i)
        lo, hi, beta = 0.0, np.inf, 1.0 / max(np.median(di), 1e-12)
        for _ in range(iters):
            e = np.exp(-(di - di.min()) * beta)
            s = e.sum()
            h = np.log(s) + beta * np.sum((di - di.min()) * e) / s
            if abs(h - target) < tol:
                break
            if h > target:
                lo = beta
                beta = beta * 2 if hi == np.inf else (beta + hi) / 2
            else:
                hi = beta
                beta = (beta + lo) / 2
        p[i, np.arange(n) != i] = e / s
    return p


def tsne_2d(
    x: np.ndarray, perplexity: float = 20.0, n_iter: int = 750, learning_rate: float | None = None, seed: int = 0
) -> np.ndarray:
    """Exact t-SNE of ``x`` ``(N, D)`` to ``(N, 2)`` (van der Maaten & Hinton 2008).

    Symmetrised affinities ``P = (P_{j|i} + P_{i|j}) / 2N`` from Gaussian kernels at the given perplexity
    (capped at ``(N - 1) / 3``), Student-t similarities ``q_ij ∝ (1 + ||y_i - y_j||²)^-1``, gradient
    ``4 Σ_j (p_ij - q_ij)(y_i - y_j)(1 + ||y_i - y_j||²)^-1``, early exaggeration 12 for the first 250
    iterations, momentum 0.5 → 0.8 and per-coordinate gains; input first reduced to 50 PCA dimensions.
    Deterministic for a given ``seed``.
    """
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    if n < 4:
        return pca_2d(x)
    xc = x - x.mean(0)
    if xc.shape[1] > 50:
        _, _, vt = np.linalg.svd(xc, full_matrices=False)
        xc = xc @ vt[:50].T
    d2 = np.maximum(((xc[:, None, :] - xc[None, :, :]) ** 2).sum(-1), 0.0)
    perp = min(perplexity, (n - 1) / 3.0)
    p = _binary_search_p(d2, perp)
    p = (p + p.T) / (2.0 * n)
    p = np.maximum(p, 1e-12)
    rng = np.random.default_rng(seed)
    y = rng.standard_normal((n, 2)) * 1e-4
    upd = np.zeros_like(y)
    gains = np.ones_like(y)
    lr = learning_rate if learning_rate is not None else max(n / 12.0 / 4.0, 50.0)
    for it in range(n_iter):
        exag = 12.0 if it < 250 else 1.0
        dy = y[:, None, :] - y[None, :, :]
        num = 1.0 / (1.0 + (dy**2).sum(-1))
        np.fill_diagonal(num, 0.0)
        q = np.maximum(num / num.sum(), 1e-12)
        grad = 4.0 * (((exag * p - q) * num)[:, :, None] * dy).sum(1)
        mom = 0.5 if it < 250 else 0.8
        gains = np.where(np.sign(grad) != np.sign(upd), gains + 0.2, gains * 0.8).clip(0.01)
        upd = mom * upd - lr * gains * grad
        y = y + upd
        y = y - y.mean(0)
    return y


def caption_attribute_table(captions: list[str]) -> dict[str, list[str]]:
    """Per-attribute value lists for captions (``"unknown"`` where a caption is not a renderer caption)."""
    table: dict[str, list[str]] = {k: [] for k in ATTRIBUTES}
    for c in captions:
        try:
            a = parse_caption(c)
        except ValueError:
            a = dict.fromkeys(ATTRIBUTES, "unknown")
        for k in ATTRIBUTES:
            table[k].append(a[k])
    return table


def plot_embedding(
    features: np.ndarray,
    captions: list[str],
    path: str | os.PathLike,
    method: str = "pca",
    attributes: tuple[str, ...] = ("size", "freshness", "morphology", "direction", "elevation", "count"),
    title: str | None = None,
    seed: int = 0,
    normalize: str | None = "l2",
) -> Path:
    """Scatter of a 2-D embedding (``"pca"`` or ``"tsne"``) of ``features`` ``(N, D)``, one panel per caption
    attribute with points coloured by its value; saved as PNG at ``path``.

    ``normalize="l2"`` (default) scales each feature vector to unit norm first: the embedding then shows
    directions in feature space rather than overall activation magnitude, which for randomly initialised
    networks is ~98 % of the variance and mostly tracks image contrast. ``None`` uses the raw features.
    """
    features = np.asarray(features, np.float64)
    if normalize == "l2":
        features = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    elif normalize is not None:
        raise ValueError(f"normalize must be 'l2' or None, got {normalize!r}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if method == "pca":
        y = pca_2d(features)
    elif method == "tsne":
        y = tsne_2d(features, seed=seed)
    else:
        raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")
    table = caption_attribute_table(captions)
    ncols = min(3, len(attributes))
    nrows = int(np.ceil(len(attributes) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, attr in zip(axes.flat, attributes):
        vals = np.array(table[attr])
        order = [v for v in (*ATTRIBUTES[attr], "unknown") if v in set(vals)]
        for k, v in enumerate(order):
            m = vals == v
            color = "0.6" if v == "unknown" else cmap(k)
            ax.scatter(y[m, 0], y[m, 1], s=16, color=color, label=f"{v} ({m.sum()})", alpha=0.85, edgecolors="none")
        ax.set_title(attr)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7, loc="best", framealpha=0.6)
    for ax in list(axes.flat)[len(attributes) :]:
        ax.axis("off")
    fig.suptitle(title or f"{method.upper()} of {features.shape[1]}-d features, N = {features.shape[0]}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def make_grid(images: np.ndarray, ncols: int | None = None, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile uint8 images ``(N, H, W)`` or ``(N, H, W, 3)`` into one ``(rows·(H+pad)+pad, cols·(W+pad)+pad[, 3])``
    array (row-major; empty cells are ``pad_value``)."""
    a = np.asarray(images)
    if a.ndim not in (3, 4):
        raise ValueError(f"expected (N, H, W) or (N, H, W, 3), got {a.shape}")
    n, h, w = a.shape[:3]
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    shape = (nrows * (h + pad) + pad, ncols * (w + pad) + pad, *a.shape[3:])
    grid = np.full(shape, pad_value, dtype=a.dtype)
    for i in range(n):
        r, c = divmod(i, ncols)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = a[i]
    return grid


def save_image_grid(
    images: np.ndarray,
    path: str | os.PathLike,
    ncols: int | None = None,
    row_labels: list[str] | None = None,
    title: str | None = None,
    scale: float = 1.0,
) -> Path:
    """Save an image grid PNG. Without labels/title the grid is written pixel-exact (``scale`` = integer
    upsampling); with ``row_labels`` (one per grid row) or a ``title`` it is drawn with matplotlib."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.asarray(images)
    grid = make_grid(a, ncols)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if row_labels is None and title is None:
        k = max(1, round(scale))
        big = grid.repeat(k, 0).repeat(k, 1)
        plt.imsave(path, big, cmap="gray" if big.ndim == 2 else None, vmin=0, vmax=255)
        return path
    h, w = grid.shape[:2]
    label_w = 0.0 if not row_labels else 0.055 * max(len(s) for s in row_labels)
    fig_w = w / 40.0 * scale + label_w
    fig, ax = plt.subplots(figsize=(fig_w, h / 40.0 * scale + (0.4 if title else 0.1)))
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    if row_labels:
        cell = a.shape[1] + 2
        ax.set_yticks([2 + cell * i + a.shape[1] / 2 for i in range(len(row_labels))])
        ax.set_yticklabels(row_labels, fontsize=7)
        ax.tick_params(length=0)
    else:
        ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight", pad_inches=0.05)  # keeps long row labels inside
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    """CLI: PCA and t-SNE scatter plots of a features file, plus an image grid of its reference set."""
    import argparse

    from natgrad_diffusion.craters.reference import load_reference_set
    from natgrad_diffusion.features import load_features

    p = argparse.ArgumentParser(description="plot reference features (PCA, t-SNE) and an image grid")
    p.add_argument("features", type=Path)
    p.add_argument("--reference", type=Path, default=None, help="reference .npz for the image grid")
    p.add_argument("--out-dir", type=Path, default=Path("docs/images"))
    p.add_argument("--prefix", default="crater_reference")
    a = p.parse_args(argv)
    fs = load_features(a.features)
    src = "pretrained" if fs.extractor.get("pretrained") else "RANDOM-init"
    for method in ("pca", "tsne"):
        out = plot_embedding(
            fs.features,
            fs.captions,
            a.out_dir / f"{a.prefix}_{method}.png",
            method=method,
            title=f"{method.upper()} of L2-normalised {fs.extractor.get('name')} ({src}) features, N = {len(fs.captions)}",
        )
        print(f"wrote {out}")
    if a.reference is not None:
        ref = load_reference_set(a.reference)
        out = save_image_grid(ref.images[:64], a.out_dir / f"{a.prefix}_grid.png", ncols=8, scale=3)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
