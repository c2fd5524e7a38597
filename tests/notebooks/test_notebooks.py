"""Executes every notebook in notebooks/*.py (jupytext percent format) at CI size."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")
kernelspec = pytest.importorskip("ipykernel.kernelspec")

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9]*.py"))


@pytest.fixture(scope="module")
def venv_kernel(tmp_path_factory):
    """A `python3` kernelspec that runs this interpreter (the venv's), on JUPYTER_PATH."""
    prefix = tmp_path_factory.mktemp("kernel")
    kernelspec.install(prefix=str(prefix), kernel_name="python3")
    kernel_json = prefix / "share" / "jupyter" / "kernels" / "python3" / "kernel.json"

    spec = json.loads(kernel_json.read_text())
    spec["argv"][0] = sys.executable
    kernel_json.write_text(json.dumps(spec))
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(prefix / "share" / "jupyter") + (
        os.pathsep + old if old else ""
    )
    yield "python3"
    if old is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = old


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, venv_kernel, monkeypatch):
    monkeypatch.setenv("VI_JAX_NOTEBOOK_SIZE", os.environ.get("VI_JAX_NOTEBOOK_SIZE", "ci"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = jupytext.read(path)
    client = nbclient.NotebookClient(
        nb,
        kernel_name=venv_kernel,
        timeout=300,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
