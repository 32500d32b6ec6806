"""Read, parameterise, execute and check the project's notebooks.

The ``notebooks/NN_name.py`` files (jupytext ``py:percent``) are the sources; each has an executed
twin ``NN_name.ipynb`` beside it, produced only by :func:`build_twin` (``mixseg-lite build``) and
verified by :func:`check_twin` (``mixseg-lite check`` and the test suite).

Parameters live in the cell tagged ``parameters`` and must be literals, so they can be read
without running anything (:func:`notebook_parameters`) and validated before a long execution.

papermill, jupytext and nbformat come with the ``mixseg-lite[notebooks]`` extra; they are imported
only when needed so that ``import mixseg_lite`` works without them.
"""

from __future__ import annotations

import ast
import contextvars
import hashlib
import os
import threading
from pathlib import Path
from typing import Any, Mapping

import yaml

from mixseg_lite.errors import InputError

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
STATIC_FIGURES_PARAMETER = "static_figures"
PAPERMILL_ERROR_TAG = "papermill-error-cell-tag"
OUTPUT_DIR_PARAMETER = "output_dir"
METRICS_FILE = "metrics.json"
TWIN_METADATA_KEY = "mixseg_lite"
WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_MIME_TYPES = (WIDGET_STATE_MIME, WIDGET_VIEW_MIME)
PYTHON3_KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
# ipykernel >= 7 warns on every start that TCP is unencrypted; the kernel only ever talks to the
# local papermill client, so the warning is noise in every run and sweep log.
QUIET_KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]


class NotebookExecutionError(RuntimeError):
    """A cell raised while a notebook was executed; the executed notebook is kept for inspection.

    Attributes ``notebook`` (the source), ``executed`` (the kept output notebook), ``cell`` (the
    execution count of the failing cell), ``ename`` and ``evalue`` describe the failure.
    """

    def __init__(self, message: str, notebook: str = "", executed: str = "", cell: Any = None,
                 ename: str = "", evalue: str = ""):
        super().__init__(message)
        self.notebook, self.executed, self.cell = notebook, executed, cell
        self.ename, self.evalue = ename, evalue


class _NoDatesSafeLoader(yaml.SafeLoader):
    """YAML loader that keeps dates as strings, as papermill does (``2024-01-01`` stays text)."""


_NoDatesSafeLoader.yaml_implicit_resolvers = {
    first: [resolver for resolver in resolvers if resolver[0] != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse_parameter_value(text: str) -> Any:
    """Parse a command-line parameter value as a YAML scalar, like ``papermill -p``.

    ``3`` -> int, ``0.5`` and ``1e-3`` -> float, ``true``/``True`` -> bool, ``null``/``None`` ->
    None, ``[1, 2]`` -> list; anything else stays a string. Dates stay strings.
    """
    if text == "None":  # papermill's spelling; YAML 1.1 only knows null and ~
        return None
    try:
        value = yaml.load(text, Loader=_NoDatesSafeLoader)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:  # PyYAML reads 1e-3 (no dot) as text; papermill and users mean a float
            return float(text)
        except ValueError:
            return value
    return value


def read_parameter_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML file of parameters (a mapping of names to values); empty file -> ``{}``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such parameter file")
    try:
        values = yaml.load(path.read_text(encoding="utf-8"), Loader=_NoDatesSafeLoader)
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not valid YAML ({_first_line(str(error))})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise InputError(f"{path}: expected a mapping of parameter names to values, "
                         f"got {type(values).__name__}")
    return values


def _require_notebook_tools():
    """Import jupytext, nbformat and papermill, or explain which extra installs them."""
    try:
        import jupytext
        import nbformat
        import papermill
    except ImportError as error:
        raise InputError(f"notebook tools need {error.name}: pip install 'mixseg-lite[notebooks]'"
                         ) from None
    return jupytext, nbformat, papermill


def read_notebook(path: str | os.PathLike):
    """Read a jupytext ``py:percent`` source (``.py``) or a notebook (``.ipynb``) as a NotebookNode."""
    jupytext, nbformat, _ = _require_notebook_tools()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such notebook")
    if path.suffix == ".py":
        return jupytext.read(path, fmt="py:percent")
    if path.suffix == ".ipynb":
        return nbformat.read(path, as_version=4)
    raise InputError(f"{path}: not a notebook (expected a jupytext .py source or an .ipynb)")


def _parameters_cell(notebook, name: str):
    for cell in notebook.cells:
        if cell.cell_type == "code" and PARAMETERS_TAG in cell.get("metadata", {}).get("tags", []):
            return cell
    raise InputError(f"{name}: no cell tagged 'parameters' "
                     f"(start one with: # %% tags=[\"parameters\"])")


def notebook_parameters(nb_or_path, name: str | None = None) -> dict[str, Any]:
    """Names and default values of the cell tagged ``parameters``, read without executing it.

    Every statement must be ``name = <literal>`` (annotations allowed); anything else raises
    :class:`InputError` naming the notebook and the line. ``name`` labels a NotebookNode in
    messages (a path labels itself).
    """
    if isinstance(nb_or_path, (str, os.PathLike)):
        name = name or str(nb_or_path)
        notebook = read_notebook(nb_or_path)
    else:
        name, notebook = name or "notebook", nb_or_path
    source = _parameters_cell(notebook, name).source
    lines = source.splitlines()
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise InputError(f"{name}: parameters cell line {error.lineno}: invalid Python "
                         f"({error.msg})") from None
    return dict(_literal_assignment(statement, lines, name) for statement in tree.body)


def _literal_assignment(statement: ast.stmt, lines: list[str], name: str) -> tuple[str, Any]:
    """``(name, value)`` of one ``name = <literal>`` statement, else an InputError for its line."""
    line = lines[statement.lineno - 1].strip()
    problem = f"{name}: parameters cell line {statement.lineno}: `{line}`"
    if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
        target, value = statement.targets[0], statement.value
    elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
        target, value = statement.target, statement.value
    else:
        raise InputError(f"{problem} is not `name = <literal>`")
    if not isinstance(target, ast.Name):
        raise InputError(f"{problem} is not `name = <literal>`")
    try:
        return target.id, ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise InputError(f"{problem} is not a literal (parameters must be plain values)") from None


def check_parameter_names(name: str, declared: Mapping[str, Any], given: Mapping[str, Any]) -> None:
    """Raise :class:`InputError` when ``given`` holds names the notebook does not declare.

    ``output_dir`` is refused too: the caller's output folder decides it, so that the executed
    notebook and its ``metrics.json`` always land together.
    """
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise InputError(f"{name}: unknown parameter(s) {', '.join(unknown)}; "
                         f"valid: {', '.join(declared)}")
    if OUTPUT_DIR_PARAMETER in given:
        raise InputError(f"{name}: do not pass '{OUTPUT_DIR_PARAMETER}' as a parameter; "
                         f"choose the output folder instead (-o/--out)")


def execute_notebook(notebook: str | os.PathLike, output_dir: str | os.PathLike,
                     parameters: Mapping[str, Any] | None = None,
                     parameter_file: str | os.PathLike | None = None, kernel_name: str = "python3",
                     cwd: str | os.PathLike | None = None, progress: bool = False) -> Path:
    """Execute a notebook with papermill into ``output_dir/<stem>.ipynb`` and return that path.

    Parameters come from ``parameter_file`` (YAML) first, then ``parameters`` override them;
    names the notebook does not declare raise :class:`InputError` listing the valid ones. When the
    notebook declares ``static_figures`` it defaults to True (widgets degrade to figures in a batch
    run; :func:`build_twin` leaves it at the notebook's default so the committed twin stays
    interactive for students and relies on :func:`mixseg_lite.widgets.has_live_frontend`). When the
    notebook declares ``output_dir`` it is set to the absolute ``output_dir``, so ``metrics.json``
    lands beside the executed notebook (an earlier one there is removed first). ``cwd`` defaults to the notebook's folder, because
    notebooks use paths relative to it. A failing cell raises :class:`NotebookExecutionError`;
    the partly executed notebook stays in ``output_dir``.
    """
    source = Path(notebook)
    nb = read_notebook(source)
    declared = notebook_parameters(nb, name=str(source))
    merged = {**(read_parameter_file(parameter_file) if parameter_file else {}),
              **(parameters or {})}
    check_parameter_names(str(source), declared, merged)
    output_dir = Path(output_dir).resolve()  # papermill saves from inside cwd: never relative
    output_dir.mkdir(parents=True, exist_ok=True)
    if OUTPUT_DIR_PARAMETER in declared:
        merged[OUTPUT_DIR_PARAMETER] = str(output_dir)
        # A failed run must not leave an earlier run's metrics beside its notebook.
        (output_dir / METRICS_FILE).unlink(missing_ok=True)
    if STATIC_FIGURES_PARAMETER in declared:  # a batch run: nobody is there to move a slider
        merged.setdefault(STATIC_FIGURES_PARAMETER, True)
    executed = output_dir / f"{source.stem}.ipynb"
    _run_papermill(nb, source, executed, merged, kernel_name,
                   Path(cwd) if cwd is not None else source.resolve().parent, progress)
    return executed


def _run_papermill(nb, source: Path, executed: Path, parameters: Mapping[str, Any],
                   kernel_name: str, cwd: Path, progress: bool) -> None:
    """Execute ``nb`` into ``executed``; on a failing cell raise :class:`NotebookExecutionError`."""
    _, nbformat, papermill = _require_notebook_tools()
    from papermill.exceptions import PapermillExecutionError

    try:
        _in_thread_safe_context(
            papermill.execute_notebook,
            nb, str(executed), parameters=dict(parameters) or None, kernel_name=kernel_name,
            language="python", cwd=str(cwd), progress_bar=progress,
            extra_arguments=QUIET_KERNEL_ARGUMENTS)
    except PapermillExecutionError as error:
        raise NotebookExecutionError(
            f"{source}: cell [{error.exec_count}] raised {error.ename}: "
            f"{_first_line(error.evalue)} (executed notebook kept at {executed})",
            notebook=str(source), executed=str(executed), cell=error.exec_count,
            ename=error.ename, evalue=error.evalue) from None
    except Exception as error:  # a dead kernel or a timeout: no cell output to point at
        if type(error).__module__.split(".")[0] not in {"nbclient", "jupyter_client"}:
            raise
        raise NotebookExecutionError(
            f"{source}: execution stopped: {type(error).__name__}: {_first_line(str(error))} "
            f"(executed notebook kept at {executed})",
            notebook=str(source), executed=str(executed), ename=type(error).__name__,
            evalue=str(error)) from None
    finally:
        _record_input_path(nbformat, executed, source)


def _in_thread_safe_context(function, *args, **kwargs):
    """Call ``function`` so that papermill's event loop belongs to the calling thread.

    jupyter_core keeps its event loop in a context variable; a thread whose context was copied
    from another (a Dask worker thread, asyncio's run_in_executor) would reuse that other thread's loop
    and fail with "This event loop is already running". Off the main thread, start from an
    empty context so jupyter_core makes a loop for this thread.
    """
    if threading.current_thread() is threading.main_thread():
        return function(*args, **kwargs)
    return contextvars.Context().run(function, *args, **kwargs)


def _record_input_path(nbformat, executed: Path, source: Path) -> None:
    """Replace papermill's copy of the in-memory input notebook by the source's path."""
    if not executed.is_file():
        return
    nb = nbformat.read(executed, as_version=4)
    papermill_metadata = nb.metadata.get("papermill", {})
    if isinstance(papermill_metadata.get("input_path"), dict):
        papermill_metadata["input_path"] = str(source)
        nbformat.write(nb, executed)


def _first_line(text: str) -> str:
    stripped = (text or "").strip()
    return stripped.splitlines()[0] if stripped else ""


def source_sha256(py_path: str | os.PathLike) -> str:
    """SHA-256 of a source's text (newlines normalised, so a CRLF checkout hashes the same)."""
    return hashlib.sha256(Path(py_path).read_text(encoding="utf-8").encode("utf-8")).hexdigest()


def twin_path(py_path: str | os.PathLike) -> Path:
    """The executed twin of a source: same folder, same stem, ``.ipynb``."""
    return Path(py_path).with_suffix(".ipynb")


def build_twin(py_path: str | os.PathLike, kernel_name: str = "python3",
               progress: bool = False) -> Path:
    """Execute a source at its default parameters and write its diff-friendly executed twin.

    The only way the committed ``NN_name.ipynb`` files are produced: papermill runs the ``.py``
    with ``cwd`` = its folder; then the twin gets the python3 kernelspec, stable cell ids, no
    timing metadata, no widget views or state, and (after a successful run) the source's SHA-256
    in ``metadata.mixseg_lite``, so :func:`check_twin` can tell whether it was produced from the
    current source. A failing cell raises :class:`NotebookExecutionError` and leaves the failed
    twin in place for inspection.
    """
    _, nbformat, _ = _require_notebook_tools()
    source = Path(py_path)
    if source.suffix != ".py":
        raise InputError(f"{source}: a twin is built from a jupytext .py source")
    nb = read_notebook(source)
    notebook_parameters(nb, name=str(source))  # fail fast on a malformed parameters cell
    for index, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{index}"  # jupytext draws random ids: they would change every build
    nb.metadata["kernelspec"] = dict(PYTHON3_KERNELSPEC)
    twin = twin_path(source)
    succeeded = False
    try:
        _run_papermill(nb, source, twin, {}, kernel_name, source.resolve().parent, progress)
        succeeded = True
    finally:  # a failed or interrupted twin is tidied too, but carries no hash: check flags it
        if twin.is_file():
            executed = nbformat.read(twin, as_version=4)
            _make_diff_friendly(executed)
            if succeeded:
                executed.metadata[TWIN_METADATA_KEY] = {"source_sha256": source_sha256(source)}
            nbformat.write(executed, twin)
    return twin


def _make_diff_friendly(nb) -> None:
    """Drop what changes on every execution (timings, paths, widget state); fix the kernelspec."""
    nb.metadata["kernelspec"] = dict(PYTHON3_KERNELSPEC)
    nb.metadata.pop("papermill", None)  # start/end times and absolute paths
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)  # nbclient's per-cell timestamps
        if cell.metadata.get("tags") == []:
            del cell.metadata["tags"]
        if cell.cell_type == "code":
            cell.outputs = [output for output in map(_without_widgets, cell.outputs) if output]


def _without_widgets(output):
    """``None`` for a widget view (its text fallback is a stale first frame, e.g. a progress bar
    at 0 %); otherwise the output without any stored widget state."""
    data = output.get("data")
    if not data:
        return output
    if WIDGET_VIEW_MIME in data:
        return None
    data.pop(WIDGET_STATE_MIME, None)
    return output if data else None


def _normalised(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.rstrip().splitlines())


def check_twin(py_path: str | os.PathLike) -> list[str]:
    """Problems that make a source's executed twin out of date; an empty list means in sync.

    Checked: the twin exists; its cells (types and sources, trailing whitespace ignored,
    papermill's injected-parameters cell skipped) match the jupytext reading of the ``.py``; it
    records the current source's hash; every non-empty code cell ran without an error output;
    it stores no widget state.
    """
    source = Path(py_path)
    if not source.is_file():
        raise InputError(f"{source}: no such notebook source")
    twin = twin_path(source)
    if not twin.is_file():
        return [f"{twin}: missing; run `mixseg-lite build {source}`"]
    _, nbformat, _ = _require_notebook_tools()
    try:
        executed = nbformat.read(twin, as_version=4)
    except Exception as error:  # nbformat raises several types for a corrupt file
        return [f"{twin}: unreadable ({_first_line(str(error))})"]
    return (_cell_problems(twin, read_notebook(source), executed)
            + _hash_problems(twin, source, executed)
            + _execution_problems(twin, executed)
            + _widget_problems(twin, executed))


def _compared_cells(nb) -> list:
    skipped = {INJECTED_TAG, PAPERMILL_ERROR_TAG}
    return [cell for cell in nb.cells if not skipped & set(cell.get("metadata", {}).get("tags", []))]


def _cell_problems(twin: Path, expected_nb, executed_nb, shown: int = 3) -> list[str]:
    expected, actual = _compared_cells(expected_nb), _compared_cells(executed_nb)
    if len(expected) != len(actual):
        return [f"{twin}: {len(actual)} cells but its source has {len(expected)}"]
    problems = []
    for index, (want, have) in enumerate(zip(expected, actual)):
        if want.cell_type != have.cell_type:
            problems.append(f"{twin}: cell {index} is {have.cell_type}, "
                            f"its source has {want.cell_type}")
        elif _normalised(want.source) != _normalised(have.source):
            problems.append(f"{twin}: cell {index} ({have.cell_type}) differs from its source")
    if len(problems) > shown:
        problems = problems[:shown] + [f"{twin}: ... and {len(problems) - shown} more cells differ"]
    return problems


def _hash_problems(twin: Path, source: Path, executed_nb) -> list[str]:
    recorded = executed_nb.metadata.get(TWIN_METADATA_KEY, {}).get("source_sha256")
    if recorded is None:
        return [f"{twin}: no source hash recorded (not from a successful `mixseg-lite build`)"]
    if recorded != source_sha256(source):
        return [f"{twin}: not re-executed after its source changed; "
                f"run `mixseg-lite build {source}`"]
    return []


def _execution_problems(twin: Path, executed_nb) -> list[str]:
    problems = []
    for index, cell in enumerate(executed_nb.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue  # empty code cells are never executed by nbclient
        if cell.get("execution_count") is None:
            problems.append(f"{twin}: cell {index} was never executed")
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                problems.append(f"{twin}: cell {index} has an error output "
                                f"({output.get('ename')}: {_first_line(output.get('evalue', ''))})")
    return problems


def _widget_problems(twin: Path, executed_nb) -> list[str]:
    in_outputs = any(mime in output.get("data", {})
                     for cell in executed_nb.cells for output in cell.get("outputs", [])
                     for mime in WIDGET_MIME_TYPES)
    if "widgets" in executed_nb.metadata or in_outputs:
        return [f"{twin}: stores widget state; run `mixseg-lite build`"]
    return []


def list_notebooks(root: str | os.PathLike = "notebooks") -> list[Path]:
    """The ``NN_*.py`` notebook sources in ``root``, in their numbered order."""
    return sorted(Path(root).glob("[0-9][0-9]_*.py"))
