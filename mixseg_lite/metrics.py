"""Segmentation metrics: Dice, HD95 in millimetres, per class per volume, and their summaries.

Everything here is numpy/scipy only and works on whole 3-D volumes (2-D arrays work too), because
slice-wise scores hide errors that only show up across slices.

Conventions for empty masks (both documented on the functions and relied on by :func:`summarize_per_volume`,
which therefore never sees NaN):

=====================  ========  ===================================================
case                   Dice      HD95
=====================  ========  ===================================================
both empty             1.0       0.0  (nothing to find, nothing found)
exactly one empty      0.0       diagonal of the array's physical extent in mm
=====================  ========  ===================================================

The fixed worst value for a miss or a false alarm follows the BraTS evaluation, which penalises
them with a constant instead of dropping the case (dropping would flatter the method).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from scipy import ndimage

from mixseg_lite.errors import InputError, _where, check_label_values, check_nonempty, check_same_spatial_shape


def _as_mask_pair(pred, target, source: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    pred, target = np.asarray(pred), np.asarray(target)
    # check_same_spatial_shape compares trailing axes only, so a missing axis would slip through.
    if pred.ndim != target.ndim:
        raise InputError(f"{_where(source)}prediction shape {pred.shape} and target shape "
                         f"{target.shape} have different numbers of axes")
    check_same_spatial_shape(pred.shape, target.shape, source)
    return pred.astype(bool), target.astype(bool)


def _check_spacing(spacing, ndim: int, source: str | None = None) -> np.ndarray:
    spacing_mm = np.asarray(spacing, dtype=float).reshape(-1)
    if spacing_mm.size != ndim:
        raise InputError(f"{_where(source)}spacing {tuple(spacing)} has {spacing_mm.size} values "
                         f"but the mask has {ndim} axes")
    if not (np.isfinite(spacing_mm).all() and (spacing_mm > 0).all()):
        raise InputError(f"{_where(source)}spacing {tuple(spacing)} must be finite and positive (mm)")
    return spacing_mm


def dice(pred, target) -> float:
    """Dice overlap of two masks: ``2 |P ∩ T| / (|P| + |T|)``.

    Args:
        pred, target: masks of the same shape, any number of axes; non-boolean arrays are read
            as ``!= 0``.

    Returns:
        A float in ``[0, 1]``. Both masks empty gives 1.0 (nothing to find, nothing found);
        exactly one empty gives 0.0 (the formula already does, stated for clarity).
    """
    pred, target = _as_mask_pair(pred, target)
    total = int(pred.sum()) + int(target.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, target).sum()) / total


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with at least one face neighbour (cross connectivity) outside it.

    This is MONAI's ``get_mask_edges`` edge map, ``mask XOR binary_erosion(mask)`` with scipy's
    default structuring element ``generate_binary_structure(ndim, 1)`` (the ``2 * ndim`` face
    neighbours; a voxel whose only outside neighbours touch it by an edge or a corner is interior).
    """
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    # border_value=0 treats outside the array as background, so mask voxels on the border are surface.
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def hd95(pred, target, spacing) -> float:
    """95th-percentile symmetric Hausdorff distance between the surfaces of two masks, in mm.

    With ``S_P``, ``S_T`` the surface voxels (mask XOR its binary erosion by the cross-shaped,
    face-connectivity structure ``generate_binary_structure(ndim, 1)``, outside the array counting
    as background, so mask voxels on the array border are surface) and ``d`` the Euclidean
    distance in mm between voxel centres (``spacing`` per axis)::

        HD95 = max( P95_{p in S_P} min_{t in S_T} d(p, t),  P95_{t in S_T} min_{p in S_P} d(t, p) )

    i.e. the larger of the two directed 95th percentiles. Percentiles use ``np.percentile``
    (linear interpolation, as ``torch.quantile`` in MONAI).

    For two non-empty masks this is MONAI's (>= 1.2, which takes ``spacing``)
    ``compute_hausdorff_distance(y_pred, y, percentile=95, spacing=spacing)`` on the masks as one
    one-hot channel, with its defaults (``distance_metric="euclidean"``, ``directed=False``, no
    sub-voxel edges): same edges (``get_mask_edges``: scipy ``binary_erosion`` with its default
    structure and ``border_value=0``), same distances (``distance_transform_edt`` with
    ``sampling=spacing``), same percentile. MONAI's crop to the bounding box of the union of the
    masks (with a 1-voxel margin, padded with background) does not change its result, and neither
    does the crop done here. Remaining differences: MONAI rounds the distances and the percentile
    to float32 (this function keeps float64, so they agree to float32 precision, about 1e-7
    relative), and the empty-mask conventions below (MONAI gives NaN when both masks are empty,
    and inf or NaN when exactly one is).

    Args:
        pred, target: masks of the same shape ``(Z, H, W)`` or ``(H, W)``; non-boolean arrays are
            read as ``!= 0``.
        spacing: voxel size in mm, one positive value per axis (``(z, y, x)`` or ``(y, x)``).

    Returns:
        Distance in mm. Both masks empty gives 0.0. Exactly one empty gives the worst possible
        value, the diagonal of the array's physical extent ``sqrt(sum((shape * spacing)^2))``,
        as the BraTS evaluation does, so the result is always finite.
    """
    pred, target = _as_mask_pair(pred, target)
    spacing_mm = _check_spacing(spacing, pred.ndim)
    pred_any, target_any = pred.any(), target.any()
    if not pred_any and not target_any:
        return 0.0
    if pred_any != target_any:
        return float(np.sqrt(np.sum((np.asarray(pred.shape) * spacing_mm) ** 2)))

    # Crop to the bounding box of the union of both masks. Exact: every voxel just outside the
    # box is background in both masks, which is what border_value=0 assumes for the erosion, and
    # every surface voxel (hence every nearest surface voxel) lies inside the box, so the distance
    # transforms on the box give the same distances. Much cheaper for small structures.
    box = ndimage.find_objects((pred | target).astype(np.uint8))[0]
    pred_surface, target_surface = _surface(pred[box]), _surface(target[box])

    to_target = ndimage.distance_transform_edt(~target_surface, sampling=spacing_mm)[pred_surface]
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing_mm)[target_surface]
    return float(max(np.percentile(to_target, 95), np.percentile(to_pred, 95)))


def evaluate_volume(pred, target, spacing, class_names, case_id: str | None = None) -> list[dict]:
    """Dice and HD95 (mm) of every foreground class of one volume.

    Args:
        pred, target: integer label maps ``(Z, H, W)`` (or ``(H, W)``) with values ``0..C-1``.
        spacing: voxel size in mm, one value per axis.
        class_names: ``C`` names, background first; class 0 is not scored.
        case_id: named in the rows and in error messages.

    Returns:
        ``C - 1`` rows ``{"case_id", "class", "dice", "hd95_mm"}``, one per class ``c = 1..C-1``,
        with the empty-mask conventions of :func:`dice` and :func:`hd95`.
    """
    pred, target = np.asarray(pred), np.asarray(target)
    num_classes = len(class_names)
    for name, labels in (("prediction", pred), ("target", target)):
        if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
            raise InputError(f"{_where(case_id)}{name} must hold integer class indices, "
                             f"got dtype {labels.dtype}")
        check_label_values(labels, num_classes, f"{case_id} {name}" if case_id else name)
    _as_mask_pair(pred, target, case_id)
    _check_spacing(spacing, pred.ndim, case_id)
    return [{"case_id": case_id, "class": class_names[c],
             "dice": dice(pred == c, target == c),
             "hd95_mm": hd95(pred == c, target == c, spacing)}
            for c in range(1, num_classes)]


def evaluate_volumes(predictions, volumes) -> list[dict]:
    """:func:`evaluate_volume` for each ``(prediction, Volume)`` pair, rows concatenated.

    Args:
        predictions: one integer label map ``(Z, H, W)`` per volume, same order.
        volumes: :class:`mixseg_lite.data.volume.Volume` with labels; their ``spacing``,
            ``class_names`` and ``case_id`` are used.
    """
    if len(predictions) != len(volumes):
        raise InputError(f"{len(predictions)} predictions for {len(volumes)} volumes; "
                         "need one prediction per volume")
    records = []
    for pred, volume in zip(predictions, volumes):
        if volume.label is None:
            raise InputError(f"{volume.case_id}: volume has no label to evaluate against")
        records += evaluate_volume(pred, volume.label, volume.spacing, volume.class_names,
                                   volume.case_id)
    return records


def _stats(values) -> dict:
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()), "std": float(values.std()), "n": int(values.size)}


def summarize_per_volume(records, metrics=("dice", "hd95_mm")) -> dict:
    """Mean, standard deviation and count of each metric, per class and per volume.

    Args:
        records: rows as returned by :func:`evaluate_volume` / :func:`evaluate_volumes`; rows of
            one volume share a ``case_id``, so distinct volumes need distinct case ids.
        metrics: keys of the rows to summarise.

    Returns:
        ``{"per_class": {class: {metric: {"mean", "std", "n"}}}, "mean": {metric: {...}}}``.
        ``"per_class"`` pools the rows of each class over volumes (``n`` = volumes). ``"mean"``
        first averages each volume over its foreground classes, ``m_v = mean_c x_{v,c}``, then
        takes mean and std of ``m_v`` over volumes (``n`` = volumes), so every volume weighs the
        same. ``std`` is the population std (``np.std``, ``ddof=0``), not the sample std.
    """
    check_nonempty(len(records), "list of metric records")
    seen, by_class, by_case = set(), defaultdict(list), defaultdict(list)
    for row in records:
        missing = [m for m in ("case_id", "class", *metrics) if m not in row]
        if missing:
            raise InputError(f"{_where(row.get('case_id'))}metric record lacks keys {missing}")
        key = (row["case_id"], row["class"])
        # A repeated (case, class) means two volumes share a case id, which would merge them.
        if key in seen:
            raise InputError(f"{_where(row['case_id'])}class {row['class']!r} appears twice; "
                             "give every volume a distinct case_id")
        seen.add(key)
        by_class[row["class"]].append(row)
        by_case[row["case_id"]].append(row)
    return {
        "per_class": {name: {m: _stats([r[m] for r in rows]) for m in metrics}
                      for name, rows in by_class.items()},
        "mean": {m: _stats([np.mean([r[m] for r in rows]) for rows in by_case.values()])
                 for m in metrics},
    }
