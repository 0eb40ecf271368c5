"""Import guards for the optional diffusion stack.

``transformers`` imports ``torchvision`` whenever it is installed.  A torchvision wheel built
for another torch (e.g. PyPI's CUDA build next to a CPU-only torch) fails on import with
``operator torchvision::nms does not exist`` and takes every transformers model (CLIP, and
peft, which imports transformers) down with it, although none of them needs torchvision.
:func:`hide_broken_torchvision` turns such a broken install into an absent one, with a
warning; a working torchvision is left alone.
"""

from __future__ import annotations

import sys
import warnings

__all__ = ["hide_broken_torchvision"]

_checked = False


def hide_broken_torchvision() -> None:
    """Make a torchvision that cannot be imported look uninstalled to ``transformers`` (idempotent; called once,
    when :mod:`natgrad_diffusion` is imported)."""
    global _checked
    if _checked:
        return
    _checked = True
    if "torchvision" in sys.modules:
        return
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return
    except Exception as exc:  # broken binary: RuntimeError from its operator registrations
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision"] = None  # type: ignore[assignment]  # find_spec -> None, import -> ImportError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        warnings.warn(
            f"natgrad_diffusion: the installed torchvision does not load with this torch ({first}); ignoring it",
            RuntimeWarning,
            stacklevel=3,
        )
