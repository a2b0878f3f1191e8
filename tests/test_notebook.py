"""The quickstart notebook is executed, so the API it shows cannot rot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_notebook_runs_without_errors(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("pandas")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # The kernel is a child process: one thread each, the test suite may run beside it. No
    # MPLBACKEND: the notebook draws inline, as in Jupyter.
    env = {"OMP_NUM_THREADS": "1"}
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = nbclient.NotebookClient(
            notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
        )
        client.execute()
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "completed" in text and "chosen learning rates" in text
    assert text.count(" fixed") >= 2 and "were not tuned" in text  # the untuned verdict says so
    # Every figure is an image in the executed notebook: the run's loss curves, the plot drawn
    # from its DataFrame (inline matplotlib), the comparison.
    images = {
        i
        for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
        for o in cell.outputs
        if o.output_type in ("display_data", "execute_result") and "image/png" in o.get("data", {})
    }
    drawing = {
        i
        for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and ("Image(" in cell.source or "plt.subplots" in cell.source)
    }
    assert len(drawing) == 3 and images == drawing, (images, drawing)
    # The DataFrame cells rendered (pandas present) and the figure list came back.
    rendered = [o for o in outputs if o.output_type == "execute_result"]
    assert any("loss_curves.png" in str(o.get("data", {})) for o in rendered)
