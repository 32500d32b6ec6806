"""Student copies (mixseg_lite.student, ``mixseg-lite student``): generated from the notebook
sources with every solution replaced by ``todo("N.M")``, in sync, and running to the end with
each check cell failing "not done" for its own exercise and every other cell succeeding.

The generator is tested on a tiny fixture notebook; the last tests hold the committed
``course/student/*.ipynb`` to the same rules once a notebook has exercises (skipped before).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixseg_lite.cli import main
from mixseg_lite.exercises import EXERCISES
from mixseg_lite.notebooks import list_notebooks
from mixseg_lite.student import (CellOutcome, exercise_problems, has_exercises, orphan_student_copies,
                                 run_student_copy, strip_solutions, student_copy_problems, student_notebook,
                                 student_path, student_run_problems, write_student_copy)

ROOT = Path(__file__).resolve().parents[1]
WITH_EXERCISES = [source for source in list_notebooks(ROOT / "notebooks") if has_exercises(source)]

FIXTURE = '''# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · A fixture
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/mixseg-lite/mixseg-lite/blob/main/notebooks/01_fixture.ipynb)
# [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/mixseg-lite/mixseg-lite/main?labpath=notebooks%2F01_fixture.ipynb)
#
# See also [notebook 02](https://github.com/mixseg-lite/mixseg-lite/blob/main/notebooks/02_other.ipynb).

# %% tags=["parameters"]
seed = 0

# %%
import torch

from mixseg_lite.losses import pixel_entropy

print("before", seed)

# %% [markdown]
# ### Exercise 1.1

# %%
# EXERCISE 1.1
from mixseg_lite.exercises import todo


def my_entropy_gradient(logits):
    """dH/dz."""
    # BEGIN SOLUTION
    log_p = logits.log_softmax(dim=1)
    p = log_p.exp()
    return -p * (log_p + -(p * log_p).sum(dim=1, keepdim=True))
    # END SOLUTION

# %%
# NBVAL_CHECK_OUTPUT
from mixseg_lite.exercises import check_entropy_gradient

check_entropy_gradient(my_entropy_gradient)

# %%
# EXERCISE 1.3
import torch.nn.functional as F

from mixseg_lite import UNLABELLED


def my_partial_cross_entropy(logits, weak_mask):
    """L_w."""
    if True:
        # BEGIN SOLUTION
        if not (weak_mask != UNLABELLED).any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits, weak_mask, ignore_index=UNLABELLED)
        # END SOLUTION

# %%
# NBVAL_CHECK_OUTPUT
from mixseg_lite.exercises import check_partial_cross_entropy

check_partial_cross_entropy(my_partial_cross_entropy)

# %%
print("after", float(pixel_entropy(torch.zeros(1, 2, 1, 1)).sum()))
'''


@pytest.fixture
def fixture_source(tmp_path):
    source = tmp_path / "notebooks" / "01_fixture.py"
    source.parent.mkdir()
    source.write_text(FIXTURE, encoding="utf-8")
    return source


def test_a_solution_block_becomes_one_todo_line_at_its_indentation():
    text = "def f(x):\n    '''doc'''\n    # BEGIN SOLUTION\n    y = x + 1\n    return y\n    # END SOLUTION\n"
    assert strip_solutions(text, "2.3") == "def f(x):\n    '''doc'''\n    todo(\"2.3\")  # your code here"
    two = "def f():\n  # BEGIN SOLUTION\n  a = 1\n  # END SOLUTION\n  b = 2\n  # BEGIN SOLUTION\n  c = 3\n  # END SOLUTION"
    assert strip_solutions(two, "1.2").count('todo("1.2")') == 2 and "b = 2" in strip_solutions(two, "1.2")


@pytest.mark.parametrize("text, problem", [
    ("# BEGIN SOLUTION\nx = 1\n# END SOLUTION", "inside a function body"),
    ("def f():\n    # BEGIN SOLUTION\n    x = 1", "never closed"),
    ("def f():\n    # BEGIN SOLUTION\n    # BEGIN SOLUTION\n    # END SOLUTION", "inside the solution opened"),
    ("def f():\n    # END SOLUTION", "without"),
])
def test_malformed_solution_blocks_are_refused(text, problem):
    from mixseg_lite.errors import InputError

    with pytest.raises(InputError, match=problem):
        strip_solutions(text, "1.1")


def test_the_student_copy_has_no_solution_no_output_and_its_own_badges(fixture_source):
    assert exercise_problems(fixture_source) == []
    nb = student_notebook(fixture_source)
    text = json.dumps(nb)
    assert "BEGIN SOLUTION" not in text and "log_softmax" not in text and "ignore_index" not in text
    exercise = next(c for c in nb.cells if c.source.startswith("# EXERCISE 1.1"))
    assert 'todo("1.1")  # your code here' in exercise.source and "def my_entropy_gradient(logits):" in exercise.source
    nested = next(c for c in nb.cells if c.source.startswith("# EXERCISE 1.3"))
    assert '        todo("1.3")' in nested.source
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")
    title = nb.cells[0].source
    assert "blob/main/course/student/01_fixture.ipynb" in title
    assert "labpath=course%2Fstudent%2F01_fixture.ipynb" in title
    assert "notebooks/02_other.ipynb" in title, "links to other notebooks stay"
    assert "Student copy" in title and "blob/main/notebooks/01_fixture.ipynb" in title, "the note links the solutions"
    assert nb.cells[1].metadata == {"tags": ["parameters"]}
    assert [c.id for c in nb.cells] == [f"cell-{i}" for i in range(len(nb.cells))]
    assert nb.metadata["mixseg_lite"] == {"student_copy_of": "notebooks/01_fixture.py"}


def test_the_student_copy_is_deterministic_and_checked_for_sync(fixture_source):
    path = student_path(fixture_source)
    assert path == fixture_source.parents[1] / "course" / "student" / "01_fixture.ipynb"
    assert student_copy_problems(fixture_source) == [f"{path}: missing; run `mixseg-lite student`"]
    write_student_copy(fixture_source)
    first = path.read_bytes()
    path.unlink()
    write_student_copy(fixture_source)
    assert path.read_bytes() == first and first.endswith(b"\n")
    assert student_copy_problems(fixture_source) == []
    fixture_source.write_text(FIXTURE.replace('print("before", seed)', 'print("changed", seed)'), encoding="utf-8")
    assert student_copy_problems(fixture_source) == [f"{path}: out of sync with {fixture_source}; run `mixseg-lite student`"]


def _with(old: str, new: str) -> str:
    assert old in FIXTURE
    return FIXTURE.replace(old, new, 1)


@pytest.mark.parametrize("text, problem", [
    (FIXTURE + "\n# %%\nmy_entropy_gradient(torch.zeros(1, 2, 1, 1))\n",
     "reads my_entropy_gradient from exercise 1.1"),
    (_with("# EXERCISE 1.1", "# EXERCISE 2.1"), "notebook 01 are numbered 1.1"),
    (_with("# EXERCISE 1.3", "# EXERCISE 1.1"), "used twice"),
    (_with("# EXERCISE 1.3", "# EXERCISE 1.0"), "comes after exercise 1.1"),
    (_with("# EXERCISE 1.3", "# EXERCISE 1.99"), "no check for exercise 1.99"),
    (_with("check_entropy_gradient(my_entropy_gradient)", "check_verdict(my_entropy_gradient)"),
     "must call check_entropy_gradient"),
    (_with("# NBVAL_CHECK_OUTPUT\nfrom mixseg_lite.exercises import check_entropy_gradient",
           "from mixseg_lite.exercises import check_entropy_gradient"), "must be its check"),
    (_with("from mixseg_lite.exercises import todo\n", ""), "import todo"),
    (_with("# EXERCISE 1.1\n", ""), "solution markers outside an exercise cell"),
])
def test_malformed_exercises_are_named(tmp_path, text, problem):
    source = tmp_path / "01_fixture.py"
    source.write_text(text, encoding="utf-8")
    problems = exercise_problems(source)
    assert any(problem in p for p in problems), problems


def test_the_command_writes_checks_and_removes_orphans(fixture_source, capsys, monkeypatch):
    monkeypatch.chdir(fixture_source.parents[1])
    plain = Path("notebooks/02_plain.py")
    plain.write_text("# %% tags=[\"parameters\"]\nseed = 0\n", encoding="utf-8")
    assert main(["student", "--check"]) == 1
    assert main(["student"]) == 0
    assert Path("course/student/01_fixture.ipynb").is_file() and not Path("course/student/02_plain.ipynb").exists()
    assert main(["student", "--check"]) == 0
    assert "all 1 student copies are in sync" in capsys.readouterr().out
    orphan = Path("course/student/03_gone.ipynb")
    orphan.write_text("{}", encoding="utf-8")
    assert orphan_student_copies() == [orphan]
    assert main(["student", "--check"]) == 1
    assert main(["student"]) == 0 and not orphan.exists()


def test_student_run_problems_name_each_misbehaving_cell():
    good = [CellOutcome(2, "other", None), CellOutcome(4, "exercise", "1.1"),
            CellOutcome(5, "check", "1.1", "ExerciseNotDone", "exercise 1.1 is not done yet: ...")]
    assert student_run_problems(good) == []
    bad = [CellOutcome(2, "other", None, "NameError", "name 'my_f' is not defined"),
           CellOutcome(5, "check", "1.1"),
           CellOutcome(7, "check", "1.2", "ExerciseNotDone", "exercise 1.1 is not done yet: ..."),
           CellOutcome(9, "check", "1.3", "ExerciseMistake", "exercise 1.3: likely mistake: ...")]
    problems = student_run_problems(bad, "nb")
    assert [p.split(":")[0] for p in problems] == ["nb cell 2 (other) raised NameError", "nb cell 5", "nb cell 7", "nb cell 9"]
    assert "ran without an error" in problems[1]
    assert student_run_problems([]) == ["student copy: no check cell ran"]


def test_a_student_copy_runs_with_only_its_checks_failing_not_done(fixture_source):
    path = write_student_copy(fixture_source)
    outcomes = run_student_copy(path, until_last_check=False, timeout=120)
    assert student_run_problems(outcomes, path.name) == []
    checks = [o for o in outcomes if o.kind == "check"]
    assert [(o.exercise_id, o.ename) for o in checks] == [("1.1", "ExerciseNotDone"), ("1.3", "ExerciseNotDone")]
    assert outcomes[-1].kind == "other" and outcomes[-1].ename is None, "cells after the exercises still run"


# --- the committed student copies -----------------------------------------------------------------

def test_the_instructors_guide_lists_every_exercise():
    guide = (ROOT / "course" / "README.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(): line for line in guide.splitlines() if line.startswith("| ")}
    for exercise_id, exercise in EXERCISES.items():
        row = rows.get(exercise_id, "")
        assert f"| {exercise.title} |" in row, f"course/README.md: no row for exercise {exercise_id}"
        assert f"| {exercise.difficulty} | {'; '.join(exercise.mistakes)} |" in row, (
            f"course/README.md: exercise {exercise_id}'s difficulty or mistakes differ from mixseg_lite.exercises")
    assert (ROOT / "course" / "jupytext.toml").is_file(), "student copies must not be paired with .py files"


@pytest.mark.parametrize("source", WITH_EXERCISES or [None],
                         ids=[source.name for source in WITH_EXERCISES] or ["no-exercises-yet"])
def test_each_source_with_exercises_is_well_formed_and_its_student_copy_in_sync(source):
    if source is None:
        pytest.skip("no notebooks/NN_*.py has exercises yet")
    assert exercise_problems(source) == []
    assert student_copy_problems(source) == []


def test_no_student_copy_without_exercises():
    assert orphan_student_copies(ROOT / "notebooks") == []


@pytest.mark.parametrize("source", WITH_EXERCISES or [None],
                         ids=[source.name for source in WITH_EXERCISES] or ["no-exercises-yet"])
def test_each_student_copy_runs_with_only_its_checks_failing_not_done(source, tmp_path):
    if source is None:
        pytest.skip("no notebooks/NN_*.py has exercises yet")
    path = student_path(source)
    # Cells after the last check are the solution notebook's own (nbval runs them) and read
    # nothing an exercise defines (exercise_problems), so the run stops there.
    outcomes = run_student_copy(path, timeout=600)
    assert student_run_problems(outcomes, path.name) == []
