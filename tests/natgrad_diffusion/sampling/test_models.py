"""The model a job runs: ``--model`` checked in one line before anything loads, its scheduler's timesteps, loading."""

import json

import pytest

from natgrad_diffusion.core.errors import TrainingError
from natgrad_diffusion.core.paths import DEFAULT_MODEL_DIR
from natgrad_diffusion.sampling.models import check_model, load_model, max_steps


def test_the_embedded_model_and_hub_ids_pass_the_check():
    check_model(None)
    check_model("someone/some-model")
    check_model("runwayml/stable-diffusion-v1-5")


@pytest.mark.parametrize(
    ("name", "message"),
    [("missing", "not found"), ("file", "has no unet/"), ("empty_dir", "has no unet/")],
)
def test_a_bad_model_is_one_line(tmp_path, name, message):
    (tmp_path / "file").write_text("not a model")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(TrainingError, match=message) as info:
        check_model(str(tmp_path / name))
    assert "\n" not in str(info.value)


def test_a_relative_or_home_path_is_not_taken_for_a_hub_id():
    for model in ("./no/such", "~/no-such/model", "/no/such"):
        with pytest.raises(TrainingError, match="not found"):
            check_model(model)


def test_max_steps_reads_the_scheduler_and_falls_back_to_the_limit(tmp_path):
    assert max_steps(None) == json.loads((DEFAULT_MODEL_DIR / "scheduler" / "scheduler_config.json").read_text())[
        "num_train_timesteps"
    ]
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text("{broken")
    assert max_steps(str(tmp_path)) == 1000


def test_a_model_that_does_not_load_is_one_line(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text("{}")
    with pytest.raises(TrainingError, match=f"cannot load model {tmp_path}") as info:
        load_model(str(tmp_path))
    assert "\n" not in str(info.value) and info.value.__cause__ is not None
