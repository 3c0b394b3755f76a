"""Sphinx configuration of the bayestwin documentation (``nox -s docs``).

The site is built with warnings as errors. The notebooks of ``notebooks/`` (through the
``docs/notebooks`` link) and the report pages are executed at build time by myst-nb;
the API reference comes from the numpy-style docstrings (autodoc, autosummary,
napoleon); the REST reference is generated from the FastAPI app (``_ext/bayestwin_docs``).
Nothing on a built page loads anything from the network.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(ROOT))

# The report pages' code cells find the reports (and this folder) through these.
os.environ.setdefault("DOCS_BAYESTWIN_ROOT", str(ROOT))
# Plots render to PNG in the kernels; nothing opens a window.
os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")


def _kernel_on_this_python() -> None:
    """Put a ``python3`` kernelspec on this interpreter first on ``JUPYTER_PATH``.

    The notebooks name the kernel ``python3``; without this, a user-level ``python3``
    kernel of another Python could execute them.
    """
    spec_dir = Path(tempfile.mkdtemp(prefix="bayestwin-docs-kernel-"))
    atexit.register(shutil.rmtree, spec_dir, ignore_errors=True)
    kernel = spec_dir / "kernels" / "python3"
    kernel.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (docs)",
        "language": "python",
    }
    (kernel / "kernel.json").write_text(json.dumps(spec))
    paths = [str(spec_dir), *filter(None, os.environ.get("JUPYTER_PATH", "").split(os.pathsep))]
    os.environ["JUPYTER_PATH"] = os.pathsep.join(paths)


_kernel_on_this_python()

from bayestwin import __version__  # noqa: E402

project = "bayestwin"
author = "bayestwin contributors"
copyright = "bayestwin contributors"  # noqa: A001
version = release = __version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "bayestwin_docs",
]

exclude_patterns = [
    "_build",
    "_data",
    "_ext",
    "_templates",
    "_generated",
    "**/.ipynb_checkpoints",
    "Thumbs.db",
    ".DS_Store",
]
templates_path = ["_templates"]
root_doc = "index"

# -- MyST and myst-nb -------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist", "tasklist"]
myst_heading_anchors = 3
nb_execution_mode = "force"
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_in_temp = True
nb_merge_streams = True
nb_render_markdown_format = "myst"

# -- autodoc, autosummary, napoleon -----------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autosummary_ignore_module_all = True
# importing a package's __main__ would run its command line
autosummary_mock_imports = ["bayestwin.synthetic.__main__"]
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    "ignore-module-all": True,
}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_class_signature = "separated"
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = False
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True

# -- HTML -------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"bayestwin {release}"
html_static_path = ["_static"]
html_favicon = "_static/favicon.svg"
html_show_sourcelink = False
html_copy_source = False
