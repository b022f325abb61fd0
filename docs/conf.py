"""Sphinx configuration of fastoptim's documentation (bash docs/build.sh builds it)."""
import os
import sys

import fastoptim

try:  # autodoc imports fastoptim.distributed: documenting it needs no MPI_Init
    import mpi4py
    mpi4py.rc.initialize = False
    mpi4py.rc.finalize = False
except ImportError:  # pragma: no cover - the docs extra installs it
    pass

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "_sphinxext"))  # figures from the CLIs

project = "fastoptim"
author = "the fastoptim developers"
copyright = "the fastoptim developers"
release = version = fastoptim.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "figures",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_generated", "**/README.md", "lowp_notes.md", "new_rules_notes.md"]
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

html_theme = "pydata_sphinx_theme"
html_title = f"fastoptim {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}

# The API reference: the generated classes and functions have real signatures and
# annotations (fastoptim.rules._codegen), so autodoc shows them like hand-written ones.
autosummary_generate = True
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()
# No intersphinx: the build must not need the network.
