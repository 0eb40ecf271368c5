"""The reward's reference features: a reference set through the extractor, or a features file used as is; one-line
errors for a reference of another size or colour, broken files, and a features file that does not fit."""

from dataclasses import replace

import numpy as np
import pytest

from natgrad_diffusion.core.config import TRAINING
from natgrad_diffusion.core.errors import TrainingError
from natgrad_diffusion.data.references import ReferenceData
from natgrad_diffusion.rewards.reference_features import feature_extractor, load_reference_features


class _Extractor:
    dim = 3

    def __init__(self):
        self.metadata = {"name": "fake", "image_size": 32}

    def __call__(self, images):
        return np.asarray(images, np.float32).reshape(len(images), -1)[:, :3]


def reference_file(path, shape):
    from natgrad_diffusion.data.craters.reference import ReferenceSet, save_reference_set

    images = np.zeros((3, *shape), np.uint8)
    save_reference_set(ReferenceSet(images, ["a crater"] * 3), path)
    return path


@pytest.mark.parametrize(
    ("shape", "message"),
    [((64, 64), "64×64 grayscale"), ((8, 8), "8×8 grayscale"), ((32, 32, 3), "32×32 RGB")],
    ids=["64px", "8px", "rgb"],
)
def test_reference_of_another_size_or_colour_is_refused(tmp_path, shape, message):
    ref = reference_file(tmp_path / "ref.npz", shape)
    cfg = replace(TRAINING, reference=str(ref))
    with pytest.raises(TrainingError, match=f"reference images are {message}, the model makes 32×32 grayscale"):
        load_reference_features(ReferenceData(cfg, (1, 32, 32)), _Extractor())
    ok = reference_file(tmp_path / "ok.npz", (32, 32))
    feats, captions, _ = load_reference_features(
        ReferenceData(replace(TRAINING, reference=str(ok)), (1, 32, 32)), _Extractor()
    )
    assert feats.shape == (3, 3) and captions == ["a crater"] * 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "corrupted reference file .empty, truncated or not an .npz archive"),
        (b"PK\x03\x04" + b"\x00" * 20, "corrupted reference file .empty, truncated or not an .npz archive"),
        (bytes(range(256)) * 8, "corrupted reference file .not an .npz archive"),  # not a pickle either
    ],
    ids=["empty", "truncated", "random_bytes"],
)
def test_broken_reference_files_give_one_line_naming_the_file(tmp_path, content, message):
    path = tmp_path / "ref.npz"
    path.write_bytes(content)
    with pytest.raises(TrainingError, match=message) as info:
        load_reference_features(ReferenceData(replace(TRAINING, reference=str(path)), (1, 32, 32)), _Extractor())
    text = str(info.value)
    assert str(path) in text and "\n" not in text and "allow_pickle" not in text


def test_truncated_real_npz_is_a_one_line_error(tmp_path):
    good = reference_file(tmp_path / "good.npz", (32, 32))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(TrainingError, match=str(cut)):
        load_reference_features(ReferenceData(replace(TRAINING, reference=str(cut)), (1, 32, 32)), _Extractor())


def test_feature_extractor_reads_the_settings_and_names_a_bad_one():
    extractor = feature_extractor(replace(TRAINING, features="pixels", feature_image_size=8))
    assert extractor.metadata["name"] == "pixels" and extractor.dim == 64
    assert extractor(np.zeros((2, 32, 32), np.uint8)).shape == (2, 64)
    with pytest.raises(TrainingError, match="unknown feature extractor 'sift'"):
        feature_extractor(replace(TRAINING, features="sift"))


def test_a_features_file_is_used_as_is_and_checked_against_the_extractor(tmp_path):
    from natgrad_diffusion.rewards.features import FeatureSet, save_features

    path = tmp_path / "feats.npz"
    rows = np.arange(9, dtype=np.float32).reshape(3, 3)
    save_features(FeatureSet(rows, ["a", "b", "c"], {"name": "fake", "image_size": 32}, {"n": 3}), path)
    data = ReferenceData(replace(TRAINING, reference=str(path)), (1, 32, 32))
    feats, captions, meta = load_reference_features(data, _Extractor())
    np.testing.assert_array_equal(feats, rows)
    assert captions == ["a", "b", "c"] and meta["kind"] == "features" and meta["source"] == str(path)
    other = _Extractor()
    other.metadata = {"name": "resnet18", "image_size": 224}
    with pytest.warns(UserWarning, match="two different extractors"):
        load_reference_features(data, other)
    wide = _Extractor()
    wide.dim = 4
    with pytest.raises(TrainingError, match=r"feats\.npz: 3-d features, the extractor gives 4"):
        load_reference_features(data, wide)
