"""Feature extractors (ResNet-18, CLIP vision), features files, and the plots built on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from natgrad_diffusion.data.craters.reference import generate_reference_set, save_reference_set
from natgrad_diffusion.rewards.features import (
    CLIPFeatures,
    FeatureFileError,
    RandomFeaturesWarning,
    ResNet18Features,
    build_reference_features,
    extract_features,
    get_feature_extractor,
    load_features,
)

SIZE = 64  # feature-extractor input size in the tests (224 in real use)


@pytest.fixture(scope="module")
def extractor() -> ResNet18Features:
    torch.set_num_threads(1)
    with pytest.warns(RandomFeaturesWarning, match="random initialisation .seed 0.: no pretrained weights"):
        return ResNet18Features(image_size=SIZE, weights=None)


def _mean_pairwise_distance(f: np.ndarray) -> float:
    d = np.sqrt(((f[:, None] - f[None]) ** 2).sum(-1))
    return float(d[np.triu_indices(len(f), 1)].mean())


def test_resnet_features_shape_dtype_and_metadata(extractor: ResNet18Features):
    imgs = generate_reference_set(5, seed=0, size=32).images
    f = extractor(imgs)
    assert f.shape == (5, 512) and f.dtype == np.float32 and np.isfinite(f).all()
    assert np.abs(f[0] - f[1]).max() > 0  # different images, different features
    meta = extractor.metadata
    assert meta["name"] == "resnet18" and meta["dim"] == 512
    assert meta["pretrained"] is False and meta["weights"] == "random-init(seed=0)"
    assert meta["image_size"] == SIZE
    # grayscale is replicated: the same image as RGB gives the same features
    rgb = np.repeat(imgs[..., None], 3, axis=-1)
    np.testing.assert_allclose(extractor(rgb), f, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        extractor(imgs.astype(np.float32))
    assert extractor(imgs[:0]).shape == (0, 512)


def test_random_init_is_fixed_by_the_seed_and_extract_features_caches(extractor: ResNet18Features):
    imgs = generate_reference_set(3, seed=1, size=32).images
    with pytest.warns(RandomFeaturesWarning, match="random initialisation"):
        other = get_feature_extractor("resnet18", image_size=SIZE)
    np.testing.assert_allclose(other(imgs), extractor(imgs), rtol=1e-5, atol=1e-6)
    with pytest.warns(UserWarning):
        f1 = extract_features(imgs, image_size=SIZE)
    f2 = extract_features(imgs, image_size=SIZE)  # cached extractor: no second warning needed
    np.testing.assert_array_equal(f1, f2)
    with pytest.raises(ValueError, match="unknown feature extractor"):
        get_feature_extractor("vgg")


def test_pretrained_weights_from_a_local_directory_are_used_and_recorded(extractor: ResNet18Features, tmp_path):
    from transformers import ResNetConfig, ResNetModel

    torch.manual_seed(1)
    cfg = ResNetConfig(embedding_size=64, hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2], layer_type="basic")
    ResNetModel(cfg).save_pretrained(tmp_path / "r18")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no random-init warning
        local = ResNet18Features(weights=tmp_path / "r18", image_size=SIZE)
    assert local.metadata["pretrained"] is True and local.metadata["weights"] == str(tmp_path / "r18")
    imgs = generate_reference_set(2, seed=0, size=32).images
    assert not np.allclose(local(imgs), extractor(imgs))


def test_clip_vision_option_from_a_local_directory(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=512,
    )
    torch.manual_seed(0)
    CLIPVisionModelWithProjection(cfg).save_pretrained(tmp_path / "clip")
    clip = get_feature_extractor("clip", weights=tmp_path / "clip")
    assert isinstance(clip, CLIPFeatures)
    f = clip(generate_reference_set(3, seed=0, size=16, rgb=True).images)
    assert f.shape == (3, 512) and np.isfinite(f).all()
    assert clip.metadata["name"] == "clip" and clip.metadata["pretrained"] is True
    assert clip.metadata["image_size"] == 32  # taken from the checkpoint


def test_narrow_set_is_less_diverse_than_broad_set_in_feature_space(extractor: ResNet18Features):
    narrow = generate_reference_set(12, seed=3, size=32, diversity="narrow")
    broad = generate_reference_set(12, seed=3, size=32, diversity="broad")
    fn, fb = extractor(narrow.images), extractor(broad.images)
    assert _mean_pairwise_distance(fn) < 0.6 * _mean_pairwise_distance(fb)
    assert np.trace(np.cov(fn, rowvar=False)) < 0.5 * np.trace(np.cov(fb, rowvar=False))


def test_features_file_roundtrip_records_the_extractor(extractor: ResNet18Features, tmp_path):
    ref = generate_reference_set(4, seed=2, size=32)
    ref_path = save_reference_set(ref, tmp_path / "ref.npz")
    fs = build_reference_features(ref_path, tmp_path / "feats.npz", extractor)
    back = load_features(tmp_path / "feats.npz")
    np.testing.assert_array_equal(back.features, fs.features)
    assert back.features.shape == (4, 512)
    assert back.captions == ref.captions
    assert back.extractor == extractor.metadata and back.extractor["pretrained"] is False
    assert back.reference["seed"] == 2 and back.reference["file"] == str(ref_path)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(FeatureFileError, match="corrupted"):
        load_features(bad)
    with pytest.raises(FeatureFileError, match="not a features file"):
        load_features(ref_path)


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (np.ones((1, 4), np.float32), "1 feature vector.s.; a features file needs at least 2"),
        (np.array([[1.0, np.nan], [0.0, 1.0], [2.0, 2.0]], np.float32), "NaN or infinite features in 1 of 3 rows"),
        (np.ones((3, 2), np.complex64), "features must be real numbers, got dtype complex64"),
    ],
    ids=["one_row", "nan", "complex"],
)
def test_features_files_that_no_use_can_take_are_refused(tmp_path, features, message):
    path = tmp_path / "f.npz"
    np.savez(path, features=features, captions=np.array(["a"] * len(features)), extractor=np.array("{}"),
             reference=np.array("{}"), version=np.array(1))  # fmt: skip
    with pytest.raises(FeatureFileError, match=message) as info:
        load_features(path)
    assert str(path) in str(info.value)
