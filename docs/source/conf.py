"""Sphinx configuration of the torchjd documentation (``make docs``)."""

import sys
from pathlib import Path

# Document the sources of this checkout, whatever torchjd the environment has installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

project = "torchjd"
author = "torchjd developers"
copyright = "2026, torchjd developers"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

# Google-style docstrings only.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# Signatures stay short; the types go into the parameter descriptions.
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_typehints_format = "short"
autodoc_member_order = "bysource"
autodoc_class_signature = "mixed"
autodoc_default_options = {"show-inheritance": True}

nitpicky = False
templates_path: list[str] = []
exclude_patterns: list[str] = []

html_theme = "furo"
html_title = "torchjd"
