"""Reference sets: generation, npz round trip and its errors, folders of real images, lunar patches."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from natgrad_diffusion.data.craters.captions import parse_caption
from natgrad_diffusion.data.craters.reference import (
    FORMAT_VERSION,
    MAX_IMAGE_PIXELS,
    ReferenceFileError,
    ReferenceSet,
    check_budget,
    generate_reference_set,
    load_reference_set,
    read_image,
    reference_from_folder,
    reference_from_moon,
    resize_square,
    save_reference_set,
)
from natgrad_diffusion.data.craters.scene import scene_from_json


@pytest.fixture(scope="module")
def ref() -> ReferenceSet:
    return generate_reference_set(seed=4, size=32)


def test_generated_set_defaults_and_determinism(ref: ReferenceSet):
    assert len(ref) == 73 and ref.images.shape == (73, 32, 32) and ref.images.dtype == np.uint8
    assert ref.meta["seed"] == 4 and ref.meta["diversity"] == 1.0 and not ref.rgb
    first = generate_reference_set(5, seed=4, size=32)
    np.testing.assert_array_equal(first.images, ref.images[:5])
    for cap, params in zip(ref.captions[:5], ref.params[:5]):
        assert parse_caption(cap) == scene_from_json(params).labels


def test_narrow_set_repeats_one_caption(ref: ReferenceSet):
    narrow = generate_reference_set(20, seed=4, size=16, diversity="narrow")
    assert len(set(narrow.captions)) <= 2 < len(set(ref.captions[:20]))


def test_npz_roundtrip(ref: ReferenceSet, tmp_path):
    path = save_reference_set(ref, tmp_path / "sub" / "ref.npz")
    back = load_reference_set(path, expect_size=32, expect_rgb=False)
    np.testing.assert_array_equal(back.images, ref.images)
    assert back.captions == ref.captions and back.params == ref.params and back.meta == ref.meta
    rgb = generate_reference_set(3, seed=1, size=16, rgb=True)
    back = load_reference_set(save_reference_set(rgb, tmp_path / "rgb.npz"))
    assert back.images.shape == (3, 16, 16, 3) and back.rgb


def _write_npz(path, **overrides):
    arrays = {
        "images": np.zeros((2, 8, 8), np.uint8),
        "captions": np.array(["a", "b"]),
        "params": np.array(["", ""]),
        "meta": np.array(json.dumps({})),
        "version": np.array(FORMAT_VERSION),
    }
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def test_bad_files_give_clear_errors(ref: ReferenceSet, tmp_path):
    with pytest.raises(FileNotFoundError, match="no reference file"):
        load_reference_set(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not an npz file at all")
    with pytest.raises(ReferenceFileError, match="unreadable or corrupted"):
        load_reference_set(junk)
    good = save_reference_set(ref, tmp_path / "good.npz")
    cut = tmp_path / "truncated.npz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ReferenceFileError, match="corrupted"):
        load_reference_set(cut)
    with pytest.raises(ReferenceFileError, match=r"missing \['captions'\]"):
        load_reference_set(_write_npz(tmp_path / "nocap.npz", captions=None))
    with pytest.raises(ReferenceFileError, match="version 99"):
        load_reference_set(_write_npz(tmp_path / "v99.npz", version=np.array(99)))
    with pytest.raises(ReferenceFileError, match="uint8"):
        load_reference_set(_write_npz(tmp_path / "float.npz", images=np.zeros((2, 8, 8), np.float32)))
    with pytest.raises(ReferenceFileError, match="2 images but 3 captions"):
        load_reference_set(_write_npz(tmp_path / "mismatch.npz", captions=np.array(["a", "b", "c"])))
    with pytest.raises(ReferenceFileError, match="expected 64"):
        load_reference_set(good, expect_size=64)
    with pytest.raises(ReferenceFileError, match="grayscale, expected"):
        load_reference_set(good, expect_rgb=True)


def test_resize_square_center_crops():
    img = np.zeros((20, 40), np.uint8)
    img[:, 10:30] = 200  # the centre square; the side bands are cropped away
    out = resize_square(img, 8)
    assert out.shape == (8, 8) and out.dtype == np.uint8
    assert np.all(out == 200)
    rgb = resize_square(np.dstack([img, img // 2, img // 4]), 8, rgb=True)
    assert rgb.shape == (8, 8, 3) and rgb[..., 0].mean() > rgb[..., 2].mean()
    gray_from_float = resize_square(np.full((10, 10), 0.5), 4)
    assert np.all(np.abs(gray_from_float.astype(int) - 128) <= 1)


def test_reference_from_folder(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 80, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(tmp_path / "b.jpg")
    Image.fromarray((rng.random((40, 40)) * 60000).astype(np.uint16)).save(tmp_path / "c.tif")
    (tmp_path / "b.txt").write_text("a fresh small bowl-shaped crater, lit from the west, low sun\n")
    (tmp_path / "notes.md").write_text("ignored")
    ref = reference_from_folder(tmp_path, size=32)
    assert ref.images.shape == (3, 32, 32) and ref.images.dtype == np.uint8
    assert ref.captions == ["", "a fresh small bowl-shaped crater, lit from the west, low sun", ""]
    assert ref.meta["files"] == ["a.png", "b.jpg", "c.tif"]
    assert ref.images[2].std() > 10  # 16-bit image rescaled, not saturated
    rgb = reference_from_folder(tmp_path, size=16, rgb=True)
    assert rgb.images.shape == (3, 16, 16, 3)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no png/jpg"):
        reference_from_folder(empty)


def test_reference_from_moon_patches():
    a = reference_from_moon(4, size=32, seed=1)
    b = reference_from_moon(4, size=32, seed=1)
    c = reference_from_moon(4, size=32, seed=2)
    assert a.images.shape == (4, 32, 32) and a.images.dtype == np.uint8
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    assert all(img.std() > 3 for img in a.images)  # real texture, not blank
    box = json.loads(a.params[0])
    assert 64 <= box["side"] <= 192


# ---------------------------------------------------------------------------------------- issue 19: hostile files
def _png_header(path, width, height):
    """A PNG that announces ``width × height`` and holds no pixels (what a huge image looks like to its header)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_read_image_names_the_file_of_every_unreadable_image(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(good)
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (tmp_path / "text.png").write_text("not an image")
    Image.fromarray(np.array([[0.1, np.nan], [0.3, 0.4]], np.float32)).save(tmp_path / "nan.tif")
    Image.fromarray(np.array([[0.1, -np.inf], [0.3, 0.4]], np.float32)).save(tmp_path / "inf.tif")
    side = int(MAX_IMAGE_PIXELS**0.5) + 1
    _png_header(tmp_path / "big.png", side, side)
    _png_header(tmp_path / "bomb.png", 20000, 20000)  # beyond PIL's own decompression-bomb limit too
    for name, message in [
        ("cut.png", "cut.png: not a readable image .image file is truncated"),
        ("text.png", "text.png: not a readable image .cannot identify image file"),
        ("nan.tif", r"nan.tif: NaN pixel values \(1 pixels\)"),
        ("inf.tif", r"inf.tif: infinite pixel values \(1 pixels\)"),
        ("big.png", f"big.png: a {side}×{side} image, more than the 64 megapixels"),
        ("bomb.png", "bomb.png: a 20000×20000 image"),
    ]:
        with pytest.raises(ReferenceFileError, match=message):
            read_image(tmp_path / name)
    assert Image.MAX_IMAGE_PIXELS is not None  # PIL's own limit is restored
    assert read_image(good).dtype == np.uint8


def test_float_and_16_bit_images_are_rescaled_and_nan_is_refused(tmp_path):
    ramp = np.linspace(2.0, 3.0, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(ramp).save(tmp_path / "f.tif")
    out = read_image(tmp_path / "f.tif")
    assert out.min() == 0.0 and out.max() == 1.0
    with pytest.raises(ValueError, match="NaN or infinite"):
        resize_square(np.full((8, 8), np.nan), 4)


def test_a_folder_of_one_image_or_with_an_undecodable_caption_is_refused(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(ReferenceFileError, match=r"holds 1 image \(a.png\); a reference set needs at least 2"):
        reference_from_folder(tmp_path, size=8)
    Image.fromarray(np.full((8, 8), 9, np.uint8)).save(tmp_path / "b.png")
    (tmp_path / "b.txt").write_bytes(b"crat\xe8re")
    with pytest.raises(ReferenceFileError, match=r"b.txt: caption file is not UTF-8 text \(byte 0xe8 at offset 4\)"):
        reference_from_folder(tmp_path, size=8)
    (tmp_path / "b.txt").write_bytes("\ufeffcratère\n".encode())
    assert reference_from_folder(tmp_path, size=8).captions == ["", "cratère"]


def test_sets_larger_than_the_memory_budget_are_refused_before_any_allocation():
    check_budget(100_000, 64)
    with pytest.raises(ValueError, match=r"512 images of 60000×60000 would take 1716.6 GiB"):
        generate_reference_set(512, size=60000)
    with pytest.raises(ValueError, match="more than the 4 GiB"):
        reference_from_moon(100_000, size=1024)


def test_resized_set_makes_grey_crops_the_models_size_and_colour():
    from natgrad_diffusion.data.craters.reference import ReferenceSet, resized_set

    images = np.zeros((2, 32, 32), np.uint8)
    images[:, 8:24, 8:24] = 200  # a bright square in the middle
    ref = ReferenceSet(images, ["a", "b"], meta={"source": "test"})
    assert resized_set(ref, 32, rgb=False) is ref  # already that shape
    big = resized_set(ref, 64, rgb=True)
    assert big.images.shape == (2, 64, 64, 3) and big.captions == ["a", "b"]
    assert big.meta == {"source": "test", "resized_from": [32, 32]}
    assert (big.images[..., 0] == big.images[..., 2]).all()  # grey repeated to RGB
    assert big.images[0, 32, 32, 0] == 200 and big.images[0, 2, 2, 0] == 0  # the square stays in the middle
