"""experiments/cam_ablation.py on a tiny task: weights chosen on validation, one chosen row per
seed and modality, and a rerun that reuses every finished run instead of training again."""

from __future__ import annotations

import csv
import importlib.util
import json
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


def test_extra_seeds_train_only_the_chosen_rows_and_leave_the_choice_alone(ablation, tmp_path, monkeypatch):
    rows = _run(ablation, tmp_path, monkeypatch)
    chosen = {(r["method"], r["modality"], r["er_weight"], r["cmer_weight"], r["kl_weight"],
               r["supervised_class_balance"]) for r in rows if r["chosen"] == "True"}
    out = tmp_path / "cam.csv"
    monkeypatch.setattr(sys, "argv", ["cam_ablation.py", "--out", str(out), "--runs", str(tmp_path / "runs"),
                                      "--workers", "1", "--extra-seeds", "7"])
    ablation.main()
    with out.open() as handle:
        extended = list(csv.DictReader(handle))
    old = [r for r in extended if r["seed"] != "7"]
    assert [{k: v for k, v in r.items() if k != "choosing_seed"} for r in old] == rows
    assert {r["choosing_seed"] for r in old} == {"True"}
    new = [r for r in extended if r["seed"] == "7"]
    assert {r["choosing_seed"] for r in new} == {"False"} and all(r["chosen"] == "True" for r in new)
    # one row per ablation row and modality (and the empty masks), each at the weights chosen on seeds 0-1
    assert len(new) == 1 + 2 * 5
    assert {(r["method"], r["modality"], r["er_weight"], r["cmer_weight"], r["kl_weight"],
             r["supervised_class_balance"]) for r in new} <= chosen


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


# ---------------------------------------------------------------------------------------------
# The brain phantom (issue 24): flat-CAM admissibility, its own files and runs, and the budget curves


def _flat_run(dice: float, flat: float | None) -> dict:
    rows = [{"method": "cam_er", "modality": m, "val_dice_3d": dice, "train_majority": 0.7, "train_accuracy": 0.9,
             "flat_cam_fraction": 0.0 if m == "T2" else flat, "train_predicted_positive": 40} for m in ("T2", "FLAIR")]
    return {"rows": rows + [{"method": "empty", "modality": "-"}]}


def test_a_weight_under_which_a_network_has_flat_cams_is_not_chosen(ablation, capsys):
    pairing = ("T2", "FLAIR")
    runs = [((pairing, "cam_er", {"er_weight": 1.0}, seed), _flat_run(0.3, 0.1)) for seed in (0, 1)]
    # 10 has the better validation Dice, but FLAIR of seed 1 has a flat CAM on 90 % of its positive slices
    runs += [((pairing, "cam_er", {"er_weight": 10.0}, seed), _flat_run(0.5, 0.9 if seed else 0.5)) for seed in (0, 1)]
    assert ablation.choose(runs, pairing, "cam_er", {}, "er_weight", values=[1.0, 10.0], flat_bound=0.5) == 1.0
    assert "(flat CAMs: FLAIR seed 1 (0.90))" in capsys.readouterr().out
    # without the bound (the committed brain file's rule) learnt tags are enough
    assert ablation.choose(runs, pairing, "cam_er", {}, "er_weight", values=[1.0, 10.0]) == 10.0
    # a run from before the measure cannot be judged by it
    for _, run in runs:
        del run["rows"][1]["flat_cam_fraction"]
    with pytest.raises(SystemExit, match="no flat-CAM fraction recorded"):
        ablation.choose(runs, pairing, "cam_er", {}, "er_weight", values=[1.0, 10.0], flat_bound=0.5)


@pytest.fixture(scope="module")
def phantom():
    """The script on a tiny phantom task: one pairing, one seed, one value per grid; the volumes are
    generated once (make_volumes is the script's only way to the data)."""
    from mixseg_lite.data.phantom import make_phantom_volumes

    spec = importlib.util.spec_from_file_location("cam_ablation_phantom_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.SEEDS, module.PAIRINGS = [0], [("T2", "FLAIR")]
    module.TASK = {"image_size": 32, "n_volumes": 6, "n_slices": 6, "split": {"train": 2, "val": 2, "test": 2}}
    module.GRID = {"er_weight": [1.0], "cmer_weight": [1.0], "kl_weight": [0.5]}
    module.SUPERVISED_GRID = {"supervised_class_balance": [0.5]}
    volumes = {}

    def make_volumes(dataset, pairing, seed):
        assert dataset == "brain_phantom"
        if seed not in volumes:
            volumes[seed] = make_phantom_volumes(6, 6, 32, modalities=("T2", "FLAIR"), seed=seed)
        return volumes[seed]

    module.make_volumes = make_volumes
    return module


def _main(module, monkeypatch, *argv) -> None:
    monkeypatch.setattr(sys, "argv", ["cam_ablation.py", *map(str, argv), "--workers", "1"])
    module.main()


def test_the_phantom_sweep_needs_a_budget_and_records_flat_cams(phantom, tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        _main(phantom, monkeypatch, "--dataset", "brain_phantom")
    assert "--epochs is required on brain_phantom" in capsys.readouterr().err
    out, folder = tmp_path / "cam_ablation_phantom.csv", tmp_path / "runs"
    _main(phantom, monkeypatch, "--dataset", "brain_phantom", "--epochs", 1, "--out", out, "--runs", folder)
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[-2:] == ["flat_cam_fraction", "train_predicted_positive"]
    cam_rows = [r for r in rows if r["method"] not in ("empty", "supervised")]
    assert cam_rows and all(r["flat_cam_fraction"] and r["train_predicted_positive"] for r in cam_rows)
    assert all(r["flat_cam_fraction"] == "" for r in rows if r["method"] == "supervised")
    # the budget is in every run's name (1 != EPOCHS), the dataset and budget in its file
    runs = sorted(folder.glob("*.json"))
    assert runs and all("_epochs=1_" in p.name for p in runs)
    first = json.loads(runs[0].read_text())
    assert (first["dataset"], first["epochs"]) == ("brain_phantom", 1)
    # a rerun reads the finished runs back (nothing trained, same table); a run of another dataset
    # or budget under the same name stops the sweep instead of being reused
    stamps = {p: p.stat().st_mtime_ns for p in runs}
    _main(phantom, monkeypatch, "--dataset", "brain_phantom", "--epochs", 1, "--out", tmp_path / "again.csv",
          "--runs", folder)
    assert (tmp_path / "again.csv").read_text() == out.read_text()
    assert {p: p.stat().st_mtime_ns for p in folder.glob("*.json")} == stamps
    job = (("T2", "FLAIR"), "cam", {}, 0)
    with pytest.raises(SystemExit, match="trained on brain_phantom for 1 epochs, not simulated_brain"):
        phantom.run_stage([job], folder, 1, {"dataset": "simulated_brain", "epochs": 1, "supervised_epochs": 1})


def test_curves_only_logs_validation_dice_each_epoch_without_changing_training(phantom, tmp_path, monkeypatch):
    from mixseg_lite.data.slices import SliceDataset, split_volumes
    from mixseg_lite.train.cam import CAMConfig, train_cam

    out = tmp_path / "cam_convergence_phantom.csv"
    _main(phantom, monkeypatch, "--dataset", "brain_phantom", "--curves-only", "--epochs", 2, "--out", out,
          "--runs", tmp_path / "curves")
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    # one-value grids: every row once at the paper's weights (their top is the paper's value)
    assert [r["method"] for r in rows if r["epoch"] == "1"] == phantom.SLOWEST_FIRST
    assert {r["epoch"] for r in rows} == {"1", "2"} and {r["seed"] for r in rows} == {"0"}
    for row in rows:
        assert 0 <= float(row["val_dice_3d"]) <= 1 and row["val_dice_3d_T2"] and row["val_dice_3d_FLAIR"]
        assert row["val_dice_3d_T1"] == "" and row["val_loss"] and row["val_accuracy"]
    # the per-epoch Dice changes nothing in the training itself: same losses as a plain run
    data = {k: SliceDataset(v) for k, v in split_volumes(phantom.make_volumes("brain_phantom", ("T2", "FLAIR"), 0),
                                                          phantom.TASK["split"], seed=0).items()}
    plain = train_cam(data["train"], CAMConfig(method="cam_er", epochs=2, modalities=("T2", "FLAIR"), seed=0,
                                               progress=False, **phantom.RECIPE, **phantom.PAPER), val=data["val"])
    curve = [r for r in rows if r["method"] == "cam_er"]
    for entry, row in zip(plain.log, curve):
        assert float(row["cls"]) == pytest.approx(entry["cls"], rel=1e-6)
        assert float(row["val_loss"]) == pytest.approx(entry["val_loss"], rel=1e-6)
