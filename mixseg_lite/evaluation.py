"""Evaluating segmentation learnt from image tags, and the trap of slice-averaged Dice.

Most slices of a brain volume hold no tumour. Dice of an empty prediction on an empty slice is 1
(nothing to find, nothing found), so averaging Dice over *all slices* rewards predicting nothing:
on data where most slices are empty, an empty mask can score a higher slice-averaged Dice than the
weakly supervised methods it is meant to judge (the ``empty`` rows of the CAM ablation in
``docs/reproduction.md`` measure it). The honest numbers are

- :func:`dice_3d`: Dice of each patient volume (slices restacked), averaged over the volumes
  that contain the class; an empty prediction scores 0 on every one of them;
- :func:`dice_positive_slices`: Dice averaged over the slices that contain the class only;
- :func:`slice_accuracy`: is the tag (present / absent) of each slice predicted right?

and :func:`dice_slice_average` is kept only to show the trap, always next to the empty-mask
baseline (:func:`empty_prediction`), which goes through the very same functions.

Inputs are stacks of 2-D slices ``(N, H, W)`` with a ``volume_index`` ``(N,)`` naming the volume
of each slice (as :class:`mixseg_lite.data.slices.SliceDataset` keeps it); Dice of a volume pools
its slices, so their order does not matter. Masks are numpy arrays or torch tensors, read as
``!= 0``; label maps hold class indices. Empty-mask conventions follow
:func:`mixseg_lite.metrics.dice`: both empty 1.0, exactly one empty 0.0.
"""

from __future__ import annotations

import numpy as np

from mixseg_lite.errors import InputError, check_nonempty
from mixseg_lite.metrics import dice


def _numpy(x) -> np.ndarray:
    return np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)


def _mask_pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    pred, target = _numpy(pred), _numpy(target)
    if pred.shape != target.shape or pred.ndim != 3:
        raise InputError(f"prediction {pred.shape} and target {target.shape} must both be slice stacks (N, H, W)")
    check_nonempty(pred.shape[0], "stack of slices")
    return pred != 0, target != 0


def slice_dice(pred, target) -> np.ndarray:
    """2-D Dice of every slice, ``(N,)``: ``2|P_n ∩ T_n| / (|P_n| + |T_n|)``, 1.0 when both are empty."""
    pred, target = _mask_pair(pred, target)
    inter = np.logical_and(pred, target).sum((1, 2))
    total = pred.sum((1, 2)) + target.sum((1, 2))
    return np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))


def dice_per_volume(pred, target, volume_index) -> dict[int, float]:
    """3-D Dice of each volume: all slices of a volume pooled. Returns ``{volume: dice}``."""
    pred, target = _mask_pair(pred, target)
    volume_index = _numpy(volume_index)
    if volume_index.shape != (pred.shape[0],):
        raise InputError(f"volume_index has shape {volume_index.shape}; need one volume per slice ({pred.shape[0]},)")
    return {int(v): dice(pred[volume_index == v], target[volume_index == v]) for v in np.unique(volume_index)}


def dice_3d(pred, target, volume_index, include_empty_volumes: bool = False) -> float:
    """Mean 3-D Dice over volumes. By default only volumes whose target contains the class count
    (a tumour-free volume predicted empty would add a free 1.0); NaN when no volume does."""
    per_volume = dice_per_volume(pred, target, volume_index)
    target, volume_index = _numpy(target) != 0, _numpy(volume_index)
    keep = [v for v in per_volume if include_empty_volumes or target[volume_index == v].any()]
    return float(np.mean([per_volume[v] for v in keep])) if keep else float("nan")


def volume_dice_scores(pred_labels, target_labels, volume_index, num_classes: int = 2) -> np.ndarray:
    """3-D Dice of each volume, averaged over the foreground classes ``1..num_classes-1`` that the
    volume's target contains; volumes containing none are left out (as in :func:`dice_3d`).

    Their mean is :func:`dice_3d` for one foreground class; their spread (``np.std``) is the
    spread over volumes that tables print next to it. Returns ``(V,)`` in volume order.
    """
    pred_labels, target_labels, volume_index = _numpy(pred_labels), _numpy(target_labels), _numpy(volume_index)
    _mask_pair(pred_labels, target_labels)
    scores = []
    for v in np.unique(volume_index):
        rows = volume_index == v
        per_class = [dice(pred_labels[rows] == c, target_labels[rows] == c)
                     for c in range(1, num_classes) if (target_labels[rows] == c).any()]
        if per_class:
            scores.append(np.mean(per_class))
    return np.asarray(scores, dtype=float)


def dice_positive_slices(pred, target) -> float:
    """Mean 2-D Dice over the slices whose target contains the class; NaN when none does."""
    positive = _mask_pair(pred, target)[1].any((1, 2))
    return float(slice_dice(pred, target)[positive].mean()) if positive.any() else float("nan")


def dice_slice_average(pred, target) -> float:
    """Mean 2-D Dice over *all* slices, empty ones scoring 1.0 when predicted empty: the trap."""
    return float(slice_dice(pred, target).mean())


def slice_accuracy(predicted_positive, target) -> float:
    """Fraction of slices whose tag is predicted right; the tag is 'target has the class'."""
    predicted_positive, target = _numpy(predicted_positive).astype(bool), _numpy(target)
    if target.ndim != 3 or predicted_positive.shape != (target.shape[0],):
        raise InputError(f"predicted_positive {predicted_positive.shape} must have one value per slice "
                         f"of the target stack {target.shape}")
    return float((predicted_positive == (target != 0).any((1, 2))).mean())


def empty_prediction(target_labels) -> np.ndarray:
    """The empty-mask baseline: an all-background label map shaped like ``target_labels``."""
    return np.zeros(_numpy(target_labels).shape, dtype=np.int64)


METRICS = ("dice_3d", "dice_pos", "dice_slice_avg", "accuracy")


def evaluate_tag_segmentation(pred_labels, target_labels, volume_index, predicted_positive=None,
                              num_classes: int = 2) -> dict:
    """All four numbers of one method, for label maps with classes ``0..num_classes-1``.

    Args:
        pred_labels, target_labels: ``(N, H, W)`` integer label maps (slices of several volumes).
        volume_index: ``(N,)`` volume of each slice.
        predicted_positive: ``(N,)`` (one foreground class) or ``(N, num_classes - 1)`` predicted
            tags; by default a slice counts as predicted positive when its mask is not empty.
        num_classes: classes including background.

    Returns:
        ``{"dice_3d", "dice_pos", "dice_slice_avg", "accuracy", "per_class"}``: each of the
        four is the mean over foreground classes ``1..num_classes-1`` of the per-class value in
        ``per_class`` (``{class_index: {metric: value}}``).
    """
    pred_labels, target_labels = _numpy(pred_labels), _numpy(target_labels)
    _mask_pair(pred_labels, target_labels)
    foreground = range(1, num_classes)
    if predicted_positive is None:
        predicted = np.stack([(pred_labels == c).any((1, 2)) for c in foreground], axis=1)
    else:
        predicted = _numpy(predicted_positive).astype(bool).reshape(len(pred_labels), -1)
        if predicted.shape[1] != len(foreground):
            raise InputError(f"predicted_positive has {predicted.shape[1]} columns for "
                             f"{len(foreground)} foreground classes")
    per_class = {}
    for k, c in enumerate(foreground):
        p, t = pred_labels == c, target_labels == c
        per_class[c] = {"dice_3d": dice_3d(p, t, volume_index), "dice_pos": dice_positive_slices(p, t),
                        "dice_slice_avg": dice_slice_average(p, t), "accuracy": slice_accuracy(predicted[:, k], t)}
    summary = {m: float(np.mean([per_class[c][m] for c in foreground])) for m in METRICS}
    return {**summary, "per_class": per_class}
