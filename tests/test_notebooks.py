"""Notebooks are stored clean and they run: every code cell, in order, in a
real kernel (nbclient), at the small budget (``RLSTACK_NOTEBOOK_SCALE=1``).
"""

import json
import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert {p.name for p in NOTEBOOKS} >= {
        "01_quickstart.ipynb",
        "02_functional_api.ipynb",
        "03_custom_env.ipynb",
        "04_populations.ipynb",
        "05_recurrent.ipynb",
        "06_mujoco.ipynb",
    }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_an_axis_of_env_steps_has_short_tick_labels(path):
    """Hundreds of thousands of env steps as plain integers run into each other at a
    notebook's width: an axis that counts them is given a formatter (200k).
    """
    for cell in json.loads(path.read_text())["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and 'set_xlabel("env ' in source:
            assert "xaxis.set_major_formatter(" in source, source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebooks_are_stored_without_outputs(path):
    """Outputs belong to the built docs, not to the repository."""
    cells = json.loads(path.read_text())["cells"]
    dirty = [
        i
        for i, c in enumerate(cells)
        if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))
    ]
    assert not dirty, (
        f"{path.name}: cells {dirty} have outputs or execution counts; clear them before committing"
    )


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("RLSTACK_NOTEBOOK_SCALE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    # The kernel inherits this process's environment: its MLflow store is the test's temp store.
    assert os.environ["MLFLOW_TRACKING_URI"].startswith("sqlite:///")
    nbclient.NotebookClient(
        notebook, timeout=600, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
