"""Sphinx configuration of tapegrad's API reference (built from the docstrings).

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The guides are the Markdown pages beside this file (``docs/*.md``); this build renders
the reference only, so it needs nothing beyond Sphinx itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))          # document the checkout next to this file

import tapegrad  # noqa: E402

project = "tapegrad"
author = "the tapegrad authors"
copyright = "the tapegrad authors"
release = tapegrad.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "**/.ipynb_checkpoints", "*.md", "img"]
templates_path: list[str] = []

# the docstrings use NumPy-style sections (Parameters, Returns, Raises, Examples)
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_preprocess_types = True

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autodoc_default_options = {"show-inheritance": True}
autodoc_mock_imports: list[str] = []   # pydot is imported lazily by tapegrad.viz

html_theme = "alabaster"
html_title = f"tapegrad {release}"
html_static_path: list[str] = []
html_theme_options = {"description": "micrograd's API, recorded on a NumPy tape"}
