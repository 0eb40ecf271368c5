"""Doctest collection of the ``natgrad`` package: skip integrations whose optional extra is missing."""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("sb3_contrib") else ["natgrad/integrations/sb3.py"]
