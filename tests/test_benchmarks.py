"""The benchmark script runs end to end on tiny settings (its numbers are not checked: timings
belong to benchmarks, not tests), and its bfloat16 Dice verdict compares means over seeds."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench.py"


def _bench_module():
    spec = importlib.util.spec_from_file_location("mixseg_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dice_row(precision: str, seed: int, teacher: float, student: float) -> dict:
    return {"label": f"Dice after training, {precision}, seed {seed}", "dice_teacher": teacher,
            "dice_student": student}


def test_bf16_dice_verdict_allows_seed_noise_but_not_a_shift():
    bench = _bench_module()
    noisy = [_dice_row("fp32", 0, 0.80, 0.70), _dice_row("fp32", 1, 0.90, 0.80),
             _dice_row("bf16 autocast", 0, 0.85, 0.72), _dice_row("bf16 autocast", 1, 0.88, 0.79)]
    summary = bench.summarize("paper", noisy)
    assert summary["dice_unchanged"] is True and summary["dice_seeds"] == 2
    assert summary["dice_fp32"]["dice_teacher"] == "0.850 ± 0.071"
    shifted = [_dice_row("fp32", s, 0.80, 0.70) for s in (0, 1)] + [
        _dice_row("bf16 autocast", s, 0.90, 0.70) for s in (0, 1)]
    summary = bench.summarize("paper", shifted)
    assert summary["dice_unchanged"] is False
    assert summary["dice_mean_abs_difference"]["dice_teacher"] == 0.1


def test_tiny_paper_versus_and_throughput_benchmarks_run(tmp_path):
    output = tmp_path / "results.json"
    # bfloat16 is emulated on CPUs without AVX512-BF16/AMX (slow even when tiny): fp32 rows only here.
    done = subprocess.run([sys.executable, str(BENCH), "--tiny", "--only", "paper,versus,throughput",
                           "--versus-precisions", "fp32", "--output", str(output), "--timeout", "600"],
                          capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    parts = json.loads(output.read_text())["parts"]
    summary = parts["paper"]["summary"]
    assert summary["bf16_speedup"] > 0 and isinstance(summary["dice_unchanged"], bool)
    assert all(row["slices_per_s"] > 0 for row in parts["throughput"]["rows"])
    versus = {row["label"]: row for row in parts["versus"]["rows"]}
    assert not any(row.get("error") for row in versus.values())
    # the authors' valid-convolution network does less arithmetic per step than ours
    assert versus["authors, BatchNorm, contiguous"]["gflop_per_step"] < versus["ours, GroupNorm, contiguous"]["gflop_per_step"]
    assert versus["authors, BatchNorm, contiguous"]["ratio_to_authors"] == 1.0
    assert parts["versus"]["summary"]["ours_default_gflops_ratio_fp32"] > 0


def test_compile_summary_gives_speedups_and_break_even_steps():
    bench = _bench_module()
    rows = [{"label": "eager", "first_step_s": 0.5, "step_ms": 200.0},
            {"label": "compiled, empty cache", "first_step_s": 60.5, "step_ms": 150.0},
            {"label": "compiled, cache filled", "first_step_s": 5.5, "step_ms": 150.0},
            {"label": "eager, again", "first_step_s": 0.5, "step_ms": 200.0}]
    summary = bench.summarize("compile", rows)
    assert summary["speedup_cold"] == summary["speedup_warm"] == 1.33
    assert summary["break_even_steps_cold"] == 1200  # 60 s more for the first step / 50 ms saved per step
    assert summary["break_even_steps_warm"] == 100
    slower = [dict(rows[0]), {**rows[1], "step_ms": 250.0}]
    assert bench.summarize("compile", slower)["break_even_steps_cold"] is None  # never pays back


def test_notebook_times_in_the_readme_and_the_guide_are_the_committed_measurement():
    """The run times and peak memory the README and the instructor's guide quote are those of
    `python benchmarks/bench.py --only notebooks` in benchmarks/results.json, not typed in."""
    rows = json.loads((ROOT / "benchmarks" / "results.json").read_text())["parts"]["notebooks"]["rows"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    guide = (ROOT / "course" / "README.md").read_text(encoding="utf-8").splitlines()
    assert {row["label"] for row in rows} == {p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.py")}
    for row in rows:
        assert row["error"] is None, row
        quoted = f"{round(row['wall_s'])} s, {row['kernel_peak_rss_mb'] / 1000:.2f} GB"
        line = next(line for line in readme if line.startswith(f"| `{row['label']}`"))
        assert line.endswith(f"| {quoted} |"), (line, quoted)
        line = next(line for line in guide if f"`{row['label']}`" in line and line.startswith("| "))
        assert f"| {round(row['wall_s'])} s |" in line, (line, row["wall_s"])
