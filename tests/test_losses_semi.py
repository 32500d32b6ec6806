"""Mean Teacher and Cross Pseudo Supervision building blocks against their formulas and autograd."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mixseg_lite import InputError
from mixseg_lite.losses.mixed import kl_distillation
from mixseg_lite.losses.semi import (consistency_loss, cross_pseudo_supervision_loss, ema_decay, ema_update,
                                     sigmoid_rampup)


def _net(seed, width=4):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, 3, 1))


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(0)
    return (torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64),
            torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64))


# --- Mean Teacher: EMA ---------------------------------------------------------------------------

def test_ema_update_is_the_convex_combination():
    teacher, student = _net(0), _net(1)
    old = {n: p.detach().clone() for n, p in teacher.named_parameters()}
    ema_update(teacher, student, 0.7)
    for name, p in teacher.named_parameters():
        torch.testing.assert_close(p.detach(), 0.7 * old[name] + 0.3 * dict(student.named_parameters())[name].detach())


def test_ema_decay_one_keeps_teacher_and_zero_copies_student():
    teacher, student = _net(0), _net(1)
    old = copy.deepcopy(teacher)
    ema_update(teacher, student, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(teacher.parameters(), old.parameters()))
    ema_update(teacher, student, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(teacher.parameters(), student.parameters()))


def test_ema_buffers_copied_from_student_unless_disabled():
    teacher, student = _net(0), _net(1)
    student(torch.randn(4, 1, 6, 6))  # train mode: moves the student's BatchNorm running stats
    ema_update(teacher, student, 0.9, copy_buffers=False)
    assert torch.equal(teacher[1].running_mean, torch.zeros(4))  # official behaviour: untouched
    ema_update(teacher, student, 0.9)
    for (name, t), s in zip(teacher.named_buffers(), student.buffers()):
        assert torch.equal(t, s), name


def test_teacher_gets_no_gradient_through_consistency_loss():
    teacher, student = _net(0), _net(1)
    x = torch.randn(2, 1, 6, 6)
    for kind in ("mse", "kl"):
        consistency_loss(student(x), teacher(x), kind=kind).backward()
        assert all(p.grad is None for p in teacher.parameters())
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student[0].parameters())


def test_ema_update_rejects_mismatched_modules_and_bad_decay():
    with pytest.raises(InputError, match=r"'0.weight' has shape \(5, 1, 3, 3\) in the teacher"):
        ema_update(_net(0, width=5), _net(1), 0.5)
    with pytest.raises(InputError, match="'4.weight' exists in the student only"):
        ema_update(_net(0), nn.Sequential(*_net(1), nn.Conv2d(3, 3, 1)), 0.5)
    for decay in (-0.1, 1.5):
        with pytest.raises(InputError, match="decay"):
            ema_update(_net(0), _net(1), decay)


def test_ema_decay_warm_up_values():
    assert ema_decay(0, 0.99) == 0.0
    assert ema_decay(1, 0.99) == 0.5
    assert ema_decay(9, 0.99) == pytest.approx(0.9)
    assert ema_decay(10**6, 0.99) == 0.99
    with pytest.raises(InputError):
        ema_decay(-1, 0.99)


def test_ema_warm_up_gives_the_true_average_of_all_models_so_far():
    students = [_net(seed) for seed in range(5)]
    teacher = copy.deepcopy(students[0])
    for step, student in enumerate(students[1:], start=1):  # official: step counted after the update
        ema_update(teacher, student, ema_decay(step, 0.999))
    for name, p in teacher.named_parameters():
        mean = torch.stack([dict(s.named_parameters())[name].detach() for s in students]).mean(0)
        torch.testing.assert_close(p.detach(), mean)


# --- Mean Teacher: consistency -------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["mse", "kl"])
@pytest.mark.parametrize("reduction", ["mean", "reference"])
def test_consistency_zero_for_identical_logits(pair, kind, reduction):
    s, _ = pair
    assert consistency_loss(s, s.clone(), kind, reduction).item() == pytest.approx(0.0, abs=1e-12)
    assert consistency_loss(s + 3.0, s, kind, reduction).item() == pytest.approx(0.0, abs=1e-12)  # softmax shift


def test_mse_consistency_matches_literal_and_official_reductions(pair):
    s, t = pair
    sq = (torch.softmax(s, 1) - torch.softmax(t, 1)) ** 2
    torch.testing.assert_close(consistency_loss(s, t), sq.mean())
    torch.testing.assert_close(consistency_loss(s, t, reduction="reference"), sq.sum() / 3)
    b, _, h, w = s.shape
    torch.testing.assert_close(consistency_loss(s, t, reduction="reference"), b * h * w * consistency_loss(s, t))


def test_mean_reduction_is_what_the_official_loop_optimises_for_classification(pair):
    # main.py: consistency_criterion(cons_logit, ema_logit) / minibatch_size, with (B, C) logits.
    s, t = (x.permute(0, 2, 3, 1).reshape(-1, 3)[:, :, None, None] for x in pair)  # 40 samples, H = W = 1
    for kind in ("mse", "kl"):
        torch.testing.assert_close(consistency_loss(s, t, kind, "reference") / s.shape[0], consistency_loss(s, t, kind))


def test_kl_consistency_matches_kl_div(pair):
    s, t = pair
    kl_sum = F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="sum")
    n_pixels = s.shape[0] * s.shape[2] * s.shape[3]
    torch.testing.assert_close(consistency_loss(s, t, "kl"), kl_sum / n_pixels)
    torch.testing.assert_close(consistency_loss(s, t, "kl", "reference"), kl_sum)
    torch.testing.assert_close(consistency_loss(s, t, "kl"), kl_distillation(s, t))


@pytest.mark.parametrize("kind", ["mse", "kl"])
@pytest.mark.parametrize("reduction", ["mean", "reference"])
def test_consistency_sends_no_gradient_to_teacher_logits(pair, kind, reduction):
    s, t = (x.clone().requires_grad_(True) for x in pair)
    consistency_loss(s, t, kind, reduction).backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_consistency_rejects_bad_input(pair):
    s, t = pair
    with pytest.raises(InputError, match="differ in shape"):
        consistency_loss(s, t[:, :2])
    with pytest.raises(InputError, match="consistency kind"):
        consistency_loss(s, t, kind="l1")
    with pytest.raises(InputError, match="consistency reduction"):
        consistency_loss(s, t, reduction="sum")


def test_sigmoid_rampup_ends_monotone_and_no_ramp():
    assert sigmoid_rampup(0, 50) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(25, 50) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(50, 50) == 1.0 and sigmoid_rampup(80, 50) == 1.0
    assert sigmoid_rampup(-3, 50) == pytest.approx(math.exp(-5))  # clipped like the official np.clip
    values = [sigmoid_rampup(i / 10, 50) for i in range(501)]
    assert all(a < b for a, b in zip(values, values[1:]))
    assert sigmoid_rampup(0, 0) == 1.0 and sigmoid_rampup(7, 0) == 1.0


# --- Cross Pseudo Supervision --------------------------------------------------------------------

def test_cps_matches_literal_formula_and_is_symmetric(pair):
    a, b = pair
    literal = F.cross_entropy(a, b.argmax(1)) + F.cross_entropy(b, a.argmax(1))
    torch.testing.assert_close(cross_pseudo_supervision_loss(a, b), literal)
    torch.testing.assert_close(cross_pseudo_supervision_loss(b, a), cross_pseudo_supervision_loss(a, b))


def test_cps_gradient_does_not_flow_through_the_pseudo_labels(pair):
    grads = []
    for detach_b in (False, True):
        a = pair[0].clone().requires_grad_(True)
        b = pair[1].clone().requires_grad_(not detach_b)
        cross_pseudo_supervision_loss(a, b).backward()
        grads.append(a.grad)
    torch.testing.assert_close(grads[0], grads[1])
    # Only CE(a, argmax b) reaches a: dL/dz_a = (softmax(a) - onehot(argmax b)) / N.
    p = pair[0].softmax(1)
    onehot = F.one_hot(pair[1].argmax(1), 3).permute(0, 3, 1, 2).to(p.dtype)
    torch.testing.assert_close(grads[0], (p - onehot) / p[:, 0].numel())


def test_cps_is_near_zero_for_confident_agreement_only():
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (2, 6, 6))
    confident = 30.0 * F.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    assert cross_pseudo_supervision_loss(confident, confident.clone()).item() < 1e-6
    disagree = 30.0 * F.one_hot((labels + 1) % 3, 3).permute(0, 3, 1, 2).float()
    assert cross_pseudo_supervision_loss(confident, disagree).item() > 50.0  # 2 * 30 nats per pixel
    noisy = confident + torch.randn_like(confident)
    assert cross_pseudo_supervision_loss(noisy, noisy.clone()) < cross_pseudo_supervision_loss(noisy, disagree)


def test_cps_rejects_mismatched_shapes(pair):
    with pytest.raises(InputError, match="differ in shape"):
        cross_pseudo_supervision_loss(pair[0], pair[1][:1])
