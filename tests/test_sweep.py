"""Sweeps: expansion into runs, parallel execution with a failing run, resuming, --force, Dask.

One sweep executed by two worker processes is shared by the tests that inspect or resume it;
the tiny notebook raises when its parameter ``fail`` is true.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mixseg_lite.cli import main
from mixseg_lite.errors import InputError
from mixseg_lite.sweep import is_finished, load_sweep, run_folder_name, run_sweep

TINY_NOTEBOOK = '''\
# %% tags=["parameters"]
method = "kl"
value = 1.0
seed = 0
epochs = 1
fail = False
output_dir = "outputs/tiny"

# %%
import json, pathlib
if fail:
    raise RuntimeError("failed on purpose")
rows = [{"method": method, "dice": value + seed / 10, "hd95": float(epochs)}]
out = pathlib.Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
(out / "metrics.json").write_text(json.dumps({"rows": rows, "params": {"seed": seed}}))
'''
SWEEP = """\
name: tiny
notebook: notebooks/02_tiny.py
out: runs/tiny
seeds: [0]
fixed: {epochs: 2}
runs: [{method: a}, {method: b}, {method: c, fail: true}]
"""


def write_project(root: Path, sweep_text: str = SWEEP, sweep_name: str = "sweep.yaml") -> Path:
    """A project folder with the tiny notebook; returns the sweep file written into it."""
    (root / "notebooks").mkdir(parents=True, exist_ok=True)
    (root / "notebooks" / "02_tiny.py").write_text(TINY_NOTEBOOK, encoding="utf-8")
    (root / sweep_name).write_text(sweep_text, encoding="utf-8")
    return root / sweep_name


def status_of(folder: Path) -> dict:
    return json.loads((folder / "status.json").read_text())


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """The sweep, run once through the command line with two worker processes."""
    sweep_file = write_project(tmp_path_factory.mktemp("project"))
    exit_status = main(["sweep", str(sweep_file), "--workers", "2"])
    return sweep_file, exit_status, sweep_file.parent / "runs" / "tiny" / "02_tiny"


def test_grid_and_seeds_expand_to_named_runs(tmp_path):
    sweep_file = write_project(tmp_path, "notebook: notebooks/02_tiny.py\nseeds: [0, 1]\n"
                                         "fixed: {epochs: 3}\ngrid: {method: [kl, kl_ent], value: 0.5}\n")
    sweep = load_sweep(sweep_file)
    assert sweep.name == "sweep" and sweep.out == tmp_path / "runs" / "sweep"
    assert [run.label for run in sweep.runs] == [
        "02_tiny/method=kl,seed=0,value=0.5", "02_tiny/method=kl,seed=1,value=0.5",
        "02_tiny/method=kl_ent,seed=0,value=0.5", "02_tiny/method=kl_ent,seed=1,value=0.5"]
    assert sweep.runs[3].parameters == {"epochs": 3, "method": "kl_ent", "value": 0.5, "seed": 1}
    assert sweep.runs[3].folder == sweep.out / sweep.runs[3].label


def test_relative_paths_resolve_against_the_project_root(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    write_project(tmp_path, "")
    sweep_file = tmp_path / "experiments" / "one.yaml"
    sweep_file.parent.mkdir()
    sweep_file.write_text("notebook: notebooks/02_tiny.py\nout: runs/x\n")
    (run,) = load_sweep(sweep_file).runs
    assert run.notebook == tmp_path / "notebooks" / "02_tiny.py"
    assert run.folder == tmp_path / "runs" / "x" / "02_tiny" / "default"


@pytest.mark.parametrize("text, message", [
    ("notebook: notebooks/02_tiny.py\ngrid: {lr: [1, 2]}\n",
     "unknown parameter.s. lr; valid: method, value, seed, epochs, fail, output_dir"),
    ("notebook: notebooks/02_tiny.py\nrepeats: 3\n", "unknown key.s. repeats; valid: name"),
    ("notebook: notebooks/02_tiny.py\ngrid: {value: [1]}\nruns: [{}]\n", "either 'grid'"),
    ("notebook: notebooks/02_tiny.py\nruns: [{value: 1}, {value: 1}]\n", "share the folder"),
    ("notebook: notebooks/02_tiny.py\nseeds: [0]\nfixed: {seed: 1}\n", "'seed' is set by 'seeds'"),
    ("notebook: notebooks/02_tiny.py\nfixed: {output_dir: x}\n", "output_dir"),
    ("notebook: notebooks/missing.py\n", "missing.py: no such notebook"),
])
def test_bad_sweep_files_are_input_errors(tmp_path, text, message):
    with pytest.raises(InputError, match=message):
        load_sweep(write_project(tmp_path, text))


def test_folder_names_are_filesystem_safe_and_bounded():
    assert run_folder_name({}) == "default"
    assert run_folder_name({"path": "a/b c", "flag": True, "sizes": [16, 32]}) == \
        "flag=true,path=a_b_c,sizes=16-32"
    long_name = run_folder_name({"method": "x" * 300})
    assert len(long_name) <= 120 and long_name != run_folder_name({"method": "x" * 299})


def test_failing_run_is_recorded_and_does_not_stop_the_others(finished_sweep):
    _, exit_status, runs = finished_sweep
    assert exit_status == 1
    for method in ("a", "b"):
        status = status_of(runs / f"method={method},seed=0")
        assert status["status"] == "ok" and status["params"]["epochs"] == 2
        assert is_finished(runs / f"method={method},seed=0")
    failed = status_of(runs / "fail=true,method=c,seed=0")
    assert failed["status"] == "failed"
    assert "02_tiny.py: cell [3] raised RuntimeError: failed on purpose" in failed["error"]
    assert (runs / "fail=true,method=c,seed=0" / "02_tiny.ipynb").is_file()  # kept for inspection


def test_interrupted_sweep_resumes_with_the_unfinished_runs_only(finished_sweep):
    sweep_file, _, runs = finished_sweep
    interrupted, finished = runs / "method=a,seed=0", runs / "method=b,seed=0"
    for name in ("status.json", "metrics.json"):  # what a run killed midway leaves
        (interrupted / name).unlink()
    untouched = (finished / "status.json").stat().st_mtime_ns
    summary = run_sweep(sweep_file, progress=False)
    assert summary.skipped == ["02_tiny/method=b,seed=0"]
    assert summary.passed == ["02_tiny/method=a,seed=0"]
    assert list(summary.failed) == ["02_tiny/fail=true,method=c,seed=0"]  # failed runs are retried
    assert (finished / "status.json").stat().st_mtime_ns == untouched
    assert is_finished(interrupted) and not summary.ok


def test_force_re_executes_finished_runs(finished_sweep):
    sweep_file, _, runs = finished_sweep
    only_b = write_project(sweep_file.parent, SWEEP.replace(
        "runs: [{method: a}, {method: b}, {method: c, fail: true}]", "runs: [{method: b}]"),
        "only_b.yaml")
    before = status_of(runs / "method=b,seed=0")["finished"]
    assert run_sweep(only_b, progress=False).skipped == ["02_tiny/method=b,seed=0"]
    (runs / "method=b,seed=0" / "status.json").write_text(json.dumps({"status": "ok", "mark": 1}))
    summary = run_sweep(only_b, force=True, progress=False)
    assert summary.passed == ["02_tiny/method=b,seed=0"] and summary.ok
    assert "mark" not in status_of(runs / "method=b,seed=0")
    assert status_of(runs / "method=b,seed=0")["finished"] >= before


def test_dask_cluster_runs_the_sweep_with_the_same_layout(tmp_path):
    distributed = pytest.importorskip("distributed")
    sweep_file = write_project(tmp_path, SWEEP.replace(", {method: c, fail: true}", ""))
    # Threaded workers behind a real TCP scheduler on loopback: the same client/scheduler path as
    # a cluster, and papermill runs off the main thread as on a Dask worker, without paying for
    # two more interpreters (worker processes are covered by the process-pool test).
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  protocol="tcp", host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        summary = run_sweep(sweep_file, scheduler=cluster.scheduler_address, progress=False)
    assert summary.ok and sorted(summary.passed) == ["02_tiny/method=a,seed=0",
                                                     "02_tiny/method=b,seed=0"]
    for method in ("a", "b"):
        assert is_finished(tmp_path / "runs" / "tiny" / "02_tiny" / f"method={method},seed=0")


def test_scheduler_without_dask_names_the_extra(tmp_path, monkeypatch):
    sweep_file = write_project(tmp_path, SWEEP)
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(InputError, match=r"mixseg-lite\[distributed\]"):
        run_sweep(sweep_file, scheduler="tcp://127.0.0.1:1", progress=False)


EXPERIMENTS = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("sweep_file", EXPERIMENTS, ids=[path.stem for path in EXPERIMENTS])
def test_shipped_sweep_files_expand_to_five_seeds_of_valid_parameters(sweep_file):
    sweep = load_sweep(sweep_file)  # checks every parameter name against the notebook
    per_setting: dict[str, list[int]] = {}  # notebook and parameter set (e.g. each recipe) -> seeds
    for run in sweep.runs:
        setting = json.dumps({k: v for k, v in run.parameters.items() if k != "seed"}, sort_keys=True, default=str)
        per_setting.setdefault(f"{run.notebook.name} {setting}", []).append(run.parameters["seed"])
    # five seeds: the fewest with which a paired 95% interval can settle a claim (mixseg_lite.stats)
    assert all(sorted(seeds) == [0, 1, 2, 3, 4] for seeds in per_setting.values()), per_setting
    assert all(run.notebook.is_file() for run in sweep.runs)
    # the ablation sweeps record every seed; the teaching sweep keeps the notebooks' own assertions
    assert all(run.parameters.get("assert_orderings", False) is False for run in sweep.runs
               if sweep_file.stem != "teaching_profiles")


def test_every_ablation_has_a_sweep_file_or_script():
    swept = {load_sweep(path).runs[0].notebook.name for path in EXPERIMENTS}
    assert "02_kl_distillation.py" in swept
    # notebook 03's ablation chooses its weights on validation in stages: a script, not a sweep file
    assert (EXPERIMENTS[0].parent / "cam_ablation.py").is_file()


def test_the_command_extends_a_sweep_to_other_seeds_and_selected_runs(tmp_path, capsys):
    sweep_file = write_project(tmp_path)
    out = tmp_path / "extension"
    assert main(["sweep", str(sweep_file), "--seeds", "5-6", "--only", "method=a", "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "02_tiny").iterdir()) == ["method=a,seed=5", "method=a,seed=6"]
    assert main(["sweep", str(sweep_file), "--only", "method"]) != 0
    assert "--only 'method': expected KEY=VALUE" in capsys.readouterr().err
