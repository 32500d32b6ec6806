"""papermill runs a real notebook headlessly with a non-default parameter."""

import json
from pathlib import Path

import nbformat
import pytest

from mixseg_lite.notebooks import NotebookExecutionError, execute_notebook, notebook_parameters

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "00_data_tour.py"


def test_data_tour_runs_with_a_non_default_parameter(tmp_path):
    assert notebook_parameters(NOTEBOOK)["cardiac_volumes"] != 3
    executed = execute_notebook(NOTEBOOK, tmp_path, parameters={"cardiac_volumes": 3, "seed": 7})
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["params"]["cardiac_volumes"] == 3 and metrics["params"]["seed"] == 7
    notebook = nbformat.read(executed, as_version=4)
    injected = [c for c in notebook.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "cardiac_volumes = 3" in injected[0].source
    cardiac = [r for r in metrics["rows"] if "cardiac" in json.dumps(r).lower()]
    assert cardiac, "the tour reports the simulated cardiac data"
    assert set(metrics["params"]) == set(notebook_parameters(NOTEBOOK)), "params are the parameters cell"


def test_a_bad_parameter_stops_the_notebook_with_one_line(tmp_path):
    with pytest.raises(NotebookExecutionError, match="parameter cardiac_volumes must be an integer >= 1, got 0") as error:
        execute_notebook(NOTEBOOK, tmp_path, parameters={"cardiac_volumes": 0})
    assert "\n" not in str(error.value).strip()
