"""experiments/cam_ablation.py on a tiny task: weights chosen on validation, one chosen row per
seed and modality, and a rerun that reuses every finished run instead of training again."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "cam_ablation.py"


@pytest.fixture(scope="module")
def ablation():
    spec = importlib.util.spec_from_file_location("cam_ablation_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.EPOCHS, module.SUPERVISED_EPOCHS, module.SEEDS = 1, 2, [0, 1]
    module.PAIRINGS = [("T2", "FLAIR")]
    module.TASK = {"image_size": 32, "n_volumes": 6, "n_slices": 4, "split": {"train": 2, "val": 2, "test": 2}}
    module.GRID = {"er_weight": [1.0, 10.0], "cmer_weight": [1.0, 100.0], "kl_weight": [0.5]}
    return module


def _run(module, tmp_path, monkeypatch) -> list[dict]:
    out = tmp_path / "cam.csv"
    monkeypatch.setattr(sys, "argv", ["cam_ablation.py", "--out", str(out), "--runs", str(tmp_path / "runs"),
                                      "--workers", "1"])
    module.main()
    with out.open() as handle:
        return list(csv.DictReader(handle))


def test_weights_are_chosen_on_validation_and_finished_runs_are_reused(ablation, tmp_path, monkeypatch):
    rows = _run(ablation, tmp_path, monkeypatch)
    chosen = [r for r in rows if r["chosen"] == "True"]
    # exactly one chosen row per seed, row and modality (the empty masks once per seed)
    keys = [(r["seed"], r["method"], r["modality"]) for r in chosen]
    assert len(keys) == len(set(keys)) == 2 * (1 + 2 * 5)
    # the ER weight of each modality is the grid value with the best mean validation Dice
    for modality in ("T2", "FLAIR"):
        er_rows = [r for r in rows if r["method"] == "cam_er" and r["modality"] == modality]
        means = {w: sum(float(r["val_dice_3d"]) for r in er_rows if r["er_weight"] == w) / 2
                 for w in {r["er_weight"] for r in er_rows}}
        best = max(sorted(means, key=float), key=lambda w: means[w])
        assert {r["er_weight"] for r in er_rows if r["chosen"] == "True"} == {best}
        assert {r["er_weight"] for r in chosen if r["method"] == "cam_er_cmer" and r["modality"] == modality} == {best}
    assert all(r["train_accuracy"] and r["train_majority"] for r in rows if r["method"] != "empty")
    curves = tmp_path / "cam_curves.csv"
    assert curves.is_file() and "cls" in curves.read_text().splitlines()[0]
    # a rerun reads the finished runs back: nothing is trained again, the table is the same
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*.json")}
    assert _run(ablation, tmp_path, monkeypatch) == rows
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*.json")} == stamps


def test_a_weight_chosen_at_the_top_of_its_grid_gets_one_more_value(ablation, tmp_path, monkeypatch):
    # One-value grids: their only value is always the top one, so both get extended by EXTEND.
    monkeypatch.setattr(ablation, "GRID", {"er_weight": [1.0], "cmer_weight": [1.0], "kl_weight": [0.5]})
    monkeypatch.setattr(ablation, "SEEDS", [0])
    rows = _run(ablation, tmp_path, monkeypatch)
    tried = {method: {float(r[name]) for r in rows if r["method"] == method}
             for method, name in (("cam_er", "er_weight"), ("cam_er_cmer", "cmer_weight"))}
    assert tried == {"cam_er": {1.0, ablation.EXTEND}, "cam_er_cmer": {1.0, ablation.EXTEND}}
    assert {r["method"] for r in rows if r["chosen"] == "True"} >= {"cam", "cam_er", "cam_er_cmer", "cam_er_cmer_kl"}


def _grid_run(dice: float, learnt: bool) -> dict:
    rows = [{"method": "cam_er", "modality": m, "val_dice_3d": dice, "train_majority": 0.7,
             "train_accuracy": 0.9 if learnt or m == "T2" else 0.7} for m in ("T2", "FLAIR")]
    return {"rows": rows + [{"method": "empty", "modality": "-"}]}


def test_a_weight_under_which_a_network_did_not_learn_its_tags_is_not_chosen(ablation, capsys):
    pairing = ("T2", "FLAIR")
    runs = [((pairing, "cam_er", {"er_weight": 1.0}, seed), _grid_run(0.3, True)) for seed in (0, 1)]
    runs += [((pairing, "cam_er", {"er_weight": 10.0}, seed), _grid_run(0.5, seed == 0)) for seed in (0, 1)]
    # 10 has the better validation Dice, but FLAIR of seed 1 answers the majority tag under it
    assert ablation.choose(runs, pairing, "cam_er", {}, "er_weight", values=[1.0, 10.0]) == 1.0
    assert "tags not learnt: FLAIR seed 1" in capsys.readouterr().out
    # T2 learnt under both, so for T2 alone the better Dice wins
    assert ablation.choose(runs, pairing, "cam_er", {}, "er_weight", "T2", [1.0, 10.0]) == 10.0
    # no admissible value: the best of all, with a warning
    assert ablation.choose(runs, pairing, "cam_er", {}, "er_weight", "FLAIR", [10.0]) == 10.0
    assert "WARNING: no value lets every network learn its tags" in capsys.readouterr().out
