"""Reading parameters, executing notebooks, and building / checking executed twins.

Each test notebook is a tiny py:percent file written here; executing one costs a kernel start
(~2-3 s), so executions are few and the built twin is shared by the twin checks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from mixseg_lite.errors import InputError
from mixseg_lite.notebooks import (_make_diff_friendly, build_twin, check_twin, execute_notebook,
                                   list_notebooks, notebook_parameters, parse_parameter_value,
                                   read_notebook)

TINY_NOTEBOOK = '''\
# %% [markdown]
# # Tiny notebook for tests

# %% tags=["parameters"]
method = "kl"
value = 1.0
seed = 0
fail = False
output_dir = "outputs/tiny"

# %%
import json, pathlib
if fail:
    raise RuntimeError("failed on purpose")
rows = [{"method": method, "branch": "seg", "dice": value + seed, "hd95": 2 * value}]
out = pathlib.Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
(out / "metrics.json").write_text(json.dumps({"rows": rows, "params": {"method": method}}))
print(f"dice {rows[0]['dice']:.3f}")
'''
TINY_DEFAULTS = {"method": "kl", "value": 1.0, "seed": 0, "fail": False,
                 "output_dir": "outputs/tiny"}


def write_notebook(folder: Path, text: str = TINY_NOTEBOOK, name: str = "01_tiny.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def built_pair(tmp_path_factory) -> Path:
    """A tiny source with the twin built from it (one kernel start for all twin checks)."""
    source = write_notebook(tmp_path_factory.mktemp("pair"))
    build_twin(source)
    return source


@pytest.fixture
def pair_copy(built_pair, tmp_path) -> Path:
    """A private copy of the built pair, for tests that break it."""
    shutil.copy(built_pair, tmp_path / built_pair.name)
    shutil.copy(built_pair.with_suffix(".ipynb"), tmp_path / built_pair.with_suffix(".ipynb").name)
    return tmp_path / built_pair.name


def test_parameters_are_read_without_executing(tmp_path):
    assert notebook_parameters(write_notebook(tmp_path)) == TINY_DEFAULTS


def test_non_literal_parameter_names_notebook_and_line(tmp_path):
    source = write_notebook(tmp_path, TINY_NOTEBOOK.replace("value = 1.0", "value = 2 * 0.5"))
    with pytest.raises(InputError, match=r"01_tiny\.py: parameters cell line 2: `value = 2 \* 0\.5`"):
        notebook_parameters(source)


def test_missing_parameters_cell_is_an_input_error(tmp_path):
    source = write_notebook(tmp_path, TINY_NOTEBOOK.replace(' tags=["parameters"]', ""))
    with pytest.raises(InputError, match="no cell tagged 'parameters'"):
        notebook_parameters(source)


@pytest.mark.parametrize("text, value", [
    ("3", 3), ("0.5", 0.5), ("1e-3", 0.001), ("true", True), ("False", False), ("None", None),
    ("null", None), ("kl_ent", "kl_ent"), ("2024-01-01", "2024-01-01"), ("[1, 2]", [1, 2])])
def test_command_line_values_are_yaml_scalars(text, value):
    assert parse_parameter_value(text) == value


def test_execute_merges_yaml_file_then_parameters(tmp_path):
    source = write_notebook(tmp_path / "nb")
    parameter_file = tmp_path / "params.yaml"
    parameter_file.write_text("method: from_file\nvalue: 2.5\n")
    executed = execute_notebook(source, tmp_path / "out", parameters={"method": "explicit"},
                                parameter_file=parameter_file)
    assert executed == (tmp_path / "out" / "01_tiny.ipynb").resolve()
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())  # beside the notebook
    assert metrics["rows"] == [{"method": "explicit", "branch": "seg", "dice": 2.5, "hd95": 5.0}]
    papermill_metadata = nbformat.read(executed, as_version=4).metadata.papermill
    assert papermill_metadata["input_path"] == str(source)  # not an inline copy of the notebook
    assert papermill_metadata["parameters"]["output_dir"] == str((tmp_path / "out").resolve())


def test_unknown_parameter_lists_the_valid_names(tmp_path):
    with pytest.raises(InputError, match="unknown parameter.s. epochs; valid: method, value, seed, "
                                         "fail, output_dir"):
        execute_notebook(write_notebook(tmp_path), tmp_path / "out", parameters={"epochs": 3})


def test_output_dir_is_chosen_by_the_output_folder_not_a_parameter(tmp_path):
    with pytest.raises(InputError, match="output_dir"):
        execute_notebook(write_notebook(tmp_path), tmp_path / "out",
                         parameters={"output_dir": "elsewhere"})


def test_built_twin_is_in_sync_and_diff_friendly(built_pair):
    assert check_twin(built_pair) == []
    twin = nbformat.read(built_pair.with_suffix(".ipynb"), as_version=4)
    assert twin.metadata.kernelspec.name == "python3"
    assert "papermill" not in twin.metadata and "widgets" not in twin.metadata
    assert len(twin.metadata.mixseg_lite.source_sha256) == 64
    assert [cell.id for cell in twin.cells] == ["cell-0", "cell-1", "cell-2"]
    assert all("papermill" not in cell.metadata and "execution" not in cell.metadata
               for cell in twin.cells)
    assert twin.cells[2].outputs[0].text == "dice 1.000\n"
    assert (built_pair.parent / "outputs" / "tiny" / "metrics.json").is_file()  # cwd = its folder


def test_edited_source_is_reported_as_not_re_executed(pair_copy):
    pair_copy.write_text(pair_copy.read_text().replace('method = "kl"', 'method = "kl"   '))
    assert [problem for problem in check_twin(pair_copy) if "not re-executed" in problem]
    assert not [problem for problem in check_twin(pair_copy) if "differs" in problem]


def test_changed_cell_is_reported(pair_copy):
    pair_copy.write_text(pair_copy.read_text().replace('"branch": "seg"', '"branch": "cam"'))
    problems = check_twin(pair_copy)
    assert any("cell 2 (code) differs from its source" in problem for problem in problems)
    assert any("not re-executed" in problem for problem in problems)


def test_added_cell_is_reported(pair_copy):
    pair_copy.write_text(pair_copy.read_text() + "\n# %%\nprint('more')\n")
    assert any("3 cells but its source has 4" in problem for problem in check_twin(pair_copy))


def test_unexecuted_twin_is_reported(pair_copy):
    # What a jupytext sync (an editor saving the pair) leaves: the right cells, never run.
    nbformat.write(read_notebook(pair_copy), pair_copy.with_suffix(".ipynb"))
    problems = check_twin(pair_copy)
    assert any("cell 1 was never executed" in problem for problem in problems)
    assert any("no source hash" in problem for problem in problems)


def test_error_output_and_widget_state_are_reported(pair_copy):
    twin_path = pair_copy.with_suffix(".ipynb")
    twin = nbformat.read(twin_path, as_version=4)
    twin.cells[2].outputs.append(nbformat.v4.new_output("error", ename="ValueError",
                                                        evalue="boom", traceback=[]))
    twin.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nbformat.write(twin, twin_path)
    problems = check_twin(pair_copy)
    assert any("cell 2 has an error output (ValueError: boom)" in problem for problem in problems)
    assert any("stores widget state" in problem for problem in problems)


def test_missing_twin_is_reported(tmp_path):
    assert "missing" in check_twin(write_notebook(tmp_path))[0]


def test_diff_friendly_drops_widget_views_and_state():
    nb = nbformat.v4.new_notebook(metadata={"widgets": {}, "papermill": {"duration": 1.0}})
    progress_bar = nbformat.v4.new_output("display_data", data={
        "text/plain": "  0%|   | 0/3", "application/vnd.jupyter.widget-view+json": {"model_id": "x"}})
    figure = nbformat.v4.new_output("display_data", data={
        "text/plain": "<Figure>", "application/vnd.jupyter.widget-state+json": {"state": {}}})
    printed = nbformat.v4.new_output("stream", name="stdout", text="dice 0.9\n")
    nb.cells = [nbformat.v4.new_code_cell("x", outputs=[progress_bar, figure, printed])]
    _make_diff_friendly(nb)
    assert "widgets" not in nb.metadata and "papermill" not in nb.metadata
    assert nb.cells[0].outputs == [figure, printed]
    assert figure.data == {"text/plain": "<Figure>"}


def test_list_notebooks_finds_numbered_sources_in_order(tmp_path):
    for name in ("02_b.py", "01_a.py", "helper.py", "03_c.ipynb"):
        (tmp_path / name).write_text("")
    assert [path.name for path in list_notebooks(tmp_path)] == ["01_a.py", "02_b.py"]


def test_batch_runs_set_static_figures_and_builds_leave_it_to_detection(tmp_path):
    text = TINY_NOTEBOOK.replace('fail = False\n', 'fail = False\nstatic_figures = None\n')
    source = write_notebook(tmp_path / "nb", text)
    executed = execute_notebook(source, tmp_path / "out")
    assert nbformat.read(executed, as_version=4).metadata.papermill["parameters"]["static_figures"] is True
    executed = execute_notebook(source, tmp_path / "out2", parameters={"static_figures": False})
    assert nbformat.read(executed, as_version=4).metadata.papermill["parameters"]["static_figures"] is False
    plain = execute_notebook(write_notebook(tmp_path / "plain"), tmp_path / "out3")  # not declared: not set
    assert "static_figures" not in nbformat.read(plain, as_version=4).metadata.papermill["parameters"]
