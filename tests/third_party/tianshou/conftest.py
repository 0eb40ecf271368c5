"""Tianshou's own TRPO and NPG tests (``test/continuous/test_trpo.py`` and ``test_npg.py`` of tianshou v2.0.1, MIT
licence in ``LICENSE``; copied unchanged with the ``test`` package they import) run through natgrad's integration.

While this folder's test modules are imported, ``tianshou.algorithm.TRPO`` and ``NPG`` are natgrad's classes
(:mod:`natgrad.integrations.tianshou`), so the tests' own ``from tianshou.algorithm import TRPO`` gets them — the
one-line switch a user makes; the originals are put back once collection ends.  Each test runs in its own temporary
folder (they write TensorBoard logs to ``./log``).
"""

import pytest

pytest.importorskip("tianshou")

import tianshou.algorithm  # noqa: E402

from natgrad.integrations import tianshou as natgrad_tianshou  # noqa: E402

_ORIGINALS = {"TRPO": tianshou.algorithm.TRPO, "NPG": tianshou.algorithm.NPG}
for _name in _ORIGINALS:
    setattr(tianshou.algorithm, _name, getattr(natgrad_tianshou, _name))


def pytest_collection_modifyitems(config, items):
    """Tianshou warns about the Pendulum policy its own tests build (a bounded actor with action scaling): its
    advice to itself, filtered with that reason."""
    here = str(config.rootpath / "tests" / "third_party" / "tianshou")
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.filterwarnings("ignore:action_scaling and action_bound_method:UserWarning"))


def pytest_collection_finish(session):
    for name, cls in _ORIGINALS.items():
        setattr(tianshou.algorithm, name, cls)


@pytest.fixture(autouse=True)
def _through_natgrad(request, tmp_path, monkeypatch):
    """Fail, rather than pass vacuously, if a test module holds tianshou's own class."""
    for name in _ORIGINALS:
        if hasattr(request.module, name):
            assert getattr(request.module, name) is getattr(natgrad_tianshou, name), name
    monkeypatch.chdir(tmp_path)
