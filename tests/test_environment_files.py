"""environment.yml and binder/ must list the same dependencies as pyproject.toml."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name


def _parse(requirement: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)$", requirement)
    name = match.group(1).lower().replace("_", "-")
    return CONDA_NAMES.get(name, name), match.group(3).replace(" ", "")


def _pyproject(*extras: str) -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    return dict(_parse(r) for r in reqs)


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in conda
    listed = dict(_parse(d) for d in conda if not d.startswith(("python=", "pip")))
    assert listed == _pyproject("notebooks", "test")
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip_section


def test_binder_requirements_match_pyproject():
    lines = [line.strip() for line in (ROOT / "binder" / "requirements.txt").read_text().splitlines()]
    reqs = [line for line in lines if line and not line.startswith(("#", "--"))]
    assert dict(_parse(r) for r in reqs) == _pyproject("notebooks")
    assert any("download.pytorch.org/whl/cpu" in line for line in lines), "Binder must use CPU-only torch"


def test_binder_post_build_installs_package_and_kernel():
    post_build = (ROOT / "binder" / "postBuild").read_text()
    assert "set -e" in post_build
    assert "pip install" in post_build and "ipykernel install" in post_build
    assert "mricron-data" in (ROOT / "binder" / "apt.txt").read_text()


def test_torch_pinned_only_through_constraints():
    assert _pyproject()["torch"] == ">=2.2"
    constraints = (ROOT / "constraints-cpu.txt").read_text()
    assert re.search(r"^torch==2\.13\.0$", constraints, re.M)
    assert "constraints-cpu.txt" in (ROOT / "Makefile").read_text()
