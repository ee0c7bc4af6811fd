"""Sphinx configuration of ltstudy's documentation site.

The pages are MyST Markdown (Sphinx + myst-parser, as Optuna, PyTorch and MLflow build theirs with Sphinx); the
API reference comes from the docstrings (autodoc), and the settings, registries and command-line tables from the
code itself (`_ext/ltstudy_docs.py`). Build it as CI does, warnings as errors, offline:

    tox -e docs        # or: sphinx-build -W --keep-going -n -b html docs .tox/docs_html
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE / "_ext")]

project = "ltstudy"
author = "the ltstudy authors"
copyright = "the ltstudy authors"

extensions = ["myst_parser", "sphinx.ext.autodoc", "ltstudy_docs"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "examples", "**/report.html"]

myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3  # links to a page's sections by their title, e.g. science.md#the-controls

# tox's docs environment installs Sphinx and MyST only, not torch and the rest (gigabytes; the examples run in the py
# environment, which has them): autodoc then imports ltstudy's own modules for real, so an API page whose module
# does not import still fails the build, and stands in for whichever of these libraries is not installed.
LIBRARIES = ("torch", "torchvision", "numpy", "scipy", "sklearn", "optuna", "optuna_dashboard", "mlflow", "matplotlib",
             "safetensors", "tqdm", "psycopg", "sqlalchemy")
autodoc_mock_imports = [name for name in LIBRARIES if importlib.util.find_spec(name) is None]
autodoc_member_order = "bysource"
autodoc_typehints = "signature"

# No network at build time: no intersphinx. A reference to another library's class (torch, optuna, numpy, the
# standard library) has no target here, so -n would report it: these are the only ones we let go.
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|numpy|np|nn|optuna|mlflow|pathlib|os|collections|typing|dataclasses)(\..*)?"),
    (r"py:class", r"(Path|Any|Callable|Iterable|Iterator|Sequence|Literal)"),
    # ltstudy's own aliases of plain types: a state dict and masks are dict[str, torch.Tensor], a round a dict
    (r"py:class", r"(State|Masks|Round)"),
]

# Flags (--n-trials) and quotes stay as typed: docutils would turn "--" into a dash.
smartquotes = False

html_theme = "alabaster"
html_title = "ltstudy"
html_static_path: list[str] = []
html_theme_options = {"description": "Lottery-ticket studies: IMP searched by Optuna, tracked in MLflow",
                      "fixed_sidebar": True, "page_width": "1250px", "sidebar_width": "230px"}
