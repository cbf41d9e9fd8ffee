"""Every notebook runs headless, top to bottom, without an error (small sizes: XG_NOTEBOOK_QUICK=1)."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.mark.parametrize("name,needs_root", [("quickstart.ipynb", False), ("validation.ipynb", False),
                                             ("testbed.ipynb", True)])
def test_notebook_executes(name, needs_root, monkeypatch):
    if needs_root and os.geteuid() != 0:
        pytest.skip("needs root (CI runs as root)")
    monkeypatch.setenv("XG_NOTEBOOK_QUICK", "1")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS.parent / "scenarios")}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
