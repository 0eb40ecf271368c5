"""Mars crater crops: centring, dropping, spatially disjoint splits, provenance round trip, label errors, real data."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from itertools import product
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from natgrad_diffusion.data.craters import mars
from natgrad_diffusion.data.craters.mars import (
    SPLITS,
    MarsDataError,
    PycdaNotFoundError,
    build_mars_reference,
    crater_crops,
    load_labels,
    mars_caption,
    mars_reference_sets,
    pycda_data_dir,
    split_crops,
)
from natgrad_diffusion.data.craters.reference import load_reference_set

HAS_PYCDA = importlib.util.find_spec("pycda") is not None
needs_pycda = pytest.mark.skipif(not HAS_PYCDA, reason="pycda not installed (pip install --no-deps pycda)")


def disc_tile(h: int, w: int, craters: list[tuple[float, float, float]]) -> np.ndarray:
    """A west-to-east brightness gradient (110 → 170) with dark discs (value 20) at (x, y, diameter)."""
    rows, cols = np.mgrid[0:h, 0:w]
    tile = 110.0 + 60.0 * cols / (w - 1)
    for x, y, d in craters:
        tile[(cols - x) ** 2 + (rows - y) ** 2 <= (d / 2) ** 2] = 20.0
    return np.round(tile).astype(np.uint8)


def dark_centroid(image: np.ndarray) -> tuple[float, float]:
    """(x, y) centroid of the pixels darker than 70 (the disc, not the gradient)."""
    rows, cols = np.nonzero(image < 70)
    return float(cols.mean()), float(rows.mean())


def write_csv(path: Path, rows: list[tuple[float, float, float]], header: str = "long,lat,diameter") -> Path:
    path.write_text(header + "\n" + "".join(f"{x},{y},{d}\n" for x, y, d in rows))
    return path


def boxes_intersect(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])


# ----------------------------------------------------------------------------------------------------------------------
# crops
# ----------------------------------------------------------------------------------------------------------------------

CRATERS = [(60.0, 50.0, 16.0), (150.0, 120.0, 20.0), (230.0, 70.0, 16.0), (8.0, 100.0, 16.0), (100.0, 180.0, 6.0)]


def test_crops_are_centred_on_the_craters_and_cut_from_the_tile():
    tile = disc_tile(200, 280, CRATERS)
    labels = np.array(CRATERS)
    # size 40 = the side of a 16-px crater at crop factor 2.5: no resampling, the crop is the tile's pixels
    images, boxes, diam = crater_crops(tile, labels[[0, 2]], crop_factor=2.5, min_diameter=12, size=40)
    assert images.shape == (2, 40, 40) and images.dtype == np.uint8 and boxes.dtype.kind == "i"
    np.testing.assert_array_equal(diam, [16.0, 16.0])
    for img, (x0, y0, x1, y1), (x, y, _) in zip(images, boxes, labels[[0, 2]]):
        assert x1 - x0 == y1 - y0 == 40
        np.testing.assert_array_equal(img, tile[y0:y1, x0:x1])
        cx, cy = dark_centroid(img)
        assert abs(cx - 19.5) <= 0.5 and abs(cy - 19.5) <= 0.5  # crop centre (side - 1) / 2
        assert abs(x0 + cx - x) <= 1e-9 and abs(y0 + cy - y) <= 1e-9  # and the disc in tile coordinates
    # resized to 32 (antialiased): the disc stays at the centre and the crop keeps the west-east gradient
    images, _, _ = crater_crops(tile, labels, crop_factor=2.5, min_diameter=12, size=32)
    for img in images:
        cx, cy = dark_centroid(img)
        assert abs(cx - 15.5) <= 0.75 and abs(cy - 15.5) <= 0.75
        assert img[:, :4].mean() < img[:, -4:].mean()


def test_crops_outside_the_tile_or_too_small_are_dropped():
    tile = disc_tile(200, 280, CRATERS)
    images, boxes, diam = crater_crops(tile, np.array(CRATERS), crop_factor=2.5, min_diameter=12, size=32)
    # crater 3 (x = 8) needs a 40-px crop reaching x = -12; crater 4 is 6 px < 12
    assert len(images) == 3
    np.testing.assert_array_equal(diam, [16.0, 20.0, 16.0])
    assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2] <= 280) and np.all(boxes[:, 3] <= 200)
    # a smaller crop factor keeps the edge crater (side 16 + 1 px from x = 0) and min_diameter 5 the small one
    images, _, diam = crater_crops(tile, np.array(CRATERS), crop_factor=1.0, min_diameter=5, size=16)
    assert sorted(diam.tolist()) == [6.0, 16.0, 16.0, 16.0, 20.0]


def test_captions_use_the_renderer_size_classes():
    assert mars_caption(16, 40) == "a medium crater, lit from the west"  # 0.4 of the width
    assert mars_caption(16, 32) == "a large crater, lit from the west"  # 0.5
    assert mars_caption(10, 50) == "a small crater, lit from the west"  # 0.2


# ----------------------------------------------------------------------------------------------------------------------
# splits
# ----------------------------------------------------------------------------------------------------------------------


def random_boxes(n: int, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    side = rng.integers(10, 60, n)
    x0, y0 = rng.integers(0, w - side), rng.integers(0, h - side)
    return np.stack([x0, y0, x0 + side, y0 + side], axis=1)


def block_split(geometry: dict, x: float, y: float) -> str:
    re, ce = geometry["row_edges"], geometry["col_edges"]
    r = int(np.searchsorted(re, y, side="right") - 1)
    c = int(np.searchsorted(ce, x, side="right") - 1)
    return geometry["blocks"][r * geometry["grid"][1] + c]


@pytest.mark.parametrize(("grid", "seed"), [((4, 4), 0), ((3, 5), 7), ((1, 3), 1)])
def test_splits_are_spatially_disjoint_and_follow_the_blocks(grid, seed):
    h, w = 400, 520
    boxes = random_boxes(300, h, w, seed)
    assign, geo = split_crops(boxes, (h, w), (0.5, 0.25, 0.25), seed, grid=grid)
    assert assign.shape == (300,) and set(np.unique(assign)) <= {-1, 0, 1, 2}
    # no two crops of different splits share a pixel
    for i, j in product(range(300), repeat=2):
        if i < j and assign[i] >= 0 and assign[j] >= 0 and assign[i] != assign[j]:
            assert not boxes_intersect(boxes[i], boxes[j]), (boxes[i], boxes[j])
    # every pixel corner of a kept crop lies in a block of its split; a dropped crop touches two splits' blocks
    for box, s in zip(boxes, assign):
        corners = {block_split(geo, x, y) for x in (box[0], box[2] - 1) for y in (box[1], box[3] - 1)}
        if s >= 0:
            assert corners == {SPLITS[s]}
        else:
            assert len(corners) >= 2
    assert geo["counts"] == {name: int((assign == s).sum()) for s, name in enumerate(SPLITS)}
    assert geo["dropped"] == int((assign < 0).sum())
    assert geo["row_edges"][0] == 0 and geo["row_edges"][-1] == h and geo["col_edges"][-1] == w
    # each split gets its share of the blocks (largest remainder, at least one each)
    n_blocks = grid[0] * grid[1]
    shares = [geo["blocks"].count(name) for name in SPLITS]
    assert sum(shares) == n_blocks and min(shares) >= 1
    assert abs(shares[0] - n_blocks / 2) <= 1
    again, _ = split_crops(boxes, (h, w), (0.5, 0.25, 0.25), seed, grid=grid)
    np.testing.assert_array_equal(again, assign)


def test_split_rejects_bad_fractions_and_grids():
    boxes = random_boxes(10, 100, 100, 0)
    with pytest.raises(ValueError, match="fractions"):
        split_crops(boxes, (100, 100), (0.5, 0.5))
    with pytest.raises(ValueError, match="grid"):
        split_crops(boxes, (100, 100), grid=(1, 2))


# ----------------------------------------------------------------------------------------------------------------------
# reference files
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def synthetic_source(tmp_path: Path) -> tuple[Path, Path, list[tuple[float, float, float]]]:
    """A 320 × 320 tile with 36 discs (diameters 10–21 px) on a 6 × 6 lattice, as a PNG and a pycda-style CSV."""
    rng = np.random.default_rng(3)
    craters = [
        (26.0 + 53.0 * i + rng.uniform(-4, 4), 26.0 + 53.0 * j + rng.uniform(-4, 4), float(rng.uniform(10, 21)))
        for j in range(6)
        for i in range(6)
    ]
    tile_path = tmp_path / "tile.png"
    Image.fromarray(disc_tile(320, 320, craters)).save(tile_path)
    return tile_path, write_csv(tmp_path / "labels.csv", craters), craters


def test_reference_files_round_trip_with_provenance(tmp_path, synthetic_source):
    tile_path, csv_path, craters = synthetic_source
    kw = dict(tile=tile_path, labels=csv_path, crop_factor=2.0, min_diameter=12, size=24, seed=5, grid=(2, 2))
    paths = build_mars_reference(tmp_path / "out", **kw)
    assert sorted(paths) == sorted(SPLITS) and all(p.parent == tmp_path / "out" for p in paths.values())
    tile = np.asarray(Image.open(tile_path))
    seen: dict[str, list] = {}
    for name, path in paths.items():
        ref = load_reference_set(path, expect_size=24, expect_rgb=False)
        meta = ref.meta
        assert meta["split"] == name and meta["tile"] == str(tile_path) and meta["labels"] == str(csv_path)
        assert meta["parameters"] == {"crop_factor": 2.0, "min_diameter": 12, "size": 24, "seed": 5}
        assert meta["split_geometry"]["grid"] == [2, 2] and meta["tile_shape"] == [320, 320]
        assert len(ref) == len(meta["boxes"]) == len(meta["diameters"]) >= 2
        for img, box, d, rec, cap in zip(ref.images, meta["boxes"], meta["diameters"], ref.params, ref.captions):
            rec = json.loads(rec)
            x, y, diameter = craters[rec["label_row"]]
            assert (
                rec["box"] == box and rec["diameter"] == d == pytest.approx(diameter) and rec["x"] == pytest.approx(x)
            )
            assert d >= 12 and cap == mars_caption(d, box[2] - box[0])
            # the stored image is the crop of that box
            one, one_box, _ = crater_crops(tile, np.array([[x, y, diameter]]), crop_factor=2.0, min_diameter=0, size=24)
            np.testing.assert_array_equal(one_box[0], box)
            np.testing.assert_array_equal(one[0], img)
        seen[name] = meta["boxes"]
    for a, b in product(SPLITS, repeat=2):
        if a < b:
            assert not any(boxes_intersect(np.array(p), np.array(q)) for p in seen[a] for q in seen[b])
    n_big = sum(d >= 12 for _, _, d in craters)
    counts = load_reference_set(paths["reference"]).meta["counts"]
    assert counts["labels"] == 36 and counts["below_min_diameter"] == 36 - n_big
    assert sum(len(v) for v in seen.values()) + counts["dropped_on_split_borders"] == counts["crops_inside_tile"]


def test_too_few_crops_is_an_error(synthetic_source):
    tile_path, csv_path, _ = synthetic_source
    with pytest.raises(MarsDataError, match="too few"):
        mars_reference_sets(tile=tile_path, labels=csv_path, min_diameter=25)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("x,y\n1,2\n", "columns"),
        ("long,lat,diameter\n", "no crater rows"),
        ("long,lat,diameter\n1,2,3\n4,five,6\n", "line 3"),
        ("long,lat,diameter\n1,2\n", "line 2"),
        ("long,lat,diameter\n1,2,-3\n", "positive"),
        ("long,lat,diameter\n1,nan,3\n", "finite"),
    ],
)
def test_bad_label_files_give_one_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(MarsDataError, match=message) as info:
        load_labels(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_label_columns_by_name(tmp_path):
    a = load_labels(write_csv(tmp_path / "a.csv", [(1, 2, 3), (4, 5, 6)], header="diameter,lat,long"))
    np.testing.assert_array_equal(a, [[3, 2, 1], [6, 5, 4]])  # x = long, y = lat, whatever the order
    b = load_labels(write_csv(tmp_path / "b.csv", [(1, 2, 3)], header="x,y,diameter"))
    np.testing.assert_array_equal(b, [[1, 2, 3]])
    with pytest.raises(FileNotFoundError):
        load_labels(tmp_path / "missing.csv")


def test_missing_pycda_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pycda" else real(name, *a))
    with pytest.raises(PycdaNotFoundError, match="pip install --no-deps pycda") as info:
        pycda_data_dir()
    assert isinstance(info.value, FileNotFoundError) and "\n" not in str(info.value)
    with pytest.raises(PycdaNotFoundError):
        mars.mars_reference_sets()


# ----------------------------------------------------------------------------------------------------------------------
# the real pycda tile
# ----------------------------------------------------------------------------------------------------------------------


@needs_pycda
def test_real_tile_labels_and_splits():
    d = pycda_data_dir()
    labels = load_labels(d / "holdout_tile_labels.csv")
    assert labels.shape[1] == 3 and 300 <= len(labels) <= 500
    assert 1 <= labels[:, 2].min() and labels[:, 2].max() <= 200
    sets = mars_reference_sets()
    sizes = {name: len(ref) for name, ref in sets.items()}
    assert sizes["reference"] >= 80 and sizes["validation"] >= 40 and sizes["evaluation"] >= 40, sizes
    assert 180 <= sum(sizes.values()) <= 300, sizes
    meta = sets["reference"].meta
    assert meta["licence"] == "MIT (pycda)" and meta["package"] == "pycda" and meta["tile_shape"] == [1700, 1700]
    assert meta["package_version"] == importlib.metadata.version("pycda")
    boxes = {name: np.array(ref.meta["boxes"]) for name, ref in sets.items()}
    for name, b in boxes.items():
        assert np.all(b[:, :2] >= 0) and np.all(b[:, 2:] <= 1700)
        assert sets[name].images.shape == (len(b), 32, 32)
    for a, b in product(SPLITS, repeat=2):
        if a < b:
            for p in boxes[a]:
                hit = (
                    (p[0] < boxes[b][:, 2])
                    & (boxes[b][:, 0] < p[2])
                    & (p[1] < boxes[b][:, 3])
                    & (boxes[b][:, 1] < p[3])
                )
                assert not hit.any(), (a, b, p)


def test_shipped_crops_are_the_real_data_with_provenance():
    """The crops shipped in the package: three disjoint splits of real craters, provenance in every file."""
    from natgrad_diffusion.data.craters.mars import shipped_mars_reference

    sets = {name: shipped_mars_reference(name) for name in ("reference", "validation", "evaluation")}
    assert {k: len(v) for k, v in sets.items()} == {"reference": 114, "validation": 57, "evaluation": 62}
    boxes = {k: np.asarray(v.meta["boxes"]) for k, v in sets.items()}
    for a, b in [("reference", "validation"), ("reference", "evaluation"), ("validation", "evaluation")]:
        for box in boxes[a]:  # no crop of one split shares a pixel with a crop of another
            overlap = (np.minimum(box[2], boxes[b][:, 2]) > np.maximum(box[0], boxes[b][:, 0])) & (
                np.minimum(box[3], boxes[b][:, 3]) > np.maximum(box[1], boxes[b][:, 1])
            )
            assert not overlap.any(), (a, b, box)
    for name, ref in sets.items():
        assert ref.images.shape[1:] == (32, 32) and ref.images.dtype == np.uint8
        assert ref.meta["split"] == name and ref.meta["licence"] == "MIT (pycda)"


@needs_pycda
def test_shipped_crops_equal_a_fresh_build_from_pycda(tmp_path):
    from natgrad_diffusion.data.craters.mars import build_mars_reference, shipped_mars_reference

    for name, path in build_mars_reference(tmp_path).items():
        fresh, shipped = load_reference_set(path), shipped_mars_reference(name)
        np.testing.assert_array_equal(fresh.images, shipped.images)
        assert fresh.captions == shipped.captions and fresh.meta == shipped.meta
