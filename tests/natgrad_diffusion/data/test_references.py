"""``--reference`` and co. decoded once into typed sources; each split's images loaded once per job."""

import typing
from dataclasses import replace

import numpy as np
import pytest

import natgrad_diffusion.data.craters.reference as reference_module
from natgrad_diffusion.core.config import TRAINING
from natgrad_diffusion.core.errors import TrainingError
from natgrad_diffusion.data.craters.reference import generate_reference_set, save_reference_set
from natgrad_diffusion.data.prompts import job_prompts
from natgrad_diffusion.data.references import ReferenceData, decode_sources
from natgrad_diffusion.rewards.features import FeatureSet, save_features
from natgrad_diffusion.rewards.reference_features import load_reference_features


@pytest.fixture
def files(tmp_path):
    images = save_reference_set(generate_reference_set(6, seed=0, size=32), tmp_path / "ref.npz")
    feats = save_features(FeatureSet(np.ones((4, 3), np.float32), ["a"] * 4, {"name": "x"}, {}), tmp_path / "f.npz")
    return images, feats


def test_each_setting_decodes_into_one_kind(files):
    images, feats = files
    cases = {
        "mars": ("mars", "mars", "mars", "mars"),
        None: ("render", "render", "render", "render"),
        "render": ("render", "render", "render", "render"),
        str(images): ("file", "file", "file", "render"),  # a reference file serves every role
        str(feats): ("file", "file", "file", "render"),
    }
    for value, (ref, val, ev, prompts) in cases.items():
        s = decode_sources(replace(TRAINING, reference=value))
        assert (s.reference.kind, s.validation.kind, s.evaluation.kind, s.prompts) == (ref, val, ev, prompts), value
        assert [s[split].split for split in ("reference", "validation", "evaluation")] == [
            "reference", "validation", "evaluation"]  # fmt: skip
    s = decode_sources(replace(TRAINING, reference="mars", eval_reference=str(images)))
    assert s.evaluation.kind == "file" and s.evaluation.path == images and not s.real_mars
    assert decode_sources(replace(TRAINING, reference="mars")).real_mars
    assert decode_sources(replace(TRAINING, reference=str(images))).reference.label == str(images)


def test_the_prompt_files_follow_the_decoded_reference():
    mars, render = (decode_sources(replace(TRAINING, reference=r)) for r in ("mars", "render"))
    assert job_prompts(TRAINING, "test", mars) == ["a medium crater, lit from the west"] * 12
    assert job_prompts(TRAINING, "test", render) != job_prompts(TRAINING, "test", mars)


def test_a_missing_file_is_one_line_naming_it(tmp_path):
    data = ReferenceData(replace(TRAINING, reference=str(tmp_path / "none.npz")), (1, 32, 32))  # decoding reads nothing
    with pytest.raises(TrainingError, match=r"none\.npz") as info:
        data.images("reference")
    assert "\n" not in str(info.value)


def test_each_split_is_built_once_per_job(monkeypatch):
    calls = []
    real = reference_module.generate_reference_set
    monkeypatch.setattr(
        reference_module, "generate_reference_set", lambda *a, **k: calls.append(k["seed"]) or real(*a, **k)
    )
    data = ReferenceData(replace(TRAINING, reference="render", reference_n=4), (1, 32, 32))
    first = data.images("reference")
    assert data.images("reference") is first and data.images("evaluation") is data.images("evaluation")
    assert calls == [0, 2]  # one render per split, each with its split's seed


def test_features_files_have_no_images_and_the_old_call_form_warns(files):
    _, feats = files
    data = ReferenceData(replace(TRAINING, reference=str(feats)), (1, 32, 32))
    assert data.images("reference") is None and data.images("evaluation") is None

    class Extractor:
        dim = 3
        metadata: typing.ClassVar = {"name": "another extractor"}

    with pytest.warns(UserWarning):  # the file's extractor is not the run's
        features, _, info = load_reference_features(data, Extractor())
    assert features.shape == (4, 3) and info["kind"] == "features"
    with pytest.warns(FutureWarning, match="ReferenceData"), pytest.warns(UserWarning, match="two different"):
        load_reference_features(replace(TRAINING, reference=str(feats)), Extractor(), (1, 32, 32))
