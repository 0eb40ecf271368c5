"""Integrations of natgrad with other libraries.

Each submodule imports its third-party library on import and is therefore never imported
by ``import natgrad``:

* :mod:`natgrad.integrations.sb3`: ``TRPO`` for Stable-Baselines3, a drop-in replacement
  for ``sb3_contrib.TRPO`` (``pip install "natgrad[sb3]"``).
* :mod:`natgrad.integrations.tianshou`: ``TRPO`` and ``NPG`` for tianshou 2.x, drop-in replacements for
  ``tianshou.algorithm.TRPO`` / ``NPG`` (``pip install -c constraints.txt "natgrad[tianshou]"``).
"""
