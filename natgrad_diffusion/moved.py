"""The import paths of the flat layout (before the pipeline subpackages), kept for one release.

``import natgrad_diffusion.config`` (and every other module that moved) still works and gives the module at its new
path, with a :class:`DeprecationWarning` that names it; so do checkpoints and pickles that name an old path.
``natgrad_diffusion.job`` was split by concern: its names are found in :mod:`~natgrad_diffusion.training.checks`,
:mod:`~natgrad_diffusion.data.prompts`, :mod:`~natgrad_diffusion.sampling.models` and
:mod:`~natgrad_diffusion.rewards.reference_features`.  The five modules that became packages of the same name
(``sampling``, ``evaluation``, ``supervised``, ``training``, ``cli``) export their names from the package
(:func:`lazy_exports`), so ``from natgrad_diffusion.training import train`` needs no new path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["MOVED", "install", "lazy_exports"]

#: old module (below ``natgrad_diffusion.``) → its new path
MOVED = {
    "agents": "training.agents",
    "baselines": "evaluation.baselines",
    "checkpoints": "training.checkpoints",
    "chunked_trpo": "training.chunked_trpo",
    "commands": "cli.commands",
    "components": "sampling.components",
    "config": "core.config",
    "craters": "data.craters",
    "craters.captions": "data.craters.captions",
    "craters.mars": "data.craters.mars",
    "craters.mars_regions": "data.craters.mars_regions",
    "craters.model": "data.craters.model",
    "craters.reference": "data.craters.reference",
    "craters.render": "data.craters.render",
    "craters.sampler": "data.craters.sampler",
    "craters.scene": "data.craters.scene",
    "craters.terrain": "data.craters.terrain",
    "critic": "training.critic",
    "encoder": "rewards.encoder",
    "episode_log": "training.episode_log",
    "errors": "core.errors",
    "extractor": "rewards.extractor",
    "feature_reward": "rewards.feature_reward",
    "features": "rewards.features",
    "flat_settings": "core.flat_settings",
    "integrity": "core.integrity",
    "judges": "evaluation.judges",
    "logs": "core.logs",
    "npz": "core.npz",
    "outputs": "cli.outputs",
    "plots": "evaluation.plots",
    "policies": "sampling.policies",
    "policies.base": "sampling.policies.base",
    "policies.conditioning": "sampling.policies.conditioning",
    "policies.gaussian": "sampling.policies.gaussian",
    "policies.lora": "sampling.policies.lora",
    "policies.scheduler": "sampling.policies.scheduler",
    "processes": "core.processes",
    "references": "data.references",
    "run_evaluation": "evaluation.run_evaluation",
    "run_setup": "training.run_setup",
    "rundir": "core.rundir",
    "settings": "cli.settings",
    "textfile": "core.textfile",
    "trajectory": "sampling.trajectory",
    "verdict": "evaluation.verdict",
}
#: the modules ``natgrad_diffusion.job`` was split into
JOB_PARTS = ("training.checks", "data.prompts", "sampling.models", "rewards.reference_features", "core.errors")
_ROOT = "natgrad_diffusion"


def _warn(old: str, new: str) -> None:
    warnings.warn(f"{old} moved to {new}; the old path goes in the next release", DeprecationWarning, stacklevel=4)


class _Alias(importlib.abc.Loader):
    """Loads an old path as the module at its new path (the same object, so isinstance and pickles agree)."""

    def __init__(self, old: str) -> None:
        self.old = old

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        short = self.old[len(_ROOT) + 1 :]
        if short == "job":
            return _job_module()
        new = f"{_ROOT}.{MOVED[short]}"
        _warn(self.old, new)
        return importlib.import_module(new)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def _job_module() -> types.ModuleType:
    _warn(f"{_ROOT}.job", ", ".join(f"{_ROOT}.{p}" for p in JOB_PARTS[:-1]))
    job = types.ModuleType(f"{_ROOT}.job", "The split module job (deprecated): see natgrad_diffusion.moved.")
    for part in JOB_PARTS:
        module = importlib.import_module(f"{_ROOT}.{part}")
        for name in getattr(module, "__all__", ()):
            setattr(job, name, getattr(module, name))
    job.TrainingError = importlib.import_module(f"{_ROOT}.core.errors").TrainingError  # type: ignore[attr-defined]
    return job


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(_ROOT + "."):
            return None
        short = fullname[len(_ROOT) + 1 :]
        if short not in MOVED and short != "job":
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(fullname))


def install() -> None:
    """Put the old paths on ``sys.meta_path`` (once; :mod:`natgrad_diffusion` calls it on import)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def lazy_exports(package: str, exports: dict[str, Iterable[str]]) -> tuple[Callable[[str], Any], list[str]]:
    """``(__getattr__, __all__)`` for a layer package that exports the names of its modules without importing them
    until one is used (the command line checks its input before torch is imported).  ``exports``: submodule (relative
    to ``package``) → its names."""
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    return __getattr__, sorted(where)
