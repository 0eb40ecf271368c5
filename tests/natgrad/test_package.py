"""The package itself: torch is its only dependency, and ``import natgrad`` costs nothing until a name is used."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_import_is_lazy():
    out = _run("import sys, natgrad; print('torch' in sys.modules); natgrad.TrustRegionConfig; print('torch' in sys.modules)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]  # the config needs no torch either


def test_works_without_numpy_and_says_nothing_about_it():
    code = (
        "import sys; sys.modules['numpy'] = None\n"  # as if numpy were not installed
        "import torch, natgrad\n"
        "torch.manual_seed(0)\n"
        "a = torch.randn(5, 5, dtype=torch.float64); a = a @ a.T + torch.eye(5, dtype=torch.float64)\n"
        "res = natgrad.conjugate_gradient(lambda v: a @ v, torch.ones(5, dtype=torch.float64), maxiter=20)\n"
        "print(bool(res.converged))\n"
    )
    out = _run(code.replace("import torch, natgrad", "import natgrad, torch"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True" and "NumPy" not in out.stderr, out.stderr
