"""The flat layout's import paths keep working for one release: the same module object, with a DeprecationWarning
that names the new path; the packages that replaced modules of the same name export those modules' names."""

import importlib
import pickle
import subprocess
import sys

import pytest

from natgrad_diffusion.moved import JOB_PARTS, MOVED


def _fresh_import(old: str) -> str:
    """Import ``old`` in a fresh interpreter; its warnings as text (a module cached by this process warns no more)."""
    code = f"import warnings\nwarnings.simplefilter('always')\nimport {old}\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stderr


@pytest.mark.parametrize("old", ["config", "craters.mars", "policies", "judges"])
def test_an_old_path_is_the_new_module_with_a_warning(old):
    new = importlib.import_module(f"natgrad_diffusion.{MOVED[old]}")
    with pytest.warns(DeprecationWarning) as records:  # craters.mars: its package's old path warns too
        sys.modules.pop(f"natgrad_diffusion.{old}", None)
        module = importlib.import_module(f"natgrad_diffusion.{old}")
    assert module is new
    said = f"natgrad_diffusion.{old} moved to natgrad_diffusion.{MOVED[old]}; the old path goes in the next release"
    assert said in [str(r.message) for r in records]


def test_every_old_path_points_at_a_module_that_exists():
    for new in MOVED.values():
        importlib.import_module(f"natgrad_diffusion.{new}")
    assert "DeprecationWarning" in _fresh_import("natgrad_diffusion.craters.reference")


def test_the_split_job_module_still_has_its_names():
    with pytest.warns(DeprecationWarning, match="natgrad_diffusion.job moved to natgrad_diffusion.training.checks"):
        sys.modules.pop("natgrad_diffusion.job", None)
        job = importlib.import_module("natgrad_diffusion.job")
    from natgrad_diffusion.data.prompts import load_prompts
    from natgrad_diffusion.training.checks import validate_config

    assert job.validate_config is validate_config and job.load_prompts is load_prompts
    assert {"load_model", "feature_extractor", "TrainingError", "DEFAULT_MODEL_DIR"} <= set(vars(job))
    assert all(hasattr(job, name) for part in JOB_PARTS
               for name in importlib.import_module(f"natgrad_diffusion.{part}").__all__)  # every part's names


def test_a_pickle_that_names_an_old_class_path_loads():
    from natgrad_diffusion.core.config import TrainingConfig

    data = pickle.dumps(TrainingConfig(), protocol=0).replace(b"natgrad_diffusion.core.config", b"natgrad_diffusion.config")
    assert b"natgrad_diffusion.config" in data
    with pytest.warns(DeprecationWarning):
        sys.modules.pop("natgrad_diffusion.config", None)
        assert pickle.loads(data) == TrainingConfig()


def test_the_replaced_modules_names_come_from_their_packages_lazily():
    code = (
        "import sys\nimport natgrad_diffusion.training as t\n"
        "print('natgrad_diffusion.training.loop' in sys.modules, 'torch' in sys.modules)\n"
        "from natgrad_diffusion.training import train\nfrom natgrad_diffusion.evaluation import image_metrics\n"
        "from natgrad_diffusion.sampling import sample\nfrom natgrad_diffusion.cli import main\n"
        "print('natgrad_diffusion.training.loop' in sys.modules, train.__module__, image_metrics.__module__)\n"
    )
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == [
        "False", "False", "True", "natgrad_diffusion.training.loop", "natgrad_diffusion.evaluation.metrics"
    ], out.stderr  # fmt: skip
    import natgrad_diffusion.training as training

    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        training.nope  # noqa: B018
