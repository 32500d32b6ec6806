"""One error type for bad input, with messages that name the source and the problem.

Checks live next to the data they guard; this module only gives them a shared vocabulary so
users can ``except mixseg_lite.InputError`` and see one readable line instead of a traceback
from deep inside torch.
"""

from __future__ import annotations

import math

import numpy as np


class InputError(ValueError):
    """Bad input: wrong shape, labels out of range, missing file or modality, corrupt data."""


def _where(source: str | None) -> str:
    return f"{source}: " if source else ""


def check_choice(value, choices, what: str, source: str | None = None) -> None:
    """Raise :class:`InputError` naming the valid choices unless ``value`` is one of ``choices``."""
    choices = tuple(choices)  # a tuple also compares unhashable values (a list given by mistake)
    if value not in choices:
        raise InputError(f"{_where(source)}unknown {what} {value!r}; choose one of {', '.join(map(str, choices))}")


def check_label_values(labels, num_classes: int, source: str | None = None,
                       allow_unlabelled: bool = False) -> None:
    """Raise :class:`InputError` unless every label is in ``0..num_classes-1``.

    ``allow_unlabelled`` also accepts :data:`mixseg_lite.UNLABELLED` (weak masks).
    """
    from mixseg_lite import UNLABELLED

    if hasattr(labels, "detach"):  # a tensor: reduce where it lives, copy two numbers, not the mask
        if labels.numel() == 0 or (int(labels.min()) >= 0 and int(labels.max()) < num_classes):
            return  # the common case, checked without sorting: this runs on every loss call
        labels = labels.detach().cpu()
    array = np.asarray(labels)
    if array.size == 0 or (array.min() >= 0 and array.max() < num_classes):
        return
    values = np.unique(array)
    valid = (values >= 0) & (values < num_classes)
    if allow_unlabelled:
        valid |= values == UNLABELLED
    if not valid.all():
        bad = values[~valid][:5].tolist()
        allowed = f"0..{num_classes - 1}" + (f" or {UNLABELLED} (unlabelled)" if allow_unlabelled else "")
        raise InputError(f"{_where(source)}label values {bad} outside the class range {allowed}")


def check_same_spatial_shape(image_shape, mask_shape, source: str | None = None) -> None:
    """Raise :class:`InputError` when an image's trailing spatial shape differs from its mask's."""
    image_shape, mask_shape = tuple(image_shape), tuple(mask_shape)
    n = len(mask_shape)
    if image_shape[-n:] != mask_shape:
        raise InputError(
            f"{_where(source)}mask shape {mask_shape} differs from image shape {image_shape}")


def check_nonempty(n: int, what: str, source: str | None = None) -> None:
    """Raise :class:`InputError` when a batch or dataset is empty."""
    if n == 0:
        raise InputError(f"{_where(source)}empty {what}: nothing to process")


def is_number(value) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_field(name: str, value, kind: str, low: float | None = None, high: float | None = None,
                allow_none: bool = False) -> None:
    """One-line :class:`InputError` unless ``value`` is of ``kind`` ("int", "number", "positive",
    "bool") and within ``[low, high]`` ("positive": ``> low``)."""
    if value is None and allow_none:
        return
    wanted = {"int": "an integer", "number": "a number", "positive": "a number", "bool": "True or False"}[kind]
    if kind == "positive":
        wanted += f" > {low}"
    elif kind != "bool":
        wanted += "".join([f" >= {low}" if low is not None else "", f" and <= {high}" if high is not None else ""])
    if kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = is_number(value)
    if ok and kind == "positive":
        ok = value > low
    elif ok and kind != "bool":
        ok = (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        raise InputError(f"{name} must be {wanted}{' or None' if allow_none else ''}, got {value!r}")
