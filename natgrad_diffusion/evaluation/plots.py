"""Plots of image sets and their features: PCA / t-SNE scatter coloured by caption attributes, image grids.

:func:`pca_2d` and :func:`tsne_2d` are scikit-learn's PCA and t-SNE; :func:`plot_run` draws a run's training
curves.  From the command line: ``natgrad-diffusion plot --run DIR`` and ``natgrad-diffusion plot-features``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from natgrad_diffusion.core.logs import atomic_output
from natgrad_diffusion.data.craters.captions import ATTRIBUTES, parse_caption

__all__ = [
    "caption_attribute_table",
    "make_grid",
    "pca_2d",
    "plot_embedding",
    "plot_features",
    "plot_run",
    "save_image_grid",
    "tsne_2d",
]


def pca_2d(x: np.ndarray) -> np.ndarray:
    """Projection of ``x`` ``(N, D)`` on its first two principal components, ``(N, 2)`` (scikit-learn's PCA; signs
    fixed so that the largest-magnitude loading of each component is positive)."""
    from sklearn.decomposition import PCA

    x = np.asarray(x, np.float64)
    k = min(2, *x.shape)
    pca = PCA(n_components=k, svd_solver="full").fit(x)
    v = pca.components_
    sign = np.sign(v[np.arange(len(v)), np.abs(v).argmax(1)])
    y = (x - pca.mean_) @ (v * sign[:, None]).T
    if y.shape[1] < 2:
        y = np.pad(y, ((0, 0), (0, 2 - y.shape[1])))
    return y


def tsne_2d(x: np.ndarray, perplexity: float = 20.0, seed: int = 0) -> np.ndarray:
    """t-SNE of ``x`` ``(N, D)`` to ``(N, 2)`` (van der Maaten & Hinton 2008; scikit-learn's exact method after a
    50-dimensional PCA, perplexity capped at ``(N - 1) / 3``, PCA initialisation); deterministic for a ``seed``."""
    from sklearn.manifold import TSNE

    x = np.asarray(x, np.float64)
    n = x.shape[0]
    if n < 4:
        return pca_2d(x)
    xc = x - x.mean(0)
    if xc.shape[1] > 50:
        from sklearn.decomposition import PCA

        xc = PCA(n_components=min(50, n), svd_solver="full").fit_transform(xc)
    perp = min(perplexity, (n - 1) / 3.0)
    return TSNE(perplexity=perp, method="exact", init="pca", random_state=seed).fit_transform(xc)


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
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100, format=_format(path))
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
    a = np.asarray(images)
    grid = make_grid(a, ncols)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if row_labels is None and title is None:
        k = max(1, round(scale))
        big = grid.repeat(k, 0).repeat(k, 1)
        with atomic_output(path) as tmp:
            plt.imsave(tmp, big, cmap="gray" if big.ndim == 2 else None, vmin=0, vmax=255, format=_format(path))
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
    with atomic_output(path) as tmp:  # bbox "tight" keeps long row labels inside
        fig.savefig(tmp, dpi=100, bbox_inches="tight", pad_inches=0.05, format=_format(path))
    plt.close(fig)
    return path


def plot_features(
    features_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    prefix: str = "crater_reference",
    reference_path: str | os.PathLike | None = None,
) -> list[Path]:
    """PCA and t-SNE scatter plots of a features file (and an image grid of its reference set when given)."""
    from natgrad_diffusion.data.craters.reference import load_reference_set
    from natgrad_diffusion.rewards.features import load_features

    fs = load_features(features_path)
    src = "pretrained" if fs.extractor.get("pretrained") else "RANDOM-init"
    out_dir = Path(out_dir)
    paths = []
    for method in ("pca", "tsne"):
        title = f"{method.upper()} of L2-normalised {fs.extractor.get('name')} ({src}) features, N = {len(fs.captions)}"
        paths.append(
            plot_embedding(fs.features, fs.captions, out_dir / f"{prefix}_{method}.png", method=method, title=title)
        )
    if reference_path is not None:
        ref = load_reference_set(reference_path)
        paths.append(save_image_grid(ref.images[:64], out_dir / f"{prefix}_grid.png", ncols=8, scale=3))
    return paths


_RUN_PLOTS = (
    ("reward_value", "set-level reward (gathered batch)"),
    ("kl", "KL (mean per decision)"),
    ("mmd2", "batch MMD² to the reference ↓"),
    ("vendi_within_prompt", "batch Vendi within prompt ↑"),
    ("pairwise_distance_within_prompt", "batch pairwise distance within prompt ↑"),
    ("critic_loss", "critic loss"),
)


def run_panels(rows: list[dict[str, Any]], source: str | os.PathLike) -> list[tuple[str, np.ndarray]]:
    """``[("episode", episodes), (title, values per episode), ...]``: the curves of a run's CSV rows that hold at least one number (a critic
    loss without a critic, a KL without TRPO ... makes no panel).  A value that is not a number is a ``ValueError``
    naming ``source`` and the column."""

    def column(key: str) -> np.ndarray:
        values = [r.get(key) for r in rows]
        try:
            return np.array([float(v) if v not in (None, "") else np.nan for v in values])
        except ValueError:
            bad = next(v for v in values if v not in (None, "") and not _is_number(v))
            raise ValueError(f"{source}: column {key!r} holds {bad[:40]!r}, not a number") from None

    panels = [(title, column(key)) for key, title in _RUN_PLOTS]
    return [("episode", column("episode"))] + [(title, values) for title, values in panels if np.isfinite(values).any()]


def plot_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> list[Path]:
    """PNG plots of a run's CSV (reward, KL, metrics against the episode) into ``out_dir`` (``run_dir/plots``):
    one panel per curve that holds data (:func:`run_panels`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from natgrad_diffusion.core.logs import read_csv
    from natgrad_diffusion.core.rundir import CSV_FILE, PLOT_FILE, PLOTS_DIR

    run_dir = Path(run_dir)
    csv_path = run_dir / CSV_FILE
    rows = read_csv(csv_path)
    if not rows:
        raise ValueError(f"{csv_path} has no rows to plot")
    if "episode" not in rows[0]:
        raise ValueError(f"{csv_path} is not the training log of a run (no 'episode' column)")
    out = Path(out_dir) if out_dir is not None else run_dir / PLOTS_DIR
    (_, episodes), *panels = run_panels(rows, csv_path)
    if not panels:
        raise ValueError(f"{csv_path} holds no curve to plot")
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3.25 * nrows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (title, values) in zip(axes.flat, panels):
        ax.plot(episodes, values, marker=".", lw=1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("episode", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(str(run_dir), fontsize=9)
    fig.tight_layout()
    paths = [out / PLOT_FILE]
    with atomic_output(paths[0]) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return paths


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _format(path: Path) -> str:
    """The image format of ``path``'s suffix (``png`` when it has none)."""
    return path.suffix[1:].lower() or "png"


def save_comparison_grid(
    blocks: dict[str, np.ndarray], row_labels: list[str], per_row: int, path: str | os.PathLike, scale: float = 2.0
) -> Path:
    """A grid with one row per label and, side by side, ``per_row`` images of each block (e.g. ``real``,
    ``pretrained``, ``fine-tuned``; each block's images in row-major order), a blank column between blocks and the
    block names in the title."""
    rows = []
    for r in range(len(row_labels)):
        parts = []
        for images in blocks.values():
            a = np.asarray(images)
            cell = a[(r * per_row + np.arange(per_row)) % len(a)]
            parts.append(cell)
            parts.append(np.full_like(cell[:1], 255))  # a blank column between blocks
        rows.append(np.concatenate(parts[:-1]))
    ncols = len(rows[0])
    title = "   |   ".join(blocks)
    return save_image_grid(np.concatenate(rows), path, ncols=ncols, row_labels=row_labels, title=title, scale=scale)
