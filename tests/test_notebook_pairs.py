"""Every committed notebook twin is in sync with its jupytext source.

A failure names the twin and the problem; the fix is ``mixseg-lite build notebooks/NN_name.py``
(never editing the ``.ipynb`` by hand).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mixseg_lite.notebooks import check_twin, list_notebooks

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
SOURCES = list_notebooks(NOTEBOOKS_DIR)


@pytest.mark.parametrize("source", SOURCES or [None],
                         ids=[source.name for source in SOURCES] or ["no-notebooks"])
def test_twin_is_in_sync_with_its_source(source):
    if source is None:
        pytest.skip(f"no NN_*.py notebook sources in {NOTEBOOKS_DIR} yet")
    problems = check_twin(source)
    assert not problems, "\n".join(problems)
