import os

import pytest
import torch

# keep test timings predictable on the 2-core CI machine
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

try:
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ------------------------------------------------------------------ the hostile cases' report (tests/hostile.py)
_HOSTILE: list[tuple[str, str, str, str, str]] = []


def pytest_addoption(parser):
    parser.addoption(
        "--hostile-report", default=None, metavar="FILE",
        help="write the class of every hostile case (tests/hostile.py) to FILE (JSON) and print the counts",
    )  # fmt: skip


@pytest.fixture
def hostile(tmp_path):
    """``hostile(case)``: classify a :class:`tests.hostile.Case` in ``tmp_path``, record it for the report, and
    assert that it is handled or refused with a line that names the problem."""
    from tests.hostile import GOOD, classify

    def run(case):
        cls, detail = classify(case, tmp_path)
        _HOSTILE.append((case.name, case.family, case.before, cls, detail))
        assert cls in GOOD, f"{case.name}: {cls}: {detail}"

    return run


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    path = config.getoption("--hostile-report")
    if not path or not _HOSTILE:
        return
    import collections
    import json

    from tests.hostile import CLASSES

    rows = [dict(zip(("name", "family", "before", "now", "detail"), r)) for r in _HOSTILE]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=1)
    before = collections.Counter(r["before"] for r in rows)
    now = collections.Counter(r["now"] for r in rows)
    terminalreporter.write_line(f"hostile cases: {len(rows)}")
    for cls in CLASSES:
        terminalreporter.write_line(f"  {cls:>10}: labelled before {before[cls]:4d}   now {now[cls]:4d}")
    wrong = [r["name"] for r in rows if r["before"] != r["now"]]
    terminalreporter.write_line(f"  cases whose class differs from their 'before' label: {len(wrong)}")
