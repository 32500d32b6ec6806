"""Replication on fresh seeds (mixseg_lite.replicate, `mixseg-lite replicate`) on a tiny sweep."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest

from mixseg_lite.errors import InputError
from mixseg_lite.replicate import condition_keys, parse_seeds, replicate, verdict_kind
from mixseg_lite.stats import Claim, read_results

ROOT = Path(__file__).resolve().parents[1]

# Row a beats row b by 0.3 on every seed; c and b differ by a sign that flips with the seed.
TINY = '''\
# %% tags=["parameters"]
methods = ["a", "b", "c"]
recipe = "x"
seed = 0
output_dir = "outputs/tiny"

# %%
import json, pathlib
base = {"a": 0.8, "b": 0.5, "c": 0.5}
rows = [{"method": m, "dice": base[m] + 0.01 * (seed % 3) + (0.02 * (-1) ** seed if m == "c" else 0.0)}
        for m in methods]
out = pathlib.Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
(out / "metrics.json").write_text(json.dumps({"rows": rows, "params": {"seed": seed, "methods": methods}}))
'''
SWEEP = """\
name: tiny
notebook: notebooks/02_tiny.py
seeds: [0, 1, 2, 3, 4]
runs: [{recipe: x}, {recipe: y}]
"""
CLAIMS = [Claim("a > b", {"method": "a"}, {"method": "b"}), Claim("c > b", {"method": "c"}, {"method": "b"})]


def tiny_project(root: Path) -> Path:
    (root / "notebooks").mkdir(parents=True)
    (root / "notebooks" / "02_tiny.py").write_text(TINY, encoding="utf-8")
    (root / "pyproject.toml").write_text("", encoding="utf-8")
    (root / "sweep.yaml").write_text(SWEEP, encoding="utf-8")
    (root / "results").mkdir()
    with (root / "results" / "tiny.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["notebook", "seed", "recipe", "methods", "method", "dice"])
        writer.writeheader()
        for recipe in ("x", "y"):
            for seed in range(5):
                for method, base in (("a", 0.8), ("b", 0.5), ("c", 0.5)):
                    dice = base + 0.01 * (seed % 3) + (0.02 * (-1) ** seed if method == "c" else 0.0)
                    writer.writerow({"notebook": "02_tiny", "seed": seed, "recipe": recipe,
                                     "methods": json.dumps(["a", "b", "c"]), "method": method, "dice": dice})
    return root / "sweep.yaml"


def test_parse_seeds():
    assert parse_seeds("100-102,105") == [100, 101, 102, 105]
    for bad in ("1-", "a", "5-3"):
        with pytest.raises(InputError):
            parse_seeds(bad)


def test_condition_keys_leave_out_row_selectors():
    assert condition_keys({"runs": [{"recipe": "ours", "epochs": 40}, {"recipe": "ours", "methods": ["cps"]}]}) \
        == ["recipe", "epochs"]
    assert verdict_kind("not resolved at 5 seeds") == verdict_kind("not resolved at 10 seeds")


def test_replication_reruns_only_the_rows_and_conditions_its_claims_need(tmp_path):
    sweep = tiny_project(tmp_path)
    summary, replications = replicate(sweep, [100, 101, 102], CLAIMS, out=tmp_path / "fresh",
                                      only={"recipe": "x"}, verdicts=["holds"], progress=False)
    assert summary.ok and summary.total == 3  # one condition, three fresh seeds
    folders = sorted(p.parent.name for p in (tmp_path / "fresh").rglob("metrics.json"))
    assert all("recipe=x" in folder for folder in folders)
    rows = json.loads(next((tmp_path / "fresh").rglob("metrics.json")).read_text())["rows"]
    assert {row["method"] for row in rows} == {"a", "b"}  # c is needed by no claim that holds
    [replication] = replications
    assert (replication.condition, replication.claim) == ("recipe=x", "a > b")
    assert replication.committed.verdict == "holds" and replication.fresh.verdict == "holds"
    assert replication.fresh.n == 3 and replication.agrees
    assert replication.as_row()["same verdict"] == "yes"


def test_replication_refuses_committed_seeds(tmp_path):
    sweep = tiny_project(tmp_path)
    with pytest.raises(InputError, match=r"seeds \[4\] are already in the committed results"):
        replicate(sweep, [4, 100], CLAIMS, progress=False)


def test_command_line_errors_are_one_line(tmp_path, capsys):
    from mixseg_lite.cli import main

    sweep = tiny_project(tmp_path)
    assert main(["replicate", str(sweep), "--seeds", "100-101", "--only", "recipe"]) == 2
    assert "--only 'recipe': expected KEY=VALUE" in capsys.readouterr().err
    assert main(["replicate", str(sweep), "--seeds", "100-101"]) == 2
    assert "its notebook has no claim set" in capsys.readouterr().err


def test_the_report_sets_a_committed_replication_beside_its_committed_verdicts(tmp_path):
    """results/replicate_mixed_ablation_cardiac.csv (the fresh rows) is settled against the
    committed file, claim by claim; here the fresh rows are the committed ones under new seed
    numbers, so every verdict must come out the same."""
    from mixseg_lite import reproduction

    for relative in ("experiments/mixed_ablation_cardiac.yaml", "results/mixed_ablation_cardiac.csv"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes((ROOT / relative).read_bytes())
    assert reproduction.replication_section("1.6", tmp_path) == []
    rows = [{**row, "seed": int(row["seed"]) + 100} for row in read_results(tmp_path / "results" / "mixed_ablation_cardiac.csv")
            if row["recipe"] == "ours"]
    with (tmp_path / "results" / "replicate_mixed_ablation_cardiac.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    found = reproduction.replications("replicate_mixed_ablation_cardiac", tmp_path)
    assert found and all(r.committed.verdict.startswith(("holds", "no effect")) for r in found)
    assert all(r.agrees for r in found) and all(r.condition.startswith("recipe=ours, epochs=40") for r in found)
    text = "\n".join(reproduction.replication_section("1.6", tmp_path))
    assert text.startswith("### 1.6 Replication on fresh seeds")
    assert f"{len(found)} of {len(found)} claims give the same verdict on the fresh seeds; 0 contradict it; 0 are" in text
    # A fresh verdict that does not resolve is not a contradiction; one that resolves the other way is.
    committed = found[0].committed
    undecided = replace(committed, low=-1.0, high=1.0)
    assert replace(found[0], fresh=undecided).outcome == "undecided"
    assert replace(found[0], fresh=replace(committed, mean=-0.5, low=-0.6, high=-0.4)).outcome == "contradicts"
    assert replace(found[0], fresh=None).outcome == "-"
    assert "| student > teacher (KL+Ent) | dice |" in text
