"""Mixed-supervision losses against closed forms and autograd (REFERENCE A)."""

import math

import pytest
import torch

from mixseg_lite import UNLABELLED, InputError
from mixseg_lite.losses import (dice_loss, entropy_loss, kl_distillation, partial_cross_entropy,
                                pixel_entropy, pseudo_mask_loss, supervised_loss)
from mixseg_lite.models import DualBranchUNet


@pytest.fixture
def logits():
    return torch.randn(2, 3, 5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_entropy_gradient_matches_closed_form(logits):
    z = logits.clone().requires_grad_(True)
    pixel_entropy(z).sum().backward()
    p = z.detach().softmax(1)
    h = -(p * p.log()).sum(1, keepdim=True)
    expected = -p * (p.log() + h)  # dH/dz_k = -p_k (log p_k + H)
    torch.testing.assert_close(z.grad, expected)


def test_binary_entropy_gradient_zero_at_half_and_peak_near_1_54():
    z = torch.linspace(-6, 6, 12001, dtype=torch.float64)
    two_class = torch.stack([z / 2, -z / 2], dim=0)[None, :, :, None].requires_grad_(True)
    pixel_entropy(two_class).sum().backward()
    # H depends only on the logit difference d = z_0 - z_1, so dH/dd = (dH/dz_0 - dH/dz_1) / 2.
    p = torch.sigmoid(z)
    closed = -z * p * (1 - p)
    autograd_dz = (two_class.grad[0, 0, :, 0] - two_class.grad[0, 1, :, 0]) / 2
    torch.testing.assert_close(autograd_dz, closed, atol=1e-10, rtol=1e-6)
    assert abs(closed[6000]) < 1e-12  # z = 0, p = 0.5
    assert abs(abs(z[closed.abs().argmax()]) - 1.5434) < 1e-2


def test_entropy_bounds_and_numerical_safety():
    uniform = torch.zeros(1, 4, 2, 2)
    assert math.isclose(entropy_loss(uniform).item(), math.log(4), rel_tol=1e-6)
    confident = torch.tensor([1000.0, -1000.0, -1000.0])[None, :, None, None].expand(1, 3, 2, 2)
    assert entropy_loss(confident).item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(entropy_loss(confident * 10))


def test_pseudo_mask_loss_is_min_entropy_below_shannon(logits):
    p = logits.softmax(1)
    min_entropy = -(p.max(1).values.log()).mean()
    assert pseudo_mask_loss(logits).item() == pytest.approx(min_entropy.item(), rel=1e-9)
    assert pseudo_mask_loss(logits).item() <= entropy_loss(logits).item()


def test_pseudo_mask_gradient_is_p_minus_onehot(logits):
    z = logits.clone().requires_grad_(True)
    pseudo_mask_loss(z).backward()
    p = z.detach().softmax(1)
    onehot = torch.nn.functional.one_hot(p.argmax(1), 3).permute(0, 3, 1, 2)
    torch.testing.assert_close(z.grad, (p - onehot) / p[:, 0].numel())


def test_pseudo_mask_threshold_ignores_unconfident_pixels():
    uncertain = torch.zeros(1, 2, 3, 3)
    assert pseudo_mask_loss(uncertain, threshold=0.6).item() == 0.0
    assert pseudo_mask_loss(uncertain).item() == pytest.approx(math.log(2))


def test_kl_zero_iff_equal_and_positive_otherwise(logits):
    assert kl_distillation(logits, logits.clone()).item() == pytest.approx(0.0, abs=1e-12)
    assert kl_distillation(logits + 5.0, logits).item() == pytest.approx(0.0, abs=1e-12)  # shift-invariant
    other = torch.randn_like(logits)
    assert kl_distillation(other, logits).item() > 1e-3


def test_kl_matches_hand_computation():
    teacher = torch.tensor([math.log(0.8), math.log(0.2)])[None, :, None, None]
    student = torch.tensor([math.log(0.5), math.log(0.5)])[None, :, None, None]
    expected = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)
    assert kl_distillation(student, teacher).item() == pytest.approx(expected, rel=1e-6)
    assert kl_distillation(student, teacher, temperature=2.0).item() > 0


def test_kl_never_sends_gradient_to_teacher(logits):
    teacher = logits.clone().requires_grad_(True)
    student = torch.randn_like(logits).requires_grad_(True)
    kl_distillation(student, teacher).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_partial_ce_ignores_unlabelled_pixels(logits):
    target = torch.randint(0, 3, (2, 5, 4), generator=torch.Generator().manual_seed(1))
    weak = target.clone()
    weak[:, :, :2] = UNLABELLED
    labelled = weak != UNLABELLED
    per_pixel = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    assert partial_cross_entropy(logits, weak).item() == pytest.approx(per_pixel[labelled].mean().item())
    # Changing logits on unlabelled pixels changes nothing.
    changed = logits.clone()
    changed[:, :, :, :2] += 10 * torch.randn_like(changed[:, :, :, :2])
    assert partial_cross_entropy(changed, weak).item() == pytest.approx(partial_cross_entropy(logits, weak).item())


def test_partial_ce_is_zero_and_differentiable_without_labels(logits):
    z = logits.clone().requires_grad_(True)
    loss = partial_cross_entropy(z, torch.full((2, 5, 4), UNLABELLED))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(z.grad == 0)


def test_dice_loss_perfect_and_worst():
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 1:3, 1:3] = 1
    perfect = torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).float() * 100
    assert dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-4)
    assert dice_loss(-perfect, target).item() == pytest.approx(1.0, abs=1e-4)


def test_supervised_loss_adds_dice(logits):
    target = torch.randint(0, 3, (2, 5, 4))
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert supervised_loss(logits, target).item() == pytest.approx(ce.item())
    assert supervised_loss(logits, target, dice_weight=1.0).item() == pytest.approx(
        (ce + dice_loss(logits, target)).item())


def test_class_balance_weighs_each_class_by_its_inverse_frequency():
    # 1 pixel of class 1 and 3 of class 0: with class_balance 1 each class contributes half.
    target = torch.tensor([[[0, 0], [0, 1]]])
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 1, 1, 1] = -2.0  # the lone class-1 pixel is badly predicted
    log_p = logits.log_softmax(dim=1)
    loss_bg, loss_fg = -log_p[0, 0, 0, 0], -log_p[0, 1, 1, 1]
    w_bg, w_fg = (4 + 2) / (3 + 1), (4 + 2) / (1 + 1)
    expected = (3 * w_bg * loss_bg + w_fg * loss_fg) / (3 * w_bg + w_fg)
    assert supervised_loss(logits, target, class_balance=1.0).item() == pytest.approx(expected.item())
    plain = (3 * loss_bg + loss_fg) / 4
    assert supervised_loss(logits, target, class_balance=0.0).item() == pytest.approx(plain.item())
    # Balancing raises the weight of the rare, badly predicted class.
    assert supervised_loss(logits, target, class_balance=0.5).item() > plain.item()


def test_teacher_decoder_gets_no_gradient_from_student_losses():
    torch.manual_seed(0)
    model = DualBranchUNet(1, 3, base_width=4, depth=2)
    x = torch.randn(2, 1, 8, 8)
    teacher, student = model(x)
    weak = torch.full((2, 8, 8), UNLABELLED)
    weak[:, 3:5, 3:5] = 1
    loss = (partial_cross_entropy(student, weak) + kl_distillation(student, teacher)
            + entropy_loss(student) + pseudo_mask_loss(student))
    loss.backward()
    assert all(p.grad is None or torch.all(p.grad == 0) for p in model.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.student.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


@pytest.mark.parametrize("call", [
    lambda: partial_cross_entropy(torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 5, dtype=torch.long)),
    lambda: supervised_loss(torch.randn(2, 3, 4, 4), torch.full((2, 4, 4), 3)),
    lambda: partial_cross_entropy(torch.randn(2, 3, 4, 4), torch.full((2, 4, 4), 7)),
    lambda: entropy_loss(torch.randn(0, 3, 4, 4)),
    lambda: kl_distillation(torch.randn(2, 3, 4, 4), torch.randn(2, 2, 4, 4)),
    lambda: supervised_loss(torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 4)),
])
def test_bad_input_raises_clear_error(call):
    with pytest.raises(InputError):
        call()


def test_error_messages_name_the_problem():
    with pytest.raises(InputError, match="mask shape"):
        partial_cross_entropy(torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(InputError, match="outside the class range"):
        supervised_loss(torch.randn(2, 3, 4, 4), torch.full((2, 4, 4), 3))
    with pytest.raises(InputError, match="empty batch"):
        entropy_loss(torch.randn(0, 3, 4, 4))


def test_the_one_kl_divergence_matches_scipy_and_torch():
    from scipy.special import rel_entr

    from mixseg_lite.losses import kl_divergence

    torch.manual_seed(0)
    p_logits, q_logits = torch.randn(2, 4, 3, 5, dtype=torch.float64), torch.randn(2, 4, 3, 5, dtype=torch.float64)
    ours = kl_divergence(p_logits.log_softmax(1), q_logits.log_softmax(1))
    assert ours.shape == (2, 3, 5)
    p, q = p_logits.softmax(1).numpy(), q_logits.softmax(1).numpy()
    assert torch.allclose(ours, torch.from_numpy(rel_entr(p, q).sum(1)))
    torch_kl = torch.nn.functional.kl_div(q_logits.log_softmax(1), p_logits.log_softmax(1), reduction="none",
                                          log_target=True).sum(1)
    assert torch.allclose(ours, torch_kl)
    assert torch.all(kl_divergence(p_logits.log_softmax(1), p_logits.log_softmax(1)) == 0)
