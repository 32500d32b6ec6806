"""The lesson helpers of notebook 04: the training-log figure, the settings summary, and the
comparison of two runs (an interrupted-and-resumed one against an uninterrupted one)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from mixseg_lite.plotting import method_colour  # noqa: E402
from mixseg_lite.train import load_dataset, run_experiment  # noqa: E402
from mixseg_lite.train.experiment import (_same_value, compare_runs, plot_training_log, settings_summary,  # noqa: E402
                                          term_colour)
from mixseg_lite.train.mixed import MixedConfig  # noqa: E402

TINY = {"base_width": 4, "depth": 2, "batch_size": 4, "progress": False, "figures": False, "steps_per_epoch": 1}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cardiac():
    return load_dataset("simulated_cardiac", image_size=32, n_volumes=7, n_slices=2,
                        split={"full": 2, "weak": 2, "val": 1, "test": 2})


def _log(epochs: int = 3) -> list[dict]:
    return [{"epoch": e, "loss_sup": 2.0 / e, "loss_weak": 1.0 / e, "loss_kd": 0.5, "loss_ent": 0.01 * e,
             "share_weak": 0.7, "share_kd": 0.29, "share_ent": 0.01, "val_dice_teacher": 0.2 * e,
             "val_dice_student": 0.1 * e} for e in range(1, epochs + 1)]


def test_gradient_shares_get_their_own_panel_with_their_own_label():
    fig = plot_training_log(_log(), "kl_ent", best_epoch=3, title="kl_ent: one run")
    try:
        losses, shares, validation = fig.axes
        assert "loss" in losses.get_ylabel() and "share" not in losses.get_ylabel()
        assert "gradient share" in shares.get_ylabel() and shares.get_ylim() == pytest.approx((-0.02, 1.02))
        assert "validation Dice" in validation.get_ylabel()
        assert len(losses.lines) == 4 and len(shares.lines) == 3  # no share is drawn as a loss
        assert not any("share" in line.get_label() for line in losses.lines)
        assert all(ax.get_title() and ax.get_xlabel() == "epoch" and ax.get_legend() for ax in fig.axes)
        assert fig._suptitle.get_text() == "kl_ent: one run"
        # one colour per term in both panels, the student in its method's colour
        colour = {line.get_label(): line.get_color() for ax in (losses, shares) for line in ax.lines}
        assert colour["student: KL"] == colour["KL"] == term_colour("kd") == method_colour("kl")
        assert {line.get_label(): line.get_color() for line in validation.lines}["student"] == method_colour("kl_ent")
    finally:
        plt.close(fig)


def test_a_log_without_shares_or_validation_has_one_panel():
    log = [{"epoch": 1, "loss": 1.0, "seconds": 2.0}, {"epoch": 2, "loss": 0.5, "seconds": 2.0}]
    fig = plot_training_log(log, "cam")
    try:
        assert len(fig.axes) == 1 and [line.get_label() for line in fig.axes[0].lines] == ["loss"]
    finally:
        plt.close(fig)


def test_settings_summary_names_the_settings_that_shape_the_run(cardiac):
    config = MixedConfig(method="kl_ent", epochs=8, batch_size=2, lr=0.005)
    text = settings_summary(config, cardiac)
    assert "8 epochs x 2 steps" in text  # 4 weak slices / batch 2
    assert "lambda_kd = 10" in text and "lambda_ent = 0.1" in text and "epoch 6" in text  # ramp-up over 5
    assert "learning rate 0.005" in text and "widths 8..32" in text
    assert len(text.splitlines()) <= 10
    bounds = settings_summary(MixedConfig(method="lower_bound"))
    assert "lambda_kd" not in bounds and "lambda_w" not in bounds


def test_same_value_is_bitwise():
    assert _same_value(torch.tensor([1.0, math.nan]), torch.tensor([1.0, math.nan])) == (True, 0.0)
    same, gap = _same_value(torch.tensor([1.0]), torch.tensor([1.0 + 1e-7]))
    assert not same and 0 < gap < 1e-6
    assert _same_value(torch.zeros(2), torch.zeros(3)) == (False, math.inf)
    assert _same_value(3, 3) == (True, 0.0) and _same_value(3, 4.5) == (False, 1.5)
    assert _same_value(-math.inf, -math.inf) == (True, 0.0)


def test_resumed_run_compares_identical_and_another_seed_does_not(cardiac, tmp_path):
    straight = run_experiment(cardiac, "kl_ent", tmp_path / "straight", epochs=2, resume=False, **TINY)
    run_experiment(cardiac, "kl_ent", tmp_path / "resumed", epochs=1, resume=False, **TINY)
    resumed = run_experiment(cardiac, "kl_ent", tmp_path / "resumed", epochs=2, resume=True, **TINY)
    assert resumed.start_epoch == 1
    same = compare_runs(straight, resumed)
    assert same["log"] and same["rows"] and same["identical"] == same["values"] > 50
    assert same["max_difference"] == 0.0 and same["different"] == []
    other = run_experiment(cardiac, "kl_ent", tmp_path / "other", epochs=2, resume=False, **{**TINY, "seed": 1})
    differs = compare_runs(straight, other)
    assert not differs["log"] and differs["identical"] < differs["values"] and differs["different"]
