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


@pytest.mark.parametrize("source", SOURCES, ids=[source.name for source in SOURCES])
def test_colab_cell_installs_only_on_colab_and_brings_the_atlas_package(source):
    text = source.read_text()
    colab_cell = text.split('if "google.colab" in sys.modules:', 1)
    assert len(colab_cell) == 2, f"{source.name}: no Colab-only bootstrap cell"
    bootstrap = colab_cell[1].split("# %%", 1)[0]
    assert "pip" in bootstrap, f"{source.name}: the Colab cell does not install mixseg-lite"
    if '"atlas"' in text or "load_atlas" in text:
        assert "mricron-data" in bootstrap, (
            f"{source.name} can use the atlas, but its Colab cell does not apt-get install mricron-data")
