"""Result tables from a handcrafted run folder with known numbers (no notebook is executed)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mixseg_lite.cli import main
from mixseg_lite.errors import InputError
from mixseg_lite.report import collect_metrics, write_report

# dice of method kl over seeds 0, 1, 2 on branch seg: mean 0.8, sample std 0.1.
KL_SEG_DICE = {0: 0.7, 1: 0.8, 2: 0.9}


def write_run(rundir: Path, method: str, seed: int, rows: list[dict], with_status=True) -> None:
    folder = rundir / "02_kl" / f"method={method},seed={seed}"
    folder.mkdir(parents=True)
    params = {"method": method, "seed": seed, "epochs": 10, "output_dir": str(folder)}
    (folder / "metrics.json").write_text(json.dumps({"rows": rows, "params": params}))
    if with_status:
        (folder / "status.json").write_text(json.dumps(
            {"status": "ok", "notebook": "02_kl", "params": {"method": method, "seed": seed}}))
    else:
        (folder / "02_kl.ipynb").write_text("{}")  # the notebook name comes from this file


@pytest.fixture
def rundir(tmp_path) -> Path:
    for seed, dice in KL_SEG_DICE.items():
        write_run(tmp_path, "kl", seed, [
            {"method": "kl", "branch": "seg", "dice": dice, "hd95": 4.0 + seed},
            {"method": "kl", "branch": "cam", "dice": 0.5, "hd95": float("nan")}],
            with_status=seed != 2)
    write_run(tmp_path, "ent", 0, [{"method": "ent", "branch": "seg", "dice": 0.6, "hd95": 5.0}])
    return tmp_path


def test_collect_metrics_flattens_rows_with_run_parameters(rundir):
    rows = collect_metrics(rundir)
    assert len(rows) == 7
    first = rows[0]
    assert first["notebook"] == "02_kl" and first["seed"] == 0 and first["epochs"] == 10
    assert first["method"] == "ent" and "output_dir" not in first  # sorted by path: ent first
    assert {row["notebook"] for row in rows} == {"02_kl"}  # also without status.json


def test_report_means_and_sample_std_over_seeds(rundir):
    paths = write_report(rundir)
    assert set(paths) == {"csv", "markdown", "png"}
    with paths["csv"].open() as handle:
        csv_rows = list(csv.DictReader(handle))
    assert len(csv_rows) == 7
    assert sorted(float(row["dice"]) for row in csv_rows
                  if row["branch"] == "seg" and row["method"] == "kl") == [0.7, 0.8, 0.9]
    table = paths["markdown"].read_text()
    assert table.splitlines()[0] == ("| notebook | method | branch | n | dice (mean ± std) | "
                                     "hd95 (mean ± std) |")
    assert "| 02_kl | kl | seg | 3 | 0.800 ± 0.100 | 5.000 ± 1.000 |" in table
    assert "| 02_kl | kl | cam | 3 | 0.500 ± 0.000 | - |" in table  # HD95 undefined (NaN)
    assert "| 02_kl | ent | seg | 1 | 0.600 ± - | 5.000 ± - |" in table  # one seed: no std
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_varying_parameters_become_group_columns(tmp_path):
    for seed in (0, 1):
        for lr in (0.1, 0.01):
            folder = tmp_path / "03_lr" / f"lr={lr},seed={seed}"  # no notebook record: the
            folder.mkdir(parents=True)                           # layout names the notebook
            (folder / "metrics.json").write_text(json.dumps(
                {"rows": [{"method": "kl", "dice": lr + seed}], "params": {"lr": lr, "seed": seed}}))
    table = write_report(tmp_path)["markdown"].read_text()
    assert table.splitlines()[0].startswith("| notebook | method | lr | n |")
    assert "| 03_lr | kl | 0.1 | 2 | 0.600 ± 0.707 |" in table
    assert "| 03_lr | kl | 0.01 | 2 | 0.510 ± 0.707 |" in table


def test_report_command_prints_the_table(rundir, capsys):
    assert main(["report", str(rundir)]) == 0
    assert "| 02_kl | kl | seg | 3 | 0.800 ± 0.100 |" in capsys.readouterr().out


def test_folder_without_metrics_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no metrics.json below"):
        write_report(tmp_path)


def test_within_run_spread_stays_in_the_csv_but_not_the_table(tmp_path):
    for seed, dice in KL_SEG_DICE.items():
        write_run(tmp_path, "kl", seed, [{"method": "kl", "branch": "seg", "dice": dice, "dice_std": 0.05}])
    paths = write_report(tmp_path)
    table = paths["markdown"].read_text()
    assert "dice_std" not in table and "| 0.800 ± 0.100 |" in table
    with paths["csv"].open() as handle:
        assert all(float(row["dice_std"]) == 0.05 for row in csv.DictReader(handle))


def test_claims_are_settled_per_recipe_when_a_sweep_varies_it(tmp_path):
    # Both recipes on the same seeds: pooling them would give two rows per seed for one claim.
    for recipe, gain in (("ours", 0.1), ("authors", -0.1)):
        for seed in range(3):
            folder = tmp_path / "02_kl_distillation" / f"recipe={recipe},seed={seed}"
            folder.mkdir(parents=True)
            rows = [{"method": "kl_ent", "branch": "student", "dice": 0.5 + gain + 0.01 * seed},
                    {"method": "kl", "branch": "student", "dice": 0.5}]
            (folder / "metrics.json").write_text(json.dumps(
                {"rows": rows, "params": {"recipe": recipe, "seed": seed}}))
    text = write_report(tmp_path)["markdown"].read_text()
    parts = {part.split(":")[0]: part for part in text.split("\nrecipe=")[1:]}
    ours, authors = parts["ours"], parts["authors"]
    assert "| KL+Ent > KL (student) | dice | 3 | 0.610 | 0.500 | +0.110 |" in ours and "| holds |" in ours
    assert "| KL+Ent > KL (student) | dice | 3 | 0.410 | 0.500 | -0.090 |" in authors and "| opposite |" in authors


def test_runs_that_train_different_rows_of_one_seed_form_one_table(tmp_path):
    # e.g. the semi-supervised rows added to an ablation sweep as runs of their own
    for methods, rows in ((["kl_ent"], [{"method": "kl_ent", "branch": "student"}]),
                          (["mean_teacher"], [{"method": "mean_teacher", "branch": "teacher"}])):
        for seed in range(3):
            folder = tmp_path / "02_kl_distillation" / f"methods={methods[0]},seed={seed}"
            folder.mkdir(parents=True)
            (folder / "metrics.json").write_text(json.dumps(
                {"rows": [{**row, "dice": 0.5 + 0.1 * (row["method"] == "kl_ent") + 0.01 * seed} for row in rows],
                 "params": {"methods": methods, "seed": seed}}))
    text = write_report(tmp_path)["markdown"].read_text()
    assert text.splitlines()[0].startswith("| notebook | method | branch | n |")  # no `methods` column
    assert "| KL+Ent > Mean Teacher | dice | 3 | 0.610 | 0.510 | +0.100 |" in text
