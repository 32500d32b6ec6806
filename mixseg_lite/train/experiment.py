"""Full training runs: load a dataset, train one ablation row, keep checkpoints, evaluate, write results.

The driver behind notebook 04 and the ``configs/*.yaml`` files:

* :func:`load_dataset` turns a dataset name (simulated, the real atlas, or a public dataset in its
  distributed layout) into split volumes ``{"full", "weak", "val", "test"}``; slow NIfTI loading
  and resampling go through the on-disk cache (:func:`mixseg_lite.data.cache.load_cached`), whose
  key holds every source file's size and mtime, so editing a source rebuilds the entry.
* :func:`run_experiment` trains one method with per-epoch validation, keeps ``last.pt`` (every
  epoch) and ``best.pt`` (best validation Dice of the reported branch) in ``checkpoint_dir``,
  resumes after an interruption, evaluates the best checkpoint on the test split and writes
  ``metrics.json``, ``training_curves.png`` and ``predictions.png`` to ``output_dir``.

Mixed-supervision rows (REFERENCE A, :data:`mixseg_lite.train.mixed.METHODS`) are trained by one
call of :func:`~mixseg_lite.train.mixed.train_mixed` with ``checkpoint=last.pt, resume=True``: it
validates and checkpoints every epoch, keeps the best validation weights, and resumes exactly, so a
run interrupted after epoch ``k`` and restarted ends with the same log and weights as an
uninterrupted one. Tag-supervised CAM rows (REFERENCE B, :data:`mixseg_lite.train.cam.CAM_METHODS`)
are trained by :func:`~mixseg_lite.train.cam.train_cam`, which has no per-epoch validation or
checkpoints: their ``best.pt`` is the final model, and an unfinished CAM run starts over.

Checkpoint files (``checkpoint_dir``, default ``output_dir/checkpoints``):

* ``run.json``: the settings that must not change within one run (method, model, optimiser,
  losses, seed, the case ids of every split). Resuming with different settings raises
  :class:`~mixseg_lite.errors.InputError`; ``epochs``, ``device``, ``amp``, ``channels_last`` and
  ``compile`` may change (train 10 epochs, then resume to 20 on a GPU).
* ``last.pt``: written atomically by ``train_mixed`` after every epoch (model, optimiser, batch
  counts, log, best weights so far). A missing one means a fresh start; an unreadable one raises
  ``InputError`` rather than silently discarding hours of training (delete it, or pass
  ``resume=False``).
* ``best.pt``: written when training ends: the weights of the best validation epoch (the last
  epoch without validation data) with ``epoch``, ``val_dice`` and ``selection`` (the log key that
  chose it), loadable with ``torch.load(..., weights_only=True)``. These are the weights
  evaluated on the test split.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mixseg_lite.data.slices import SliceDataset, split_volumes
from mixseg_lite.data.volume import Volume
from mixseg_lite.errors import InputError, check_choice
from mixseg_lite.models import DualBranchUNet
from mixseg_lite.results import write_metrics
from mixseg_lite.train.mixed import (METHODS, MixedConfig, TrainResult, evaluate_mixed, predict_volumes, train_mixed,
                                    uses_weak_images)

try:  # REFERENCE B rows live in another engineer's module; everything else works without it
    from mixseg_lite.train import cam as _cam
except ImportError:  # pragma: no cover - only while train/cam.py is missing
    _cam = None

CAM_METHODS: dict = dict(_cam.CAM_METHODS) if _cam is not None else {}

# ============================================================================ datasets

DATASETS = {
    "simulated_cardiac": "simulated cardiac cine-MRI (mixseg_lite.data.cardiac_sim), ACDC classes",
    "simulated_cardiac_lv": "the same simulated cardiac volumes, binary LV cavity (the authors' script's task)",
    "simulated_brain": "simulated multi-contrast brain MRI with tumours (mixseg_lite.data.brain_sim)",
    "atlas": "real Colin27 T1 + hand-drawn AAL deep structures (Debian package mricron-data), one subject",
    "acdc": "ACDC cine-MRI, training/patientNNN/ layout (RV cavity, myocardium, LV cavity)",
    "brats": "BraTS 2019-2021 or 2023+ case folders, whole tumour, T1 + T2 by default",
    "decathlon": "Medical Segmentation Decathlon, any task folder; modalities and classes from its dataset.json",
    "decathlon_prostate": "Medical Segmentation Decathlon Task05_Prostate (T2 + ADC; PZ, TZ)",
}
"""Names accepted by :func:`load_dataset`, with what each one is. ``decathlon`` reads any task
(``dataset.json``, ``imagesTr/``, ``labelsTr/``); ``decathlon_prostate`` is the same loader with the
prostate task's defaults (modalities T2 + ADC, the paper's split, plain z-score)."""

PUBLIC_DATASETS = ("acdc", "brats", "decathlon", "decathlon_prostate")
"""Datasets read from ``data_dir`` (the others are simulated or installed)."""

SPLIT_GROUPS = ("full", "weak", "val", "test")

PROPORTIONAL_SPLIT: dict[str, float | None] = {"full": 0.10, "weak": None, "val": 0.15, "test": 0.25}
"""The default split rule: ``full`` 10 %, ``val`` 15 %, ``test`` 25 % of the cases (rounded with
Python's ``round``, at least 1 each), ``weak`` the rest (at least 1), so it needs at least 4 cases.
For example 4 cases: 1/1/1/1 (full/weak/val/test), 6: 1/2/1/2, 10: 1/5/2/2, 20: 2/10/3/5,
32: 3/16/5/8, 100: 10/50/15/25. It is the default of ``decathlon`` and of any dataset whose
reference split (:data:`DEFAULT_SPLITS`) does not fit its number of cases."""

DEFAULT_SPLITS: dict[str, dict | None] = {
    # One fully labelled volume: the converged lower bound then leaves a gap for the weak labels
    # to close (mean Dice about 0.7; with 3 volumes it is about 0.94 and every row ties).
    "simulated_cardiac": {"full": 1, "weak": 12, "val": 4, "test": 7},
    "simulated_cardiac_lv": {"full": 1, "weak": 12, "val": 4, "test": 7},
    "simulated_brain": {"full": 2, "weak": 8, "val": 2, "test": 4},
    "atlas": {"full": 2, "weak": 4, "val": 1, "test": 3},
    # The paper's settings: 3 or 5 fully labelled patients, the rest weak. ACDC counts patients
    # (both phases of a patient always land in the same group).
    "acdc": {"full": 5, "weak": None, "val": 10, "test": 20},
    "brats": {"full": 5, "weak": None, "val": 0.1, "test": 0.2},
    "decathlon": None,  # any task, any size: always PROPORTIONAL_SPLIT
    "decathlon_prostate": {"full": 3, "weak": None, "val": 4, "test": 8},
}
"""Reference split per dataset (an int is a count, a float in (0, 1) a fraction, ``None`` the
rest). :func:`default_split` uses it when the dataset has enough cases for it with every group
non-empty (ACDC >= 36 patients, BraTS >= 9 cases, prostate >= 16 cases, the simulated datasets at
their default sizes, the atlas always), and :data:`PROPORTIONAL_SPLIT` otherwise."""

# What each public dataset's preprocessing is (kept in one table so it can be printed and cited).
PREPROCESSING = {
    "acdc": {"normalize": "minmax", "nonzero": False, "resize": "fit"},  # paper: min-max per volume
    "brats": {"normalize": "zscore", "nonzero": True, "resize": "fit"},  # skull-stripped: 0 is air
    # any Decathlon task: per modality kind, CT or MR (normalize_by_modality, DECATHLON_NORMALIZATION)
    "decathlon": {"normalize": "per modality", "resize": "fit"},
    "decathlon_prostate": {"normalize": "zscore", "nonzero": False, "resize": "fit"},
}
DECATHLON_NORMALIZATION = {
    # CT is in Hounsfield units: clip each volume to its 0.5-99.5 percentiles (metal, air and
    # table extremes) then z-score. A fixed HU window would suit one task only (liver, lung and
    # colon need different windows); percentiles work for every CT task.
    "CT": {"normalize": "zscore", "clip_percentiles": (0.5, 99.5), "nonzero": False},
    # MR intensities have no physical scale: z-score each volume and modality (decathlon_prostate's rule).
    "MR": {"normalize": "zscore", "clip_percentiles": None, "nonzero": False},
}
"""Intensity normalisation of the generic ``decathlon`` dataset, per modality and volume: a
modality named ``CT`` (any case) uses the ``CT`` row, every other name (MRI, T2, ADC, FLAIR,
T1w, ...) the ``MR`` row."""

DEFAULT_MODALITIES = {"brats": ("t1", "t2"), "decathlon": None, "decathlon_prostate": ("T2", "ADC")}
"""Default image channels; ``None``: all of the task's modalities, in ``dataset.json`` order."""
_SOURCE_SUFFIXES = (".nii", ".nii.gz", ".cfg", ".json")


def decathlon_modality_kind(name: str) -> str:
    """``"CT"`` for a modality named CT (any case), else ``"MR"`` (see :data:`DECATHLON_NORMALIZATION`)."""
    return "CT" if str(name).strip().upper() == "CT" else "MR"


def _split_counts(sizes: dict, available: int, source: str) -> dict[str, int]:
    """Counts of a split spec (the rest group still 0); raises on malformed specs only."""
    if not isinstance(sizes, dict) or not sizes:
        raise InputError(f"{source}: split must be a dict like {{'full': 3, 'weak': None, 'test': 6}}, got {sizes!r}")
    rest = [name for name, value in sizes.items() if value is None]
    if len(rest) > 1:
        raise InputError(f"{source}: only one split group can take the rest (None), got {rest}")
    counts = {}
    for name, value in sizes.items():
        if value is None:
            counts[name] = 0
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise InputError(f"{source}: split size of {name!r} must be a count, a fraction or None, got {value!r}")
        elif isinstance(value, float) and 0 < value < 1:
            counts[name] = max(1, round(value * available))
        elif float(value).is_integer():
            counts[name] = int(value)
        else:
            raise InputError(f"{source}: split size of {name!r} must be a whole count or a fraction < 1, got {value}")
    return counts


def _fill_rest(sizes: dict, counts: dict[str, int], available: int) -> dict[str, int] | None:
    """``counts`` with the ``None`` group given what is left, or ``None`` if they ask for too much."""
    used = sum(counts.values())
    if used > available:
        return None
    return {name: (available - used if sizes[name] is None else n) for name, n in counts.items()}


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit[:-1] if count == 1 and unit.endswith('s') else unit}"


def suggest_split(available: int) -> dict[str, int] | None:
    """Group counts that work for ``available`` cases: :data:`PROPORTIONAL_SPLIT` from 4 cases,
    full/weak/test one each for 3 (no validation: the last epoch is kept), full + test for 2
    (only the fully supervised rows can train); ``None`` below 2 (nothing to train and test on)."""
    if available >= 4:
        counts = _fill_rest(PROPORTIONAL_SPLIT, _split_counts(PROPORTIONAL_SPLIT, available, "default split"),
                            available)
        if counts is not None and min(counts.values()) >= 1:
            return counts
    if available == 3:
        return {"full": 1, "weak": 1, "test": 1}
    if available == 2:
        return {"full": 1, "test": 1}
    return None


def _suggestion(available: int, unit: str, how: str = "use e.g. ") -> str:
    suggested = suggest_split(available)
    if suggested is None:
        return f"at least 2 {unit} are needed (one to train on, one to test on)"
    return f"with {_plural(available, unit)} {how}{suggested}"


def resolve_split(sizes: dict, available: int, source: str, unit: str = "cases") -> dict[str, int]:
    """Counts from a split spec: ints are counts, floats in (0, 1) fractions of ``available``
    (rounded, at least 1), and at most one ``None`` takes what is left (possibly 0).

    A spec that asks for more than ``available`` raises one line naming sizes that would work
    (:func:`suggest_split`); ``unit`` names what is counted (cases, patients, blocks).
    """
    counts = _split_counts(sizes, available, source)
    resolved = _fill_rest(sizes, counts, available)
    if resolved is None:
        asked = ", ".join(f"{name}={value}" for name, value in sizes.items())
        raise InputError(f"{source}: {_plural(available, unit)} cannot be split into {asked} (that needs "
                         f"{sum(counts.values())}); {_suggestion(available, unit)}")
    return resolved


def default_split(name: str, available: int, source: str | None = None, unit: str = "cases") -> dict[str, int]:
    """The split used when ``load_dataset`` gets ``split=None``.

    The dataset's reference split (:data:`DEFAULT_SPLITS`) when it fits ``available`` with every
    group non-empty, so the simulated datasets, the atlas and the papers' settings are unchanged;
    otherwise :data:`PROPORTIONAL_SPLIT` (full 10 %, val 15 %, test 25 %, at least 1 each, weak the
    rest, at least 1). Fewer than 4 cases raise one line suggesting sizes that work.
    """
    source = source or f"dataset {name!r}"
    for sizes in (DEFAULT_SPLITS.get(name), PROPORTIONAL_SPLIT):
        if sizes is not None:
            counts = _fill_rest(sizes, _split_counts(sizes, available, source), available)
            if counts is not None and min(counts.values()) >= 1:
                return counts
    raise InputError(f"{source}: {_plural(available, unit)} cannot be split by the default rule (full 10%, "
                     f"val 15%, test 25%, weak the rest, at least 1 each, so at least 4 {unit}); "
                     f"{_suggestion(available, unit, 'pass e.g. split=')}")


def _require_data_dir(name: str, data_dir) -> Path:
    if data_dir is None:
        raise InputError(f"dataset {name!r} is read from disk: set data_dir to the folder of the downloaded "
                         f"{DATASETS[name].split(',')[0]} (layouts: REFERENCE section C)")
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise InputError(f"{data_dir}: data_dir not found; set data_dir to your copy of the "
                         f"{name} dataset (the configs ship a placeholder such as /path/to/ACDC)")
    return path


def _source_files(root: Path) -> list[Path]:
    """The files a loader may read under ``root`` (for the cache key): NIfTI, Info.cfg, dataset.json.

    ACDC's 4-D cine files are never read, and macOS ``._*`` files are junk; both are skipped.
    """
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(_SOURCE_SUFFIXES)
                  and not p.name.startswith(".") and "_4d." not in p.name)


def _acdc_patients(root: Path) -> list[str]:
    for candidate in (root, root / "training", root / "database" / "training"):
        found = sorted(p.name for p in candidate.glob("patient[0-9]*") if p.is_dir()) if candidate.is_dir() else []
        if found:
            return found
    raise InputError(f"{root}: no ACDC patientNNN folders here or in training/ (is this the ACDC root?)")


def _brats_cases(root: Path) -> list[str]:
    from mixseg_lite.data.nifti import brats_naming

    cases = set()
    for parent in [root] + sorted(p for p in root.iterdir() if p.is_dir()):
        cases.update(folder.name for folder in parent.iterdir() if folder.is_dir() and brats_naming(folder))
    if not cases:
        raise InputError(f"{root}: no BraTS case folders (<case>/<case>_t1.nii.gz or <case>/<case>-t1n.nii.gz)")
    return sorted(cases)


def _decathlon_cases(root: Path) -> list[str]:
    from mixseg_lite.data.nifti import nifti_case_name, read_dataset_json

    return [nifti_case_name(Path(entry["image"])) for entry in read_dataset_json(root)["training"]
            if isinstance(entry, dict) and "image" in entry]


def normalize_by_modality(volume: Volume) -> Volume:
    """Normalise each modality of a Decathlon volume by its kind (:data:`DECATHLON_NORMALIZATION`)."""
    from mixseg_lite.data.preprocess import normalize_intensity

    channels = []
    for m, name in enumerate(volume.modalities):
        rule = DECATHLON_NORMALIZATION[decathlon_modality_kind(name)]
        single = dataclasses.replace(volume, image=volume.image[m:m + 1], modalities=(name,))
        normalized = normalize_intensity(single, rule["normalize"], rule["clip_percentiles"], rule["nonzero"])
        channels.append(normalized.image[0])
    return dataclasses.replace(volume, image=np.stack(channels).astype(np.float32), meta=dict(volume.meta))


def _build_public(name: str, root: Path, image_size: int, modalities, max_cases) -> list[Volume]:
    """Load and prepare one case at a time, so only prepared (small) arrays are ever held together."""
    from mixseg_lite.data.nifti import load_acdc, load_brats, load_decathlon
    from mixseg_lite.data.preprocess import prepare_volumes

    decathlon = (_decathlon_cases, lambda case: load_decathlon(root, modalities=modalities, cases=[case]))
    listing, load_one = {
        "acdc": (_acdc_patients, lambda case: load_acdc(root, patients=[case])),
        "brats": (_brats_cases, lambda case: load_brats(root, modalities=modalities, cases=[case])),
        "decathlon": decathlon,
        "decathlon_prostate": decathlon,
    }[name]
    cases = listing(root)[:max_cases]
    spec = PREPROCESSING[name]
    volumes = []
    for case in tqdm(cases, desc=f"preparing {name}", leave=False):
        if name == "decathlon":  # normalised per modality kind (CT or MR), then resized
            loaded = [normalize_by_modality(v) for v in load_one(case)]
            volumes += prepare_volumes(loaded, size=image_size, resize=spec["resize"], normalize=None)
        else:
            volumes += prepare_volumes(load_one(case), size=image_size, resize=spec["resize"],
                                       normalize=spec["normalize"], nonzero=spec["nonzero"])
    return volumes


def _group_of(name: str, volume: Volume) -> str:
    """Volumes of one group never go to different splits: ACDC's two phases share a patient."""
    return volume.meta.get("patient", volume.case_id) if name == "acdc" else volume.case_id


_SPLIT_UNITS = {"acdc": "patients", "atlas": "blocks", "simulated_cardiac": "volumes", "simulated_cardiac_lv": "volumes", "simulated_brain": "volumes"}


def _split(name: str, volumes: list[Volume], split: dict | None, seed: int) -> dict[str, list[Volume]]:
    groups = sorted({_group_of(name, v) for v in volumes})
    unit = _SPLIT_UNITS.get(name, "cases")
    if split is None:
        counts = default_split(name, len(groups), f"dataset {name!r}", unit)
    else:
        counts = resolve_split(split, len(groups), f"dataset {name!r}", unit)
    if name == "atlas":
        from mixseg_lite.data.atlas import atlas_split

        parts = atlas_split(volumes, counts, seed=seed)
    elif name == "acdc":
        order = [groups[i] for i in np.random.default_rng(seed).permutation(len(groups))]
        parts, start = {}, 0
        for group_name, n in counts.items():
            chosen = set(order[start:start + n])
            parts[group_name] = [v for v in volumes if _group_of(name, v) in chosen]
            start += n
    else:
        parts = split_volumes(volumes, counts, seed=seed)
    return {**{g: [] for g in SPLIT_GROUPS}, **parts}


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, image_size: int = 64, seed: int = 0,
                 split: dict | None = None, *, n_volumes: int | None = None, n_slices: int | None = None,
                 modalities=None, max_cases: int | None = None, cache: bool = True,
                 cache_dir: str | os.PathLike | None = None) -> dict[str, list[Volume]]:
    """Volumes of dataset ``name`` at ``image_size x image_size``, split into supervision groups.

    Args:
        name: one of :data:`DATASETS`. ``"decathlon"`` reads any Medical Segmentation Decathlon
            task folder; its modalities and class names come from the task's ``dataset.json``.
        data_dir: folder of a public dataset (:data:`PUBLIC_DATASETS`), exactly as distributed
            (for ``decathlon`` and ``decathlon_prostate`` the task folder holding ``dataset.json``);
            ignored by the simulated datasets and the atlas.
        image_size: in-plane size after preprocessing (:data:`PREPROCESSING`: normalisation, then
            padding to square and resizing, spacing updated so HD95 stays in mm). ``decathlon``
            normalises each modality by its kind (:data:`DECATHLON_NORMALIZATION`: CT clipped to its
            0.5-99.5 percentiles then z-scored, MR z-scored).
        seed: seeds the simulation and the split.
        split: group sizes, see :func:`resolve_split`; default :func:`default_split` (the dataset's
            :data:`DEFAULT_SPLITS` when it has enough cases for it, else :data:`PROPORTIONAL_SPLIT`:
            full 10 %, val 15 %, test 25 %, weak the rest, at least 1 each). Groups are ``full``
            (D_s), ``weak`` (D_w), ``val`` and ``test``; missing ones come back empty.
        n_volumes, n_slices: size of the simulated datasets (defaults 24 x 8 cardiac,
            16 x 24 brain).
        modalities: names of the image channels: BraTS (default ``("t1", "t2")``), a Decathlon
            task (names from its ``dataset.json``, case-insensitive; default all of them, in file
            order), Decathlon prostate (``("T2", "ADC")``) or the simulated brain
            (``("T1", "T2", "FLAIR")``). A single name may be given as a string.
        max_cases: use only the first ``max_cases`` cases (patients) of a public dataset, in
            sorted order (Decathlon: ``dataset.json`` order); BraTS has over a thousand and memory
            grows with every one.
        cache, cache_dir: keep prepared public data and the atlas in the slice cache
            (default ``$MIXSEG_CACHE_DIR`` or ``~/.cache/mixseg-lite``).

    Returns:
        ``{"full": [...], "weak": [...], "val": [...], "test": [...]}`` lists of
        :class:`~mixseg_lite.data.volume.Volume`.
    """
    check_choice(name, DATASETS, "dataset")
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 16:
        raise InputError(f"dataset {name!r}: image_size must be an integer >= 16, got {image_size!r}")
    if max_cases is not None and (not isinstance(max_cases, int) or max_cases < 1):
        raise InputError(f"dataset {name!r}: max_cases must be None or a positive integer, got {max_cases!r}")
    if isinstance(modalities, str):  # modalities: T2 in a YAML file, or modalities="CT"
        modalities = (modalities,)

    if name == "simulated_cardiac":
        from mixseg_lite.data.cardiac_sim import make_cardiac_volumes

        volumes = make_cardiac_volumes(n_volumes or 24, n_slices or 8, image_size, seed=seed)
    elif name == "simulated_cardiac_lv":
        from mixseg_lite.data.cardiac_sim import left_ventricle_only, make_cardiac_volumes

        volumes = left_ventricle_only(make_cardiac_volumes(n_volumes or 24, n_slices or 8, image_size, seed=seed))
    elif name == "simulated_brain":
        from mixseg_lite.data.brain_sim import make_brain_volumes

        volumes = make_brain_volumes(n_volumes or 16, n_slices or 24, image_size,
                                     modalities=tuple(modalities or ("T1", "T2", "FLAIR")), seed=seed)
    elif name == "atlas":
        from mixseg_lite.data.atlas import atlas_files, load_atlas

        build = lambda: load_atlas(size=image_size)  # noqa: E731
        volumes = _cached({"dataset": name, "size": image_size}, atlas_files(), build, cache, cache_dir)
    else:
        root = _require_data_dir(name, data_dir)
        chosen = tuple(modalities) if modalities is not None else DEFAULT_MODALITIES.get(name)
        params = {"dataset": name, "root": str(root.resolve()), "size": image_size, "modalities": chosen,
                  "max_cases": max_cases, **PREPROCESSING[name]}
        if name == "decathlon":
            params["per_modality"] = DECATHLON_NORMALIZATION
        volumes = _cached(params, _source_files(root) if cache else [],
                          lambda: _build_public(name, root, image_size, chosen, max_cases), cache, cache_dir)
        if not volumes:
            raise InputError(f"{root}: no {name} cases found")
    return _split(name, volumes, split, seed)


def _cached(params: dict, sources, build, cache: bool, cache_dir) -> list[Volume]:
    if not cache:
        return build()
    from mixseg_lite.data.cache import load_cached

    return load_cached(params, sources, build, cache_dir)


# ============================================================================ experiments

CHECKPOINT_NAMES = {"last": "last.pt", "best": "best.pt", "run": "run.json"}
# Settings that may change between an interrupted run and its resumption.
_RESUMABLE_CHANGES = ("epochs", "progress", "device", "amp", "channels_last", "compile")
_LAST_KEYS = ("model", "optimiser", "log", "epoch")


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` returns.

    ``rows`` are the test rows written to ``metrics.json``; ``log`` is the whole per-epoch
    training log (also the epochs of earlier, interrupted calls); ``start_epoch`` the number of
    epochs already done when this call began (0 for a fresh run); ``model`` the evaluated
    (best) model, a :class:`DualBranchUNet` or, for CAM rows, ``{modality: network}``;
    ``files`` the paths written; ``train_seconds`` the wall time of the training done here.
    For CAM rows ``best_epoch`` is the last epoch (no per-epoch validation) and ``thresholds``
    the CAM thresholds chosen on the validation split.
    """

    method: str
    rows: list[dict]
    log: list[dict]
    best_epoch: int | None
    best_val_dice: float | None
    start_epoch: int
    model: object
    config: object
    files: dict[str, Path] = field(default_factory=dict)
    train_seconds: float = 0.0
    thresholds: dict | float | None = None  # CAM rows: the CAM threshold of each modality


def supported_methods() -> list[str]:
    """Every method :func:`run_experiment` can train."""
    return list(METHODS) + list(CAM_METHODS)


def reported_branch(method: str) -> str:
    """The branch whose validation Dice chooses ``best.pt``: the student where it is trained."""
    return "student" if METHODS[method]["student"] else "teacher"


def run_experiment(splits: dict[str, list[Volume]], method: str = "kl_ent",
                   output_dir: str | os.PathLike = "outputs/experiment", *,
                   checkpoint_dir: str | os.PathLike | None = None, resume: bool = True, config=None,
                   params: dict | None = None, figures: bool = True, progress: bool = True,
                   **overrides) -> ExperimentResult:
    """Train ``method`` on ``splits``, validate every epoch, keep checkpoints, evaluate on ``test``.

    Args:
        splits: ``{"full", "weak", "val", "test"}`` volumes, e.g. from :func:`load_dataset`;
            ``full`` and ``test`` must not be empty; without ``val`` the last epoch is the best.
        method: a row of :data:`~mixseg_lite.train.mixed.METHODS` (REFERENCE A) or of
            :data:`~mixseg_lite.train.cam.CAM_METHODS` (REFERENCE B); see :func:`supported_methods`.
        output_dir: receives ``metrics.json``, ``training_curves.png``, ``predictions.png``.
        checkpoint_dir: ``last.pt``, ``best.pt``, ``run.json``; default ``output_dir/checkpoints``.
        resume: continue from ``last.pt`` when it exists (a missing one starts afresh; a corrupt
            one, or one from different settings, raises :class:`InputError`); ``False`` deletes
            the checkpoints and starts afresh. A finished run is evaluated without training.
        config: a :class:`MixedConfig` (or ``CAMConfig`` for CAM rows); ``overrides`` replace its
            fields (``epochs=20, lr=1e-3, base_width=64, depth=5, amp=True, ...``). Overrides the
            chosen family does not know are dropped when ``None`` or ``False`` (they mean "off"
            or "library default"), and ``weak_kind`` is dropped for CAM rows (their weak labels
            are image tags); any other unknown option raises :class:`InputError`.
        params: extra entries for ``metrics.json``'s ``params`` (e.g. the notebook's parameters).
        figures: write the two PNG figures.
        progress: show a progress bar over epochs.

    Returns:
        :class:`ExperimentResult`. ``metrics.json`` rows are
        ``{"method", "branch", "dice", "dice_std", "hd95_mm", "hd95_std"}`` per reported branch
        (for CAM rows ``branch`` is the modality, plus the empty-mask baseline row).
    """
    if method not in METHODS and method not in CAM_METHODS:
        hint = "" if CAM_METHODS else " (REFERENCE B rows need mixseg_lite.train.cam, which is not installed)"
        raise InputError(f"unknown method {method!r}; run_experiment supports {supported_methods()}{hint}")
    splits = _check_splits(splits, needs_weak=method in METHODS and uses_weak_images(method))
    output_dir = Path(output_dir)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else output_dir / "checkpoints"
    paths = {key: checkpoint_dir / filename for key, filename in CHECKPOINT_NAMES.items()}
    if method in METHODS:
        result = _run_mixed(splits, method, paths, resume, config, progress, overrides)
    else:
        result = _run_cam(splits, method, paths, resume, config, progress, overrides)
    result.files.update({"last": paths["last"], "best": paths["best"]})
    if figures:
        result.files["curves"] = _save_curves(result, output_dir / "training_curves.png")
        result.files["predictions"] = _save_predictions(result, splits["test"], output_dir / "predictions.png")
    run_params = {**(params or {}), "method": method, "config": dataclasses.asdict(result.config),
                  "best_epoch": result.best_epoch, "best_val_dice": result.best_val_dice,
                  "epochs_done": len(result.log), "checkpoint": "best"}
    result.files["metrics"] = write_metrics(output_dir, result.rows, run_params)
    return result


def _check_splits(splits, needs_weak: bool) -> dict[str, list[Volume]]:
    if not isinstance(splits, dict):
        raise InputError(f"splits must be a dict of volume lists (from load_dataset), got {type(splits).__name__}")
    unknown = sorted(set(splits) - set(SPLIT_GROUPS))
    if unknown:
        raise InputError(f"splits has unknown groups {unknown}; use {SPLIT_GROUPS}")
    splits = {g: list(splits.get(g) or []) for g in SPLIT_GROUPS}
    for group in ("full", "test") + (("weak",) if needs_weak else ()):
        if not splits[group]:
            raise InputError(f"splits[{group!r}] is empty; the experiment needs {group} volumes")
    return splits


def _config_for(cls, config, method: str, overrides: dict, cam: bool):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = {k: v for k, v in overrides.items() if k not in names}
    bad = {k: v for k, v in unknown.items() if v is not None and v is not False and not (cam and k == "weak_kind")}
    if bad:
        family = "CAM (train_cam)" if cam else "mixed-supervision (train_mixed)"
        raise InputError(f"method {method!r}: option(s) {bad} are not used by the {family} training; "
                         f"its options are {sorted(names)}")
    known = {k: v for k, v in overrides.items() if k in names and v is not None}
    if config is not None and not isinstance(config, cls):
        raise InputError(f"method {method!r} needs a {cls.__name__}, got {type(config).__name__}")
    return dataclasses.replace(config or cls(), **{**known, "method": method})


def _settings(config) -> dict:
    """The fields of a config that change the result, JSON-normalised (tuples become lists)."""
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k not in _RESUMABLE_CHANGES}
    return json.loads(json.dumps(fields, default=str))


def _fingerprint(config, splits: dict[str, list[Volume]]) -> dict:
    """What identifies a run: settings that change the result, and which cases are in which split."""
    first = splits["full"][0]
    return json.loads(json.dumps({
        "settings": _settings(config), "splits": {g: [v.case_id for v in vols] for g, vols in splits.items()},
        "slice_shape": list(first.image.shape[:1] + first.image.shape[2:]),
        "class_names": list(first.class_names)}, default=str))


def _differences(recorded: dict, current: dict, defaults: dict) -> list[str]:
    """Names of the settings in which two fingerprints differ.

    An option the library gained after the run started counts as unchanged while it has its
    default value (the run was trained that way), so upgrading does not orphan a checkpoint;
    an option the library dropped cannot matter any more.
    """
    before, now = recorded.get("settings", {}), current["settings"]
    changed = {k for k in before.keys() & now.keys() if before[k] != now[k]}
    changed |= {k for k in now.keys() - before.keys() if now[k] != defaults.get(k)}
    changed |= {k for k in ("splits", "slice_shape", "class_names") if recorded.get(k) != current[k]}
    return sorted(changed)


def _prepare_checkpoints(paths: dict[str, Path], fingerprint: dict, resume: bool, defaults: dict) -> None:
    """Start afresh (``resume=False``) or check that the checkpoints belong to this run."""
    paths["run"].parent.mkdir(parents=True, exist_ok=True)
    if not resume:
        for key in ("last", "best", "run"):
            paths[key].unlink(missing_ok=True)
    elif paths["run"].is_file():
        try:
            recorded = json.loads(paths["run"].read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"{paths['run']}: unreadable ({error}); delete the checkpoint folder or pass "
                             "resume=False") from None
        changed = _differences(recorded, fingerprint, defaults)
        if changed:
            raise InputError(f"{paths['run'].parent}: holds a run with different settings ({', '.join(changed)}); "
                             "use another checkpoint_dir, or resume=False to overwrite it")
    temp = paths["run"].with_suffix(".json.tmp")
    temp.write_text(json.dumps(fingerprint, indent=1))
    temp.replace(paths["run"])


def _load(path: Path, what: str, required=()) -> dict:
    """Read a checkpoint (tensors and plain values only) or raise one clear line."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for damaged files
        raise InputError(f"{path}: cannot read the {what} checkpoint, truncated or corrupt? "
                         f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                         "delete it, or pass resume=False to start afresh") from None
    missing = [k for k in required if not isinstance(state, dict) or k not in state]
    if missing:
        raise InputError(f"{path}: not a mixseg-lite {what} checkpoint (missing {missing}); "
                         "delete it, or pass resume=False to start afresh")
    return state


def _check_shapes(path: Path, saved: dict, model: torch.nn.Module) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in saved.items()}
    if expected != found:
        differing = sorted(k for k in set(expected) | set(found) if expected.get(k) != found.get(k))[:3]
        raise InputError(f"{path}: weights do not fit this model (e.g. {differing}); it comes from "
                         "another model size or dataset: use another checkpoint_dir or resume=False")


def _atomic_save(payload: dict, path: Path) -> None:
    temp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, temp)
    temp.replace(path)  # an interrupted save never leaves a half-written checkpoint


def _best_epoch(log: list[dict], selection: str, has_best_weights: bool) -> tuple[int, float | None]:
    """The epoch whose weights ``train_mixed`` kept: the first with the highest validation score
    (it replaces its best only on a strict improvement), or the last epoch without validation."""
    scores = [record.get(selection) for record in log]
    if not has_best_weights or not any(score is not None for score in scores):
        return len(log), None
    best = max(score for score in scores if score is not None)
    return scores.index(best) + 1, float(best)


def _run_mixed(splits, method, paths, resume, config, progress, overrides) -> ExperimentResult:
    config = _config_for(MixedConfig, config, method, overrides, cam=False)
    if "select_best" in {f.name for f in dataclasses.fields(MixedConfig)}:
        config = dataclasses.replace(config, select_best=True)  # best.pt is what gets evaluated
    selection = f"val_dice_{reported_branch(method)}"
    full, weak, val, test = (splits[g] for g in SPLIT_GROUPS)
    _prepare_checkpoints(paths, _fingerprint(config, splits), resume, _settings(MixedConfig()))
    start_epoch = 0
    if paths["last"].is_file():  # check it here, so a damaged file fails before any work
        reference = DualBranchUNet(len(full[0].modalities), full[0].num_classes, config.base_width, config.depth,
                                   config.norm)
        state = _load(paths["last"], "last-epoch", _LAST_KEYS)
        _check_shapes(paths["last"], state["model"], reference)
        start_epoch = int(state["epoch"])
        del state

    # One call for the whole run: train_mixed checkpoints every epoch, resumes exactly, and keeps
    # the best validation weights (in last.pt too, so an interruption never loses them).
    started = time.perf_counter()
    result = train_mixed(full, weak, val or None, dataclasses.replace(config, progress=progress),
                         checkpoint=paths["last"], resume=True, epochs=max(config.epochs, start_epoch))
    train_seconds = time.perf_counter() - started
    log = result.log
    state = _load(paths["last"], "last-epoch", _LAST_KEYS) if paths["last"].is_file() else {}
    best_weights = state.get("best_state")
    best_epoch, best_score = _best_epoch(log, selection, best_weights is not None)
    _atomic_save({"model": {k: v.detach().cpu() for k, v in (best_weights or result.model.state_dict()).items()},
                  "epoch": best_epoch, "val_dice": best_score, "selection": selection}, paths["best"])
    del state

    model = result.model
    model.load_state_dict(_load(paths["best"], "best-epoch", ("model",))["model"])
    model.eval()
    rows = evaluate_mixed(TrainResult(model, config, log, result.branches), test)
    rows = [{k: row[k] for k in ("method", "branch", "dice", "dice_std", "hd95_mm", "hd95_std")} for row in rows]
    return ExperimentResult(method, rows, log, best_epoch, best_score, start_epoch, model, config,
                            train_seconds=train_seconds)


# ----------------------------------------------------------------------------- CAM rows (REFERENCE B)

def _run_cam(splits, method, paths, resume, config, progress, overrides) -> ExperimentResult:
    config = _config_for(_cam.CAMConfig, config, method, overrides, cam=True)
    config = dataclasses.replace(config, progress=progress)
    train, val, test = splits["full"] + splits["weak"], splits["val"], splits["test"]
    _prepare_checkpoints(paths, _fingerprint(config, splits), resume, _settings(_cam.CAMConfig()))
    # Zero epochs builds the networks exactly as train_cam does, so a checkpoint can be loaded.
    result = _cam.train_cam(train, config, epochs=0, progress=False)
    start_epoch, train_seconds = 0, 0.0
    if paths["last"].is_file():
        state = _load(paths["last"], "CAM", ("nets", "epoch", "log"))
        if set(state["nets"]) != set(result.nets):
            raise InputError(f"{paths['last']}: networks for {sorted(state['nets'])}, this run has "
                             f"{sorted(result.nets)}; use another checkpoint_dir or resume=False")
        for m, net in result.nets.items():
            _check_shapes(paths["last"], state["nets"][m], net)
        if int(state["epoch"]) >= config.epochs:  # finished: evaluate it as it is
            start_epoch = int(state["epoch"])
            for m, net in result.nets.items():
                net.load_state_dict(state["nets"][m])
            result.log = list(state["log"])
    if start_epoch < config.epochs:
        # train_cam has no per-epoch hook and no resume: an unfinished run starts over.
        started = time.perf_counter()
        result = _cam.train_cam(train, config)
        train_seconds = time.perf_counter() - started
        payload = {"nets": {m: {k: v.detach().cpu() for k, v in net.state_dict().items()}
                            for m, net in result.nets.items()},
                   "epoch": config.epochs, "log": result.log, "val_dice": None}
        _atomic_save(payload, paths["last"])
        _atomic_save(payload, paths["best"])

    test_ds = SliceDataset(test)
    if val:
        chosen = _cam.choose_thresholds(result, SliceDataset(val))
        thresholds = {m: c["threshold"] for m, c in chosen.items()}
    else:
        thresholds = 0.5  # [choose] without validation data to sweep the threshold on
    if result.supervised:
        thresholds = None
    scores = _cam.evaluate_cam(result, test_ds, thresholds)
    predictions = _cam.predict_slices(result, test_ds, thresholds)
    binary = not (result.supervised or result.config.multilabel)
    targets = [_binary_volume(v) if binary else v for v in test]
    target_labels = (test_ds.labels > 0).long() if binary else test_ds.labels
    num_classes = 2 if binary else test_ds.num_classes
    rows = []
    for row in scores:
        labels = predictions[row["modality"]]["labels"].numpy()
        hd = _hd95(_restack(labels, test_ds), targets)
        dice_std = _dice_std(labels, target_labels.numpy(), test_ds.volume_index.numpy(), num_classes)
        rows.append({"method": method, "branch": row["modality"], "dice": row["dice_3d"], "dice_std": dice_std,
                     "hd95_mm": hd[0], "hd95_std": hd[1], "dice_pos": row["dice_pos"],
                     "dice_slice_avg": row["dice_slice_avg"], "accuracy": row["accuracy"],
                     "threshold": row["threshold"]})
    empty = _cam.empty_baseline(test_ds, binary=binary)
    hd = _hd95([np.zeros_like(v.label) for v in targets], targets)
    empty_std = _dice_std(np.zeros(tuple(target_labels.shape), dtype=np.int64), target_labels.numpy(),
                          test_ds.volume_index.numpy(), num_classes)
    rows.append({"method": "empty", "branch": "-", "dice": empty["dice_3d"], "dice_std": empty_std,
                 "hd95_mm": hd[0], "hd95_std": hd[1], "dice_pos": empty["dice_pos"],
                 "dice_slice_avg": empty["dice_slice_avg"], "accuracy": empty["accuracy"], "threshold": None})
    return ExperimentResult(method, rows, result.log, len(result.log) or None, None, start_epoch, result.nets,
                            result.config, train_seconds=train_seconds, thresholds=thresholds)


def _dice_std(pred: np.ndarray, target: np.ndarray, volume_index: np.ndarray, num_classes: int) -> float:
    """Std over volumes of the 3-D Dice that ``evaluate_cam`` averages: per volume, the mean over
    the foreground classes the volume contains (volumes without any are skipped, as there)."""
    from mixseg_lite.metrics import dice

    per_volume = []
    for v in np.unique(volume_index):
        rows = volume_index == v
        scores = [dice(pred[rows] == c, target[rows] == c) for c in range(1, num_classes) if (target[rows] == c).any()]
        if scores:
            per_volume.append(np.mean(scores))
    return float(np.std(per_volume)) if per_volume else float("nan")


def _binary_volume(volume: Volume) -> Volume:
    return Volume(volume.image, (volume.label > 0).astype(np.int64), volume.spacing, volume.case_id,
                  volume.modalities, ("background", "foreground"), volume.meta)


def _restack(labels: np.ndarray, dataset: SliceDataset) -> list[np.ndarray]:
    """Slice predictions ``(N, H, W)`` back into one ``(Z, H, W)`` array per volume."""
    out = []
    for v in range(len(dataset.volumes)):
        rows = (dataset.volume_index == v).numpy()
        order = np.argsort(dataset.slice_index.numpy()[rows])
        out.append(labels[rows][order].astype(np.int64))
    return out


def _hd95(predictions: list[np.ndarray], volumes: list[Volume]) -> tuple[float, float]:
    from mixseg_lite.metrics import evaluate_volumes, summarize

    summary = summarize(evaluate_volumes(predictions, volumes))["mean"]["hd95_mm"]
    return summary["mean"], summary["std"]


# ----------------------------------------------------------------------------- figures

def _save_curves(result: ExperimentResult, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    log = result.log
    loss_keys = [k for k in (log[0] if log else {}) if k not in ("epoch", "seconds") and not k.startswith("val_")]
    val_keys = [k for k in (log[0] if log else {}) if k.startswith("val_dice_")]
    fig, axes = plt.subplots(1, 2 if val_keys else 1, figsize=(10 if val_keys else 5, 3.2), squeeze=False)
    epochs = [r["epoch"] for r in log]
    for key in loss_keys:
        axes[0, 0].plot(epochs, [r.get(key, np.nan) for r in log], marker=".", label=key.replace("loss_", ""))
    axes[0, 0].set(xlabel="epoch", ylabel="training loss (epoch mean)", title=f"{result.method}: losses")
    if val_keys:
        for key in val_keys:
            axes[0, 1].plot(epochs, [r[key] for r in log], marker=".", label=key.replace("val_dice_", ""))
        if result.best_epoch:
            axes[0, 1].axvline(result.best_epoch, color="grey", ls="--", lw=1, label=f"best (epoch {result.best_epoch})")
        axes[0, 1].set(xlabel="epoch", ylabel="validation Dice", title="validation (3-D, mean over classes)")
    for ax in axes.ravel():
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _save_predictions(result: ExperimentResult, test: list[Volume], path: Path) -> Path:
    import matplotlib.pyplot as plt

    from mixseg_lite.plotting import show_predictions

    path.parent.mkdir(parents=True, exist_ok=True)
    volume = max(test, key=lambda v: int((v.label > 0).sum()))  # the test volume with most to see
    with_foreground = np.flatnonzero((volume.label > 0).any(axis=(1, 2)))
    candidates = with_foreground if with_foreground.size else np.arange(volume.num_slices)
    slices = sorted({int(candidates[i]) for i in np.linspace(0, len(candidates) - 1, min(3, len(candidates))).round().astype(int)})
    if isinstance(result.model, torch.nn.Module):
        predicted = predict_volumes(result.model, [volume])
        shown = {branch: predicted[branch][0] for branch in
                 (("teacher", "student") if METHODS[result.method]["student"] else ("teacher",))}
    else:
        dataset = SliceDataset([volume])
        predicted = _cam.predict_slices(_cam.CAMResult(result.model, result.config, tuple(result.model),
                                                       volume.class_names, result.log),
                                        dataset, result.thresholds if result.thresholds is not None else 0.5)
        shown = {m: _restack(p["labels"].numpy(), dataset)[0] for m, p in predicted.items() if "labels" in p}
    fig = show_predictions(volume, shown, slices, title=f"{result.method}: test volume {volume.case_id}")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
