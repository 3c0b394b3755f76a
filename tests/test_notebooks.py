"""Execute the notebooks end to end with the interpreter running the tests.

Each notebook runs in a fresh ``python3`` kernel whose kernelspec is written for this
test and points at ``sys.executable`` (so a user-level ``python3`` kernel of another
Python cannot take its place), with a temporary working directory. The notebooks are
committed with their outputs cleared; the test checks that every code cell ran and that
the plots rendered (``image/png`` outputs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
#: Plots each notebook must render at least.
MIN_IMAGES = {"01_quickstart": 3, "02_fidelity": 2, "03_agent_tools": 1}


def test_the_notebooks_are_there() -> None:
    assert {p.stem for p in NOTEBOOKS} == set(MIN_IMAGES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


@pytest.fixture
def kernel_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``python3`` kernelspec on ``sys.executable``, first on ``JUPYTER_PATH``."""
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (tests)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    work = tmp_path / "work"
    work.mkdir()
    return work


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, kernel_path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    book.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"))
    client = nbclient.NotebookClient(
        book,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(kernel_path)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    code = [c for c in book.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    assert code[-1].outputs[0]["text"].strip() == sys.executable
    images = [
        out
        for cell in code
        for out in cell.outputs
        if out.get("output_type") in ("display_data", "execute_result")
        and "image/png" in out.get("data", {})
    ]
    assert len(images) >= MIN_IMAGES[path.stem]
    errors = [out for cell in code for out in cell.outputs if out.get("output_type") == "error"]
    assert not errors
