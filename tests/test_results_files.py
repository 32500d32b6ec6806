"""The committed sweep results: enough seeds to settle a claim, a regenerating command each,
and the tables the notebooks print from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mixseg_lite.claims import CLAIMS_BY_NOTEBOOK
from mixseg_lite.stats import read_results, settle

ROOT = Path(__file__).resolve().parents[1]
# Files that are not sweep tables: validation curves written by a script (one seed: they justify a
# budget, they settle no claim), with the command that regenerates each.
CURVES = {"mixed_convergence_cardiac": "python experiments/mixed_convergence.py --out results/mixed_convergence_cardiac.csv"}
RESULTS = sorted(p for p in (ROOT / "results").glob("*.csv") if p.stem not in CURVES)
MIN_SEEDS = 5
# Parameters that a sweep varies within a seed (e.g. both recipes): claims are settled per value.
CONDITIONS = ("recipe", "lambda_kd", "lambda_ent")


def test_there_are_committed_results():
    assert {p.stem for p in RESULTS} >= {"teaching_profiles", "mixed_ablation_cardiac", "mixed_ablation_atlas",
                                         "cam_ablation_brain"}


@pytest.mark.parametrize("name", sorted(CURVES))
def test_each_curve_file_has_its_script_and_command(name):
    readme = (ROOT / "results" / "README.md").read_text()
    command = CURVES[name]
    assert command in readme, f"results/README.md should give the command that regenerates {name}.csv"
    script = ROOT / command.split()[1]
    assert script.is_file() and f"--out results/{name}.csv" in script.read_text()
    rows = read_results(ROOT / "results" / f"{name}.csv")
    assert {"recipe", "method", "epoch", "val_dice"} <= set(rows[0])


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
        key = (row["notebook"], row.get("method"), row.get("branch", ""), row.get("modality", ""),
               *(row.get(c, "") for c in CONDITIONS))
        seeds.setdefault(key, set()).add(row["seed"])
    thin = {key: len(s) for key, s in seeds.items() if len(s) < MIN_SEEDS}
    assert not thin, f"{path.name}: rows with fewer than {MIN_SEEDS} seeds: {thin}"


@pytest.mark.parametrize("path", RESULTS, ids=[p.name for p in RESULTS])
def test_the_claims_of_each_file_can_be_settled(path):
    rows = read_results(path)
    groups: dict[tuple, list] = {}
    for row in rows:
        groups.setdefault((row["notebook"], *(row.get(c, "") for c in CONDITIONS)), []).append(row)
    for (notebook, *_), members in groups.items():
        settled = settle(members, CLAIMS_BY_NOTEBOOK.get(notebook, []), path.name)
        for difference in settled:
            assert difference.n >= MIN_SEEDS and difference.low <= difference.mean <= difference.high
