"""The figures notebook runs top to bottom, offline, on whatever results are committed, in under a minute."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat is in the dev extra: pip install -e .[dev]")
nbclient = pytest.importorskip("nbclient", reason="nbclient is in the dev extra: pip install -e .[dev]")

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "reproduce_figures.ipynb"
RESULTS = REPO / "experiments" / "results"


def test_notebook_executes_and_draws_the_committed_results():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    started = time.perf_counter()
    client = nbclient.NotebookClient(nb, timeout=60, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError on any failing cell
    elapsed = time.perf_counter() - started
    assert elapsed < 60, f"the notebook took {elapsed:.0f} s"

    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    committed = sorted(p.name for p in RESULTS.glob("*.csv")) + sorted(p.name for p in RESULTS.rglob("analysis_*.json"))
    if committed:
        # every committed result family that the notebook knows draws at least one figure
        assert images, f"results are committed ({committed[:5]}...) but the notebook drew no figure"
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "results folder:" in text
