"""The ``mixseg-lite`` command line, called through ``main([...])`` on tiny notebooks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mixseg_lite.cli import main

TINY_NOTEBOOK = '''\
# %% [markdown]
# # Tiny notebook for tests

# %% tags=["parameters"]
method = "kl"
value = 1.0
seed = 0
output_dir = "outputs/tiny"

# %%
import json, pathlib
rows = [{"method": method, "branch": "seg", "dice": value + seed, "hd95": 2 * value}]
out = pathlib.Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
(out / "metrics.json").write_text(json.dumps({"rows": rows, "params": {"value": value}}))
'''


def write_notebook(folder: Path, name: str = "01_tiny.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(TINY_NOTEBOOK, encoding="utf-8")
    return folder / name


def test_run_with_parameters_and_yaml_file_into_default_folder(tmp_path, monkeypatch, capsys):
    source = write_notebook(tmp_path / "notebooks")
    (tmp_path / "params.yaml").write_text("method: from_file\nseed: 2\n")
    monkeypatch.chdir(tmp_path)
    status = main(["run", str(source), "-p", "value", "3", "-p", "method", "kl_ent",
                   "-f", "params.yaml"])
    assert status == 0
    metrics = json.loads((tmp_path / "runs" / "01_tiny" / "metrics.json").read_text())
    assert metrics["rows"] == [{"method": "kl_ent", "branch": "seg", "dice": 5, "hd95": 6}]
    assert isinstance(metrics["params"]["value"], int)  # "-p value 3" is read as YAML: an int
    assert "| 01_tiny | kl_ent | seg | 5 | 6 |" in capsys.readouterr().out


def test_unknown_parameter_exits_nonzero_with_the_valid_names(tmp_path, capsys):
    source = write_notebook(tmp_path)
    assert main(["run", str(source), "-p", "epochs", "3", "-o", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "unknown parameter(s) epochs; valid: method, value, seed, output_dir" in error
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_missing_parameter_file_is_one_line(tmp_path, capsys):
    assert main(["run", str(write_notebook(tmp_path)), "-f", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: no such parameter file" in capsys.readouterr().err


def test_demo_runs_every_notebook_and_writes_one_short_table_each(tmp_path, monkeypatch, capsys):
    write_notebook(tmp_path / "notebooks")
    other = tmp_path / "notebooks" / "02_other.py"
    other.write_text(TINY_NOTEBOOK.replace('"hd95": 2 * value', '"accuracy": 0.5'), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 0
    table = (tmp_path / "runs" / "demo" / "results.md").read_text()
    lines = table.splitlines()
    assert lines[:3] == ["01_tiny", "", "| notebook | method | branch | dice | hd95 |"]
    assert "| 01_tiny | kl | seg | 1.000 | 2.000 |" in table
    # the second notebook's table has its own columns, not the union of both
    assert "| notebook | method | branch | dice | accuracy |" in table
    assert "| 02_other | kl | seg | 1.000 | 0.500 |" in table
    out = capsys.readouterr().out
    assert table.split("machine:")[0] in out
    # which CPU features and threads the numbers came from, in the table file and on the screen
    assert "machine:" in table and "torch thread" in out


def test_check_fails_without_twins(tmp_path, capsys):
    source = write_notebook(tmp_path)
    assert main(["check", str(source)]) == 1
    assert "01_tiny.ipynb: missing" in capsys.readouterr().out


def test_no_notebooks_is_an_input_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["build"]) == 2
    assert "no notebooks/NN_*.py sources found" in capsys.readouterr().err


def test_module_entry_point(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mixseg_lite.cli", "check", "none.py"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr == "mixseg-lite check: error: none.py: no such notebook source\n"
