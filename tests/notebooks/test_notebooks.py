"""Executes every notebook in notebooks/*.py (jupytext percent format) at CI size.

What a reader would see is checked, not only that the code runs:

- no global matplotlib backend is forced (`MPLBACKEND` is removed), so the kernel uses
  Jupyter's inline backend as a student's would, and every cell that draws a figure must
  produce an `image/png` output;
- no cell output contains a warning or a traceback.

Each executed notebook is written to `build/notebooks/<name>.ipynb` (or
`$VI_JAX_NOTEBOOK_OUT`), with the SHA-256 of its `.py` source in its metadata. The
documentation site (docs/conf.py) renders those files without executing anything, so CI
runs every notebook exactly once. New notebooks (`notebooks/NN_*.py`) are picked up here
and by the site automatically.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
kernelspec = pytest.importorskip("ipykernel.kernelspec")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9]*.py"))
# scripts/test.sh sets it for the suite (compile time is most of the suite's time).
FAST_COMPILE_FLAG = "--xla_backend_optimization_level=0"
OUT_DIR = Path(os.environ.get("VI_JAX_NOTEBOOK_OUT", ROOT / "build" / "notebooks"))

# A cell that makes a figure; it must show one.
PLOTTING = re.compile(r"\bplt\.(subplots|subplot|figure|show)\(")
# Anything a reader would take for something having gone wrong.
# Code that fell into a markdown cell (a `# %% [markdown]` header with no `# %%` after
# it) is shown as text and never runs: its figure and its asserts silently vanish.
CODE_IN_MARKDOWN = re.compile(r"^(fig, |ax\.|axes\[|plt\.|assert |print\()", re.M)
ALARMING = re.compile(r"\w*Warning\b|Traceback|\b\w+(Error|Exception):|IProgress")


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


def source_digest(path: Path) -> str:
    """The digest docs/conf.py compares to refuse a stale executed notebook."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def output_text(output) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    if output.get("output_type") == "error":
        return "\n".join([output.get("ename", ""), output.get("evalue", "")])
    data = output.get("data", {})
    return data.get("text/plain", "") if isinstance(data, dict) else ""


def problems_in(nb) -> list[str]:
    """What a reader would see go wrong: missing figures, warnings, tracebacks."""
    problems = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and CODE_IN_MARKDOWN.search(cell.source):
            problems.append(f"markdown cell {index} contains code: a missing `# %%`?")
        if cell.cell_type != "code":
            continue
        where = f"cell {index} ({cell.source.strip().splitlines()[0][:60]!r})"
        outputs = cell.get("outputs", [])
        if PLOTTING.search(cell.source) and not any(
            "image/png" in o.get("data", {}) for o in outputs
        ):
            problems.append(f"{where} draws a figure but shows no image/png output")
        for o in outputs:
            if o.get("output_type") == "error":
                problems.append(f"{where} raised {o.get('ename')}: {o.get('evalue')}")
                continue
            text = output_text(o)
            # stderr is where warnings, logging and progress bars go: a handout shows none
            if (o.get("name") == "stderr" and text.strip()) or ALARMING.search(text):
                problems.append(f"{where} printed {text.strip()[:300]!r}")
    return problems


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


def test_problem_detector_catches_what_it_must():
    # The checks above must be able to fail: a figure cell with no image, a warning.
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("fig, ax = plt.subplots()\nplt.show()"),
        nbformat.v4.new_code_cell(
            "import x",
            outputs=[nbformat.v4.new_output("stream", name="stderr", text="UserWarning: x")],
        ),
        nbformat.v4.new_code_cell(
            "print(1)", outputs=[nbformat.v4.new_output("stream", name="stdout", text="1\n")]
        ),
        nbformat.v4.new_markdown_cell("Some prose.\n\nfig, ax = plt.subplots()"),
    ]
    found = problems_in(nb)
    assert len(found) == 3 and "image/png" in found[0] and "UserWarning" in found[1], found
    assert "markdown cell 3" in found[2], found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes_and_shows_its_figures(path, tmp_path, venv_kernel, monkeypatch):
    monkeypatch.setenv("VI_JAX_NOTEBOOK_SIZE", os.environ.get("VI_JAX_NOTEBOOK_SIZE", "ci"))
    # No forced backend: the kernel picks Jupyter's inline one, as a student's does.
    monkeypatch.delenv("MPLBACKEND", raising=False)
    # Nor the unoptimised CPU code generation scripts/test.sh asks for (the notebooks
    # print timings, and the site shows them): the kernel compiles as a student's does.
    flags = os.environ.get("XLA_FLAGS", "").split()
    monkeypatch.setenv("XLA_FLAGS", " ".join(f for f in flags if f != FAST_COMPILE_FLAG))
    nb = jupytext.read(path)
    client = nbclient.NotebookClient(
        nb,
        kernel_name=venv_kernel,
        timeout=300,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    problems = problems_in(nb)
    assert not problems, f"{path.name}:\n" + "\n".join(problems)
    nb.metadata["vi_jax"] = {
        "source": f"notebooks/{path.name}",
        "source_sha256": source_digest(path),
        "size": os.environ["VI_JAX_NOTEBOOK_SIZE"],
    }
    nb.metadata.pop("widgets", None)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    tmp = OUT_DIR / f".{path.stem}.ipynb.tmp"
    nbformat.write(nb, tmp)
    tmp.replace(OUT_DIR / f"{path.stem}.ipynb")  # atomic: the site never reads half a file
