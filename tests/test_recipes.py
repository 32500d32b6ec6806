"""The two recipes of mixed supervision: ours, and the authors' script (REFERENCE A.1) as a preset.

The authors' expressions are transcribed here literally from main.py (commit 68b98c2 of
josedolz/MSL-student-becomes-master) and compared with the library on random tensors.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
import torch.nn.functional as F
from torch import nn

from mixseg_lite import UNLABELLED, InputError
from mixseg_lite.data.cardiac_sim import make_cardiac_volumes
from mixseg_lite.data.slices import split_volumes
from mixseg_lite.losses.mixed import authors_entropy, authors_kl_distillation, kl_distillation
from mixseg_lite.train.mixed import RECIPES, MixedConfig, mixed_objective, train_mixed

AUTHORS = {"lambda_kd": 50.0, "weak_batch_multiple": 5, "temperature": 2.0, "kd_on": "full", "detach_teacher": False, "kd_form": "authors",
           "lambda_ent": 1.0, "entropy_on": "all", "ramp_up_epochs": 0, "lambda_w": 0.1, "dice_weight": 0.0,
           "class_balance": 0.0, "optimizer": "adam", "lr": 1e-4, "betas": (0.9, 0.99), "norm": "batch"}


def script_kl(z_teacher, z_student, T=2.0):
    """main.py l.266-269, with predClass_y = softMax(segmentation_prediction)."""
    predClass_yF, predClass_yFW = F.softmax(z_teacher, dim=1), F.softmax(z_student, dim=1)
    alpha = 0.5
    return nn.KLDivLoss()(F.log_softmax(predClass_yF / T, dim=1), F.softmax(predClass_yFW / T, dim=1)) * (alpha * T * T)


class HLoss(nn.Module):
    """main.py l.51-58."""

    def forward(self, x):
        b = F.softmax(x, dim=1) * F.log_softmax(x, dim=1)
        return -1.0 * b.mean()


def test_authors_recipe_has_the_script_values():
    config = MixedConfig(recipe="authors")
    for name, value in AUTHORS.items():
        assert getattr(config, name) == value, name
    assert config.duplicate_full_batch and config.weak_loss == "per_set" and config.init == "xavier"


def test_the_authors_recipe_is_their_documented_command_and_the_defaults_stay_reachable():
    # README of commit 68b98c2: --xtimes_weak 5 --weight_KL 50; argparse defaults: 1 and 20.
    command, defaults = MixedConfig(recipe="authors"), MixedConfig(recipe="authors_defaults")
    assert (command.lambda_kd, command.weak_batch_multiple) == (50.0, 5)
    assert (defaults.lambda_kd, defaults.weak_batch_multiple) == (20.0, 1)
    assert {k: v for k, v in RECIPES["authors"].items() if k not in ("lambda_kd", "weak_batch_multiple")} \
        == {k: v for k, v in RECIPES["authors_defaults"].items() if k not in ("lambda_kd", "weak_batch_multiple")}
    assert MixedConfig(recipe="authors", weak_batch_multiple=1, lambda_kd=20.0).lambda_kd == 20.0
    with pytest.raises(InputError, match="weak_batch_multiple"):
        MixedConfig(weak_batch_multiple=0)


def test_a_step_of_the_authors_recipe_sees_a_weak_batch_five_times_the_full_one(monkeypatch):
    import mixseg_lite.train.mixed as mixed

    volumes = make_cardiac_volumes(6, n_slices=3, size=32, seed=0)
    splits = split_volumes(volumes, {"full": 1, "weak": 4, "val": 1}, seed=0)  # 12 D_w slices >= 10
    drawn = []
    real = mixed.index_batches

    def spy(n, batch_size, generator, skip=0):
        drawn.append(batch_size)
        return real(n, batch_size, generator, skip)

    monkeypatch.setattr(mixed, "index_batches", spy)
    seen = []
    real_forward = mixed.DualBranchUNet.forward

    def forward_spy(self, x):
        if self.training:
            seen.append(x.shape[0])
        return real_forward(self, x)

    monkeypatch.setattr(mixed.DualBranchUNet, "forward", forward_spy)
    train_mixed(splits["full"], splits["weak"], splits["val"],
                MixedConfig(recipe="authors", epochs=1, steps_per_epoch=1, batch_size=2, base_width=4, depth=2,
                            compile=False, progress=False))
    assert drawn == [2, 10]  # D_s batch, then D_w batch = 5 x 2
    # and the network's training step takes them all: cat(x_s, x_s, x_w) = 2 + 2 + 10 slices
    assert seen and set(seen) == {14}


def test_ours_recipe_keeps_our_values_and_explicit_values_win():
    config = MixedConfig()
    assert (config.lambda_kd, config.lambda_ent, config.temperature, config.kd_on, config.detach_teacher,
            config.norm, config.optimizer, config.lr) == (10.0, 0.1, 1.0, "all", True, "group", "adamw", 5e-3)
    mixed = MixedConfig(recipe="authors", lambda_ent=0.5, norm="group")
    assert mixed.lambda_ent == 0.5 and mixed.norm == "group" and mixed.lambda_kd == 50.0
    # replace() keeps the filled values: the recipe never silently overrides a changed field
    assert dataclasses.replace(mixed, method="kl").lambda_ent == 0.5
    assert set(RECIPES["ours"]) == set(RECIPES["authors"]) == set(RECIPES["authors_defaults"])


@pytest.mark.parametrize("field, value", [("lambda_kd", -1.0), ("lambda_ent", -0.1), ("lambda_w", -1.0),
                                          ("lr", 0.0), ("temperature", -1.0), ("kd_on", "weak"),
                                          ("recipe", "theirs"), ("betas", (0.9, 1.5))])
def test_bad_recipe_fields_are_one_line_errors(field, value):
    with pytest.raises(InputError, match=field if field != "betas" else "betas"):
        MixedConfig(**{field: value})


def test_authors_kl_equals_the_script_expression():
    generator = torch.Generator().manual_seed(0)
    for T in (1.0, 2.0, 4.0):
        z_t = torch.randn(3, 4, 5, 6, generator=generator, dtype=torch.float64) * 3
        z_s = torch.randn(3, 4, 5, 6, generator=generator, dtype=torch.float64) * 3
        expected = script_kl(z_t, z_s, T)
        assert torch.allclose(authors_kl_distillation(z_s, z_t, T), expected, rtol=1e-12, atol=1e-15)


def test_authors_kl_gradients_equal_the_script_expression():
    generator = torch.Generator().manual_seed(1)
    z_t = torch.randn(2, 2, 4, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    z_s = torch.randn(2, 2, 4, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    mine = torch.autograd.grad(authors_kl_distillation(z_s, z_t, 2.0), (z_t, z_s))
    theirs = torch.autograd.grad(script_kl(z_t, z_s, 2.0), (z_t, z_s))
    for a, b in zip(mine, theirs):
        assert torch.allclose(a, b, atol=1e-15)
    assert mine[0].abs().sum() > 0  # the script does not detach the teacher


def test_authors_entropy_equals_the_script_hloss():
    z = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    assert torch.allclose(authors_entropy(z), HLoss()(z), atol=1e-15)
    # per pixel it is H / C
    p = z.softmax(1)
    assert torch.allclose(authors_entropy(z), (-(p * p.log()).sum(1) / 3).mean())


def _grads(loss, *tensors):
    """Gradients of ``loss``; zeros for a tensor the loss does not depend on."""
    grads = torch.autograd.grad(loss, tensors, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, tensors)]


def _outputs(n_s=2, n_w=2, C=2, size=6, duplicate=False, seed=0):
    generator = torch.Generator().manual_seed(seed)
    n = (2 * n_s if duplicate else n_s) + n_w
    # float32: mixed_objective computes its losses in float32, as training does
    teacher = torch.randn(n, C, size, size, generator=generator, requires_grad=True)
    student = torch.randn(n, C, size, size, generator=generator, requires_grad=True)
    labels = torch.randint(0, C, (n_s, size, size), generator=generator)
    weak = torch.full((n_s + n_w, size, size), UNLABELLED, dtype=torch.int64)
    weak[:, 2:4, 2:4] = 1
    return teacher, student, labels, weak


@pytest.mark.parametrize("recipe", ["ours", "authors"])
@pytest.mark.parametrize("detach", [True, False])
def test_teacher_gets_kl_gradient_exactly_when_not_detached(recipe, detach):
    config = MixedConfig(method="kl", recipe=recipe, detach_teacher=detach)
    teacher, student, labels, weak = _outputs(duplicate=config.duplicate_full_batch)
    losses = mixed_objective(teacher, student, 2, labels, weak, config, 1.0)
    (grad,) = _grads(losses["kd"], teacher)
    assert (grad.abs().sum() > 0) == (not detach)


@pytest.mark.parametrize("recipe", ["ours", "authors"])
def test_kd_on_full_never_touches_the_weak_outputs(recipe):
    config = MixedConfig(method="kl", recipe=recipe, kd_on="full")
    n_s = 2
    teacher, student, labels, weak = _outputs(n_s=n_s, duplicate=config.duplicate_full_batch)
    losses = mixed_objective(teacher, student, n_s, labels, weak, config, 1.0)
    grad_t, grad_s = _grads(losses["kd"], teacher, student)
    first = n_s if config.duplicate_full_batch else 0
    assert grad_s[first + n_s:].abs().sum() == 0 and grad_t[first + n_s:].abs().sum() == 0  # D_w outputs
    assert grad_s[first:first + n_s].abs().sum() > 0
    all_config = dataclasses.replace(config, kd_on="all")
    grad_s_all = torch.autograd.grad(mixed_objective(teacher, student, n_s, labels, weak, all_config, 1.0)["kd"],
                                     student)[0]
    assert grad_s_all[first + n_s:].abs().sum() > 0


def test_authors_objective_is_the_script_total():
    """The whole authors' loss of one step against main.py l.233-275 transcribed."""
    config = MixedConfig(method="kl_ent", recipe="authors")
    n_s = n_w = 2
    teacher, student, labels, weak = _outputs(n_s=n_s, n_w=n_w, duplicate=True)
    losses = mixed_objective(teacher, student, n_s, labels, weak, config, config.lambda_ent)
    # the script: net(cat(x_s, x_s, x_w)); teacher on the first copy; student on the second and on D_w
    seg_F = teacher[:n_s]
    seg_W = student
    seg_W_fromFull, seg_W_fromWeak = seg_W[n_s:2 * n_s], seg_W[2 * n_s:]

    def partial_ce(pred, target):  # l.46-49, foreground channel 1, target 1 on seed pixels
        eps = 1e-20
        return -(torch.log(pred[:, 1] + eps) * target).sum() / (target.sum() + eps)

    seeds_s, seeds_w = (weak[:n_s] == 1).float(), (weak[n_s:] == 1).float()
    expected = (F.cross_entropy(seg_F, labels)
                + 0.1 * (partial_ce(F.softmax(seg_W_fromFull, 1), seeds_s) + partial_ce(F.softmax(seg_W_fromWeak, 1), seeds_w))
                + 50 * script_kl(seg_F, seg_W_fromFull, 2.0)  # --weight_KL 50, the README's command
                + 1 * HLoss()(torch.cat((seg_W_fromFull, seg_W), dim=0)))
    assert torch.allclose(sum(losses.values()), expected, rtol=1e-5)


def test_standard_kl_with_detach_false_moves_the_teacher_too():
    z_t = torch.randn(2, 3, 4, 4, requires_grad=True)
    z_s = torch.randn(2, 3, 4, 4, requires_grad=True)
    assert torch.autograd.grad(kl_distillation(z_s, z_t, detach_teacher=False), z_t)[0].abs().sum() > 0


def test_a_short_run_of_the_authors_recipe_trains():
    volumes = make_cardiac_volumes(5, n_slices=3, size=32, seed=0)
    splits = split_volumes(volumes, {"full": 1, "weak": 3, "val": 1}, seed=0)
    result = train_mixed(splits["full"], splits["weak"], splits["val"],
                         MixedConfig(recipe="authors", epochs=2, steps_per_epoch=2, batch_size=2, base_width=4,
                                     depth=2, progress=False))
    assert len(result.log) == 2 and {"loss_kd", "loss_ent", "loss_weak"} <= set(result.log[0])
    assert isinstance(result.model.encoder.blocks[0][1], nn.BatchNorm2d)


@pytest.mark.parametrize("device", ["cuda", "cuda:3", "tpu"])
def test_an_unavailable_device_fails_where_it_enters(device):
    if torch.cuda.is_available() and device == "cuda":
        pytest.skip("this machine has CUDA")
    from mixseg_lite.train.cam import CAMConfig

    with pytest.raises(InputError, match="device .* choose auto or one of cpu"):
        MixedConfig(device=device)
    with pytest.raises(InputError, match="device"):
        CAMConfig(device=device)


CAM_BAD_FIELD_VALUES = {  # one bad value per field of CAMConfig, and what the error must say
    "method": ("seam", "unknown method"), "epochs": (-1, "epochs must be an integer >= 0"),
    "steps_per_epoch": (2.0, "steps_per_epoch must be an integer >= 1 or None"),
    "batch_size": (0, "batch_size must be an integer >= 1"), "lr": (-1.0, "lr must be a number > 0"),
    "weight_decay": (-0.1, "weight_decay must be a number >= 0"), "er_weight": (-1.0, "er_weight must be >= 0"),
    "cmer_weight": ("1", "cmer_weight must be a number"), "kl_weight": (-0.5, "kl_weight must be >= 0"),
    "tau": (0, "tau must be a number > 0"), "transform_kinds": (("hflip", "shear"), "transform_kinds must be a non-empty list"),
    "max_shift": (1.0, "max_shift must be a number >= 0 and <= 0.99"),
    "scale_range": ((1.3, 0.7), "scale_range must be two numbers (low, high) with 0 < low <= high"),
    "multilabel": ("yes", "multilabel must be True or False"),
    "supervised_dice_weight": (-1.0, "supervised_dice_weight must be >= 0"),
    "supervised_class_balance": (-0.5, "supervised_class_balance must be a number >= 0"),
    "equivariance_maps": ("cams", "unknown equivariance_maps"),
    "equivariance_reduction": ("sum", "unknown equivariance_reduction"), "modalities": ("t1", "modalities must be a list"),
    "foreground_map": ("absent", "unknown foreground_map"), "transform_fill": ("mean", "unknown transform_fill"),
    "tag_weighting": ("inverse", "unknown tag_weighting"), "lr_schedule": ("step", "unknown lr_schedule"),
    "regulariser_warmup": (-1, "regulariser_warmup must be an integer >= 0"),
    "base_width": (0, "base_width must be an integer >= 1"), "depth": (0, "depth must be an integer >= 1 and <= 8"),
    "norm": ("layer", "unknown norm"), "recalibrate_norm": (1, "recalibrate_norm must be True or False"),
    "seed": (0.5, "seed must be an integer >= 0"), "device": ("tpu", "device 'tpu' is not a device name"),
    "progress": ("no", "progress must be True or False"),
}


def test_gradient_shares_follow_the_weights():
    from mixseg_lite.train.mixed import gradient_shares

    config = MixedConfig(method="kl_ent", ramp_up_epochs=0)
    teacher, student, labels, weak = _outputs(n_s=2, n_w=2, C=3)
    shares = gradient_shares(mixed_objective(teacher, student, 2, labels, weak, config, config.lambda_ent), student)
    assert set(shares) == {"sup", "weak", "kd", "ent"} and shares["sup"] == 0.0  # L_s never reaches the student
    assert abs(sum(shares.values()) - 1.0) < 1e-9
    louder = dataclasses.replace(config, lambda_ent=10 * config.lambda_ent)
    shares10 = gradient_shares(mixed_objective(teacher, student, 2, labels, weak, louder, louder.lambda_ent), student)
    assert shares10["ent"] > shares["ent"]


def test_recipe_table_lists_every_field_under_both_recipes():
    from mixseg_lite.train import RECIPES, recipe_table

    table = {row["field"]: row for row in recipe_table()}
    assert set(table) == set(RECIPES["ours"]) == set(RECIPES["authors"])
    assert table["lambda_kd"]["authors"] == "50.0" and table["lambda_kd"]["authors_defaults"] == "20.0"
    assert table["detach_teacher"]["ours"] == "True"


def test_recipe_overrides_name_unknown_fields():
    from mixseg_lite.train.mixed import check_recipe_overrides

    check_recipe_overrides({"detach_teacher": True})
    with pytest.raises(InputError, match=r"recipe_overrides: unknown fields \['lambda_kl'\]; choose from"):
        check_recipe_overrides({"lambda_kl": 1.0})
    with pytest.raises(InputError, match="must be a mapping"):
        check_recipe_overrides([("lr", 1.0)])


def test_deterministic_mode_sets_and_restores_the_torch_flags():
    from mixseg_lite.runtime import set_deterministic

    try:
        set_deterministic(True)
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        set_deterministic(False)
    assert not torch.backends.cudnn.deterministic and not torch.are_deterministic_algorithms_enabled()


BAD_FIELD_VALUES = {  # one bad value per field of MixedConfig, and what the error must say
    "method": ("magic", "unknown method"), "recipe": ("mine", "unknown recipe"),
    "epochs": (1.5, "epochs must be an integer >= 0"), "steps_per_epoch": (0, "steps_per_epoch must be an integer >= 1"),
    "batch_size": (0, "batch_size must be an integer >= 1"), "lr": ("0.1", "lr must be a number > 0"),
    "weight_decay": (-1.0, "weight_decay must be a number >= 0"), "betas": ((0.9, 1.0), "betas must be two numbers"),
    "optimizer": ("sgd", "unknown optimizer"), "schedule": ("cosine", "unknown schedule"), "init": ("he", "unknown init"),
    "lambda_kd": (-1.0, "lambda_kd must be >= 0"), "lambda_ent": ("0.1", "lambda_ent must be a number"),
    "lambda_w": (-0.1, "lambda_w must be >= 0"), "temperature": (0.0, "temperature must be a number > 0"),
    "weak_batch_multiple": (0, "weak_batch_multiple must be an integer >= 1"),
    "kd_on": ("weak", "unknown kd_on"), "detach_teacher": ("yes", "detach_teacher must be True or False"),
    "kd_form": ("mine", "unknown kd_form"), "entropy_on": ("full", "unknown entropy_on"),
    "entropy_form": ("sum", "unknown entropy_form"), "weak_loss": ("sum", "unknown weak_loss"),
    "duplicate_full_batch": (1, "duplicate_full_batch must be True or False"),
    "pseudo_threshold": (1.5, "pseudo_threshold must be a number >= 0 and <= 1 or None"),
    "lambda_semi": (-1.0, "lambda_semi must be >= 0"), "ramp_up_epochs": (-1, "ramp_up_epochs must be an integer >= 0"),
    "dice_weight": (-1.0, "dice_weight must be a number >= 0"), "class_balance": (float("nan"), "class_balance must be a number"),
    "weak_kind": ("blob", "unknown weak_kind"), "base_width": (0, "base_width must be an integer >= 1"),
    "depth": (9, "depth must be an integer >= 1 and <= 8"), "norm": ("layer", "unknown norm"),
    "seed": (-1, "seed must be an integer >= 0"), "device": ("tpu", "device 'tpu' is not a device name"),
    "amp": ("no", "amp must be True, False or 'auto'"), "channels_last": ("yes", "channels_last must be True or False or None"),
    "compile": (0, "compile must be True or False or None"), "deterministic": ("on", "deterministic must be True or False"),
    "select_best": (None, "select_best must be True or False"), "progress": (2, "progress must be True or False"),
}


BAD_VALUES_BY_CONFIG = {"MixedConfig": BAD_FIELD_VALUES, "CAMConfig": CAM_BAD_FIELD_VALUES}


def _config_class(name: str):
    import mixseg_lite.train

    return getattr(mixseg_lite.train, name)


@pytest.mark.parametrize("config", sorted(BAD_VALUES_BY_CONFIG))
def test_every_config_field_has_a_bad_value_test(config):
    assert set(BAD_VALUES_BY_CONFIG[config]) == {f.name for f in dataclasses.fields(_config_class(config))}


@pytest.mark.parametrize("config, field", [(config, field) for config, table in BAD_VALUES_BY_CONFIG.items()
                                           for field in sorted(table)])
def test_each_config_field_is_checked_where_it_enters(config, field):
    value, message = BAD_VALUES_BY_CONFIG[config][field]
    with pytest.raises(InputError, match=re.escape(message)) as error:
        _config_class(config)(**{field: value})
    assert "\n" not in str(error.value)
