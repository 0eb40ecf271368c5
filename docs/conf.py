"""Sphinx configuration for the natgrad documentation."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))
sys.path.insert(0, os.path.abspath("_ext"))

project = "natgrad"
author = "natgrad developers"
copyright = "2026, natgrad developers"
release = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "mathml",  # formulas as MathML at build time: the site works offline
    "sphinx.ext.viewcode",
    "sphinx.ext.doctest",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
myst_enable_extensions = ["dollarmath", "amsmath"]
html_math_renderer = "mathml"
myst_heading_anchors = 3
autosummary_generate = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True
nitpicky = False
suppress_warnings = ["autodoc.import_object"]

html_theme = "furo"
html_title = "natgrad"
html_static_path: list[str] = []
exclude_patterns = ["_build", "crater_model_renders.md"]  # included by crater_model_eval.md
