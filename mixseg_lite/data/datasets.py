"""Datasets by name: simulated, the installed atlas, or a public dataset in its distributed layout.

:func:`load_dataset` turns a name of :data:`DATASETS` into split volumes ``{"full", "weak", "val",
"test"}``. Slow NIfTI loading and resampling go through the on-disk cache
(:func:`mixseg_lite.data.cache.load_cached`), whose key holds every source file's size and mtime,
so editing a source rebuilds the entry. How many cases each group gets: :func:`default_split`
(the dataset's reference split where it fits, else :data:`PROPORTIONAL_SPLIT`) or a spec given by
the user (:func:`resolve_split`); a split that cannot be met names sizes that would work.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mixseg_lite.data.slices import split_volumes
from mixseg_lite.data.volume import Volume
from mixseg_lite.errors import InputError, check_choice

DATASETS = {
    "simulated_cardiac": "simulated cardiac cine-MRI (mixseg_lite.data.cardiac_sim), ACDC classes",
    "simulated_cardiac_lv": "the same simulated cardiac volumes, binary LV cavity (the authors' script's task)",
    "simulated_brain": "simulated multi-contrast brain MRI with tumours (mixseg_lite.data.brain_sim)",
    "brain_phantom": "simulated multi-contrast brain MRI with tumours on real anatomy, the ICBM152 template "
                     "in the nilearn wheel (mixseg_lite.data.phantom)",
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
    "brain_phantom": {"full": 2, "weak": 8, "val": 2, "test": 4},
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


_SPLIT_UNITS = {"acdc": "patients", "atlas": "blocks", "simulated_cardiac": "volumes", "simulated_cardiac_lv": "volumes", "simulated_brain": "volumes", "brain_phantom": "volumes"}


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
            16 x 24 brain and brain phantom).
        modalities: names of the image channels: BraTS (default ``("t1", "t2")``), a Decathlon
            task (names from its ``dataset.json``, case-insensitive; default all of them, in file
            order), Decathlon prostate (``("T2", "ADC")``) or the simulated brain and brain
            phantom (``("T1", "T2", "FLAIR")``; also ``"T1ce"``). A single name may be given as a string.
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
    elif name == "brain_phantom":
        from mixseg_lite.data.phantom import make_phantom_volumes

        volumes = make_phantom_volumes(n_volumes or 16, n_slices or 24, image_size,
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
