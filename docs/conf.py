"""Sphinx configuration of the vi_jax documentation site (Sphinx + myst-nb).

Build it with `bash scripts/docs.sh` (executes the notebooks once through the notebook
test, then builds with warnings as errors), or, when `build/notebooks/*.ipynb` are
already there (as in CI, right after the test suite), with
`python -m sphinx -W --keep-going -b html docs build/site`.

Nothing is executed here (`nb_execution_mode = "off"`): the pages of the notebooks are
the `.ipynb` files the notebook test wrote, each checked against the SHA-256 of its
`notebooks/*.py` source so that a stale execution is refused, not published.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import vi_jax  # noqa: E402

project = "vi_jax"
author = "vi_jax contributors"
copyright = "vi_jax contributors"  # noqa: A001
release = vi_jax.__version__
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
html_theme = "furo"
html_title = f"vi_jax {release}"
# ARCHITECTURE.md is included by _generated/architecture.md, not a page of its own
exclude_patterns = ["_build", "ARCHITECTURE.md", ".ipynb_checkpoints"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

# -- notebooks: render the executed copies, never execute
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
# The repository's markdown (README-style pages included here) links to source files
# relative to the repository, which are not pages of this site.
suppress_warnings = ["myst.xref_missing", "myst.header"]

# -- API reference from the docstrings (Google style)
# One page per layer (written by _api_pages below): a summary table of its public names
# (its `__all__`), then each documented in full.
API_MODULES = [
    "vi_jax.estimators",
    "vi_jax.diagnostics",
    "vi_jax.inference",
    "vi_jax.families",
    "vi_jax.models",
    "vi_jax.training",
    "vi_jax.data",
    "vi_jax.experiment",
    "vi_jax.plotting",
]
autosummary_generate = False
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# NamedTuple fields are documented by autodoc already; as :ivar: fields, napoleon's
# "Attributes:" sections do not describe them a second time.
napoleon_use_ivar = True
# Docstrings write code in single backticks (markdown style): render it as code.
default_role = "code"

NOTEBOOK_SOURCES = ROOT / "notebooks"
EXECUTED = Path(os.environ.get("VI_JAX_NOTEBOOK_OUT", ROOT / "build" / "notebooks"))
GENERATED = HERE / "_generated"


def _copy_executed_notebooks() -> None:
    """build/notebooks/NN_*.ipynb -> docs/notebooks/, refusing missing or stale ones."""
    target = HERE / "notebooks"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    problems = []
    for source in sorted(NOTEBOOK_SOURCES.glob("[0-9]*.py")):
        executed = EXECUTED / f"{source.stem}.ipynb"
        if not executed.exists():
            problems.append(f"{executed} is missing")
            continue
        meta = json.loads(executed.read_text()).get("metadata", {}).get("vi_jax", {})
        if meta.get("source_sha256") != hashlib.sha256(source.read_bytes()).hexdigest():
            problems.append(f"{executed} was executed from another version of {source.name}")
            continue
        shutil.copyfile(executed, target / executed.name)
    if problems:
        raise RuntimeError(
            "executed notebooks are missing or stale (run `bash scripts/docs.sh`, or "
            "`pytest tests/notebooks` first):\n  " + "\n  ".join(problems)
        )
    readme = (NOTEBOOK_SOURCES / "README.md").read_text()
    # the README links the .py sources; on the site the rendered pages sit beside it
    for source in NOTEBOOK_SOURCES.glob("[0-9]*.py"):
        readme = readme.replace(f"({source.name})", f"({source.stem}.ipynb)")
    # the README describes the repository; on the site the pages *are* the executed copies
    (target / "index.md").write_text(readme + "\n```{toctree}\n:hidden:\n:glob:\n\n[0-9]*\n```\n")


def _estimator_table() -> str:
    """The gradient-estimator table, from the registry (the CLI's source of choices)."""
    try:
        from vi_jax.estimators import registry
    except ImportError:  # before the registry lands: the name -> function mapping
        rows = [
            (name, "vi_jax.estimators." + fn.__name__, (fn.__doc__ or "").strip().splitlines()[0])
            for name, fn in vi_jax.ESTIMATORS.items()
        ]
        head = "| name | function | summary |\n|---|---|---|\n"
        return head + "".join(f"| `{n}` | {{func}}`{f}` | {s} |\n" for n, f, s in rows)
    head = (
        "| objective | name | function | min K | reparameterised q | discrete q | options "
        "| summary |\n|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for spec in registry.estimators():
        fn = f"vi_jax.estimators.{spec.fn.__name__}"  # documented where it is exported
        options = ", ".join(f"`{o}`" for o in spec.options) or "—"
        lines.append(
            f"| `{spec.objective}` | `{spec.name}` | {{func}}`{fn}` | {spec.min_samples} "
            f"| {'needed' if spec.needs_reparam else 'not needed'} "
            f"| {'yes' if spec.discrete_ok else 'no'} | {options} | {spec.summary} |\n"
        )
    return head + "".join(lines)


def _architecture_page() -> None:
    """docs/ARCHITECTURE.md when it exists, else a page saying it has not landed."""
    page = GENERATED / "architecture.md"
    if (HERE / "ARCHITECTURE.md").exists():
        page.write_text("```{include} ../ARCHITECTURE.md\n:relative-images:\n```\n")
    else:
        page.write_text(
            "# Architecture\n\n`docs/ARCHITECTURE.md` has not landed in this checkout yet; "
            "once it does, this page includes it.\n"
        )


def _api_pages() -> None:
    import importlib

    target = GENERATED / "api"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in API_MODULES:
        module = importlib.import_module(name)
        public = getattr(module, "__all__", None) or sorted(
            n
            for n, v in vars(module).items()
            if not n.startswith("_") and getattr(v, "__module__", None) == name
        )
        # constants (dicts, tables) would show their type's docstring in the summary
        table = "\n".join(f"   {n}" for n in public if callable(getattr(module, n)))
        (target / f"{name}.rst").write_text(
            f"{name}\n{'=' * len(name)}\n\n"
            f".. currentmodule:: {name}\n\n.. autosummary::\n   :nosignatures:\n\n{table}\n\n"
            f".. automodule:: {name}\n   :members: {', '.join(public)}\n"
        )


def _generate() -> None:
    GENERATED.mkdir(exist_ok=True)
    _api_pages()
    _copy_executed_notebooks()
    (GENERATED / "estimator_table.md").write_text(_estimator_table())
    _architecture_page()
    (GENERATED / "benchmarks.md").write_text("```{include} ../../benchmarks/README.md\n```\n")
    (GENERATED / "changelog.md").write_text("```{include} ../../CHANGELOG.md\n```\n")


_generate()
