"""Every notebook runs headless, top to bottom, without an error, at small sizes: each notebook's first code cell
is tagged ``parameters`` (papermill's convention) and holds plain assignments; the test injects a cell after it
with smaller values, as papermill does (tagged ``injected-parameters``)."""

import ast
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
# the sizes the suite runs each notebook at (testbed.ipynb on basic.yaml: its 12-s timeline in place of churn's 36 s)
SMALL = {"quickstart.ipynb": {"NODES": 16}, "testbed.ipynb": {"SCENARIO": "basic.yaml", "NODES": 8},
         "validation.ipynb": {"SEEDS": 10, "NODES": 16, "MIRROR_SEEDS": 2},
         "protocols.ipynb": {"NODES": [8, 16], "SEEDS": 1, "FAULT_NODES": 12}}
# figures each notebook shows inline: quickstart the run's infection and latency plots and the mean-field figure;
# validation the push-rounds figure (and, as root, the testbed-vs-simulator comparison); testbed three
MIN_FIGURES = {"quickstart.ipynb": 3, "validation.ipynb": 1 if os.geteuid() != 0 else 2, "testbed.ipynb": 3,
               "protocols.ipynb": 4}


@pytest.mark.parametrize("name,needs_root", [("quickstart.ipynb", False), ("validation.ipynb", False),
                                             ("testbed.ipynb", True), ("protocols.ipynb", False)])
def test_notebook_executes(name, needs_root):
    if needs_root and os.geteuid() != 0:
        pytest.skip("needs root (CI runs as root)")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, new_code_cell("\n".join(f"{k} = {v!r}" for k, v in SMALL[name].items()),
                                          metadata={"tags": ["injected-parameters"]}))
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS.parent / "scenarios")}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    # the figures are in the executed notebook itself (inline image data), not only written to files
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= MIN_FIGURES[name], f"{name}: {len(images)} figure(s) in the executed output"


@pytest.mark.parametrize("name", sorted(SMALL))
def test_the_first_code_cell_holds_the_parameters(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert not any("parameters" in c.metadata.get("tags", []) for c in code[1:])
    # plain assignments of literals, so an injected cell can override every one; the suite overrides only these
    names = {}
    for stmt in ast.parse(code[0].source).body:
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1, ast.dump(stmt)
        names[stmt.targets[0].id] = ast.literal_eval(stmt.value)
    assert set(SMALL[name]) <= set(names)
    # and nothing else sizes a notebook: no environment variable is read
    assert not any("environ" in c.source or "getenv" in c.source for c in code)
