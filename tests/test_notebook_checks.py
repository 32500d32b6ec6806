"""nbval compares only outputs that are the same on every machine.

Training results change with the CPU's instruction set, the thread count and library versions
(CONTRIBUTING.md, "Checks that hold on every machine"). So a cell marked ``# NBVAL_CHECK_OUTPUT``
may print closed forms, data statistics, shapes and results read from committed files, but
nothing computed from a model trained in the notebook. This test follows the data flow of each
notebook source: every name assigned from a training call (or from a name that is) is *trained*;
a checked cell that reads a trained name fails, unless the cell says why its output is stable
anyway with a line ``# stable on every machine: <reason>`` (e.g. a resumed run compared with the
same machine's uninterrupted run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mixseg_lite.notebooks import list_notebooks, read_notebook

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
SOURCES = list_notebooks(NOTEBOOKS_DIR)
CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
STABLE_MARK = "# stable on every machine:"
# Functions whose results depend on training (and so on the machine's floating-point path).
TRAINING_CALLS = {"run_mixed_ablation", "train_mixed", "train_cam", "run_experiment", "evaluate_mixed",
                  "evaluate_cam", "predict_volumes", "predict_slices", "measure_equivariance",
                  "choose_thresholds", "validation_dice"}


def _comprehension_targets(node: ast.AST) -> set[str]:
    """Loop variables of comprehensions: local to them, neither read from nor written to the cell."""
    return {n.id for comp in ast.walk(node) if isinstance(comp, ast.comprehension)
            for n in ast.walk(comp.target) if isinstance(n, ast.Name)}


def _loaded_names(node: ast.AST) -> set[str]:
    loaded = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return loaded - _comprehension_targets(node)


def _called_names(node: ast.AST) -> set[str]:
    names = set()
    for call in (n for n in ast.walk(node) if isinstance(n, ast.Call)):
        func = call.func
        names.add(func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else "")
    return names


def _stored_names(node: ast.AST) -> set[str]:
    stored = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return stored - _comprehension_targets(node)


def _mutated_names(node: ast.AST) -> set[str]:
    """Names whose contents a statement changes in place: ``x[k] = ...``, ``x.append(...)``."""
    names = set()
    for sub in ast.walk(node):
        if isinstance(sub, (ast.Subscript, ast.Attribute)) and isinstance(sub.ctx, ast.Store):
            base = sub.value
            while isinstance(base, (ast.Subscript, ast.Attribute)):
                base = base.value
            if isinstance(base, ast.Name):
                names.add(base.id)
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and isinstance(sub.func.value, ast.Name) \
                and sub.func.attr in {"append", "extend", "update", "insert", "setdefault"}:
            names.add(sub.func.value.id)
    return names


def _simple_statements(tree: ast.Module):
    """Statements in execution order; a compound statement (for, if, with, try) is yielded whole,
    since its header and body share names (``for row in rows: ...``)."""
    for statement in tree.body:
        if not isinstance(statement, (ast.FunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)):
            yield statement


def _trained_reads(tree: ast.Module, trained: set[str], report: bool) -> list[str]:
    """Follow one cell: a statement that reads a trained name (or calls a training function)
    makes every name it stores or mutates trained; one that stores only clean values makes its
    names clean again. Returns the trained names and training calls read, when ``report``."""
    read: list[str] = []
    for statement in _simple_statements(tree):
        sources = (_loaded_names(statement) & trained) | (_called_names(statement) & TRAINING_CALLS)
        if report:
            read += sorted(sources - set(read))
        if sources:
            trained |= _stored_names(statement) | _mutated_names(statement)
        else:
            trained -= _stored_names(statement)
    return read


def checked_cells_reading_trained_values(source: Path) -> list[tuple[int, list[str], str]]:
    """``(cell index, trained names read, first line)`` for each offending checked cell."""
    notebook = read_notebook(source)
    trained: set[str] = set()
    offending = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        text = cell.source
        tree = ast.parse("\n".join(line for line in text.splitlines() if not line.lstrip().startswith(("%", "!"))))
        is_checked = text.lstrip().startswith(CHECK_MARK) and STABLE_MARK not in text
        read = _trained_reads(tree, trained, report=is_checked)
        if read:
            offending.append((index, read, text.splitlines()[1] if "\n" in text else text))
    return offending


@pytest.mark.parametrize("source", SOURCES, ids=[source.name for source in SOURCES])
def test_checked_cells_print_nothing_computed_by_training(source):
    offending = checked_cells_reading_trained_values(source)
    assert not offending, "\n".join(
        f"{source.name} cell {index}: checked output reads trained values {names} ({line!r}); "
        f"print them in a '# NBVAL_IGNORE_OUTPUT' cell, or add '{STABLE_MARK} <reason>'"
        for index, names, line in offending)


@pytest.mark.parametrize("source", SOURCES, ids=[source.name for source in SOURCES])
def test_stable_marks_give_a_reason(source):
    for line in source.read_text().splitlines():
        if STABLE_MARK in line:
            assert len(line.split(STABLE_MARK, 1)[1].strip()) > 10, f"{source.name}: {line!r} gives no reason"


def test_the_rule_catches_a_trained_score_in_a_checked_cell(tmp_path):
    notebook = tmp_path / "99_example.py"
    notebook.write_text(
        "# %%\nfrom mixseg_lite.train import run_mixed_ablation\n"
        "rows, results = run_mixed_ablation(['kl'], [], [], [])\n"
        "# %%\nbest = max(r['dice'] for r in rows)\n"
        "# %%\n# NBVAL_CHECK_OUTPUT\nprint(f'{best:.3f}')\n"
        "# %%\n# NBVAL_CHECK_OUTPUT\nprint(len([1, 2]))\n"
        "# %%\n# NBVAL_CHECK_OUTPUT\n# stable on every machine: compares two runs of this same machine\n"
        "print(best == best)\n")
    offending = checked_cells_reading_trained_values(notebook)
    assert [names for _, names, _ in offending] == [["best"]]
