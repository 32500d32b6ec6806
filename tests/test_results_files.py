"""The committed sweep results: enough seeds to settle a claim, a regenerating command each,
and the tables the notebooks print from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mixseg_lite.claims import CLAIMS_BY_NOTEBOOK
from mixseg_lite.stats import read_results, settle

ROOT = Path(__file__).resolve().parents[1]
RESULTS = sorted((ROOT / "results").glob("*.csv"))
MIN_SEEDS = 5


def test_there_are_committed_results():
    assert {p.stem for p in RESULTS} >= {"teaching_profiles", "mixed_ablation_cardiac", "mixed_ablation_atlas",
                                         "cam_ablation_brain"}


@pytest.mark.parametrize("path", RESULTS, ids=[p.name for p in RESULTS])
def test_each_file_has_its_sweep_file_and_command(path):
    readme = (ROOT / "results" / "README.md").read_text()
    sweep = ROOT / "experiments" / f"{path.stem}.yaml"
    assert sweep.is_file(), f"{path.name}: no experiments/{path.stem}.yaml regenerates it"
    command = f"mixseg-lite report runs/{path.stem} --csv results/{path.name}"
    assert f"mixseg-lite sweep experiments/{path.stem}.yaml" in readme and command in readme
    assert command in sweep.read_text(), f"{sweep.name} should name the command that regenerates {path.name}"
    assert len(yaml.safe_load(sweep.read_text())["seeds"]) >= MIN_SEEDS


@pytest.mark.parametrize("path", RESULTS, ids=[p.name for p in RESULTS])
def test_every_row_has_at_least_five_seeds(path):
    rows = read_results(path)
    seeds: dict[tuple, set] = {}
    for row in rows:
        key = (row["notebook"], row.get("method"), row.get("branch", ""), row.get("modality", ""))
        seeds.setdefault(key, set()).add(row["seed"])
    thin = {key: len(s) for key, s in seeds.items() if len(s) < MIN_SEEDS}
    assert not thin, f"{path.name}: rows with fewer than {MIN_SEEDS} seeds: {thin}"


@pytest.mark.parametrize("path", RESULTS, ids=[p.name for p in RESULTS])
def test_the_claims_of_each_file_can_be_settled(path):
    rows = read_results(path)
    for notebook in {row["notebook"] for row in rows}:
        claims = CLAIMS_BY_NOTEBOOK.get(notebook, [])
        settled = settle([r for r in rows if r["notebook"] == notebook], claims, path.name)
        for difference in settled:
            assert difference.n >= MIN_SEEDS and difference.low <= difference.mean <= difference.high
