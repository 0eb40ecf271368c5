"""What several benchmarks share: Welch's t-test over seeds, and one run in a fresh one-thread process."""

from __future__ import annotations

import json
import math
import os
import subprocess
from typing import Any

import numpy as np

__all__ = ["launch", "welch"]


def welch(a: list[float], b: list[float]) -> tuple[float, float]:
    """Welch's t of ``a`` − ``b`` and its two-sided p; ``(nan, nan)`` with fewer than two values a side or when both
    sides are constant (no spread to test)."""
    from scipy.stats import ttest_ind

    if len(a) < 2 or len(b) < 2 or np.std(a) + np.std(b) == 0:
        return math.nan, math.nan
    t, p = ttest_ind(a, b, equal_var=False)
    return float(t), float(p)


def launch(cmd: list[str], what: str) -> dict[str, Any]:
    """Run ``cmd`` in a fresh process with one BLAS / OpenMP thread; its result is the JSON object on the last line
    of its output (a ``RuntimeError`` naming ``what`` with the tail of its errors when it fails)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
