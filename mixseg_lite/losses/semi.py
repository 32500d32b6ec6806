"""Loss-level building blocks of two semi-supervised baselines: Mean Teacher and Cross Pseudo Supervision.

Shapes: ``logits`` are ``(B, C, H, W)``. The default reductions average over pixels, as in
:mod:`mixseg_lite.losses.mixed`, so a loss weight does not depend on the batch or image size.

Mean Teacher (Tarvainen & Valpola, NeurIPS 2017), with ``w_max`` and ``T`` chosen by the caller::

    L = L_sup(student) + w_max * sigmoid_rampup(t, T) * consistency_loss(student(x'), teacher(x''))
    after each optimiser step:  ema_update(teacher, student, ema_decay(step, alpha))

Cross Pseudo Supervision (Chen, Yuan, Zeng & Wang, CVPR 2021), two differently initialised nets::

    L = L_sup(a) + L_sup(b) + lambda * cross_pseudo_supervision_loss(logits_a, logits_b)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mixseg_lite.errors import InputError, check_choice
from mixseg_lite.losses.divergence import kl_divergence
from mixseg_lite.losses.mixed import _check_logits


def _check_same(teacher: dict, student: dict, what: str) -> None:
    """Raise :class:`InputError` naming the first tensor missing on one side or differing in shape."""
    for name in list(teacher) + [n for n in student if n not in teacher]:
        t, s = teacher.get(name), student.get(name)
        if t is None or s is None:
            raise InputError(f"{what} {name!r} exists in the {'student' if t is None else 'teacher'} only")
        if t.shape != s.shape:
            raise InputError(f"{what} {name!r} has shape {tuple(t.shape)} in the teacher, "
                             f"{tuple(s.shape)} in the student")


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float, copy_buffers: bool = True) -> None:
    """In place: ``theta_t <- decay * theta_t + (1 - decay) * theta_s`` for every parameter.

    ``decay = 1`` leaves the teacher unchanged, ``decay = 0`` copies the student. Buffers
    (BatchNorm running mean/var and counters) are copied from the student, see the comment below.
    """
    if not 0.0 <= decay <= 1.0:
        raise InputError(f"EMA decay must be in [0, 1], got {decay}")
    t_params, s_params = dict(teacher.named_parameters()), dict(student.named_parameters())
    _check_same(t_params, s_params, "parameter")
    for name, t in t_params.items():
        t.mul_(decay).add_(s_params[name], alpha=1 - decay)  # the official update_ema_variables line
    # The official code (CuriousAI/mean-teacher, update_ema_variables) averages parameters only and
    # runs the teacher in train mode, so its BatchNorm statistics follow its own forward passes.
    # Here the teacher may be run in eval mode / under no_grad, where it would keep its initial
    # statistics (mean 0, var 1) and give wrong outputs; the student's running statistics are a
    # current estimate for almost the same weights, and num_batches_tracked (an int) cannot be
    # averaged. So we copy them; copy_buffers=False reproduces the official code.
    if copy_buffers:
        t_bufs, s_bufs = dict(teacher.named_buffers()), dict(student.named_buffers())
        _check_same(t_bufs, s_bufs, "buffer")
        for name, t in t_bufs.items():
            t.copy_(s_bufs[name])


def ema_decay(step: int, decay: float) -> float:
    """The reference warm-up ``min(1 - 1 / (step + 1), decay)``.

    While ``1 - 1/(step + 1) < decay`` the teacher is the true average of the initial weights and
    the ``step`` students so far ("use the true average until the exponential average is more
    correct"). The official code calls it after incrementing ``global_step``, so pass the number of
    optimiser steps taken (1 at the first update, which gives 0.5); ``step = 0`` copies the student.
    """
    if step < 0 or not 0.0 <= decay <= 1.0:
        raise InputError(f"need step >= 0 and 0 <= decay <= 1, got step={step}, decay={decay}")
    return min(1.0 - 1.0 / (step + 1), decay)


def consistency_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str = "mse",
                     reduction: str = "mean") -> torch.Tensor:
    """Mean Teacher consistency between softmax outputs; the teacher is detached here.

    With ``p_s = softmax(student_logits)``, ``p_t = softmax(teacher_logits).detach()``, ``N = B*H*W``:

    - ``kind="mse"`` (the paper's choice): ``"mean"`` is ``sum_{b,c,h,w} (p_s - p_t)^2 / (N * C)``,
      the mean over all ``B*C*H*W`` elements; ``"reference"`` is ``sum (p_s - p_t)^2 / C``, exactly
      ``softmax_mse_loss`` of the official code (a SUM over batch and pixels, divided by ``C``).
    - ``kind="kl"``: ``KL(p_t || p_s) = sum_c p_t (log p_t - log p_s)`` per pixel; ``"mean"``
      averages it over the ``N`` pixels (= ``F.kl_div(..., reduction="sum") / N`` =
      :func:`~mixseg_lite.losses.mixed.kl_distillation` at ``T = 1``); ``"reference"`` is the sum
      over pixels, exactly the official ``softmax_kl_loss``.

    Why ``"mean"`` is the default: the official training loop divides the reference value by the
    minibatch size ``B``, so for classification (``H = W = 1``) it optimises ``"mean"``; taking each
    pixel as a sample keeps that value, whereas the reference sum grows with ``B*H*W`` and would
    tie the consistency weight to the crop size. For both kinds ``"reference" = N * "mean"``.

    Args:
        student_logits, teacher_logits: ``(B, C, H, W)``.
    """
    check_choice(kind, ("mse", "kl"), "consistency kind")
    check_choice(reduction, ("mean", "reference"), "consistency reduction")
    _check_logits(student_logits, "student_logits")
    if teacher_logits.shape != student_logits.shape:
        raise InputError(f"teacher logits {tuple(teacher_logits.shape)} and student logits "
                         f"{tuple(student_logits.shape)} differ in shape")
    teacher_logits = teacher_logits.detach()  # the teacher is an EMA, never a gradient target
    if kind == "mse":
        sq = (student_logits.softmax(dim=1) - teacher_logits.softmax(dim=1)) ** 2
        return sq.mean() if reduction == "mean" else sq.sum() / student_logits.shape[1]
    kl = kl_divergence(teacher_logits.log_softmax(dim=1), student_logits.log_softmax(dim=1))  # (B, H, W)
    return kl.mean() if reduction == "mean" else kl.sum()


def sigmoid_rampup(current: float, rampup_length: float) -> float:
    """Consistency weight ramp ``exp(-5 (1 - t)^2)``, ``t = clip(current / rampup_length, 0, 1)``.

    Goes from ``exp(-5) ~ 0.0067`` at 0 to 1 at ``rampup_length`` and stays there; returns 1.0
    when ``rampup_length == 0`` (no ramp), as the official ``ramps.sigmoid_rampup`` does.
    """
    if rampup_length < 0:
        raise InputError(f"rampup_length must be >= 0, got {rampup_length}")
    if rampup_length == 0:
        return 1.0
    t = min(max(current / rampup_length, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


def cross_pseudo_supervision_loss(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """``L_cps = CE(logits_a, argmax_c logits_b) + CE(logits_b, argmax_c logits_a)``.

    Each CE is a mean over the ``B*H*W`` pixels; the pseudo-labels are detached one-hot argmaxes,
    so each network is trained only through its own prediction: ``dL/dz_a = (p_a - onehot(y_b)) / N``.
    This is the official ``criterion_cps`` (``nn.CrossEntropyLoss(reduction='mean',
    ignore_index=255)``; no argmax equals 255). The weight ``lambda`` is applied by the caller.

    Args:
        logits_a, logits_b: ``(B, C, H, W)`` from the two networks on the same images.
    """
    _check_logits(logits_a, "logits_a")
    if logits_b.shape != logits_a.shape:
        raise InputError(f"logits_a {tuple(logits_a.shape)} and logits_b {tuple(logits_b.shape)} differ in shape")
    pseudo_a, pseudo_b = logits_a.detach().argmax(dim=1), logits_b.detach().argmax(dim=1)
    return F.cross_entropy(logits_a, pseudo_b) + F.cross_entropy(logits_b, pseudo_a)
