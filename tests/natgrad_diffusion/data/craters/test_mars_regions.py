"""Multi-scale crater crops and background of one region: never outside it, captions from the labels, shipped."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from natgrad_diffusion.data.craters.mars import SHIPPED_DIR, load_labels, pycda_data_dir
from natgrad_diffusion.data.craters.mars_regions import (
    REGIONS,
    build_region_sets,
    region_background_crops,
    region_caption,
    region_crater_crops,
    region_mask,
    shipped_region_set,
)
from natgrad_diffusion.data.craters.reference import load_reference_set

needs_pycda = pytest.mark.skipif(importlib.util.find_spec("pycda") is None, reason="pycda not installed")
GEOMETRY = load_reference_set(SHIPPED_DIR / "reference.npz").meta["split_geometry"]


def test_captions_say_count_and_size():
    assert region_caption(1, 16, 40) == "a medium crater, lit from the west"
    assert region_caption(2, 10, 50) == "two small craters, lit from the west"
    assert region_caption(7, 30, 54) == "several large craters, lit from the west"


def test_masks_partition_the_tile():
    masks = [region_mask(GEOMETRY, r, (1700, 1700)) for r in ("reference", "validation", "evaluation")]
    total = sum(m.astype(int) for m in masks)
    assert (total == 1).all()
    with pytest.raises(ValueError, match="unknown region"):
        region_mask(GEOMETRY, "test", (1700, 1700))


def _boxes(ref) -> np.ndarray:
    return np.array([json.loads(p)["box"] for p in ref.params])


@pytest.mark.parametrize("kind", ["crater_crops", "background"])
@pytest.mark.parametrize("region", REGIONS)
def test_shipped_sets_lie_wholly_inside_their_region(kind, region):
    ref = shipped_region_set(kind, region)
    mask = region_mask(GEOMETRY, region, (1700, 1700))
    evaluation = region_mask(GEOMETRY, "evaluation", (1700, 1700))
    assert len(ref) > 300 and ref.images.shape[1:] == (32, 32)
    for x0, y0, x1, y1 in _boxes(ref):
        assert mask[y0:y1, x0:x1].all() and not evaluation[y0:y1, x0:x1].any()


def test_crater_crops_cover_every_size_class_and_count():
    captions = set(shipped_region_set("crater_crops").captions)
    for word in ("small", "medium", "large", "a ", "two ", "several "):
        assert any(word in c for c in captions), word


def test_crops_are_centred_on_their_crater_and_background_keeps_away_from_labels():
    tile = np.tile(np.arange(200, dtype=np.uint8)[None, :], (200, 1))
    labels = np.array([[50.0, 50.0, 10.0], [150.0, 150.0, 20.0], [100.0, 20.0, 4.0]])
    mask = np.ones((200, 200), bool)
    images, captions, records = region_crater_crops(tile, labels, mask, crop_factors=(2.5,), offsets=1)
    assert images.shape == (2, 32, 32) and captions[0] == "a medium crater, lit from the west"
    assert [r["label_row"] for r in records] == [0, 1]  # the 4-px crater is below min_diameter
    for r in records:
        x0, y0, x1, y1 = r["box"]
        assert abs((x0 + x1 - 1) / 2 - r["x"]) <= 0.5 and abs((y0 + y1 - 1) / 2 - r["y"]) <= 0.5
    bg, bg_records = region_background_crops(tile, labels, mask, np.array([16]), n=20, seed=1)
    assert bg.shape == (20, 32, 32)
    for rec in bg_records:
        x0, y0, x1, y1 = rec["box"]
        gap_x = np.maximum(np.maximum(x0 - labels[:, 0], labels[:, 0] - x1), 0)
        gap_y = np.maximum(np.maximum(y0 - labels[:, 1], labels[:, 1] - y1), 0)
        assert (np.maximum(gap_x, gap_y) >= labels[:, 2]).all()


def test_no_crop_outside_the_region():
    tile = np.full((100, 100), 128, np.uint8)
    mask = np.zeros((100, 100), bool)
    mask[:, :50] = True
    labels = np.array([[25.0, 50.0, 10.0], [75.0, 50.0, 10.0], [48.0, 50.0, 10.0]])
    _, _, records = region_crater_crops(tile, labels, mask, crop_factors=(2.0,), offsets=1)
    assert [r["label_row"] for r in records] == [0]  # the second is outside, the third straddles the border


@needs_pycda
def test_shipped_sets_equal_a_fresh_build(tmp_path):
    for stem, path in build_region_sets(tmp_path).items():
        fresh, shipped = load_reference_set(path), load_reference_set(SHIPPED_DIR / f"{stem}.npz")
        np.testing.assert_array_equal(fresh.images, shipped.images)
        assert fresh.captions == shipped.captions and fresh.params == shipped.params


@needs_pycda
def test_background_keeps_every_real_label_a_diameter_away():
    labels = load_labels(pycda_data_dir() / "holdout_tile_labels.csv")
    for x0, y0, x1, y1 in _boxes(shipped_region_set("background")):
        gap_x = np.maximum(np.maximum(x0 - labels[:, 0], labels[:, 0] - x1), 0)
        gap_y = np.maximum(np.maximum(y0 - labels[:, 1], labels[:, 1] - y1), 0)
        assert (np.maximum(gap_x, gap_y) >= labels[:, 2]).all()
