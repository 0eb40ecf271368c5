"""Real Mars crater crops from the hand-labelled tile shipped with ``pycda`` (MIT), in spatially disjoint splits.

The PyPI package ``pycda`` (0.1.16) ships ``sample_imgs/holdout_tile.pgm``, a 1700 × 1700 grayscale Mars tile
(north up, lit from the west), and ``holdout_tile_labels.csv``, 409 hand-labelled craters with columns
``long, lat, diameter`` = ``x`` (column), ``y`` (row) and rim diameter, all in pixels (diameters 4–78, median 15).
Only these data files are read: ``import pycda`` fails on current libraries, so install it with
``pip install --no-deps pycda`` and it is located with :func:`importlib.util.find_spec`, which does not run it.

* :func:`crater_crops` cuts a square of side ``round(crop_factor · d)`` centred on each crater of diameter
  ``d ≥ min_diameter`` that lies wholly inside the tile and resizes it (Lanczos, box-filtered when shrinking)
  to ``size × size``.
* :func:`split_crops` assigns the crops to the splits ``reference`` (what the rewards see), ``validation``
  (for choosing settings) and ``evaluation`` (held out) by *region*: the tile is cut into a grid of blocks, each
  block belongs to one split, and a crop is kept only when every block its box touches belongs to the same split.
  Crops of different splits therefore never share a pixel; crops straddling a border between two splits are
  dropped and counted.
* :func:`build_mars_reference` writes one reference-set ``.npz`` per split
  (:func:`~natgrad_diffusion.data.craters.reference.save_reference_set`) with the provenance in ``meta`` and one JSON
  record per crop in ``params`` (label row, centre, diameter, box).

Boxes are ``(x0, y0, x1, y1)`` in tile pixels, half-open: the crop is ``tile[y0:y1, x0:x1]``. Pixel ``i`` is
centred at coordinate ``i``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...core.paths import ASSETS
from .captions import size_class
from .reference import ReferenceFileError, ReferenceSet, resize_square, save_reference_set

__all__ = [
    "SPLITS",
    "MarsDataError",
    "PycdaNotFoundError",
    "build_mars_reference",
    "crater_crops",
    "load_labels",
    "load_tile",
    "mars_caption",
    "mars_reference_sets",
    "pycda_data_dir",
    "shipped_mars_reference",
    "split_crops",
]

#: the crops of the default build (:func:`build_mars_reference` with its defaults), shipped with the package
SHIPPED_DIR = ASSETS / "mars-craters"


SPLITS = ("reference", "validation", "evaluation")
TILE = "holdout_tile.pgm"
LABELS = "holdout_tile_labels.csv"
INSTALL_HINT = "pip install --no-deps pycda"


class MarsDataError(ReferenceFileError):
    """A Mars tile or label file is missing columns, malformed, or does not fit the tile."""


class PycdaNotFoundError(FileNotFoundError):
    """The ``pycda`` package (whose data files are read) is not installed."""


def pycda_data_dir() -> Path:
    """Directory of pycda's ``sample_imgs`` (found without importing pycda); :class:`PycdaNotFoundError` if absent."""
    spec = importlib.util.find_spec("pycda")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        d = Path(loc) / "sample_imgs"
        if (d / TILE).is_file() and (d / LABELS).is_file():
            return d
    raise PycdaNotFoundError(f"the Mars crater data come from the pycda package: install it with `{INSTALL_HINT}`")


def _pycda_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pycda")
    except PackageNotFoundError:
        return "unknown"


def load_tile(path: str | os.PathLike) -> np.ndarray:
    """A grayscale image file as uint8 ``(H, W)``; :class:`MarsDataError` if unreadable or not 8-bit grayscale."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no Mars tile at {path}")
    try:
        with Image.open(path) as im:
            if im.mode != "L":
                raise MarsDataError(f"{path}: expected an 8-bit grayscale image, got mode {im.mode}")
            return np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError) as e:
        raise MarsDataError(f"{path}: not a readable image ({e})") from e


def load_labels(csv: str | os.PathLike) -> np.ndarray:
    """Crater labels ``(K, 3)`` float64: ``x`` (column), ``y`` (row), diameter, in pixels.

    The file is a CSV with a header naming ``long`` (= x), ``lat`` (= y) and ``diameter`` in any order (pycda's
    convention), or ``x``, ``y``, ``diameter``. Raises :class:`MarsDataError` for missing columns, non-numeric or
    non-finite values, non-positive diameters, or no rows; ``FileNotFoundError`` if missing.
    """
    path = Path(csv)
    if not path.is_file():
        raise FileNotFoundError(f"no crater label file at {path}")
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    if not lines:
        raise MarsDataError(f"{path}: empty label file")
    header = [h.strip().lower() for h in lines[0].split(",")]
    names = ("long", "lat", "diameter") if "long" in header else ("x", "y", "diameter")
    missing = [n for n in names if n not in header]
    if missing:
        raise MarsDataError(f"{path}: label file needs columns long, lat, diameter (or x, y, diameter); got {header}")
    cols = [header.index(n) for n in names]
    rows = []
    for i, ln in enumerate(lines[1:], start=2):
        fields = ln.split(",")
        try:
            rows.append([float(fields[c]) for c in cols])
        except (ValueError, IndexError):
            raise MarsDataError(f"{path}: line {i} is not numeric x, y, diameter: {ln[:60]!r}") from None
    if not rows:
        raise MarsDataError(f"{path}: no crater rows")
    labels = np.asarray(rows, dtype=np.float64)
    if not np.all(np.isfinite(labels)) or np.any(labels[:, 2] <= 0):
        raise MarsDataError(f"{path}: labels must be finite with positive diameters")
    return labels


def _crop_plan(
    tile_shape: tuple[int, ...], labels: np.ndarray, crop_factor: float, min_diameter: float
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the labels that give a crop and their boxes ``(N, 4)`` int ``x0, y0, x1, y1``."""
    if crop_factor <= 0 or min_diameter < 0:
        raise ValueError(f"crop_factor must be > 0 and min_diameter >= 0, got {crop_factor} and {min_diameter}")
    h, w = int(tile_shape[0]), int(tile_shape[1])
    labels = np.asarray(labels, dtype=np.float64).reshape(-1, 3)
    side = np.maximum(np.round(crop_factor * labels[:, 2]).astype(np.int64), 1)
    # the crop's centre (x0 + x1 - 1) / 2 is the label's centre to within half a pixel
    x0 = np.round(labels[:, 0] - (side - 1) / 2).astype(np.int64)
    y0 = np.round(labels[:, 1] - (side - 1) / 2).astype(np.int64)
    boxes = np.stack([x0, y0, x0 + side, y0 + side], axis=1)
    keep = (labels[:, 2] >= min_diameter) & (x0 >= 0) & (y0 >= 0) & (boxes[:, 2] <= w) & (boxes[:, 3] <= h)
    return np.flatnonzero(keep), boxes[keep]


def crater_crops(
    tile: np.ndarray, labels: np.ndarray, *, crop_factor: float = 2.5, min_diameter: float = 12, size: int = 32
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crater-centred square crops of a grayscale ``tile`` ``(H, W)`` uint8.

    ``labels`` ``(K, 3)``: x, y, diameter (pixels). Each crater with ``diameter >= min_diameter`` gives a crop of
    side ``round(crop_factor · diameter)`` centred on it, kept only when wholly inside the tile, resized to
    ``size × size`` with antialiasing. Returns images uint8 ``(N, size, size)``, boxes int64 ``(N, 4)``
    (``x0, y0, x1, y1``, half-open) and diameters float64 ``(N,)``, in label order.
    """
    tile = np.asarray(tile)
    if tile.ndim != 2:
        raise ValueError(f"tile must be a grayscale (H, W) array, got shape {tile.shape}")
    idx, boxes = _crop_plan(tile.shape, labels, crop_factor, min_diameter)
    images = [resize_square(tile[y0:y1, x0:x1], size) for x0, y0, x1, y1 in boxes]
    stacked = np.stack(images) if images else np.zeros((0, size, size), np.uint8)
    return stacked, boxes, np.asarray(labels, dtype=np.float64).reshape(-1, 3)[idx, 2]


def _edges(n_pixels: int, n_blocks: int) -> np.ndarray:
    return np.round(np.linspace(0, n_pixels, n_blocks + 1)).astype(np.int64)


def _largest_remainder(fractions: np.ndarray, n: int) -> np.ndarray:
    """``n`` items shared in proportion to ``fractions`` (largest-remainder rounding), at least one each."""
    quota = fractions * n
    counts = np.maximum(np.floor(quota).astype(np.int64), 1)
    while counts.sum() < n:
        counts[int(np.argmax(quota - counts))] += 1
    while counts.sum() > n:
        counts[int(np.argmax(np.where(counts > 1, counts - quota, -np.inf)))] -= 1
    return counts


def split_crops(
    boxes: np.ndarray,
    tile_shape: tuple[int, ...],
    fractions: tuple[float, float, float] = (0.5, 0.25, 0.25),
    seed: int = 0,
    *,
    grid: tuple[int, int] = (4, 4),
    trials: int = 4000,
) -> tuple[np.ndarray, dict]:
    """Assign crops to the splits :data:`SPLITS` by region of the tile; no two crops of different splits overlap.

    The tile is cut into ``grid = (rows, cols)`` blocks and every block is given to one split. A crop belongs to
    split ``s`` when every block its box touches is ``s``'s; a crop touching blocks of two splits is dropped
    (``-1``). Among ``trials`` seeded random block assignments the one maximising ``min_s n_s / fractions[s]``
    (``n_s`` crops kept in split ``s``) is chosen: it keeps many crops in proportions close to ``fractions``.

    ``boxes`` ``(N, 4)`` int ``x0, y0, x1, y1`` (half-open). Returns the split index per crop ``(N,)`` int
    (``0, 1, 2`` or ``-1``) and the geometry: ``grid``, ``row_edges``/``col_edges`` (pixels), ``blocks``
    (split name per block, row-major), ``counts`` per split and ``dropped``.
    """
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or np.any(f <= 0):
        raise ValueError(f"fractions must be three positive numbers, got {fractions}")
    rows, cols = int(grid[0]), int(grid[1])
    if rows < 1 or cols < 1 or rows * cols < 3:
        raise ValueError(f"grid must have at least 3 blocks, got {grid}")
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    re, ce = _edges(int(tile_shape[0]), rows), _edges(int(tile_shape[1]), cols)
    touch_r = (boxes[:, 1, None] < re[None, 1:]) & (boxes[:, 3, None] > re[None, :-1])  # (N, rows)
    touch_c = (boxes[:, 0, None] < ce[None, 1:]) & (boxes[:, 2, None] > ce[None, :-1])  # (N, cols)
    touch = (touch_r[:, :, None] & touch_c[:, None, :]).reshape(len(boxes), rows * cols)  # (N, B)
    n_blocks = rows * cols
    per_split = _largest_remainder(f / f.sum(), n_blocks)
    base = np.repeat(np.arange(3), per_split)
    draws = np.random.default_rng(seed).permuted(np.tile(base, (trials, 1)), axis=1)  # (D, B)
    onehot = np.eye(3, dtype=np.float32)[draws]  # (D, B, 3)
    hits = np.matmul(touch.astype(np.float32), onehot)  # (D, N, 3): blocks of each split a crop touches
    inside = hits == touch.sum(axis=1)[None, :, None]  # all the blocks a crop touches are that split's
    counts = inside.sum(axis=1)  # (D, 3)
    best = int(np.argmax((counts / f).min(axis=1)))
    member = inside[best]
    assign = np.where(member.any(axis=1), member.argmax(axis=1), -1)
    geometry = {
        "kind": "grid of blocks",
        "grid": [rows, cols],
        "row_edges": re.tolist(),
        "col_edges": ce.tolist(),
        "blocks": [SPLITS[s] for s in draws[best]],
        "fractions": f.tolist(),
        "seed": seed,
        "trials": trials,
        "counts": {name: int((assign == s).sum()) for s, name in enumerate(SPLITS)},
        "dropped": int((assign < 0).sum()),
    }
    return assign, geometry


def mars_caption(diameter: float, side: int) -> str:
    """Caption in the renderer's vocabulary: size word from ``diameter / side`` (the renderer's classes of rim
    diameter over image width, :func:`~natgrad_diffusion.data.craters.captions.size_class`), lit from the west."""
    return f"a {size_class(diameter / side)} crater, lit from the west"


@dataclass(frozen=True)
class _Source:
    tile: Path
    labels: Path
    package: str | None  # "pycda" when read from the package


def _source(tile: str | os.PathLike | None, labels: str | os.PathLike | None) -> _Source:
    if tile is None and labels is None:
        d = pycda_data_dir()
        return _Source(d / TILE, d / LABELS, "pycda")
    if tile is None or labels is None:
        raise ValueError("give both the tile and its label file, or neither (pycda's)")
    return _Source(Path(tile), Path(labels), None)


def _provenance(src: _Source) -> dict:
    digest = hashlib.sha256(src.tile.read_bytes()).hexdigest()
    if src.package is None:
        return {"source": "mars tile", "tile": str(src.tile), "labels": str(src.labels), "tile_sha256": digest}
    return {
        "source": "pycda",
        "package": "pycda",
        "package_version": _pycda_version(),
        "tile": f"pycda/sample_imgs/{TILE}",
        "labels": f"pycda/sample_imgs/{LABELS}",
        "tile_sha256": digest,
        "licence": "MIT (pycda)",
    }


def _record(row: int, label: np.ndarray, box: np.ndarray) -> str:
    x, y, d = (float(v) for v in label)
    return json.dumps({"label_row": row, "x": x, "y": y, "diameter": d, "box": [int(v) for v in box]})


def mars_reference_sets(
    *,
    tile: str | os.PathLike | None = None,
    labels: str | os.PathLike | None = None,
    crop_factor: float = 2.5,
    min_diameter: float = 12,
    size: int = 32,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.5, 0.25, 0.25),
    grid: tuple[int, int] = (4, 4),
) -> dict[str, ReferenceSet]:
    """The three splits of :func:`split_crops` as reference sets of :func:`crater_crops` (pycda's tile by default).

    Images uint8 ``(n_s, size, size)``; captions :func:`mars_caption`; ``params[i]`` JSON of the crop's label
    row, centre ``x, y``, ``diameter`` and ``box``; ``meta``: provenance, parameters, split name and geometry,
    ``boxes`` and ``diameters`` of every crop of the split, and the counts of labels, crops and drops.
    """
    src = _source(tile, labels)
    image, lab = load_tile(src.tile), load_labels(src.labels)
    idx, boxes = _crop_plan(image.shape, lab, crop_factor, min_diameter)
    crops, _, diameters = crater_crops(image, lab, crop_factor=crop_factor, min_diameter=min_diameter, size=size)
    assign, geometry = split_crops(boxes, image.shape, fractions, seed, grid=grid)
    if min(geometry["counts"].values()) < 2:
        raise MarsDataError(
            f"too few crater crops for three splits ({geometry['counts']} from {len(idx)} crops at min_diameter "
            f"{min_diameter}, crop_factor {crop_factor}): lower the minimum diameter or the crop factor"
        )
    params = {"crop_factor": crop_factor, "min_diameter": min_diameter, "size": size, "seed": seed}
    counts = {
        "labels": len(lab),
        "below_min_diameter": int((lab[:, 2] < min_diameter).sum()),
        "crops_inside_tile": len(idx),
        "dropped_on_split_borders": geometry["dropped"],
    }
    out = {}
    for s, name in enumerate(SPLITS):
        sel = np.flatnonzero(assign == s)
        records = [_record(int(idx[i]), lab[idx[i]], boxes[i]) for i in sel]
        meta = {
            **_provenance(src),
            "tile_shape": list(image.shape),
            "parameters": params,
            "split": name,
            "split_geometry": geometry,
            "counts": counts,
            "boxes": boxes[sel].tolist(),
            "diameters": diameters[sel].tolist(),
        }
        caps = [mars_caption(diameters[i], int(boxes[i, 2] - boxes[i, 0])) for i in sel]
        imgs = crops[sel] if len(sel) else np.zeros((0, size, size), np.uint8)
        out[name] = ReferenceSet(imgs, caps, records, meta)
    return out


def build_mars_reference(out_dir: str | os.PathLike, **kwargs: object) -> dict[str, Path]:
    """Write ``OUT_DIR/{reference,validation,evaluation}.npz`` from :func:`mars_reference_sets` (same keywords);
    returns the paths by split name."""
    sets = mars_reference_sets(**kwargs)  # type: ignore[arg-type]
    out = Path(out_dir)
    return {name: save_reference_set(ref, out / f"{name}.npz") for name, ref in sets.items()}


def shipped_mars_reference(split: str = "reference") -> ReferenceSet:
    """One split of the real Mars crater crops shipped with the package (the default build of
    :func:`build_mars_reference`; ``assets/mars-craters/README.md`` gives the attribution and the command that
    regenerates them from pycda)."""
    from .reference import load_reference_set

    if split not in SPLITS:
        raise MarsDataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return load_reference_set(SHIPPED_DIR / f"{split}.npz")
