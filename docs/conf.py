"""Sphinx configuration for the fastconv documentation.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html``
(warnings are errors in CI; ``pip install -e ".[docs]"`` first).
"""
import os
import sys

# The docs describe the checkout they sit in (its compiled kernels built by
# ``pip install -e .``), not some other installed copy.
sys.path.insert(0, os.path.abspath(".."))

import fastconv  # noqa: E402

project = "fastconv"
author = "the fastconv developers"
copyright = "2026, the fastconv developers"
version = release = fastconv.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "numpydoc",
]

exclude_patterns = ["_build"]

html_theme = "alabaster"
html_theme_options = {"description": "Fast CPU building blocks for CNNs", "fixed_sidebar": True}
html_static_path = []

autodoc_member_order = "bysource"
# Class pages list the methods documented in the class docstring, not every
# inherited member (numpydoc would otherwise add autosummary tables).
numpydoc_show_class_members = False
numpydoc_validation_checks = set()
numpydoc_xref_param_type = False
