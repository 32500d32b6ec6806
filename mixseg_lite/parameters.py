"""Notebook parameters, checked where they enter: one spec per parameter name, shared by all notebooks.

A notebook's ``parameters`` cell holds literals only (papermill replaces them). Its setup cell ends
with ``params = check_parameters(globals())``, which

1. collects the parameters from the namespace (lower-case names bound to literals: ``None``,
   ``bool``, numbers, strings, lists, tuples, dicts; never IPython's own names, modules,
   functions or upper-case constants), so ``metrics.json`` records exactly the parameters cell;
2. checks each value against :data:`SPECS` and stops on the first bad one with a one-line
   :class:`~mixseg_lite.errors.InputError` naming the parameter and what it accepts.

A parameter means the same thing in every notebook that has it, so :data:`SPECS` is keyed by name.
Checks that need the data (split sizes against the number of volumes, modalities present in a
dataset) happen where the data is loaded; the device is checked by
:func:`mixseg_lite.runtime.pick_device`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mixseg_lite.errors import InputError, check_field, is_number

LITERAL_TYPES = (type(None), bool, int, float, str, list, tuple, dict)


def _choices(*names: str):
    """The values a parameter may take: the keys or items of library constants ``"module:NAME"``,
    imported when a value is first checked (so importing this module does not load torch)."""
    def choices() -> tuple:
        import importlib

        found: list = []
        for name in names:
            module, constant = name.split(":")
            found += list(getattr(importlib.import_module(module), constant))
        return tuple(found)
    return choices


_datasets = _choices("mixseg_lite.data.datasets:DATASETS")
_public_datasets = _choices("mixseg_lite.data.datasets:PUBLIC_DATASETS")
_weak_kinds = _choices("mixseg_lite.weak:WEAK_KINDS")
_methods = _choices("mixseg_lite.train.mixed:METHODS", "mixseg_lite.train.cam:CAM_METHODS")
_recipes = _choices("mixseg_lite.train.mixed:RECIPES")
_norms = _choices("mixseg_lite.models:NORMS")
_transform_kinds = _choices("mixseg_lite.transforms:KINDS")


# name -> (kind, a, b, None allowed). Kinds: "int", "number", "positive", "bool" (a, b: the range,
# as errors.check_field); "text" (a non-empty string); "texts" (a non-empty list of strings);
# "choice" / "choices" (one / a non-empty list of the names a() returns); "numbers" (a non-empty list
# of numbers in [a, b]); "sizes" (group name -> count >= 0, or None for "the rest"); "mapping" (a dict);
# "weights" (a number >= a, or a mapping name -> number >= a: a loss weight per modality).
SPECS: dict[str, tuple[str, Any, Any, bool]] = {
    # every notebook
    "seed": ("int", 0, None, False), "num_threads": ("int", 1, None, False), "output_dir": ("text", None, None, False),
    "image_size": ("int", 16, 1024, False),
    # data
    "dataset": ("choice", _datasets, None, False), "data_dir": ("text", None, None, True),
    "public_dataset": ("choice", _public_datasets, None, False), "max_cases": ("int", 1, None, True),
    "n_volumes": ("int", 1, None, False), "n_slices": ("int", 1, None, False),
    "cardiac_volumes": ("int", 1, None, False), "cardiac_slices": ("int", 1, None, False),
    "brain_volumes": ("int", 1, None, False), "brain_slices": ("int", 1, None, False),
    "brain_modalities": ("texts", None, None, False), "phantom_modalities": ("texts", None, None, False),
    "modalities": ("texts", None, None, True),
    "split_sizes": ("sizes", None, None, True), "split": ("sizes", None, None, True),
    "weak_kind": ("choice", _weak_kinds, None, False), "weak_seed": ("int", 0, None, False),
    "static_figures": ("bool", None, None, True),
    # rows and recipes
    "method": ("choice", _methods, None, False), "methods": ("choices", _methods, None, False),
    "recipe": ("choice", _recipes, None, False), "recipe_overrides": ("mapping", None, None, False),
    "assert_orderings": ("bool", None, None, False),
    "share_recipes": ("choices", _recipes, None, False),  # recipes whose loss terms are compared on one network
    # optimisation and network (None: the recipe's or the library's value)
    "epochs": ("int", 0, None, False), "batch_size": ("int", 1, None, False),
    "learning_rate": ("positive", 0, None, True), "weight_decay": ("number", 0, None, True),
    "base_width": ("int", 1, None, False), "depth": ("int", 1, 8, False), "norm": ("choice", _norms, None, True),
    # mixed-supervision losses
    "lambda_kd": ("number", 0, None, True), "lambda_ent": ("number", 0, None, True),
    "temperature": ("positive", 0, None, True), "pseudo_threshold": ("number", 0, 1, True),
    "ramp_up_epochs": ("int", 0, None, True), "dice_weight": ("number", 0, None, True),
    "class_balance": ("number", 0, None, True),
    # CAM losses, transforms and thresholds
    "er_weight": ("weights", 0, None, False), "cmer_weight": ("weights", 0, None, False),
    "kl_weight": ("weights", 0, None, False), "tau": ("positive", 0, None, False),
    "equivariance_reduction": ("choice", _choices("mixseg_lite.losses.cam:REDUCTIONS"), None, False),
    "foreground_map": ("choice", _choices("mixseg_lite.cam:FOREGROUND_MAPS"), None, False),
    "transform_fill": ("choice", _choices("mixseg_lite.train.cam:TRANSFORM_FILLS"), None, False),
    "tag_weighting": ("choice", _choices("mixseg_lite.train.cam:TAG_WEIGHTINGS"), None, False),
    "lr_schedule": ("choice", _choices("mixseg_lite.train.cam:LR_SCHEDULES"), None, False),
    "regulariser_warmup": ("int", 0, None, False),
    "transform_kinds": ("choices", _transform_kinds, None, False), "max_shift": ("number", 0, 0.99, False),
    "scale_range": ("numbers", 0.01, 100, False), "thresholds": ("numbers", 0, 1, False),
    # hardware and checkpoints
    "device": ("text", None, None, False), "amp": ("choice", lambda: (False, True, "auto"), None, False),
    "channels_last": ("bool", None, None, True), "compile": ("bool", None, None, True),
    "checkpoint_dir": ("text", None, None, True), "resume": ("bool", None, None, False),
}


def parameters_in(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The notebook parameters among ``namespace`` (a notebook's ``globals()``), in their order."""
    hidden: set[str] = set()
    try:  # inside IPython: the names IPython put there itself (In, Out, exit, ...)
        from IPython import get_ipython

        shell = get_ipython()
        hidden = set(getattr(shell, "user_ns_hidden", ()) or ())
    except ImportError:
        pass
    return {name: value for name, value in namespace.items()
            if not name.startswith("_") and not name.isupper() and name not in hidden
            and name not in ("In", "Out") and isinstance(value, LITERAL_TYPES)}


def check_parameter(name: str, value: Any) -> None:
    """One-line :class:`InputError` unless ``value`` is allowed for the notebook parameter ``name``."""
    if name not in SPECS:
        raise InputError(f"unknown notebook parameter {name!r}: no check is defined for it in "
                         f"mixseg_lite.parameters.SPECS")
    kind, a, b, allow_none = SPECS[name]
    label = f"parameter {name}"
    if value is None and allow_none:
        return
    none = " or None" if allow_none else ""
    if kind in ("int", "number", "positive", "bool"):
        check_field(label, value, kind, a, b, allow_none)
    elif kind == "text":
        if not isinstance(value, str) or not value:
            raise InputError(f"{label} must be a non-empty string{none}, got {value!r}")
    elif kind == "choice":
        if not any(value == choice and type(value) is type(choice) for choice in a()):
            raise InputError(f"{label} must be one of {', '.join(map(repr, a()))}{none}, got {value!r}")
    elif kind in ("texts", "choices", "numbers"):
        items = value if isinstance(value, (list, tuple)) else None
        wanted = ("names" if kind == "texts" else f"names from {', '.join(a())}" if kind == "choices"
                  else f"numbers in [{a}, {b}]")
        ok = bool(items) and all(
            isinstance(item, str) and item if kind == "texts"
            else item in a() if kind == "choices"
            else is_number(item) and a <= item <= b for item in items)
        if not ok:
            raise InputError(f"{label} must be a non-empty list of {wanted}{none}, got {value!r}")
    elif kind == "sizes":
        ok = isinstance(value, dict) and value and all(
            isinstance(group, str) and (count is None or (isinstance(count, int) and not isinstance(count, bool)
                                                          and count >= 0))
            for group, count in value.items())
        if not ok:
            raise InputError(f"{label} must map group names to counts >= 0 (None: the rest){none}, "
                             f"e.g. {{'full': 1, 'weak': None, 'val': 4, 'test': 7}}, got {value!r}")
    elif kind == "weights":
        values = list(value.values()) if isinstance(value, dict) and all(isinstance(k, str) for k in value) else [value]
        if not values or not all(is_number(v) and v >= a for v in values):
            raise InputError(f"{label} must be a number >= {a} or a mapping of modality names to numbers >= {a}"
                             f"{none}, got {value!r}")
    elif kind == "mapping":
        if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
            raise InputError(f"{label} must be a mapping of names to values{none}, got {value!r}")
    else:  # pragma: no cover - a typo in SPECS
        raise AssertionError(f"unknown parameter kind {kind!r}")


def check_parameters(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """Check every notebook parameter in ``namespace`` (see the module docstring); return them."""
    params = parameters_in(namespace)
    for name, value in params.items():
        check_parameter(name, value)
    return params
