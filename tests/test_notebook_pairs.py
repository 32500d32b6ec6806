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


def _repository_links(text: str) -> set[str]:
    import re

    pattern = r"(?:github\.com|mybinder\.org/v2/gh|colab\.research\.google\.com/github)/([\w.-]+/[\w.-]+)"
    return set(re.findall(pattern, text))


@pytest.mark.parametrize("source", SOURCES, ids=[source.name for source in SOURCES])
def test_colab_cell_and_badges_use_the_one_repository_url(source):
    from mixseg_lite import REPOSITORY, REPOSITORY_URL

    text = source.read_text()
    assert f'REPOSITORY_URL = "{REPOSITORY_URL}"' in text, f"{source.name}: Colab cell does not clone {REPOSITORY_URL}"
    assert "sys.exit(" in text.split('if "google.colab" in sys.modules:', 1)[1].split("# %%", 1)[0], (
        f"{source.name}: a failed clone must stop with a one-line message")
    links = _repository_links(text)
    assert links == {REPOSITORY}, f"{source.name}: links to {sorted(links)}, expected only {REPOSITORY}"
    assert f"blob/main/notebooks/{source.stem}.ipynb" in text and f"labpath=notebooks%2F{source.stem}.ipynb" in text


def test_readme_links_to_the_one_repository():
    from mixseg_lite import REPOSITORY

    readme = (NOTEBOOKS_DIR.parent / "README.md").read_text()
    assert _repository_links(readme) == {REPOSITORY}
