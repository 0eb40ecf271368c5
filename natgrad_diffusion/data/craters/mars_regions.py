"""More real Mars crops from one region of the tile: crater crops at several scales and offsets, and background.

The shipped splits (:mod:`natgrad_diffusion.data.craters.mars`) hold one crater-centred crop per labelled crater of
diameter ≥ 12 px at 2.5 diameters: 114 crops in the reference region, too few to fine-tune a diffusion model on.
This module draws more from a region, keeping the shipped split geometry (so nothing is ever drawn from another
split's blocks, and the evaluation split is untouched):

* :func:`region_crater_crops`: for every labelled crater of diameter ≥ ``min_diameter`` (6 px by default), crops of
  side ``f·d`` for every crop factor ``f`` (1.8, 2.5, 3.5, 5: the crater spans 0.56 … 0.2 of the width, so every
  size class of :func:`~natgrad_diffusion.data.craters.captions.size_class` occurs), each at ``offsets`` centres
  jittered by up to ``jitter·d``; a crop is kept when its box lies wholly inside blocks of the region.  Its caption
  says what the labels support: how many labelled craters of visible size (≥ 10 % of the width) the crop holds
  (``a`` / ``two`` / ``several``) and the size class of the crater it is centred on
  (:func:`region_caption`), lit from the west.
* :func:`region_background_crops`: squares of the same sides at random positions of the region that keep every
  labelled crater at least one of its diameters outside the box: the negatives of the crater-present judge
  (:mod:`natgrad_diffusion.evaluation.judges`).  The labels are not complete (small craters are unlabelled), so some
  background crops hold small craters.

:func:`build_region_sets` writes both, for the ``reference`` and ``validation`` regions, as reference-set ``.npz``
files; the package ships them (``assets/mars-craters/``), so neither stage needs pycda at run time
(:func:`shipped_region_set`).  Boxes are ``(x0, y0, x1, y1)`` in tile pixels, half-open.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from natgrad_diffusion.data.craters.captions import size_class
from natgrad_diffusion.data.craters.mars import (
    SHIPPED_DIR,
    SPLITS,
    MarsDataError,
    load_labels,
    load_tile,
    pycda_data_dir,
)
from natgrad_diffusion.data.craters.reference import ReferenceSet, load_reference_set, resize_square, save_reference_set

__all__ = [
    "CROP_FACTORS",
    "REGIONS",
    "build_region_sets",
    "region_background_crops",
    "region_caption",
    "region_crater_crops",
    "region_mask",
    "shipped_region_set",
]

#: crop side / crater diameter of the multi-scale crops: the crater spans 0.56, 0.4, 0.29 and 0.2 of the width
CROP_FACTORS = (1.8, 2.5, 3.5, 5.0)
#: the regions extra crops may come from (never ``evaluation``)
REGIONS = ("reference", "validation")
_COUNT_WORDS = ("a", "two", "several")


def region_caption(count: int, diameter: float, side: float) -> str:
    """``"a medium crater, lit from the west"``, ``"two small craters, lit from the west"``: the number of labelled
    craters in view (1, 2, ≥ 3) and the size class of the centred crater's diameter over the crop side."""
    word = _COUNT_WORDS[min(max(int(count), 1), 3) - 1]
    noun = "crater" if word == "a" else "craters"
    return f"{word} {size_class(diameter / side)} {noun}, lit from the west"


def region_mask(geometry: dict, region: str, tile_shape: tuple[int, int]) -> np.ndarray:
    """Boolean ``(H, W)`` map of the tile's pixels in ``region``'s blocks of the split ``geometry`` (the
    ``split_geometry`` of a shipped split's metadata)."""
    if region not in SPLITS:
        raise ValueError(f"unknown region {region!r}; choose one of {', '.join(SPLITS)}")
    rows, cols = geometry["grid"]
    re, ce = geometry["row_edges"], geometry["col_edges"]
    mask = np.zeros(tile_shape, dtype=bool)
    for b, name in enumerate(geometry["blocks"]):
        if name == region:
            r, c = divmod(b, cols)
            mask[re[r] : re[r + 1], ce[c] : ce[c + 1]] = True
    if rows * cols != len(geometry["blocks"]):
        raise MarsDataError(f"split geometry of {rows}×{cols} blocks lists {len(geometry['blocks'])}")
    return mask


def _inside(mask_sum: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """Every pixel of ``box`` is in the region (``mask_sum``: the summed-area table of the region mask)."""
    x0, y0, x1, y1 = box
    h, w = mask_sum.shape[0] - 1, mask_sum.shape[1] - 1
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h or x1 <= x0 or y1 <= y0:
        return False
    inside = mask_sum[y1, x1] - mask_sum[y0, x1] - mask_sum[y1, x0] + mask_sum[y0, x0]
    return int(inside) == (x1 - x0) * (y1 - y0)


def _summed_area(mask: np.ndarray) -> np.ndarray:
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    table[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    return table


def _count_in_view(labels: np.ndarray, box: tuple[int, int, int, int]) -> int:
    """Labelled craters whose centre is inside ``box`` and whose diameter is at least 10 % of its side."""
    x0, y0, x1, y1 = box
    x, y, d = labels[:, 0], labels[:, 1], labels[:, 2]
    return int(((x >= x0) & (x < x1) & (y >= y0) & (y < y1) & (d >= 0.1 * (x1 - x0))).sum())


def region_crater_crops(
    tile: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray,
    *,
    crop_factors: tuple[float, ...] = CROP_FACTORS,
    offsets: int = 2,
    jitter: float = 0.15,
    min_diameter: float = 6.0,
    size: int = 32,
    seed: int = 0,
) -> tuple[np.ndarray, list[str], list[dict]]:
    """Crater crops of the region ``mask`` (``(H, W)`` bool): for each label of diameter ``≥ min_diameter``, each
    factor of ``crop_factors`` and each of ``offsets`` centres (the first exact, the others jittered uniformly by up
    to ``jitter · d`` per axis, seeded), the square of side ``round(f·d)`` (at least 8 px), kept when it lies in the
    region.  Returns uint8 images ``(N, size, size)``, captions (:func:`region_caption`) and one record per crop
    (``label_row``, ``x``, ``y``, ``diameter``, ``crop_factor``, ``box``, ``count``)."""
    rng = np.random.default_rng(seed)
    table = _summed_area(mask)
    images, captions, records = [], [], []
    for row, (x, y, d) in enumerate(np.asarray(labels, dtype=np.float64)):
        if d < min_diameter:
            continue
        for f in crop_factors:
            side = max(round(f * d), 8)
            for k in range(offsets):
                dx, dy = (0.0, 0.0) if k == 0 else tuple(rng.uniform(-jitter, jitter, 2) * d)
                x0 = round(x + dx - (side - 1) / 2)
                y0 = round(y + dy - (side - 1) / 2)
                box = (x0, y0, x0 + side, y0 + side)
                if not _inside(table, box):
                    continue
                count = _count_in_view(labels, box)
                images.append(resize_square(tile[y0 : y0 + side, x0 : x0 + side], size))
                captions.append(region_caption(count, d, side))
                records.append({"label_row": row, "x": float(x), "y": float(y), "diameter": float(d),
                                "crop_factor": f, "box": list(box), "count": count})  # fmt: skip
    stacked = np.stack(images) if images else np.zeros((0, size, size), np.uint8)
    return stacked, captions, records


def region_background_crops(
    tile: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray,
    sides: np.ndarray,
    *,
    n: int,
    size: int = 32,
    seed: int = 0,
    mean_range: tuple[float, float] = (0.0, 255.0),
    max_saturated: float = 0.1,
    max_tries: int = 200_000,
) -> tuple[np.ndarray, list[dict]]:
    """``n`` crops of the region without a labelled crater: side drawn from ``sides`` (e.g. the crater crops'),
    position uniform in the tile, kept when the box lies in the region, every label ``j`` stays at least its
    diameter ``d_j`` outside the box, its mean brightness lies in ``mean_range`` (e.g. that of the crater crops)
    and at most ``max_saturated`` of its pixels are black (≤ 5) or white (≥ 250): plain terrain, not the shadowed
    and sunlit walls of the ridge that crosses the tile, so that the judge has to tell craters from terrain.  Returns uint8 images ``(n, size, size)`` and records (``box``)."""
    rng = np.random.default_rng(seed)
    table = _summed_area(mask)
    h, w = tile.shape
    lab = np.asarray(labels, dtype=np.float64)
    images, records = [], []
    for _ in range(max_tries):
        if len(images) == n:
            break
        side = int(rng.choice(sides))
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        box = (x0, y0, x0 + side, y0 + side)
        if not _inside(table, box):
            continue
        gap_x = np.maximum(np.maximum(x0 - lab[:, 0], lab[:, 0] - box[2]), 0)
        gap_y = np.maximum(np.maximum(y0 - lab[:, 1], lab[:, 1] - box[3]), 0)
        if np.any(np.maximum(gap_x, gap_y) < lab[:, 2]):
            continue
        crop = tile[y0 : y0 + side, x0 : x0 + side]
        if not mean_range[0] <= crop.mean() <= mean_range[1] or ((crop <= 5) | (crop >= 250)).mean() > max_saturated:
            continue
        images.append(resize_square(crop, size))
        records.append({"box": list(box)})
    if len(images) < n:
        raise MarsDataError(f"found only {len(images)} of {n} background crops in {max_tries} tries")
    return np.stack(images), records


def build_region_sets(out_dir: str | os.PathLike, *, size: int = 32, seed: int = 0) -> dict[str, Path]:
    """Write ``crater_crops_{region}.npz`` and ``background_{region}.npz`` for the regions :data:`REGIONS` of the
    shipped split geometry, from pycda's tile; returns the paths by file stem."""
    src = pycda_data_dir()
    tile, labels = load_tile(src / "holdout_tile.pgm"), load_labels(src / "holdout_tile_labels.csv")
    geometry = load_reference_set(SHIPPED_DIR / "reference.npz").meta["split_geometry"]
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    for i, region in enumerate(REGIONS):
        mask = region_mask(geometry, region, tile.shape)
        images, captions, records = region_crater_crops(tile, labels, mask, size=size, seed=seed + i)
        sides = np.array([r["box"][2] - r["box"][0] for r in records])
        means = images.reshape(len(images), -1).mean(1)
        mean_range = (float(np.percentile(means, 10)), float(np.percentile(means, 90)))
        meta = {"source": "pycda", "region": region, "kind": "crater crops", "crop_factors": list(CROP_FACTORS),
                "size": size, "seed": seed, "split_geometry": geometry}  # fmt: skip
        paths[f"crater_crops_{region}"] = save_reference_set(
            ReferenceSet(images, captions, [json.dumps(r) for r in records], meta),
            out / f"crater_crops_{region}.npz",
        )
        bg, bg_records = region_background_crops(tile, labels, mask, sides, n=len(images) // 2, size=size,
                                                 mean_range=mean_range, seed=seed + 100 + i)  # fmt: skip
        paths[f"background_{region}"] = save_reference_set(
            ReferenceSet(bg, [""] * len(bg), [json.dumps(r) for r in bg_records], {**meta, "kind": "background"}),
            out / f"background_{region}.npz",
        )
    return paths


def shipped_region_set(kind: str, region: str = "reference") -> ReferenceSet:
    """A shipped set of :func:`build_region_sets`: ``kind`` ``"crater_crops"`` or ``"background"``."""
    if kind not in ("crater_crops", "background") or region not in REGIONS:
        raise ValueError(f"no shipped {kind!r} set for region {region!r}; kinds crater_crops, background; "
                         f"regions {', '.join(REGIONS)}")  # fmt: skip
    return load_reference_set(SHIPPED_DIR / f"{kind}_{region}.npz")
