"""The documents generated from results/: docs/reproduction.md, results/README.md and the README's
verdict table (mixseg_lite.reproduction, `mixseg-lite report` without a run folder)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from mixseg_lite import reproduction
from mixseg_lite.cli import main
from mixseg_lite.errors import InputError
from mixseg_lite.stats import read_results

ROOT = Path(__file__).resolve().parents[1]


def test_generated_documents_are_in_sync_with_results():
    stale = reproduction.stale_documents()
    assert not stale, f"out of sync with results/: {[str(p) for p in stale]}; run `mixseg-lite report`"


def copy_of_the_project(tmp_path: Path) -> Path:
    """What the documents are written from: results/, the sweep files (a replication reads the
    conditions of its sweep) and the documents themselves."""
    shutil.copytree(ROOT / "results", tmp_path / "results")
    shutil.copytree(ROOT / "experiments", tmp_path / "experiments", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (tmp_path / "docs").mkdir()
    for relative in (reproduction.README, reproduction.REPORT):
        shutil.copyfile(ROOT / relative, tmp_path / relative)
    return tmp_path


def write_rows(path: Path, rows: list[dict]) -> None:
    """``rows`` as a results CSV at ``path`` (columns: the first row's keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_a_changed_result_makes_the_documents_stale_and_report_rewrites_them(tmp_path):
    root = copy_of_the_project(tmp_path)
    path = root / "results" / "mixed_ablation_cardiac.csv"
    rows = read_results(path)
    row = next(r for r in rows if r["method"] == "kl_ent" and r["branch"] == "student" and r["recipe"] == "ours")
    row["dice"] = "0.5"
    write_rows(path, rows)
    assert {p.relative_to(root) for p in reproduction.stale_documents(root)} >= {reproduction.REPORT,
                                                                               reproduction.README}
    reproduction.write_documents(root)
    assert reproduction.stale_documents(root) == []


def test_report_check_exits_1_when_stale(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(reproduction, "stale_documents", lambda root=ROOT: [Path("docs/reproduction.md")])
    assert main(["report", "--check"]) == 1
    assert "docs/reproduction.md" in capsys.readouterr().err
    monkeypatch.setattr(reproduction, "stale_documents", lambda root=ROOT: [])
    assert main(["report", "--check"]) == 0


def test_every_results_file_needs_its_provenance(tmp_path):
    root = copy_of_the_project(tmp_path)
    shutil.copyfile(root / "results" / "teaching_profiles.csv", root / "results" / "unexplained.csv")
    with pytest.raises(InputError, match="unexplained.csv"):
        reproduction.sweeps(root)


def test_the_readme_needs_its_generated_block(tmp_path):
    root = copy_of_the_project(tmp_path)
    (root / "README.md").write_text("# a README without the block\n", encoding="utf-8")
    with pytest.raises(InputError, match="README.md: no generated verdict block"):
        reproduction.documents(root)


def test_the_report_settles_every_claim_of_every_comparison():
    text = (ROOT / reproduction.REPORT).read_text(encoding="utf-8")
    for comparison in [*reproduction.MIXED_COMPARISONS, *reproduction.CAM_COMPARISONS, reproduction.BALANCE]:
        for difference in comparison.settle():
            assert f"| {difference.claim} | {difference.metric} |" in text
            if not difference.resolved:
                assert difference.seeds_to_decide() is not None
    assert "no effect within ±0.02" in text  # the balance sweep has one


def test_the_readme_is_a_front_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 200
    for needed in ("make demo", "make test", "docs/reproduction.md", "docs/glossary.md", "arXiv:2109.10902",
                   "arXiv:2104.02488", reproduction.README_BEGIN):
        assert needed in readme


def test_the_compile_section_appears_with_its_file_and_settles_compiled_against_eager(tmp_path):
    from mixseg_lite import reproduction

    (tmp_path / "results").mkdir()
    assert reproduction.compile_section(tmp_path) == []
    rows = [{"mode": mode, "seed": seed, "method": "kl", "branch": "student",
             "dice": 0.80 + 0.01 * seed + (0.002 * (-1) ** seed if mode == "compiled" else 0.0), "hd95_mm": 5.0,
             "train_seconds": 60.0 if mode == "eager" else 45.0}
            for seed in range(5) for mode in ("eager", "compiled")]
    write_rows(tmp_path / "results" / "compile_check_cardiac.csv", rows)
    text = "\n".join(reproduction.compile_section(tmp_path))
    assert "1.5 Does torch.compile change a result?" in text
    assert "compiled > eager (student)" in text and "no effect within ±0.02" in text


def test_the_authors_command_takes_the_authors_column_once_committed_and_is_paired_with_the_defaults(tmp_path):
    root = copy_of_the_project(tmp_path)
    path = root / "results" / "mixed_ablation_cardiac.csv"
    rows = read_results(path)
    if any(r["recipe"] == "authors" for r in rows):  # committed already: drop them to see the switch
        rows = [r for r in rows if r["recipe"] != "authors"]
        write_rows(path, rows)
    keys = [c.key for c in reproduction.summary_comparisons(root)]
    assert "cardiac, authors' defaults" in keys and "cardiac, authors' command" not in keys
    assert not any("cardiac" in line for line in reproduction.recipe_change_section(root) if line.startswith("####"))
    # the command's rows: the defaults' rows relabelled, KL+Ent's student 0.05 better on every seed
    command = []
    for row in rows:
        if row["recipe"] == "authors_defaults":
            row = {**row, "recipe": "authors"}
            if row["method"] == "kl_ent" and row["branch"] == "student":
                row["dice"] = str(float(row["dice"]) + 0.05)
            command.append(row)
    with path.open("a", newline="") as handle:
        csv.DictWriter(handle, fieldnames=list(rows[0])).writerows(command)
    keys = [c.key for c in reproduction.summary_comparisons(root)]
    assert "cardiac, authors' command" in keys and "cardiac, authors' defaults" not in keys
    assert keys.index("cardiac, authors' command") == keys.index("cardiac, ours") + 1
    section = "\n".join(reproduction.recipe_change_section(root))
    assert "##### Default simulated cardiac task" in section
    assert "| command > defaults: KL+Ent | dice | 5 |" in section and "+0.050" in section
    assert "| command > defaults: KL | dice | 5 |" in section
    report = reproduction.report_markdown(root)
    assert "Default simulated cardiac task, the authors' documented command" in report
    assert "Default simulated cardiac task, the authors' script at its argparse defaults" in report


def test_collapse_epoch_finds_where_a_learnt_structure_is_lost():
    assert reproduction.collapse_epoch([0.1, 0.6, 0.8, 0.7, 0.75, 0.72]) is None  # keeps most of its best
    assert reproduction.collapse_epoch([0.1, 0.8, 0.7, 0.3, 0.1, 0.05]) == 5  # running mean < 0.4 at epoch 5
    assert reproduction.collapse_epoch([0.9, 0.1, 0.1, 0.1]) == 2  # right after the best
    assert reproduction.collapse_epoch([]) is None


def test_the_lv_learning_rate_section_appears_with_its_curves_and_states_what_they_show(tmp_path):
    (tmp_path / "results").mkdir()
    assert reproduction.lv_learning_rate_section(tmp_path) == []
    rows = [{"recipe": "authors", "lr": 1e-4, "method": method, "seed": 0, "epoch": epoch + 1, "val_dice": value,
             "val_dice_teacher": 0.5 if method == "kl" else value, "val_dice_student": "" if method == "lower_bound" else value}
            for method, values in (("lower_bound", [0.2, 0.5, 0.7, 0.7]), ("kl", [0.3, 0.8, 0.2, 0.1]),
                                   ("kl_ent", [0.3, 0.6, 0.7, 0.68]))
            for epoch, value in enumerate(values)]
    write_rows(tmp_path / "results" / f"{reproduction.LV_CONVERGENCE}.csv", rows)
    text = "\n".join(reproduction.lv_learning_rate_section(tmp_path))
    assert "| authors | 0.0001 | kl | student | 0 | 4 | 2 | 0.800 | 0.100 |" in text
    assert "kl student (seed 0) peaks at epoch 2 (0.800) and falls below half of it at epoch 3 (0.100 at epoch 4)" in text
    assert "kl teacher (seed 0) peaks at epoch 1 (0.500) and keeps at least half of it to epoch 4 (0.500)" in text
    assert "kl_ent student (seed 0) peaks at epoch 3 (0.700) and keeps at least half of it to epoch 4 (0.680)" in text
    assert "lower_bound teacher (seed 0)" in text and "lower_bound student" not in text


def test_the_lv_rows_at_lr_1e4_are_settled_apart_from_lr_1e3_and_paired_with_them(tmp_path):
    (tmp_path / "results").mkdir()
    rows = [{"recipe": "authors", "learning_rate": lr, "epochs": 60 if lr == "0.001" else 350, "seed": seed,
             "method": method, "branch": branch, "dice": dice + shift + 0.01 * seed, "dice_last": last, "hd95_mm": 5.0,
             "best_epoch": 3 + seed}
            for lr, shift in (("0.001", 0.0), ("0.0001", 0.1)) for seed in range(5)
            for method, branch, dice, last in (("lower_bound", "teacher", 0.7, 0.65), ("kl", "student", 0.3, 0.05),
                                               ("kl", "teacher", 0.4, 0.3), ("kl_ent", "student", 0.3, 0.2),
                                               ("kl_ent", "teacher", 0.4, 0.3))]
    write_rows(tmp_path / "results" / f"{reproduction.LV_SWEEP}.csv", rows)
    text = "\n".join(reproduction.lv_learning_rate_section(tmp_path))
    assert "rows with recipe = authors, learning_rate = 0.0001" in text
    assert "| 0.0001 | KL student | 350 | 5 | 5 (3-7) | 0.420 | 0.050 | 5/5 |" in text
    assert "| 0.001 | KL student | 60 | 5 | 5 (3-7) | 0.320 | 0.050 | 5/5 |" in text
    assert "| 0.0001 | lower bound | 350 | 5 | 5 (3-7) | 0.820 | 0.650 | 0/5 |" in text
    assert "| lr 1e-4 > lr 1e-3: KL student | dice | 5 |" in text and "+0.100" in text
    assert "| lr 1e-4 > lr 1e-3: KL student, last epoch | dice_last | 5 |" in text
    assert "The curves of seed 0" not in text  # no curves committed here
    assert ("**Answer** (5 seeds): at lr 1e-4 the KL and KL + Ent students reach 0.420 and 0.420 at their best "
            "validation epoch (5 and 5 of 350 on average), against 0.820 for the lower bound") in text
    assert "the failure does not go away, and their best epoch does not come later." in text
    # the 1e-3 comparison of report 1.2 keeps its own rows only
    command = next(c for c in reproduction.MIXED_COMPARISONS if c.key == "binary LV, authors' command")
    assert {r["learning_rate"] for r in command.rows(tmp_path)} == {"0.001"} and len(command.rows(tmp_path)) == 25
