"""Losses of weakly supervised segmentation from image tags with cross-modal equivariant CAMs.

REFERENCE B (Patel & Dolz 2022, after SEAM). For modality ``i`` with network ``M_i``, image ``x``,
a transform ``pi`` drawn per batch (:mod:`mixseg_lite.transforms`) and the other modalities ``j``:

    L_i = L_cls + 0.5 * L_KL + L_ER + L_CMER

- :func:`classification_loss`: cross-entropy of the tags on the original and the transformed view;
- :func:`equivariance_loss` (ER): ``pi(M_i(x))`` should equal ``M_i(pi(x))`` on positive slices;
- :func:`cross_modal_equivariance_loss` (CMER): the same, but against the *other* modality's maps,
  which are detached, so each network is pulled towards the others without pulling them back;
- :func:`class_kl`: the class predictions of modality ``i`` follow those of ``j`` (detached),
  softened with temperature ``tau``.

Shapes: ``B`` slices, ``C`` class maps, ``H x W`` pixels, ``M`` modalities. Losses that select
slices (positive tags, other modality's prediction) return an exact 0 that is still attached to
the graph when no slice is selected, never NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mixseg_lite.errors import InputError
from mixseg_lite.losses.divergence import kl_divergence


def _check_maps(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise InputError(f"{what}: map shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")


def _valid_weights(valid: torch.Tensor | None, maps: torch.Tensor) -> torch.Tensor:
    """Pixel weights broadcastable to ``maps`` (..., C, H, W); all ones when ``valid`` is None."""
    if valid is None:
        return torch.ones(maps.shape[-2:], device=maps.device, dtype=maps.dtype)
    if valid.shape[-2:] != maps.shape[-2:]:
        raise InputError(f"valid mask {tuple(valid.shape)} does not match map size {tuple(maps.shape[-2:])}")
    return valid.to(maps.dtype)


def _masked_mean(per_slice: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """Mean of ``per_slice`` over the selected entries; an attached exact 0 when none is selected."""
    selected = selected.to(per_slice.dtype)
    return (per_slice * selected).sum() / selected.sum().clamp(min=1.0)


def classification_loss(scores: torch.Tensor, transformed_scores: torch.Tensor, targets: torch.Tensor,
                        multilabel: bool = False, class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Tag loss on both views: ``0.5 * (CE(s(x), y) + CE(s(pi(x)), y))``.

    Args:
        scores, transformed_scores: ``(B, C)`` class scores (logits) of ``x`` and ``pi(x)``.
        targets: ``(B,)`` int64 class indices (softmax), or ``(B, C)`` float 0/1 (multi-label).
        multilabel: binary cross-entropy per class (mean over classes) instead of softmax CE.
        class_weights: ``None`` (the paper: every slice counts the same), or ``(C,)`` weights:
            softmax, the weight of each class (weighted mean ``sum_b w_{y_b} CE_b / sum_b w_{y_b}``);
            multi-label, the ``pos_weight`` of each class's positives. See :func:`balanced_class_weights`.

    Returns:
        scalar, mean over the batch. Pass ``transformed_scores=scores`` for one view only.
    """
    _check_maps(scores, transformed_scores, "classification_loss")
    if multilabel:
        if targets.shape != scores.shape:
            raise InputError(f"classification_loss: multi-label targets {tuple(targets.shape)} "
                             f"must match scores {tuple(scores.shape)}")
        def loss(s, t):
            return F.binary_cross_entropy_with_logits(s, t, pos_weight=class_weights)
        targets = targets.float()
    else:
        if targets.shape != scores.shape[:1]:
            raise InputError(f"classification_loss: targets {tuple(targets.shape)} must be one class per slice "
                             f"({scores.shape[0]},)")

        def loss(s, t):
            return F.cross_entropy(s, t, weight=class_weights)
    if class_weights is not None and class_weights.shape != scores.shape[1:]:
        raise InputError(f"classification_loss: class_weights {tuple(class_weights.shape)} must have one weight "
                         f"per class ({scores.shape[1]},)")
    return 0.5 * (loss(scores, targets) + loss(transformed_scores, targets))


def balanced_class_weights(targets: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
    """Weights that make each tag class count the same in :func:`classification_loss`.

    Softmax, ``targets (N,)`` of ``C = max + 1`` classes (at least 2): ``w_c = N / (C * n_c)``
    (scikit-learn's "balanced"), so a network answering the majority tag everywhere no longer
    sits at a low loss. Multi-label, ``targets (N, C)``: ``pos_weight_c = n_negative / n_positive``.
    A class without examples gets weight 0 (softmax) or 1 (multi-label): it has nothing to balance.
    """
    if multilabel:
        positives = targets.float().sum(dim=0)
        negatives = len(targets) - positives
        return torch.where(positives > 0, negatives / positives.clamp(min=1), torch.ones_like(positives))
    counts = torch.bincount(targets.long(), minlength=2).float()
    return torch.where(counts > 0, counts.sum() / (len(counts) * counts.clamp(min=1)), torch.zeros_like(counts))


REDUCTIONS = ("reference", "per_selected_slice")
"""How ER and CMER average: over every element of the batch, unselected slices contributing 0
(``"reference"``, the default: ``torch.mean`` in gaurav104/WSS-CMER), or over the selected slices
and valid pixels (``"per_selected_slice"``, our first implementation). The factor between them is in
each loss's docstring; the weights only mean something together with the reduction."""


def equivariance_loss(transformed_maps: torch.Tensor, maps_of_transformed: torch.Tensor, positive: torch.Tensor,
                      valid: torch.Tensor | None = None, reduction: str = "reference") -> torch.Tensor:
    """Within-modality equivariance regularisation (ER).

        "reference" (default): ER = 1/(B C H W) sum_{b in P} sum_{c, p in V} (pi(M(x))_{b,c,p} - M(pi(x))_{b,c,p})^2
        "per_selected_slice":  ER = 1/|P| sum_{b in P} 1/(C |V|) sum_{c, p in V} (...)^2

    ``"reference"`` is the reference code's ``torch.mean`` over the batch and all pixels (its ER is
    not restricted to positive slices; here only the positive slices and valid pixels contribute,
    and everything else counts as 0). ``"per_selected_slice"`` is ``B/|P| * H W/|V|`` times
    stronger (2.5-4x in our 40x40 brain batches).

    Args:
        transformed_maps: ``(B, C, H, W)`` ``pi(M(x))``, the transformed maps of the image.
        maps_of_transformed: ``(B, C, H, W)`` ``M(pi(x))``, the maps of the transformed image.
        positive: ``(B,)`` bool; ``P`` = slices whose tag is positive (only they have a CAM worth
            constraining).
        valid: optional ``(1 or B, 1, H, W)`` 0/1 pixels ``V`` to compare (e.g.
            :meth:`Transform.valid_mask`: zero-filled borders of a translation carry no image).

    Gradients flow through both views. Returns a scalar; 0 (not NaN) when no slice is positive.
    """
    _check_maps(transformed_maps, maps_of_transformed, "equivariance_loss")
    if positive.shape != transformed_maps.shape[:1]:
        raise InputError(f"equivariance_loss: positive {tuple(positive.shape)} must have one flag per slice "
                         f"({transformed_maps.shape[0]},)")
    if reduction not in REDUCTIONS:
        raise InputError(f"equivariance_loss: unknown reduction {reduction!r}; choose one of {', '.join(REDUCTIONS)}")
    weights = _valid_weights(valid, transformed_maps)
    squared = (transformed_maps - maps_of_transformed) ** 2 * weights
    if reduction == "reference":
        return (squared * positive.to(squared.dtype)[:, None, None, None]).mean()
    per_slice = squared.sum(dim=(1, 2, 3)) / weights.expand_as(squared).sum(dim=(1, 2, 3)).clamp(min=1.0)
    return _masked_mean(per_slice, positive)


def _l2_normalise(maps: torch.Tensor, eps: float) -> torch.Tensor:
    """Each map divided by its Euclidean norm over space: ``(..., H, W)`` -> unit-norm maps."""
    return maps / maps.flatten(-2).norm(dim=-1)[..., None, None].clamp(min=eps)


def cross_modal_equivariance_loss(transformed_maps: torch.Tensor, maps_of_transformed: torch.Tensor,
                                  positive: torch.Tensor, predicted_positive: torch.Tensor,
                                  valid: torch.Tensor | None = None, eps: float = 1e-6,
                                  reduction: str = "reference",
                                  predicted_positive_original: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-modal equivariance regularisation (CMER) of every modality against all the others.

    With ``n(.)`` the L2 normalisation of each map over the (valid) pixels, ``sg`` stop-gradient,
    ``d(A, B) = 1/C sum_c ||n(A_c) - n(B_c)||^2`` (squared Euclidean distance of unit-norm maps,
    in [0, 4]), and ``S_ij`` the slices whose tag is positive AND that modality ``j`` predicts
    positive::

        CMER_i = 1/(M - 1) sum_{j != i} 1/|S_ij| sum_{b in S_ij}
                 0.5 * [ d(pi(M_i(x))_b, sg M_j(pi(x))_b) + d(M_i(pi(x))_b, sg pi(M_j(x))_b) ]

    That is ``reduction="per_selected_slice"``: the distance summed over pixels, averaged over the
    selected slices. ``reduction="reference"`` (the default) is the reference code's ``torch.mean``
    over batch x channels x pixels, unselected slices contributing 0::

        CMER_i = 1/(M - 1) sum_{j != i} 0.5 * [ 1/(B C H W) sum_{b in S1_ij} ||n(pi(M_i(x))_b) - sg n(M_j(pi(x))_b)||^2
                                              + 1/(B C H W) sum_{b in S2_ij} ||n(M_i(pi(x))_b) - sg n(pi(M_j(x))_b)||^2 ]

    with ``S1_ij`` selected by modality ``j``'s prediction on ``pi(x)`` and ``S2_ij`` by its
    prediction on ``x`` (``predicted_positive_original``; default the same as ``S1``).
    ``"per_selected_slice"`` is ``H W * B / |S_ij|`` times stronger: about 4,000-6,000x at 40x40
    with batch 32, enough to drag each modality's maps onto the other's.

    Args:
        transformed_maps: ``(M, B, C, H, W)``, ``pi(M_m(x))`` for each modality ``m``.
        maps_of_transformed: ``(M, B, C, H, W)``, ``M_m(pi(x))``.
        positive: ``(B,)`` bool tag of each slice (any foreground class present).
        predicted_positive: ``(M, B)`` bool, modality ``m`` predicts the slice positive.
        valid: optional ``(1 or B, 1, H, W)`` 0/1 pixels to compare (see :func:`equivariance_loss`).
        reduction: ``"reference"`` (default) or ``"per_selected_slice"`` (:data:`REDUCTIONS`).
        predicted_positive_original: optional ``(M, B)``, modality ``m`` predicts ``x`` positive;
            selects the slices of the second pair (default: ``predicted_positive``).

    Returns:
        ``(M,)``, the CMER of each modality (sum it into the total; the stop-gradient keeps each
        entry's gradient on its own network). Entries are 0 where ``S_ij`` is empty for every j.
    """
    _check_maps(transformed_maps, maps_of_transformed, "cross_modal_equivariance_loss")
    if transformed_maps.ndim != 5:
        raise InputError(f"cross_modal_equivariance_loss: maps must be (M, B, C, H, W), "
                         f"got shape {tuple(transformed_maps.shape)}")
    M, B = transformed_maps.shape[:2]
    if M < 2:
        raise InputError(f"cross_modal_equivariance_loss needs at least 2 modalities, got {M}")
    if positive.shape != (B,) or predicted_positive.shape != (M, B):
        raise InputError(f"cross_modal_equivariance_loss: positive {tuple(positive.shape)} must be ({B},) and "
                         f"predicted_positive {tuple(predicted_positive.shape)} must be ({M}, {B})")
    if reduction not in REDUCTIONS:
        raise InputError(f"cross_modal_equivariance_loss: unknown reduction {reduction!r}; "
                         f"choose one of {', '.join(REDUCTIONS)}")
    if predicted_positive_original is not None and predicted_positive_original.shape != (M, B):
        raise InputError(f"cross_modal_equivariance_loss: predicted_positive_original "
                         f"{tuple(predicted_positive_original.shape)} must be ({M}, {B})")
    weights = _valid_weights(valid, transformed_maps)
    pi_of_maps = _l2_normalise(transformed_maps * weights, eps)      # n(pi(M_m(x)))
    maps_of_pi = _l2_normalise(maps_of_transformed * weights, eps)   # n(M_m(pi(x)))
    # Pairwise distances (i, j, b): modality i (with gradient) against modality j (detached).
    d1 = ((pi_of_maps[:, None] - maps_of_pi.detach()[None]) ** 2).sum(dim=(-1, -2)).mean(dim=-1)
    d2 = ((maps_of_pi[:, None] - pi_of_maps.detach()[None]) ** 2).sum(dim=(-1, -2)).mean(dim=-1)
    off_diagonal = 1.0 - torch.eye(M, device=d1.device, dtype=d1.dtype)
    selected = (positive.bool()[None] & predicted_positive.bool()).to(d1.dtype)  # (M_j, B)
    if reduction == "reference":
        original = predicted_positive if predicted_positive_original is None else predicted_positive_original
        selected_2 = (positive.bool()[None] & original.bool()).to(d1.dtype)
        pixels = transformed_maps.shape[-1] * transformed_maps.shape[-2]
        # d is summed over pixels and averaged over channels: / (H W) and / B make it the mean.
        per_pair = 0.5 * ((d1 * selected[None]).sum(-1) + (d2 * selected_2[None]).sum(-1)) / (B * pixels)
        return (per_pair * off_diagonal).sum(dim=1) / (M - 1)
    pair = 0.5 * (d1 + d2)  # (M, M, B)
    per_pair = (pair * selected[None]).sum(-1) / selected.sum(-1).clamp(min=1.0)[None]  # (M_i, M_j)
    return (per_pair * off_diagonal).sum(dim=1) / (M - 1)


def class_kl(logits_i: torch.Tensor, logits_j: torch.Tensor, tau: float = 10.0,
             multilabel: bool = False) -> torch.Tensor:
    """Distillation of class predictions from modality j into modality i.

        L_KL = tau^2 * 1/B sum_b KL( softmax(z_j / tau) || softmax(z_i / tau) )

    ``z_j`` is detached here, so no gradient reaches modality j. With ``multilabel`` the softmax
    becomes a sigmoid per class and the KL is that of Bernoulli distributions, summed over classes.

    Args:
        logits_i, logits_j: ``(B, C)`` class scores of the two modalities on the same slices.
        tau: temperature (REFERENCE B: 10); ``tau^2`` keeps gradients comparable across ``tau``.

    Returns:
        scalar, >= 0, exactly 0 when the logits are equal.
    """
    _check_maps(logits_i, logits_j, "class_kl")
    if not tau > 0:
        raise InputError(f"class_kl: temperature tau must be positive, got {tau}")
    z_i, z_j = logits_i / tau, logits_j.detach() / tau
    if multilabel:
        # Bernoulli KL with probabilities p = sigmoid(z); log-sigmoid for numerical safety.
        p_j = torch.sigmoid(z_j)
        kl = (p_j * (F.logsigmoid(z_j) - F.logsigmoid(z_i))
              + (1 - p_j) * (F.logsigmoid(-z_j) - F.logsigmoid(-z_i)))
        return tau ** 2 * kl.sum(dim=1).mean()
    return tau ** 2 * kl_divergence(F.log_softmax(z_j, dim=1), F.log_softmax(z_i, dim=1)).mean()
