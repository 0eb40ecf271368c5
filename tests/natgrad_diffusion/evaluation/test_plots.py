"""Plots: embeddings, image grids and a run's training curves (one panel per curve that holds data)."""

import csv

import numpy as np
import pytest

from natgrad_diffusion.data.craters.reference import generate_reference_set
from natgrad_diffusion.evaluation.plots import (
    make_grid,
    pca_2d,
    plot_embedding,
    plot_run,
    run_panels,
    save_image_grid,
    tsne_2d,
)


def test_pca_tsne_separate_clusters_and_plots_are_written(tmp_path):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (15, 10)), rng.normal(8, 1, (15, 10))])
    lab = np.r_[np.zeros(15), np.ones(15)].astype(bool)
    for y in (pca_2d(x), tsne_2d(x, perplexity=5)):
        assert y.shape == (30, 2)
        d = np.linalg.norm(y[:, None] - y[None], axis=-1)
        np.fill_diagonal(d, np.inf)
        nearest = d.argmin(1)
        assert np.all(lab[nearest] == lab)  # every point's nearest neighbour is in its own cluster
        assert d[lab][:, ~lab].min() > np.median(d[lab][:, lab][np.isfinite(d[lab][:, lab])])
    ref = generate_reference_set(12, seed=0, size=16)
    feats = rng.normal(size=(12, 8)).astype(np.float32)
    for method in ("pca", "tsne"):
        captions = [*ref.captions[:11], "a photo of something else"]  # drawn as "unknown"
        p = plot_embedding(feats, captions, tmp_path / f"{method}.png", method=method)
        assert p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="method"):
        plot_embedding(feats, ref.captions, tmp_path / "x.png", method="umap")
    g = save_image_grid(ref.images, tmp_path / "grid.png", ncols=4, scale=2)
    from PIL import Image

    with Image.open(g) as im:
        assert im.size == ((4 * 18 + 2) * 2, (3 * 18 + 2) * 2)


def test_make_grid_tiles_row_major_and_pads():
    images = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2)
    grid = make_grid(images, ncols=2, pad=1, pad_value=255)
    assert grid.shape == (2 * 3 + 1, 2 * 3 + 1)
    np.testing.assert_array_equal(grid[1:3, 4:6], images[1])  # second image: first row, second column
    np.testing.assert_array_equal(grid[4:6, 1:3], images[2])
    assert (grid[4:6, 4:6] == 255).all()  # the empty cell


def _csv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_a_curve_without_values_makes_no_panel(tmp_path):
    """The LoRA path has no critic: its critic-loss column is empty and gets no (empty) panel."""
    rows = [{"episode": e, "reward_value": 0.1 * e, "kl": 0.01, "mmd2": 0.2, "vendi_within_prompt": 1.5,
             "pairwise_distance_within_prompt": 3.0, "critic_loss": ""} for e in range(1, 4)]  # fmt: skip
    titles = [t for t, _ in run_panels(rows, "x.csv")]
    assert titles[0] == "episode" and len(titles) == 6 and not any("critic" in t for t in titles)
    rows = [{**r, "critic_loss": 0.5} for r in rows]
    assert any("critic" in t for t, _ in run_panels(rows, "x.csv"))
    _csv(tmp_path / "run" / "train.csv", rows)
    (png,) = plot_run(tmp_path / "run")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_a_log_that_is_not_numbers_names_the_column(tmp_path):
    with pytest.raises(ValueError, match="column 'kl' holds 'high'"):
        run_panels([{"episode": 1, "kl": "high"}], "x.csv")
    _csv(tmp_path / "run" / "train.csv", [{"episode": 1, "kl": "", "mmd2": ""}])
    with pytest.raises(ValueError, match="holds no curve to plot"):
        plot_run(tmp_path / "run")
