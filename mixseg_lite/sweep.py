"""Batch experiments: expand a sweep file into notebook runs and execute them, resumably.

A sweep file (YAML) names the notebook(s), the parameter sets and the seeds::

    name: mixed_ablation
    notebook: notebooks/02_kl_distillation.py   # or notebooks: [a.py, b.py]
    out: runs/mixed_ablation                    # default: runs/<name>
    seeds: [0, 1, 2]                            # optional; sets the parameter `seed`
    fixed: {epochs: 10}                         # the same in every run
    grid: {method: [kl, kl_ent]}                # cartesian product, or:
    # runs: [{method: kl}, {method: kl_ent, lr: 0.01}]

Relative paths in the file (``notebook(s)``, ``out``) are resolved against the project root:
the nearest folder at or above the sweep file that holds ``pyproject.toml``, or the sweep file's
own folder when there is none. A sweep therefore behaves the same from any working directory.

Every run gets its own folder ``<out>/<notebook stem>/<name=value,...>`` named from the
parameters that vary (grid or run entry, plus seed), holding the executed notebook, the
notebook's ``metrics.json`` and a ``status.json``. A run is finished when its folder has
``metrics.json`` and a ``status.json`` saying ``"ok"``; finished runs are skipped, so re-running
an interrupted sweep resumes it (``force=True`` redoes them).

Runs execute in worker processes on this machine, or on a Dask cluster when a scheduler address
is given (the optional extra ``mixseg-lite[distributed]``; see ``docs/cluster.md``).
"""

from __future__ import annotations

import concurrent.futures
import datetime
import hashlib
import itertools
import json
import multiprocessing
import re
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml
from tqdm.auto import tqdm

from mixseg_lite.errors import InputError
from mixseg_lite.notebooks import (NotebookExecutionError, check_parameter_names, execute_notebook,
                                   notebook_parameters)

SWEEP_KEYS = ("name", "notebook", "notebooks", "out", "seeds", "fixed", "grid", "runs")
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.json"
MAX_FOLDER_NAME = 120  # keeps the full path well under common filesystem limits
_UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._+\-]+")


@dataclass(frozen=True)
class SweepRun:
    """One notebook execution of a sweep: its full parameters and its result folder."""

    notebook: Path
    parameters: dict[str, Any]
    folder: Path
    label: str  # "<notebook stem>/<name=value,...>", unique within the sweep


@dataclass
class Sweep:
    """A parsed sweep file: its name, its output folder and the expanded runs."""

    name: str
    out: Path
    runs: list[SweepRun]


@dataclass
class SweepSummary:
    """What a sweep did: runs skipped as already finished, runs that passed and that failed."""

    name: str
    out: Path
    total: int
    skipped: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # label -> error

    @property
    def ok(self) -> bool:
        """True when no run failed (skipped runs had passed before)."""
        return not self.failed

    def __str__(self) -> str:
        lines = [f"sweep {self.name}: {self.total} runs, {len(self.passed)} passed, "
                 f"{len(self.failed)} failed, {len(self.skipped)} already finished "
                 f"(results in {self.out})"]
        lines += [f"  FAILED {label}: {error}" for label, error in self.failed.items()]
        return "\n".join(lines)


# --------------------------------------------------------------------------- sweep file


def project_root(sweep_file: Path) -> Path:
    """The nearest folder at or above the sweep file holding ``pyproject.toml``, else its folder."""
    folder = sweep_file.resolve().parent
    for candidate in (folder, *folder.parents):
        if (candidate / "pyproject.toml").is_file():
            return candidate
    return folder


def load_sweep(path: str | Path, out: str | Path | None = None, seeds: list[int] | None = None,
               keep: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any] | None] | None = None) -> Sweep:
    """Read and expand a sweep file; ``out`` (relative to the current directory) overrides its own.

    ``seeds`` replaces the file's seeds (a replication on fresh seeds); ``keep(fixed, parameter_set)``
    returns the parameter set to run (possibly changed) or None to drop it. Every run's parameter
    names are checked against the notebook's parameters cell now, so a typo fails before anything
    runs.
    """
    path = Path(path)
    spec = _read_sweep_file(path)
    if seeds is not None:
        spec["seeds"] = list(seeds)
    if keep is not None:
        fixed = _mapping(spec, "fixed", path)
        sets = [kept for kept in (keep(dict(fixed), parameter_set) for parameter_set in _varying_sets(spec, path))
                if kept is not None]
        if not sets:
            raise InputError(f"{path}: no run of this sweep is needed")
        spec = {**{k: v for k, v in spec.items() if k != "grid"}, "runs": sets}
    root = project_root(path)
    name = str(spec.get("name") or path.stem)
    out_dir = Path(out).resolve() if out is not None else root / spec.get("out", f"runs/{name}")
    notebooks = [(root / notebook).resolve() for notebook in _notebook_entries(spec, path)]
    runs = [run for notebook in notebooks
            for run in _notebook_runs(notebook, spec, out_dir, path)]
    _check_unique_labels(runs, path)
    return Sweep(name=name, out=out_dir, runs=runs)


def _read_sweep_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"{path}: no such sweep file")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(spec, dict):
        raise InputError(f"{path}: a sweep file is a mapping with keys {', '.join(SWEEP_KEYS)}")
    unknown = sorted(set(spec) - set(SWEEP_KEYS))
    if unknown:
        raise InputError(f"{path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(SWEEP_KEYS)}")
    if "grid" in spec and "runs" in spec:
        raise InputError(f"{path}: give either 'grid' (cartesian product) or 'runs' (a list), not both")
    return spec


def _notebook_entries(spec: dict[str, Any], path: Path) -> list[str]:
    if ("notebook" in spec) == ("notebooks" in spec):
        raise InputError(f"{path}: give exactly one of 'notebook' or 'notebooks'")
    entries = spec["notebook"] if "notebook" in spec else spec["notebooks"]
    entries = entries if isinstance(entries, list) else [entries]
    if not entries or not all(isinstance(entry, str) for entry in entries):
        raise InputError(f"{path}: 'notebook(s)' must name notebook files")
    return entries


def _mapping(spec: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = spec.get(key) or {}
    if not isinstance(value, dict):
        raise InputError(f"{path}: '{key}' must be a mapping of parameter names to values")
    return value


def _varying_sets(spec: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """The parameter sets that differ between runs: grid product, runs list, or one empty set."""
    if "runs" in spec:
        runs = spec["runs"]
        if not isinstance(runs, list) or not all(isinstance(run, dict) for run in runs):
            raise InputError(f"{path}: 'runs' must be a list of mappings of parameter names to values")
        return [dict(run) for run in runs]
    grid = _mapping(spec, "grid", path)
    choices = [values if isinstance(values, list) else [values] for values in grid.values()]
    return [dict(zip(grid, combination)) for combination in itertools.product(*choices)]


def _seeds(spec: dict[str, Any], path: Path) -> list[int] | None:
    if "seeds" not in spec:
        return None
    seeds = spec["seeds"] if isinstance(spec["seeds"], list) else [spec["seeds"]]
    if not seeds or not all(isinstance(seed, int) and not isinstance(seed, bool) for seed in seeds):
        raise InputError(f"{path}: 'seeds' must be a list of integers")
    return seeds


def _notebook_runs(notebook: Path, spec: dict[str, Any], out_dir: Path,
                   path: Path) -> list[SweepRun]:
    """All runs of one notebook, with parameter names checked against its parameters cell."""
    fixed = _mapping(spec, "fixed", path)
    seeds = _seeds(spec, path)
    declared = notebook_parameters(notebook)
    runs = []
    if seeds is not None and "seed" in fixed:
        raise InputError(f"{path}: 'seed' is set by 'seeds'; remove it from 'fixed'")
    for parameter_set in _varying_sets(spec, path):
        if seeds is not None and "seed" in parameter_set:
            raise InputError(f"{path}: 'seed' is set by 'seeds'; remove it from 'grid'/'runs'")
        for seed in seeds if seeds is not None else [None]:
            varying = parameter_set if seed is None else {**parameter_set, "seed": seed}
            parameters = {**fixed, **varying}
            check_parameter_names(f"{path} ({notebook.name})", declared, parameters)
            label = f"{notebook.stem}/{run_folder_name(varying)}"
            runs.append(SweepRun(notebook, parameters, out_dir / label, label))
    return runs


def _check_unique_labels(runs: list[SweepRun], path: Path) -> None:
    seen: set[str] = set()
    for run in runs:
        if run.label in seen:
            raise InputError(f"{path}: two runs share the folder {run.label} (duplicate parameter sets?)")
        seen.add(run.label)


def _format_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)  # true / false / null, as written in YAML
    if isinstance(value, (list, tuple)):
        return "-".join(_format_value(item) for item in value)
    if isinstance(value, dict):
        return "-".join(f"{key}_{_format_value(item)}" for key, item in sorted(value.items()))
    return str(value)


def run_folder_name(varying: dict[str, Any]) -> str:
    """A stable, filesystem-safe folder name from parameters: ``method=kl_ent,seed=1``.

    Keys are sorted; characters outside ``[A-Za-z0-9._+-]`` in values become ``_``; a name longer
    than :data:`MAX_FOLDER_NAME` is cut and suffixed with a hash of the parameters. No varying
    parameters -> ``default``.
    """
    if not varying:
        return "default"
    name = ",".join(f"{_UNSAFE_CHARACTERS.sub('_', str(key))}="
                    f"{_UNSAFE_CHARACTERS.sub('_', _format_value(value))}"
                    for key, value in sorted(varying.items()))
    if len(name) > MAX_FOLDER_NAME:
        digest = hashlib.sha256(json.dumps(varying, sort_keys=True, default=str).encode()).hexdigest()
        name = f"{name[:MAX_FOLDER_NAME - 13]}~{digest[:12]}"
    return name


# --------------------------------------------------------------------------- one run


def is_finished(folder: str | Path) -> bool:
    """True when a run folder has ``metrics.json`` and a ``status.json`` saying ``"ok"``."""
    folder = Path(folder)
    if not (folder / METRICS_FILE).is_file():
        return False
    try:
        status = json.loads((folder / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(status, dict) and status.get("status") == "ok"


def execute_run(run: SweepRun) -> dict[str, Any]:
    """Execute one run into its folder and write its ``status.json``; return that status.

    Never raises for a failing notebook (the sweep goes on): the error goes into the status.
    Runs in worker processes and on Dask workers, so it only uses its argument and the disk.
    """
    folder = run.folder
    folder.mkdir(parents=True, exist_ok=True)
    for stale in (STATUS_FILE, METRICS_FILE):  # an interrupted re-run must not look finished
        (folder / stale).unlink(missing_ok=True)
    started = time.perf_counter()
    error = None
    try:
        execute_notebook(run.notebook, folder, parameters=run.parameters)
        if not (folder / METRICS_FILE).is_file():
            error = f"{run.notebook.name} wrote no {METRICS_FILE} to its output_dir"
    except (NotebookExecutionError, InputError) as failure:  # messages that name notebook + cell
        error = str(failure)
    except Exception as failure:  # anything else is recorded too; the other runs go on
        error = f"{type(failure).__name__}: {failure}"
    status = _status_record(run, error, time.perf_counter() - started)
    write_status(folder, status)
    return status


def _status_record(run: SweepRun, error: str | None, seconds: float) -> dict[str, Any]:
    record = {"status": "failed" if error else "ok", "notebook": run.notebook.stem,
              "source": str(run.notebook), "params": run.parameters,
              "seconds": round(seconds, 2), "host": socket.gethostname(),
              "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if error:
        record["error"] = error
    return record


def write_status(folder: Path, status: dict[str, Any]) -> None:
    """Write ``status.json`` atomically, so a killed sweep never leaves half a status file."""
    temporary = folder / f".{STATUS_FILE}.{uuid.uuid4().hex}"
    temporary.write_text(json.dumps(status, indent=1, default=str) + "\n", encoding="utf-8")
    temporary.replace(folder / STATUS_FILE)


# --------------------------------------------------------------------------- executors


def run_sweep(path: str | Path, workers: int = 1, force: bool = False,
              scheduler: str | None = None, out: str | Path | None = None,
              progress: bool = True, seeds: list[int] | None = None,
              keep: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any] | None] | None = None
              ) -> SweepSummary:
    """Execute every unfinished run of a sweep file and summarise; see the module docstring.

    ``workers`` processes run notebooks in parallel on this machine (each notebook starts its own
    kernel); ``scheduler`` (``tcp://host:port``) sends the runs to a Dask cluster instead.
    ``force`` re-executes finished runs too.
    """
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    sweep = load_sweep(path, out=out, seeds=seeds, keep=keep)
    summary = SweepSummary(name=sweep.name, out=sweep.out, total=len(sweep.runs))
    todo = []
    for run in sweep.runs:
        if not force and is_finished(run.folder):
            summary.skipped.append(run.label)
        else:
            todo.append(run)
    if not todo:
        return summary
    execute = _execute_on_dask if scheduler else _execute_locally
    with tqdm(total=len(todo), desc=sweep.name, unit="run", disable=not progress) as bar:
        def record(run: SweepRun, status: dict[str, Any]) -> None:
            if status["status"] == "ok":
                summary.passed.append(run.label)
            else:
                summary.failed[run.label] = status.get("error", "failed")
            bar.set_postfix(failed=len(summary.failed), refresh=False)
            bar.update()

        execute(todo, record, workers=workers, scheduler=scheduler)
    return summary


def _failed_outside_run(run: SweepRun, error: BaseException) -> dict[str, Any]:
    """Status for a run whose worker died before it could record anything itself."""
    status = _status_record(run, f"worker failed: {type(error).__name__}: {error}", 0.0)
    run.folder.mkdir(parents=True, exist_ok=True)
    write_status(run.folder, status)
    return status


def _execute_locally(runs: list[SweepRun], record: Callable[[SweepRun, dict], None],
                     workers: int, scheduler: str | None = None) -> None:
    """Run in this process (one worker) or in a pool of ``workers`` spawned processes."""
    if workers == 1:
        for run in runs:
            record(run, execute_run(run))
        return
    # 'spawn': a forked child would inherit this process's threads (tqdm, zmq) and locks, which
    # can deadlock papermill's kernel start; a fresh interpreter is safe on every platform.
    context = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(runs)),
                                                  mp_context=context)
    try:
        futures = {pool.submit(execute_run, run): run for run in runs}
        _record_as_completed(futures, concurrent.futures.as_completed(futures), record)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _record_as_completed(futures: dict, completed: Iterable, record: Callable) -> None:
    for future in completed:
        run = futures[future]
        try:
            status = future.result()
        except Exception as error:  # a crashed worker process, a lost Dask worker
            status = _failed_outside_run(run, error)
        record(run, status)


def _execute_on_dask(runs: list[SweepRun], record: Callable[[SweepRun, dict], None],
                     workers: int = 1, scheduler: str | None = None) -> None:
    """Submit every run to the Dask scheduler at ``scheduler``; its workers share our filesystem."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise InputError("--scheduler needs dask.distributed, the optional extra: "
                         "pip install 'mixseg-lite[distributed]'") from None
    try:
        client = Client(scheduler, timeout="20s")
    except (OSError, TimeoutError) as error:
        raise InputError(f"cannot reach the Dask scheduler at {scheduler} ({error})") from None
    with client:
        # pure=False: a re-submitted run must execute again, not reuse a cached result.
        futures = {client.submit(execute_run, run, pure=False,
                                 key=f"mixseg-{run.label}-{uuid.uuid4().hex[:8]}"): run
                   for run in runs}
        _record_as_completed(futures, as_completed(futures), record)
