"""Import guard: a torchvision that cannot load is made to look uninstalled, with one warning."""

import importlib.abc
import importlib.util
import sys
import warnings

import pytest

from natgrad_diffusion import _compat


class _FakeTorchvision(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``torchvision`` first; importing it raises ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.imports = 0

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name == "torchvision" else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        self.imports += 1
        raise self.error


@pytest.fixture
def fresh_guard(monkeypatch):
    """The guard not yet run, no torchvision imported; ``install(error)`` makes ``import torchvision`` raise.

    Every ``sys.modules`` entry the guard may touch is restored afterwards."""
    monkeypatch.setattr(_compat, "_checked", False)
    monkeypatch.setitem(sys.modules, "torchvision", None)  # recorded first, so the teardown restores the original
    monkeypatch.delitem(sys.modules, "torchvision")
    for name in [m for m in sys.modules if m.startswith("torchvision.")]:
        monkeypatch.delitem(sys.modules, name)

    def install(error: BaseException) -> _FakeTorchvision:
        finder = _FakeTorchvision(error)
        monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
        return finder

    return install


def test_a_broken_torchvision_is_hidden_with_one_warning(fresh_guard, monkeypatch):
    finder = fresh_guard(RuntimeError("operator torchvision::nms does not exist\nmore detail"))
    stale = object()
    monkeypatch.setitem(sys.modules, "torchvision.ops", stale)  # a half-imported submodule is dropped
    with pytest.warns(RuntimeWarning, match=r"torchvision does not load with this torch \(operator torchvision::nms "
                                            r"does not exist\); ignoring it$"):  # fmt: skip
        _compat.hide_broken_torchvision()
    assert finder.imports == 1
    assert sys.modules["torchvision"] is None and "torchvision.ops" not in sys.modules
    assert importlib.util.find_spec("torchvision") is None  # what transformers asks
    with pytest.raises(ImportError):
        import torchvision  # noqa: F401
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _compat.hide_broken_torchvision()  # idempotent: no second import, no second warning
    assert finder.imports == 1


def test_an_error_without_a_message_is_named_by_its_type(fresh_guard):
    fresh_guard(OSError())
    with pytest.warns(RuntimeWarning, match=r"\(OSError\); ignoring it"):
        _compat.hide_broken_torchvision()


def test_a_missing_torchvision_is_left_alone(fresh_guard):
    finder = fresh_guard(ModuleNotFoundError("No module named 'torchvision'"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _compat.hide_broken_torchvision()
    assert finder.imports == 1 and "torchvision" not in sys.modules


def test_an_imported_torchvision_is_not_imported_again(fresh_guard, monkeypatch):
    finder = fresh_guard(RuntimeError("must not be imported"))
    loaded = object()
    monkeypatch.setitem(sys.modules, "torchvision", loaded)
    _compat.hide_broken_torchvision()
    assert finder.imports == 0 and sys.modules["torchvision"] is loaded
