"""Reading .npz files: never unpickles, and every kind of bad file is one line naming it."""

import numpy as np
import pytest

from natgrad_diffusion.core.npz import NpzFileError, npz_keys, read_npz


def test_reads_the_keys_asked_for(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, images=np.zeros((2, 4, 4), np.uint8), captions=np.array(["a", "b"]))
    got = read_npz(path, ("images", "captions"), "reference set")
    assert got["images"].shape == (2, 4, 4) and list(got["captions"]) == ["a", "b"]
    assert sorted(npz_keys(path, "reference set")) == ["captions", "images"]
    with pytest.raises(NpzFileError, match=r"not a reference set file, missing \['features'\]"):
        read_npz(path, ("features",), "reference set")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty, truncated or not an .npz archive"),
        (b"PK\x03\x04 half a zip", "empty, truncated or not an .npz archive"),
        (b"just text", "not an .npz archive"),
    ],
    ids=["empty", "truncated", "text"],
)
def test_broken_files_are_one_line_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    for call in (lambda: read_npz(path, ("images",), "reference set"), lambda: npz_keys(path, "reference set")):
        with pytest.raises(NpzFileError, match=message) as info:
            call()
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_pickled_objects_are_refused_not_loaded(tmp_path):
    path = tmp_path / "p.npz"
    np.savez(path, images=np.array([{"x": 1}], dtype=object))
    with pytest.raises(NpzFileError, match="unpickling, which is refused"):
        read_npz(path, ("images",), "reference set")


def test_a_missing_file_and_a_custom_error_type(tmp_path):
    class MyError(ValueError):
        pass

    with pytest.raises(FileNotFoundError, match="no features file"):
        read_npz(tmp_path / "none.npz", ("features",), "features")
    (tmp_path / "x.npz").write_bytes(b"")
    with pytest.raises(MyError):
        read_npz(tmp_path / "x.npz", ("features",), "features", MyError)
