"""Losses of mixed supervision with a teacher and a student branch (REFERENCE A).

Shapes: ``logits`` are ``(B, C, H, W)``; integer masks are ``(B, H, W)`` with values ``0..C-1``
(and :data:`mixseg_lite.UNLABELLED` in weak masks). Every loss returns a scalar tensor averaged
over pixels, so its weight does not depend on the image size.

The full objective of the method is::

    L = L_s(teacher, full masks) + L_w(student, labelled pixels)
      + lambda_kd * KL(p_teacher.detach() || p_student) + lambda_ent * H(p_student)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mixseg_lite import UNLABELLED
from mixseg_lite.errors import InputError, check_label_values
from mixseg_lite.losses.divergence import kl_divergence


def _check_logits(logits: torch.Tensor, name: str = "logits") -> None:
    if logits.ndim != 4:
        raise InputError(f"{name} must be (B, C, H, W), got shape {tuple(logits.shape)}")
    if logits.shape[0] == 0:
        raise InputError(f"empty batch: {name} has shape {tuple(logits.shape)}")


def _check_target(logits: torch.Tensor, target: torch.Tensor, allow_unlabelled: bool) -> None:
    _check_logits(logits)
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise InputError(f"mask shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}: "
                         f"expected {tuple(logits.shape[:1] + logits.shape[2:])}")
    if target.dtype.is_floating_point:
        raise InputError(f"mask must hold integer class indices, got dtype {target.dtype}")
    check_label_values(target, logits.shape[1], "mask", allow_unlabelled=allow_unlabelled)


def supervised_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 0.0,
                    class_balance: float = 0.0) -> torch.Tensor:
    """``L_s``: (class-weighted) cross-entropy over all pixels, plus ``dice_weight`` times :func:`dice_loss`.

    ``L_s = -sum_i w_{y_i} log p_{i, y_i} / sum_i w_{y_i} + dice_weight * L_Dice`` with class weights
    ``w_k = ((N + C) / (N_k + 1)) ** class_balance`` from the ``N_k`` pixels of class ``k`` in this
    batch (``N`` pixels, ``C`` classes). ``class_balance = 0`` is plain cross-entropy; 0.5 weighs
    classes by their inverse square-root frequency, so a thin structure (the myocardium, the RV)
    is not left unpredicted for many epochs while the background dominates the mean.

    Args:
        logits: ``(B, C, H, W)``.
        target: ``(B, H, W)`` int64, every pixel labelled.
    """
    _check_target(logits, target, allow_unlabelled=False)
    weight = None
    if class_balance:
        counts = torch.bincount(target.flatten(), minlength=logits.shape[1]).to(logits.dtype)
        weight = ((counts.sum() + len(counts)) / (counts + 1)) ** class_balance
    loss = F.cross_entropy(logits, target, weight=weight)
    if dice_weight:
        loss = loss + dice_weight * _soft_dice_loss(logits, target)
    return loss


def dice_loss(logits: torch.Tensor, target: torch.Tensor, include_background: bool = False,
              eps: float = 1e-5) -> torch.Tensor:
    """Soft Dice loss ``1 - mean_k (2 sum p_k q_k + eps) / (sum p_k + sum q_k + eps)``.

    ``p = softmax(logits)``, ``q`` the one-hot target; sums run over the batch and all pixels,
    the mean over classes (foreground only unless ``include_background``).

    Args:
        logits: ``(B, C, H, W)``.
        target: ``(B, H, W)`` int64, every pixel labelled.
    """
    _check_target(logits, target, allow_unlabelled=False)
    return _soft_dice_loss(logits, target, include_background, eps)


def _soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, include_background: bool = False,
                    eps: float = 1e-5) -> torch.Tensor:
    """:func:`dice_loss` without the input checks, for callers that have made them."""
    probs = logits.softmax(dim=1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    dice = (2 * (probs * onehot).sum(dims) + eps) / (probs.sum(dims) + onehot.sum(dims) + eps)
    if not include_background:
        dice = dice[1:]
    return 1 - dice.mean()


def partial_cross_entropy(logits: torch.Tensor, weak_target: torch.Tensor,
                          ignore_index: int = UNLABELLED) -> torch.Tensor:
    """``L_w``: cross-entropy averaged over labelled pixels only.

    ``L_w = -1/|Omega_L| sum_{i in Omega_L} log p_{i, y_i}``, where ``Omega_L`` is the set of pixels
    whose label is not ``ignore_index``. Returns 0 (still differentiable) when no pixel is labelled,
    where plain cross-entropy would give NaN.

    Args:
        logits: ``(B, C, H, W)``.
        weak_target: ``(B, H, W)`` int64 with class indices or ``ignore_index``.
    """
    _check_target(logits, weak_target, allow_unlabelled=True)
    labelled = weak_target != ignore_index
    if not labelled.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, weak_target, ignore_index=ignore_index)


def pixel_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy per pixel ``H(p) = -sum_k p_k log p_k``, ``(B, C, H, W) -> (B, H, W)``.

    Computed from ``log_softmax`` so that ``p_k -> 0`` gives ``0 * (-large)`` without NaN.
    """
    _check_logits(logits)
    log_p = logits.log_softmax(dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


def entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean pixel Shannon entropy of the softmax, ``mean_i H(p_i)``; ``(B, C, H, W) -> scalar``.

    Its gradient with respect to the logits is ``dH/dz_k = -p_k (log p_k + H)``.
    """
    return pixel_entropy(logits).mean()


def _check_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> None:
    _check_logits(student_logits, "student_logits")
    if teacher_logits.shape != student_logits.shape:
        raise InputError(f"teacher logits {tuple(teacher_logits.shape)} and student logits "
                         f"{tuple(student_logits.shape)} differ in shape")
    if temperature <= 0:
        raise InputError(f"temperature must be positive, got {temperature}")


def kl_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                    temperature: float = 1.0, detach_teacher: bool = True) -> torch.Tensor:
    """Teacher-to-student distillation ``T^2 * mean_i KL(p_t || p_s)``.

    ``p_t = softmax(teacher_logits / T)``, detached by default so that no gradient reaches the
    teacher through this loss (``detach_teacher=False`` lets KL pull the teacher towards the
    student as well); ``p_s = softmax(student_logits / T)``. The ``T^2`` factor keeps the
    gradient scale independent of the temperature (Hinton et al., 2015). The KL is summed over
    classes and averaged over pixels; it is 0 exactly when the two distributions are equal.

    Args:
        student_logits, teacher_logits: ``(B, C, H, W)``.
    """
    _check_pair(student_logits, teacher_logits, temperature)
    log_p_t = ((teacher_logits.detach() if detach_teacher else teacher_logits) / temperature).log_softmax(dim=1)
    log_p_s = (student_logits / temperature).log_softmax(dim=1)
    return temperature**2 * kl_divergence(log_p_t, log_p_s).mean()


def authors_kl_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                            temperature: float = 2.0, detach_teacher: bool = False) -> torch.Tensor:
    """The KL term exactly as the authors' script computes it (main.py at commit 68b98c2, l.266-269)::

        nn.KLDivLoss()(log_softmax(p_t / T), softmax(p_s / T)) * 0.5 * T^2,   p = softmax(z)

    i.e. with ``q_s = softmax(p_s / T)`` and ``q_t = softmax(p_t / T)``:
    ``0.5 T^2 * mean_{b,c,h,w} q_s (log q_s - log q_t)``. Three quirks against :func:`kl_distillation`:
    the softmax is applied twice (to probabilities in [0, 1], so ``q`` is nearly uniform and the
    term is small), the direction is KL(student || teacher), and 'mean' averages over classes
    too (a factor 1/C). Gradients reach both branches unless ``detach_teacher``. Written out, not
    with :func:`~mixseg_lite.losses.divergence.kl_divergence`, so it stays a literal transcription.

    Args:
        student_logits, teacher_logits: ``(B, C, H, W)``.
    """
    _check_pair(student_logits, teacher_logits, temperature)
    teacher = teacher_logits.detach() if detach_teacher else teacher_logits
    log_q_t = (teacher.softmax(dim=1) / temperature).log_softmax(dim=1)
    log_q_s = (student_logits.softmax(dim=1) / temperature).log_softmax(dim=1)
    return 0.5 * temperature**2 * (log_q_s.exp() * (log_q_s - log_q_t)).mean()


def authors_entropy(logits: torch.Tensor) -> torch.Tensor:
    """The script's entropy term ``-(softmax(z) * log_softmax(z)).mean()`` (main.py l.51-58).

    The mean runs over ``B*C*H*W``, so per pixel it is ``H(p) / C``: for two classes half of
    :func:`entropy_loss`. ``(B, C, H, W) -> scalar``.
    """
    _check_logits(logits)
    log_p = logits.log_softmax(dim=1)
    return -(log_p.exp() * log_p).mean()


def pseudo_mask_loss(logits: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
    """Cross-entropy against the network's own detached argmax (the pseudo-mask).

    ``L_pm = mean_{i: max_k p_ik > tau} -log p_{i, argmax_k p_ik}``. Per pixel this equals the
    min-entropy ``-log max_k p_k``, a lower bound of the Shannon entropy; its logit gradient is
    ``p_k - onehot_k``. Pixels below the confidence ``threshold`` (if given) are ignored; returns 0
    when none is left.

    Args:
        logits: ``(B, C, H, W)``.
        threshold: optional confidence ``tau`` in ``[0, 1)``.
    """
    _check_logits(logits)
    probs = logits.detach().softmax(dim=1)
    confidence, pseudo = probs.max(dim=1)
    if threshold is not None:
        pseudo = torch.where(confidence > threshold, pseudo, torch.full_like(pseudo, UNLABELLED))
    if not (pseudo != UNLABELLED).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, pseudo, ignore_index=UNLABELLED)
