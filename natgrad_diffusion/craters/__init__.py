"""Mars-crater data and the embedded crater diffusion model.

* :mod:`natgrad_diffusion.craters.render`: procedural renderer of crater images with captions.
* :mod:`natgrad_diffusion.craters.reference`: reference sets (generated, from a folder, from lunar patches), ``.npz`` I/O.
* :mod:`natgrad_diffusion.craters.model`: the tiny text-conditional pixel-space crater diffusion model.
* :mod:`natgrad_diffusion.craters.train_model` / :mod:`~natgrad_diffusion.craters.evaluate_model`: its training
  and evaluation scripts.
"""

from __future__ import annotations

import importlib.util
import sys


def guard_broken_torchvision() -> bool:
    """Hide an installed-but-broken ``torchvision`` from ``transformers``/``diffusers``.

    A torchvision wheel built against another torch fails on import (``operator torchvision::nms does not
    exist``); ``transformers`` sees the package on disk, imports it for its image utilities, and then every
    ``from diffusers import UNet2DConditionModel`` fails. Nothing here needs torchvision, so when its import
    fails the half-imported modules are dropped and ``sys.modules["torchvision"] = None`` makes
    ``importlib.util.find_spec`` report it as absent. Returns True when torchvision was hidden.
    """
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"] is None
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torchvision  # noqa: F401
    except Exception:
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision"] = None  # type: ignore[assignment]
        return True
    return False


guard_broken_torchvision()
