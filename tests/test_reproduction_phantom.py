"""The report's CAM sections for the brain phantom (issue 24): absent while its files are not
committed, complete once they are (verdicts beside the procedural brains', the flat-CAM rule, the
budget curves, the fallback choices), each file with its provenance in results/sweeps.yaml."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from mixseg_lite import reproduction
from mixseg_lite.errors import InputError
from mixseg_lite.stats import read_results

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A copy of the project whose phantom files are stand-ins built from the procedural brain's:
    the same rows plus flat-CAM fractions (one network flat on 90 % of its positive slices)."""
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(ROOT / "results", root / "results", ignore=shutil.ignore_patterns("*phantom*.csv"))
    shutil.copytree(ROOT / "experiments", root / "experiments", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (root / "docs").mkdir()
    for relative in (reproduction.README, reproduction.REPORT):
        shutil.copyfile(ROOT / relative, root / relative)
    assert reproduction.phantom_section(root) == [] and "phantom" not in reproduction.cam_summary(root)
    rows = read_results(root / "results" / "cam_ablation_brain.csv")
    for row in rows:
        cam = row["method"] not in ("empty", "supervised")
        row["flat_cam_fraction"] = "0.0" if cam else ""
        row["train_predicted_positive"] = "40" if cam else ""
    flat = next(r for r in rows if r["method"] == "cam_er" and r["chosen"] == "False")
    flat["flat_cam_fraction"] = "0.9"
    _write(root / "results" / "cam_ablation_phantom.csv", rows)
    shutil.copyfile(root / "results" / "cam_ablation_brain_curves.csv", root / "results" / "cam_ablation_phantom_curves.csv")
    curve = [{"pairing": "T2+FLAIR", "method": "cam", "run": "T2+FLAIR_cam_epochs=6_seed0", "seed": 0, "er_weight": "",
              "cmer_weight": "", "kl_weight": "", "supervised_class_balance": "", "epoch": e, "val_loss": 1.0 / e,
              "val_accuracy": min(0.9, 0.5 + 0.1 * e), "val_dice_3d": min(0.4, 0.1 * e)} for e in range(1, 7)]
    _write(root / "results" / "cam_convergence_phantom.csv", curve)
    return root


def test_every_phantom_file_has_its_provenance(root):
    files = reproduction.sweeps(root)["files"]
    for name in ("cam_convergence_phantom", "cam_budget_check_phantom", "cam_ablation_phantom",
                 "cam_ablation_phantom_curves"):
        entry = files[name]
        assert entry["what"] and entry["recorded"] and "TODO" not in str(entry["recorded"])
        assert any("--dataset brain_phantom" in command for command in entry["commands"])
    (root / "results" / "cam_extra_phantom.csv").write_text("pairing\nT1+T2\n", encoding="utf-8")
    try:
        with pytest.raises(InputError, match="no entry for results/cam_extra_phantom.csv"):
            reproduction.sweeps(root)
    finally:
        (root / "results" / "cam_extra_phantom.csv").unlink()


def test_the_report_shows_the_phantom_verdicts_beside_the_procedural_ones(root):
    summary = reproduction.cam_summary(root)
    assert "| T1 (T1+T2) | T2 (T1+T2) | T2 (T2+FLAIR) | FLAIR (T2+FLAIR) | T1 (T1+T2, phantom) |" in summary
    text = reproduction.report_markdown(root)
    for title in ("how long to train", "choosing the weights on validation data", "had training flattened?",
                  "the ablation at the chosen weights"):
        assert f"Brain phantom: {title}" in text
    assert text.index("### 2.3 ") < text.index("### 2.4 Brain phantom") < text.index("## 3. Where")
    assert "networks with flat CAMs on > 0.5 of their positive slices" in text and "(0.90)" in text
    assert "| T2+FLAIR | cam | - | 6 | 4 | 0.400 | 0.400 | 6 | 6 |" in text  # the budget curve's row
    for comparison in reproduction.phantom_cam_comparisons(root):
        for difference in comparison.settle(root):
            assert f"| {difference.claim} | {difference.metric} |" in text
    reproduction.write_documents(root)
    assert reproduction.stale_documents(root) == []


def _curve(run: str, epochs: int, dice_end: float, accuracy_end: float) -> list[dict]:
    pairing, method = run.split("_")[0], "cam"
    return [{"pairing": pairing, "method": method, "run": run.replace("_seed", f"_epochs={epochs}_seed"), "seed": 0,
             "er_weight": "", "cmer_weight": "", "kl_weight": "", "supervised_class_balance": "", "epoch": e,
             "val_accuracy": accuracy_end if e > epochs - 3 else 0.5, "val_dice_3d": dice_end if e > epochs - 3 else 0.0}
            for e in range(1, epochs + 1)]


def test_the_budget_check_compares_the_ends_of_the_short_and_long_runs(tmp_path):
    (tmp_path / "results").mkdir()
    runs = [f"T{i}+T2_cam_seed0" for i in range(5)]
    long = [row for i, run in enumerate(runs) for row in _curve(run, 10, 0.40 + 0.01 * i, 0.90)]
    _write(tmp_path / "results" / f"{reproduction.PHANTOM_CONVERGENCE}.csv", long)
    # the short runs end at the same Dice give or take 0.01 (mean 0), and 0.02 lower in tag accuracy
    short = [row for i, run in enumerate(runs) for row in _curve(run, 6, 0.40 + 0.01 * i + (-0.01, 0.01)[i % 2] * (i < 4),
                                                                 0.88)]
    _write(tmp_path / "results" / f"{reproduction.PHANTOM_BUDGET_CHECK}.csv", short)
    table, summary = reproduction.cam_budget_check(tmp_path)
    assert table.count("\n") == 2 + 5 - 1 and "| T0+T2 | cam | - | 6 | 0.390 | 10 | 0.400 | -0.010 | 0.880 | 0.900 | -0.020 |" in table
    assert summary[0].startswith("validation 3-D Dice: short - long +0.000 [") and "over 5 rows (2 lower, 3 not)" in summary[0]
    assert summary[1].startswith("validation tag accuracy: short - long -0.020 [-0.020, -0.020]")
    assert summary[2] == ("Verdict: the 6-epoch ends are not systematically below the long runs' in validation Dice "
                          "(the interval holds 0), so the sweep may train for that budget.")
    _write(tmp_path / "results" / f"{reproduction.PHANTOM_BUDGET_CHECK}.csv",
           [row for i, run in enumerate(runs) for row in _curve(run, 6, 0.30 + 0.01 * i + 0.001 * (i % 2), 0.88)])
    assert reproduction.cam_budget_check(tmp_path)[1][2].endswith("that budget is too short.")


def test_a_fallback_choice_is_named_and_the_claims_resting_on_it_are_marked(root, tmp_path):
    """When no weight of a stage is admissible the sweep takes the best validation Dice anyway; the
    report must say so, and mark every claim whose rows were trained at or after that stage."""
    for folder in ("results", "docs", "experiments"):
        shutil.copytree(root / folder, tmp_path / folder)
    for relative in (reproduction.README,):
        shutil.copyfile(root / relative, tmp_path / relative)
    path = tmp_path / "results" / "cam_ablation_phantom.csv"
    rows = read_results(path)
    assert reproduction.cam_fallbacks("T2+FLAIR", tmp_path, reproduction.PHANTOM_FILE) == []
    # the chosen ER weight of T2 (T2 + FLAIR): seed 1's network answers the majority tag
    failing = next(r for r in rows if r["pairing"] == "T2+FLAIR" and r["method"] == "cam_er" and r["modality"] == "T2"
                   and r["chosen"] == "True" and r["seed"] == "1")
    failing["train_accuracy"] = failing["train_majority"]
    _write(path, rows)
    fallbacks = reproduction.cam_fallbacks("T2+FLAIR", tmp_path, reproduction.PHANTOM_FILE)
    assert [(w.method, w.modality, w.not_learnt) for w in fallbacks] == [("cam_er", "T2", ["seed 1"])]
    claims = {c.name: reproduction.rests_on_fallback(c, fallbacks)
              for c in reproduction.phantom_cam_comparisons(tmp_path)[1].claims if c.metric == "dice_3d"}
    assert claims == {f"T2+FLAIR {m}: {step}": m == "T2" for m in ("T2", "FLAIR")
                      for step in ("ER > CAM", "ER+CMER > ER", "method > ER+CMER", "method > CAM")}
    text = reproduction.report_markdown(tmp_path)
    assert "**No admissible weight for the ER weight of T2.** Every weight tried let some network fail, so the sweep took the one with the best validation Dice, 100, where: T2 tags not learnt: seed 1." in text
    assert "These claims compare rows trained at a weight chosen without an admissible alternative" in text
    summary = reproduction.cam_summary(tmp_path)
    assert summary.count(" †") == 4 and "† rests on a weight chosen by validation Dice alone" in summary
    # the procedural brains' columns are never marked: their file has no fallback
    assert all(reproduction.cam_fallbacks("+".join(p), tmp_path) == [] for p in reproduction.CAM_PAIRINGS)
