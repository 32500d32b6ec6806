"""The mixed-supervision training loop: every ablation row runs, seeding, resume, bad input."""

import pytest
import torch

from mixseg_lite import InputError
from mixseg_lite.data.cardiac_sim import make_cardiac_volumes
from mixseg_lite.data.slices import split_volumes
from mixseg_lite.train import METHODS, MixedConfig, evaluate_mixed, run_mixed_ablation, train_mixed

TINY = dict(epochs=2, steps_per_epoch=2, batch_size=2, base_width=4, depth=2, progress=False)


@pytest.fixture(scope="module")
def splits():
    volumes = make_cardiac_volumes(6, n_slices=3, size=32, seed=0)
    return split_volumes(volumes, {"full": 1, "weak": 3, "val": 1, "test": 1}, seed=0)


def test_every_ablation_row_trains_and_reports_its_branches(splits):
    rows, results = run_mixed_ablation(list(METHODS), splits["full"], splits["weak"], splits["test"],
                                       MixedConfig(**TINY), val=splits["val"])
    for method, result in results.items():
        assert len(result.log) == 2
        assert all(torch.isfinite(torch.tensor(v)) for r in result.log for v in r.values())
        expected = ("teacher",) if method in ("lower_bound", "upper_bound", "mean_teacher", "cps") else ("teacher", "student")
        assert result.branches == expected
    assert {(r["method"], r["branch"]) for r in rows} == {(m, b) for m, r in results.items() for b in r.branches}
    assert all(0.0 <= r["dice"] <= 1.0 and r["hd95_mm"] >= 0 for r in rows)
    assert set(results["kl_ent"].log[0]) >= {"loss_sup", "loss_weak", "loss_kd", "loss_ent", "val_dice_student"}
    assert "loss_pseudo" in results["pseudo"].log[0] and "loss_ent" not in results["pseudo"].log[0]


def test_same_seed_same_model(splits):
    a = train_mixed(splits["full"], splits["weak"], config=MixedConfig(**TINY))
    b = train_mixed(splits["full"], splits["weak"], config=MixedConfig(**TINY))
    assert a.log == b.log
    for (name, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(pa, pb), name


def straight_and_resumed(splits, config, checkpoint, stop_after: int):
    """The same run twice: uninterrupted, and stopped after ``stop_after`` epochs then resumed."""
    straight = train_mixed(splits["full"], splits["weak"], splits["val"], config)
    train_mixed(splits["full"], splits["weak"], splits["val"], config, checkpoint=checkpoint, epochs=stop_after)
    resumed = train_mixed(splits["full"], splits["weak"], splits["val"], config, checkpoint=checkpoint, resume=True)
    return straight, resumed


def test_resume_equals_uninterrupted_run(splits, tmp_path):
    straight, resumed = straight_and_resumed(splits, MixedConfig(**{**TINY, "epochs": 4}), tmp_path / "run.pt", 2)
    assert resumed.log == straight.log
    for (name, pa), pb in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(pa, pb), name
    # the selected epoch and the last epoch's weights survive the interruption too
    assert resumed.best_epoch == straight.best_epoch
    assert all(torch.equal(a, b) for a, b in zip(straight.last_state.values(), resumed.last_state.values()))


def test_corrupt_checkpoint_is_a_clear_error(splits, tmp_path):
    checkpoint = tmp_path / "broken.pt"
    checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="broken.pt: cannot read checkpoint"):
        train_mixed(splits["full"], splits["weak"], config=MixedConfig(**TINY), checkpoint=checkpoint, resume=True)


def test_bad_arguments(splits):
    with pytest.raises(InputError, match="unknown method"):
        MixedConfig(method="magic")
    with pytest.raises(InputError, match="empty"):
        train_mixed([], splits["weak"], config=MixedConfig(**TINY))
    with pytest.raises(InputError, match="needs weakly labelled"):
        train_mixed(splits["full"], [], config=MixedConfig(**TINY))


def test_best_validation_epoch_is_returned(splits):
    result = train_mixed(splits["full"], splits["weak"], splits["val"], MixedConfig(**{**TINY, "epochs": 3}))
    rows = evaluate_mixed(result, splits["val"])
    best = max(r["val_dice_student"] for r in result.log)
    assert rows[1]["dice"] == pytest.approx(best)


def test_checkpoints_load_with_weights_only_and_keep_the_loss_scaler(tmp_path):
    from mixseg_lite.train.mixed import _load_checkpoint, _save_checkpoint
    from mixseg_lite.models import DualBranchUNet

    class Scaler:  # GradScaler is disabled without CUDA; its state is a dict of numbers
        def state_dict(self):
            return {"scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                    "_growth_tracker": 7}

    model = DualBranchUNet(1, 2, 4, 2, "group")
    optimiser = torch.optim.AdamW(model.parameters())
    path = tmp_path / "last.pt"
    _save_checkpoint(path, model, optimiser, [{"epoch": 1, "loss_sup": 0.5}], 1, 3, 4, 0.7,
                     {k: v.clone() for k, v in model.state_dict().items()}, 0, Scaler())
    state = _load_checkpoint(path, torch.device("cpu"))  # torch.load(..., weights_only=True) inside
    assert state["scaler"]["scale"] == 1024.0 and state["scaler"]["_growth_tracker"] == 7
    assert state["best_epoch"] == 0 and state["full_cursor"] == 3


def test_last_epoch_and_gradient_shares_are_reported(splits):
    result = train_mixed(splits["full"], splits["weak"], splits["val"],
                         MixedConfig(**{**TINY, "epochs": 3, "method": "kl_ent"}))
    best = max(range(3), key=lambda i: result.log[i]["val_dice_student"]) + 1
    assert result.best_epoch == best
    for record in result.log:  # partial CE, KL and entropy share the pull on the student logits
        assert set(k for k in record if k.startswith("share_")) == {"share_weak", "share_kd", "share_ent"}
        assert sum(record[k] for k in ("share_weak", "share_kd", "share_ent")) == pytest.approx(1.0)
    teacher, student = evaluate_mixed(result, splits["val"])
    assert student["best_epoch"] == best and "share_kd" in student and "share_kd" not in teacher
    assert student["dice"] == pytest.approx(result.log[best - 1]["val_dice_student"])
    assert student["dice_last"] == pytest.approx(result.log[-1]["val_dice_student"])
    # evaluating the last epoch's weights leaves the returned (best) model as it was
    assert evaluate_mixed(result, splits["val"])[1]["dice"] == student["dice"]


@pytest.mark.parametrize("method", ["mean_teacher", "cps"])
def test_semi_supervised_rows_resume_exactly(splits, tmp_path, method):
    config = MixedConfig(**{**TINY, "epochs": 3, "method": method})
    straight, resumed = straight_and_resumed(splits, config, tmp_path / "run.pt", 1)
    assert straight.branches == ("teacher",)
    expected = {"mean_teacher": {"loss_sup", "loss_cons"}, "cps": {"loss_sup", "loss_sup_b", "loss_cps"}}[method]
    assert {k for k in straight.log[0] if k.startswith("loss_")} == expected
    assert resumed.log == straight.log  # the EMA network / CPS partner is restored too
    assert all(torch.equal(a, b) for a, b in zip(straight.last_state.values(), resumed.last_state.values()))


def test_semi_supervised_rows_ignore_the_weak_labels(splits):
    import dataclasses

    unlabelled = [dataclasses.replace(v, label=v.label * 0) for v in splits["weak"]]
    for method in ("mean_teacher", "cps"):
        config = MixedConfig(**{**TINY, "method": method})
        with_labels = train_mixed(splits["full"], splits["weak"], config=config)
        without = train_mixed(splits["full"], unlabelled, config=config)
        assert with_labels.log == without.log, method


def test_semi_supervised_weight_defaults_and_checks(splits):
    import dataclasses

    from mixseg_lite.train.mixed import SEMI_DEFAULT_WEIGHT

    assert MixedConfig(method="mean_teacher").semi_weight == SEMI_DEFAULT_WEIGHT["mean_teacher"]
    assert MixedConfig(method="kl").semi_weight == 0.0
    # one config for every row of an ablation: the default follows the row, not the config's first method
    shared = MixedConfig(method="kl_ent")
    for method in ("mean_teacher", "cps"):
        assert dataclasses.replace(shared, method=method).semi_weight == SEMI_DEFAULT_WEIGHT[method]
    assert dataclasses.replace(shared, method="cps", lambda_semi=0.5).semi_weight == 0.5
    with pytest.raises(InputError, match="lambda_semi must be >= 0"):
        MixedConfig(method="cps", lambda_semi=-1.0)
    with pytest.raises(InputError, match="needs weakly labelled"):
        train_mixed(splits["full"], [], config=MixedConfig(**{**TINY, "method": "cps"}))


def test_an_ablation_trains_each_semi_supervised_row_with_its_own_loss(splits):
    rows, results = run_mixed_ablation(["lower_bound", "mean_teacher", "cps"], splits["full"], splits["weak"],
                                       splits["test"], MixedConfig(**TINY))
    assert results["mean_teacher"].log[-1]["loss_cons"] > 0 and results["cps"].log[-1]["loss_cps"] > 0
    assert results["mean_teacher"].log != results["cps"].log


def test_recipe_gradient_shares_match_the_shares_the_training_log_records(splits):
    # The first step of a run measures the shares on the initial network with the first batches;
    # GroupNorm behaves the same in train and eval mode, so the helper must give the same numbers.
    from mixseg_lite.train.mixed import recipe_gradient_shares

    config = MixedConfig(**{**TINY, "epochs": 1, "ramp_up_epochs": 0})
    logged = train_mixed(splits["full"], splits["weak"], config=config).log[0]
    initial = train_mixed(splits["full"], splits["weak"], config=config, epochs=0).model
    shares = recipe_gradient_shares(initial, splits["full"], splits["weak"], "ours", batch_size=2, batches=1,
                                    ramp_up_epochs=0)
    assert set(shares) == {"weak", "kd", "ent"}
    for term, share in shares.items():
        assert share == pytest.approx(logged[f"share_{term}"], rel=1e-6)


def test_recipe_gradient_shares_compare_recipes_on_one_untouched_network(splits):
    from mixseg_lite.train.mixed import recipe_gradient_shares

    model = train_mixed(splits["full"], splits["weak"], config=MixedConfig(**TINY)).model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    by_recipe = {recipe: recipe_gradient_shares(model, splits["full"], splits["weak"], recipe, batch_size=2)
                 for recipe in ("ours", "authors_defaults", "authors")}
    for shares in by_recipe.values():
        assert set(shares) == {"weak", "kd", "ent"} and sum(shares.values()) == pytest.approx(1.0)
    assert model.training
    assert all((g is None and p.grad is None) or torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # the same network and images: a heavier entropy weight takes a larger share of the pull
    heavier = recipe_gradient_shares(model, splits["full"], splits["weak"], "ours", batch_size=2, lambda_ent=10.0)
    assert heavier["ent"] > by_recipe["ours"]["ent"]
    assert set(recipe_gradient_shares(model, splits["full"], splits["weak"], "ours", method="kl")) == {"weak", "kd"}
    with pytest.raises(InputError, match="does not train the student"):
        recipe_gradient_shares(model, splits["full"], splits["weak"], "ours", method="lower_bound")
    with pytest.raises(InputError, match="batches must be an integer >= 1"):
        recipe_gradient_shares(model, splits["full"], splits["weak"], "ours", batches=0)


def test_compile_decision_is_recorded_and_a_failing_compiler_falls_back_to_eager(splits, monkeypatch):
    from mixseg_lite import hardware

    result = train_mixed(splits["full"], splits["weak"], config=MixedConfig(**TINY))
    assert result.speed["compile"] is False and "4 steps" in result.speed["compile_reason"]
    # a platform where compilation fails: the automatic choice trains eagerly and says why
    monkeypatch.setattr(hardware, "choose_compile", lambda device, steps, key="model": (True, "test"))

    def broken_compile(model, *args, **kwargs):
        def fail(*a, **k):
            raise RuntimeError("no backend here")
        return fail

    monkeypatch.setattr(torch, "compile", broken_compile)
    result = train_mixed(splits["full"], splits["weak"], config=MixedConfig(**TINY))
    assert result.speed["compile"] is False
    assert "torch.compile failed here (RuntimeError: no backend here)" in result.speed["compile_reason"]
    eager = train_mixed(splits["full"], splits["weak"], config=MixedConfig(**TINY, compile=False))
    assert result.log == eager.log  # the trial on a copy changed nothing
    with pytest.raises(RuntimeError, match="no backend here"):  # asked for explicitly: not hidden
        train_mixed(splits["full"], splits["weak"], config=MixedConfig(**TINY, compile=True))


def test_an_ablation_counts_the_steps_of_all_its_student_rows_for_the_compile_decision(splits, monkeypatch):
    from mixseg_lite import hardware

    asked = []
    monkeypatch.setattr(hardware, "choose_compile",
                        lambda device, steps, key="model": asked.append(steps) or (False, "test"))
    run_mixed_ablation(["lower_bound", "kl", "kl_ent", "mean_teacher"], splits["full"], splits["weak"],
                       splits["test"], MixedConfig(**TINY))
    assert asked == [2 * 4] * 4  # two rows step through the dual-branch forward, 4 steps each


@pytest.mark.skipif(not __import__("shutil").which("g++") and not __import__("shutil").which("c++"),
                    reason="torch.compile builds its CPU kernels with a C++ compiler")
def test_compiled_training_matches_eager_training(splits):
    eager = train_mixed(splits["full"], splits["weak"], config=MixedConfig(**TINY, method="kl", compile=False))
    compiled = train_mixed(splits["full"], splits["weak"], config=MixedConfig(**TINY, method="kl", compile=True))
    assert compiled.speed["compile"] is True and eager.speed["compile"] is False
    for a, b in zip(eager.log, compiled.log):
        assert a.keys() == b.keys()
        for key in a:  # the same arithmetic in another order: float32 rounding only
            assert abs(a[key] - b[key]) <= 1e-3 * max(1.0, abs(a[key])), key
