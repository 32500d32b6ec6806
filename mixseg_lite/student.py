"""Student copies of the notebooks: every solution replaced by ``todo("N.M")``, outputs cleared.

An exercise in a ``notebooks/NN_name.py`` source (CONTRIBUTING.md, "Exercises") is

- an **exercise cell**: first line ``# EXERCISE N.M`` (``N`` = the notebook's number), defining
  the student's function; its solution sits between ``# BEGIN SOLUTION`` and ``# END SOLUTION``
  lines inside the function body (the markers nbgrader and otter-grader recognise too);
- the **check cell** right after it: first line ``# NBVAL_CHECK_OUTPUT``, calling the check of
  exercise N.M from :mod:`mixseg_lite.exercises` on the student's function.

:func:`write_student_copy` writes ``course/student/NN_name.ipynb`` from such a source: each
solution block becomes one line ``todo("N.M")`` at the block's indentation, outputs are cleared,
the Colab and Binder badges point at the student copy, and the file is the same byte for byte
every time it is generated (``mixseg-lite student``; ``--check`` says when a copy is out of sync).
Only sources with exercises get a student copy.

:func:`exercise_problems` checks a source's exercises without running anything (markers, ids,
check cells, and that no later cell reads what an exercise cell defines, so an unfinished
exercise stops nothing but its own check). :func:`run_student_copy` executes a student copy with
errors allowed and :func:`student_run_problems` says which cells did not behave: every check cell
must fail with :class:`~mixseg_lite.exercises.ExerciseNotDone` of its own exercise, every other
cell must succeed.
"""

from __future__ import annotations

import ast
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from mixseg_lite.errors import InputError
from mixseg_lite.notebooks import (PYTHON3_KERNELSPEC, QUIET_KERNEL_ARGUMENTS, _in_thread_safe_context,
                                   _require_notebook_tools, list_notebooks, read_notebook)

EXERCISE_MARK = "# EXERCISE"
BEGIN_SOLUTION, END_SOLUTION = "# BEGIN SOLUTION", "# END SOLUTION"
CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
STUDENT_DIR = Path("course") / "student"
METADATA_KEY = "mixseg_lite"
NOT_DONE = "ExerciseNotDone"
_EXERCISE_LINE = re.compile(r"^# EXERCISE (\d+)\.(\d+)\b")
STUDENT_NOTE = ("> **Student copy.** Each cell that starts with `# EXERCISE` is yours to complete: replace "
                "`todo(...)` by your code, run the cell, then run the check cell after it. It prints "
                "`correct` or names the likely mistake. Cells after an exercise never use your answer, so "
                "you can run the whole notebook before you start. Solutions: "
                "[notebooks/{stem}.ipynb]({url}/blob/main/notebooks/{stem}.ipynb).")


@dataclass(frozen=True)
class ExerciseCells:
    """Where one exercise sits in a notebook: its id and the indices of its two cells."""

    id: str
    exercise_cell: int
    check_cell: int


def exercise_id_of(source: str) -> str | None:
    """``"N.M"`` when the cell's first line is ``# EXERCISE N.M``, else None."""
    first = source.lstrip().splitlines()[0] if source.strip() else ""
    match = _EXERCISE_LINE.match(first)
    return f"{int(match.group(1))}.{int(match.group(2))}" if match else None


def has_exercises(source: str | os.PathLike) -> bool:
    """Whether a notebook source holds an exercise cell or a solution marker (text only, fast)."""
    text = Path(source).read_text(encoding="utf-8")
    return BEGIN_SOLUTION in text or re.search(r"^# EXERCISE \d", text, flags=re.MULTILINE) is not None


def student_path(source: str | os.PathLike) -> Path:
    """``course/student/NN_name.ipynb`` beside the ``notebooks/`` folder holding ``source``."""
    source = Path(source)
    return source.parent.parent / STUDENT_DIR / f"{source.stem}.ipynb"


def strip_solutions(text: str, exercise_id: str, where: str = "cell") -> str:
    """``text`` with each ``# BEGIN SOLUTION`` .. ``# END SOLUTION`` block (markers included)
    replaced by one line ``todo("N.M")`` at the block's indentation.

    A block must sit inside a function body (indented), so that the student copy's exercise cell
    still runs and only its check fails; blocks may not nest and must be closed.
    """
    out, inside, begin_line = [], False, 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith(BEGIN_SOLUTION):
            if inside:
                raise InputError(f"{where} line {number}: '{BEGIN_SOLUTION}' inside the solution opened "
                                 f"on line {begin_line}")
            indent = line[: len(line) - len(line.lstrip())]
            if not indent:
                raise InputError(f"{where} line {number}: a solution must sit inside a function body (indented), "
                                 "so that the student copy's exercise cell runs and only its check fails")
            inside, begin_line = True, number
            out.append(f'{indent}todo("{exercise_id}")  # your code here')
        elif stripped.startswith(END_SOLUTION):
            if not inside:
                raise InputError(f"{where} line {number}: '{END_SOLUTION}' without '{BEGIN_SOLUTION}'")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise InputError(f"{where} line {begin_line}: '{BEGIN_SOLUTION}' is never closed by '{END_SOLUTION}'")
    return "\n".join(out)


def _called_names(tree: ast.AST) -> set[str]:
    names = set()
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        func = call.func
        names.add(func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else "")
    return names


def _parse(source: str) -> ast.Module:
    return ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))


def _defined_names(tree: ast.Module) -> set[str]:
    """Names a cell binds at top level, except imports (they bind the same in a student copy)."""
    names = set()
    for statement in tree.body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(statement.name)
        elif not isinstance(statement, (ast.Import, ast.ImportFrom)):
            names |= {n.id for n in ast.walk(statement) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return names


def _imported_names(tree: ast.Module) -> set[str]:
    return {(alias.asname or alias.name).split(".")[0] for statement in ast.walk(tree)
            if isinstance(statement, (ast.Import, ast.ImportFrom)) for alias in statement.names}


def _loaded_names(tree: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _exercises(nb) -> list[ExerciseCells]:
    found = []
    for index, cell in enumerate(nb.cells):
        exercise_id = exercise_id_of(cell.source) if cell.cell_type == "code" else None
        if exercise_id:
            following = next((i for i in range(index + 1, len(nb.cells)) if nb.cells[i].cell_type == "code"), -1)
            found.append(ExerciseCells(exercise_id, index, following))
    return found


def exercise_problems(source: str | os.PathLike) -> list[str]:
    """What is wrong with the exercises of a notebook source; an empty list when nothing is.

    Checked: ``# BEGIN/END SOLUTION`` blocks pair up, sit indented, and only in exercise cells;
    every exercise cell has a solution, an id ``N.M`` of its notebook (``N`` = the number in its
    name), unique and in order, known to :data:`mixseg_lite.exercises.EXERCISES`; ``todo`` is
    imported in it or before it; the next code cell starts with ``# NBVAL_CHECK_OUTPUT`` and calls
    that exercise's check; no later cell reads a name the exercise cell defines.
    """
    source = Path(source)
    stem_number = re.match(r"^(\d+)_", source.stem)
    return _exercise_problems(read_notebook(source), source.name,
                              int(stem_number.group(1)) if stem_number else None)


def _exercise_problems(nb, name: str, number: int | None) -> list[str]:
    from mixseg_lite.exercises import EXERCISES, exercise_of_check

    problems: list[str] = []
    trees: dict[int, ast.Module] = {}
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            if BEGIN_SOLUTION in cell.source or END_SOLUTION in cell.source:
                problems.append(f"{name} cell {index}: solution markers in a {cell.cell_type} cell")
            continue
        try:
            trees[index] = _parse(cell.source)
        except SyntaxError as error:
            problems.append(f"{name} cell {index}: invalid Python (line {error.lineno}: {error.msg})")
            continue
        has_markers = BEGIN_SOLUTION in cell.source or END_SOLUTION in cell.source
        if has_markers and not exercise_id_of(cell.source):
            problems.append(f"{name} cell {index}: solution markers outside an exercise cell "
                            f"(its first line must be '{EXERCISE_MARK} N.M')")
    seen: list[str] = []
    imported: set[str] = set()
    exercises = _exercises(nb)
    for exercise in exercises:
        where = f"{name} cell {exercise.exercise_cell} (exercise {exercise.id})"
        cell = nb.cells[exercise.exercise_cell]
        if BEGIN_SOLUTION not in cell.source:
            problems.append(f"{where}: no '{BEGIN_SOLUTION}' .. '{END_SOLUTION}' block")
        try:
            stripped = strip_solutions(cell.source, exercise.id, where)
        except InputError as error:
            problems.append(str(error))
            continue
        if number is not None and exercise.id.split(".")[0] != str(number):
            problems.append(f"{where}: exercises of notebook {number:02d} are numbered {number}.1, {number}.2, ...")
        if exercise.id in seen:
            problems.append(f"{where}: the id {exercise.id} is used twice")
        elif seen and tuple(map(int, exercise.id.split("."))) < tuple(map(int, seen[-1].split("."))):
            problems.append(f"{where}: comes after exercise {seen[-1]}; number exercises in order")
        seen.append(exercise.id)
        if exercise.id not in EXERCISES:
            problems.append(f"{where}: no check for exercise {exercise.id} in mixseg_lite.exercises.EXERCISES")
        for index in range(exercise.exercise_cell + 1):
            if index in trees:
                imported |= _imported_names(trees[index])
        if "todo" not in imported:
            problems.append(f"{where}: import todo (from mixseg_lite.exercises import todo) in this cell or "
                            "before it: the student copy calls it")
        check = exercise.check_cell
        if check < 0 or not nb.cells[check].source.lstrip().startswith(CHECK_MARK):
            problems.append(f"{where}: the next code cell must be its check, starting with '{CHECK_MARK}'")
        elif check in trees:
            called = {exercise_of_check(n) for n in _called_names(trees[check])} - {None}
            if exercise.id not in called:
                wanted = EXERCISES[exercise.id].check.__name__ if exercise.id in EXERCISES else "its check"
                problems.append(f"{name} cell {check}: the check cell of exercise {exercise.id} must call {wanted}")
        defined = _defined_names(_parse(stripped)) if exercise.exercise_cell in trees else set()
        for index, tree in trees.items():
            if index <= exercise.exercise_cell or index == check:
                continue
            read = sorted(defined & _loaded_names(tree))
            if read:
                problems.append(f"{name} cell {index}: reads {', '.join(read)} from exercise {exercise.id}; later "
                                "cells must use the package's own function, never the student's answer")
    return problems


def student_notebook(source: str | os.PathLike):
    """The student copy of a notebook source, as a NotebookNode (see the module docstring)."""
    from mixseg_lite import REPOSITORY_URL

    source = Path(source)
    nb = read_notebook(source)
    problems = exercise_problems(source)
    if problems:
        raise InputError("; ".join(problems))
    exercises = {e.exercise_cell: e.id for e in _exercises(nb)}
    stem = source.stem
    note_added = False
    for index, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{index}"
        tags = cell.get("metadata", {}).get("tags")
        cell["metadata"] = {"tags": tags} if tags else {}
        if cell.cell_type == "code":
            cell["outputs"], cell["execution_count"] = [], None
            if index in exercises:
                cell["source"] = strip_solutions(cell.source, exercises[index], f"{source.name} cell {index}")
        elif cell.cell_type == "markdown":
            text = _student_links(cell.source, stem)
            if not note_added and "colab-badge" in text:
                text = _add_note(text, STUDENT_NOTE.format(stem=stem, url=REPOSITORY_URL))
                note_added = True
            cell["source"] = text
    nb.metadata = {"kernelspec": dict(PYTHON3_KERNELSPEC), "language_info": {"name": "python"},
                   METADATA_KEY: {"student_copy_of": f"notebooks/{source.name}"}}
    return nb


def _student_links(text: str, stem: str) -> str:
    """Colab and Binder links of this notebook rewritten to its student copy."""
    colab = f"/blob/main/notebooks/{stem}.ipynb"
    binder = f"labpath=notebooks%2F{stem}.ipynb"
    lines = []
    for line in text.splitlines():
        if "colab.research.google.com/github/" in line:
            line = line.replace(colab, f"/blob/main/{STUDENT_DIR.as_posix()}/{stem}.ipynb")
        if "mybinder.org/" in line:
            line = line.replace(binder, f"labpath={'%2F'.join(STUDENT_DIR.parts)}%2F{stem}.ipynb")
        lines.append(line)
    return "\n".join(lines)


def _add_note(text: str, note: str) -> str:
    """``note`` after the last badge line of a title cell (its own paragraph)."""
    lines = text.splitlines()
    last = max(i for i, line in enumerate(lines) if "badge" in line)
    return "\n".join(lines[: last + 1] + ["", note] + lines[last + 1:])


def student_copy_text(source: str | os.PathLike) -> str:
    """The exact file text of a source's student copy (nbformat JSON, trailing newline)."""
    _, nbformat, _ = _require_notebook_tools()
    text = nbformat.writes(student_notebook(source))
    return text if text.endswith("\n") else text + "\n"


def write_student_copy(source: str | os.PathLike) -> Path:
    """Write ``course/student/NN_name.ipynb`` for a source with exercises and return its path."""
    path = student_path(source)
    text = student_copy_text(source)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


def student_copy_problems(source: str | os.PathLike) -> list[str]:
    """Why a source's student copy is missing or out of sync; empty when it is in sync."""
    source, path = Path(source), student_path(source)
    try:
        expected = student_copy_text(source)
    except InputError as error:
        return [f"{source}: {error}"]
    if not path.is_file():
        return [f"{path}: missing; run `mixseg-lite student`"]
    actual = path.read_text(encoding="utf-8")
    if actual == expected:
        return []
    try:
        same = json.loads(actual) == json.loads(expected)
    except json.JSONDecodeError:
        same = False
    return [] if same else [f"{path}: out of sync with {source}; run `mixseg-lite student`"]


def orphan_student_copies(notebooks_dir: str | os.PathLike = "notebooks") -> list[Path]:
    """Student copies whose source is gone or has no exercises any more."""
    notebooks_dir = Path(notebooks_dir)
    folder = notebooks_dir.parent / STUDENT_DIR
    wanted = {student_path(s).name for s in list_notebooks(notebooks_dir) if has_exercises(s)}
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb") if p.name not in wanted)


# --- running a student copy ----------------------------------------------------------------------

@dataclass(frozen=True)
class CellOutcome:
    """What one executed code cell of a student copy did."""

    index: int
    kind: str  # "exercise", "check" or "other"
    exercise_id: str | None
    ename: str | None = None  # None: the cell ran without an error
    evalue: str = ""


def execute_notebook_cells(path: str | os.PathLike, cwd: str | os.PathLike | None = None,
                           until_last_check: bool = True, timeout: int = 600, kernel_name: str = "python3"):
    """Execute a notebook (``.ipynb``, or a ``.py`` source) with errors allowed; return the executed
    NotebookNode. ``until_last_check`` stops after the last check cell (see :func:`run_student_copy`);
    ``cwd`` defaults to the notebook's folder."""
    _, nbformat, _ = _require_notebook_tools()
    from nbclient import NotebookClient

    path = Path(path)
    nb = read_notebook(path)
    exercises = _exercises(nb)
    if until_last_check and exercises:
        nb.cells = nb.cells[: max(e.check_cell for e in exercises) + 1]
    client = NotebookClient(nb, kernel_name=kernel_name, allow_errors=True, timeout=timeout,
                            resources={"metadata": {"path": str(Path(cwd) if cwd else path.resolve().parent)}},
                            extra_arguments=QUIET_KERNEL_ARGUMENTS)
    _in_thread_safe_context(client.execute)
    return nb


def run_student_copy(path: str | os.PathLike, cwd: str | os.PathLike | None = None, until_last_check: bool = True,
                     timeout: int = 600, kernel_name: str = "python3") -> list[CellOutcome]:
    """Execute a student copy with errors allowed and return what each code cell did.

    ``until_last_check`` stops after the last check cell: the cells after it are those of the
    solution notebook (which nbval runs) and read nothing an exercise defines
    (:func:`exercise_problems`), so running them again proves nothing and costs the notebook's
    training time. ``cwd`` defaults to the copy's folder.
    """
    return cell_outcomes(execute_notebook_cells(path, cwd, until_last_check, timeout, kernel_name))


def cell_outcomes(nb) -> list[CellOutcome]:
    """The outcome of each executed, non-empty code cell of an executed notebook."""
    role = {}
    for e in _exercises(nb):
        role[e.exercise_cell], role[e.check_cell] = ("exercise", e.id), ("check", e.id)
    outcomes = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        kind, exercise_id = role.get(index, ("other", None))
        error = next((o for o in cell.get("outputs", []) if o.get("output_type") == "error"), None)
        outcomes.append(CellOutcome(index, kind, exercise_id, error and error.get("ename"),
                                    (error or {}).get("evalue", "")))
    return outcomes


def student_run_problems(outcomes: list[CellOutcome], name: str = "student copy") -> list[str]:
    """Cells of an executed student copy that did not behave: a check cell that did not fail with
    ``ExerciseNotDone`` of its own exercise, any other cell that failed."""
    problems = []
    for outcome in outcomes:
        if outcome.kind == "check":
            expected = f"exercise {outcome.exercise_id} is not done yet"
            if outcome.ename != NOT_DONE or not outcome.evalue.startswith(expected):
                got = "ran without an error" if outcome.ename is None else f"raised {outcome.ename}: {outcome.evalue}"
                problems.append(f"{name} cell {outcome.index}: the check of exercise {outcome.exercise_id} should "
                                f"raise {NOT_DONE} ({expected}), but {got}")
        elif outcome.ename is not None:
            first_line = outcome.evalue.strip().splitlines()[0] if outcome.evalue.strip() else ""
            problems.append(f"{name} cell {outcome.index} ({outcome.kind}"
                            f"{' ' + outcome.exercise_id if outcome.exercise_id else ''}) raised "
                            f"{outcome.ename}: {first_line}")
    if not any(o.kind == "check" for o in outcomes):
        problems.append(f"{name}: no check cell ran")
    return problems
