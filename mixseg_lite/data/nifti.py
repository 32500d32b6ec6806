"""Readers for public segmentation datasets exactly as distributed (NIfTI files).

Supported layouts (REFERENCE section C):

* ACDC: ``training/patientNNN/patientNNN_frameFF.nii.gz`` + ``..._gt.nii.gz`` and ``Info.cfg``
  (:func:`load_acdc`);
* BraTS 2019-2021 (``<case>/<case>_t1.nii.gz``, ``_t1ce``, ``_t2``, ``_flair``, ``_seg``) and
  BraTS 2023+ (``<case>-t1n``, ``-t1c``, ``-t2w``, ``-t2f``, ``-seg``), naming auto-detected
  (:func:`load_brats`);
* Medical Segmentation Decathlon: ``dataset.json``, ``imagesTr/``, ``labelsTr/``
  (:func:`load_decathlon`);
* any folder of image/label pairs matched by file name (:func:`load_folder`).

Axis convention. NIfTI stores voxels as ``(i, j, k)`` with the slice axis last; a
:class:`~mixseg_lite.data.volume.Volume` is ``(Z, H, W)``. We transpose the data,
``(Z, H, W) = (k, j, i)``, without reorienting: rows follow ``j`` and columns follow ``i`` in file
order, and the spacing is the header zooms reordered, ``(z, y, x) = (dk, dj, di)``. 4-D images
(Decathlon multi-modal) are ``(i, j, k, m)`` and become ``(M, Z, H, W) = (m, k, j, i)``. For an
RAS-oriented file (e.g. the Colin27 atlas) row 0 is posterior, so ``imshow(..., origin="lower")``
shows anterior up. The affine is kept in ``meta["affine"]`` (as nested lists, JSON-friendly).

Every check raises :class:`~mixseg_lite.errors.InputError` with one line naming the file:
missing files, unreadable/truncated/corrupt files, wrong dimensionality, non-finite intensities,
image/label shape or affine disagreement, and label values outside the task's set.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from mixseg_lite.data.preprocess import default_class_names, remap_label_array
from mixseg_lite.data.volume import Volume
from mixseg_lite.errors import InputError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
AFFINE_TOLERANCE_MM = 1e-3
"""Image and label affines may differ by float rounding only (some datasets store them as
float32 in one file and float64 in the other); anything larger means a different grid."""

# Errors nibabel, gzip and zlib raise for truncated, empty or garbage files.
_READ_ERRORS = (ImageFileError, HeaderDataError, zlib.error, EOFError, OSError, ValueError)


# ============================================================================ single files

def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def nifti_case_name(path: Path) -> str:
    """File name without ``.nii.gz`` / ``.nii``."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def find_nifti(directory: Path, stem: str) -> Path | None:
    """``directory/stem.nii.gz`` or ``directory/stem.nii``, whichever exists (else ``None``)."""
    for suffix in NIFTI_SUFFIXES:
        candidate = Path(directory) / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _require_nifti(directory: Path, stem: str, what: str) -> Path:
    found = find_nifti(directory, stem)
    if found is None:
        raise InputError(f"{Path(directory) / (stem + '.nii.gz')}: missing {what} file")
    return found


def _read(path: Path, as_label: bool):
    """``(data, affine, zooms)`` of one NIfTI file; any read failure becomes InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: missing {'label' if as_label else 'image'} file")
    try:
        img = nib.load(str(path))
        # nibabel reads lazily: decompression errors only appear when the data are touched
        data = np.asanyarray(img.dataobj) if as_label else img.get_fdata(dtype=np.float32)
        zooms = tuple(float(z) for z in img.header.get_zooms())
        affine = np.asarray(img.affine, dtype=np.float64)
    except _READ_ERRORS as exc:
        raise InputError(f"{path}: cannot read NIfTI file, truncated or corrupt? "
                         f"({type(exc).__name__}: {_one_line(exc)})") from None
    return data, affine, zooms


def _spacing_zyx(zooms: tuple[float, ...], path: Path) -> tuple[float, float, float]:
    """Header zooms ``(di, dj, dk, ...)`` as our ``(z, y, x)`` = ``(dk, dj, di)``."""
    di, dj, dk = zooms[:3]
    spacing = (dk, dj, di)
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"{path}: voxel sizes {zooms[:3]} must be positive and finite")
    return spacing


def read_image(path: Path, num_modalities: int | None = None):
    """Read a 3-D ``(i, j, k)`` or 4-D ``(i, j, k, m)`` image as ``(M, Z, H, W)`` float32.

    Returns ``(image, affine, spacing_zyx)``. ``num_modalities``, when given, is the channel
    count the file must have.
    """
    path = Path(path)
    data, affine, zooms = _read(path, as_label=False)
    if data.ndim == 3:
        data = data[..., None]
    if data.ndim != 4 or data.size == 0:
        raise InputError(f"{path}: expected a non-empty 3-D or 4-D image, got {data.ndim}-D shape {data.shape}")
    if num_modalities is not None and data.shape[3] != num_modalities:
        raise InputError(f"{path}: expected {num_modalities} modalities along the 4th axis, "
                         f"got shape {data.shape}")
    if not np.isfinite(data).all():
        raise InputError(f"{path}: image contains NaN or inf intensities")
    image = np.ascontiguousarray(data.transpose(3, 2, 1, 0), dtype=np.float32)
    return image, affine, _spacing_zyx(zooms, path)


def read_label(path: Path, allowed_values) -> tuple[np.ndarray, np.ndarray]:
    """Read a 3-D label map as ``(Z, H, W)`` int64; returns ``(label, affine)``.

    Values must be integers from ``allowed_values`` (the task's label set, before remapping).
    """
    path = Path(path)
    data, affine, _ = _read(path, as_label=True)
    if data.ndim == 4 and data.shape[3] == 1:  # a 3-D map saved with a trailing singleton axis
        data = data[..., 0]
    if data.ndim != 3 or data.size == 0:
        raise InputError(f"{path}: expected a non-empty 3-D label map, got {data.ndim}-D shape {data.shape}")
    if not np.issubdtype(data.dtype, np.integer):
        if not np.isfinite(data).all() or not np.array_equal(data, np.round(data)):
            raise InputError(f"{path}: label map holds non-integer values")
    label = np.ascontiguousarray(data.transpose(2, 1, 0)).astype(np.int64)
    allowed = sorted(int(v) for v in allowed_values)
    unexpected = np.setdiff1d(unique_labels(label), allowed)
    if unexpected.size:
        raise InputError(f"{path}: label values {unexpected[:5].tolist()} outside the allowed set {allowed}")
    return label, affine


def unique_labels(label: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an integer array (a bincount: far faster than ``np.unique``
    on the millions of voxels of a brain volume)."""
    low, high = int(label.min()), int(label.max())
    if high - low > 1_000_000:  # sparse huge values: bincount would allocate too much
        return np.unique(label)
    return np.flatnonzero(np.bincount((label - low).ravel())) + low


def check_same_grid(image_path: Path, image_shape, image_affine, label_path: Path, label_shape,
                    label_affine) -> None:
    """Raise unless an image ``(M, Z, H, W)`` and a label ``(Z, H, W)`` share shape and affine."""
    if tuple(image_shape[1:]) != tuple(label_shape):
        raise InputError(f"{label_path}: label NIfTI shape {tuple(label_shape)[::-1]} differs from image "
                         f"{Path(image_path).name} shape {tuple(image_shape[1:])[::-1]}")
    if not np.allclose(image_affine, label_affine, rtol=0, atol=AFFINE_TOLERANCE_MM):
        worst = float(np.abs(np.asarray(image_affine) - np.asarray(label_affine)).max())
        raise InputError(f"{label_path}: affine differs from image {Path(image_path).name} "
                         f"by up to {worst:.4g} mm (tolerance {AFFINE_TOLERANCE_MM})")


def _check_same_image_grid(reference: Path, ref_image, ref_affine, path: Path, image, affine) -> None:
    """Raise unless two single-modality images of one case share shape and affine."""
    if image.shape[1:] != ref_image.shape[1:]:
        raise InputError(f"{path}: NIfTI shape {image.shape[1:][::-1]} differs from "
                         f"{Path(reference).name} shape {ref_image.shape[1:][::-1]}")
    if not np.allclose(ref_affine, affine, rtol=0, atol=AFFINE_TOLERANCE_MM):
        raise InputError(f"{path}: affine differs from {Path(reference).name}; modalities must be co-registered")


def read_modality_files(paths: list[Path]):
    """Stack single-modality files of one case into ``(M, Z, H, W)``; all must share one grid.

    Returns ``(image, affine, spacing_zyx)`` of the first file.
    """
    channels, affine, spacing = [], None, None
    for path in paths:
        channel, ch_affine, ch_spacing = read_image(path, num_modalities=1)
        if channels:
            _check_same_image_grid(paths[0], channels[0], affine, path, channel, ch_affine)
        else:
            affine, spacing = ch_affine, ch_spacing
        channels.append(channel)
    return np.concatenate(channels), affine, spacing


def _labelled_volume(images, image_path: Path, label_path: Path, case_id: str, modalities,
                     allowed_values, label_map, class_names, meta: dict) -> Volume:
    """Attach the label file to an already read ``(image, affine, spacing)`` and check they agree."""
    image, affine, spacing = images
    label, label_affine = read_label(label_path, allowed_values)
    check_same_grid(image_path, image.shape, affine, label_path, label.shape, label_affine)
    if label_map is not None:
        label = remap_label_array(label, label_map, str(label_path))
    meta = dict(meta, affine=affine.tolist())
    return Volume(image, label, spacing, case_id, tuple(modalities), tuple(class_names), meta)


def _check_label_map(label_map, class_names, source: str):
    """Validate a custom ``{old: new}`` map; return it with class names for the new labels."""
    if not isinstance(label_map, dict) or not label_map:
        raise InputError(f"{source}: label_map must be a non-empty dict {{old: new}}, got {label_map!r}")
    mapping = {int(k): int(v) for k, v in label_map.items()}
    num_classes = max(mapping.values()) + 1
    names = default_class_names(num_classes) if class_names is None else tuple(class_names)
    if min(mapping.values()) < 0 or len(names) != num_classes:
        raise InputError(f"{source}: label_map targets {sorted(set(mapping.values()))} need "
                         f"{num_classes} class names, got {names}")
    return mapping, names


def _selected(requested, available: list[str], what: str, source: str) -> list[str]:
    """``requested`` ids (all of ``available`` when None), each checked to exist."""
    if requested is None:
        return available
    requested = [str(r) for r in requested]
    missing = [r for r in requested if r not in available]
    if missing:
        raise InputError(f"{source}: {what} {missing[:5]} not found (has {len(available)}: {available[:5]}...)")
    return requested


# ============================================================================ ACDC

ACDC_CLASSES = ("background", "RV cavity", "myocardium", "LV cavity")
ACDC_PHASES = ("ED", "ES")


def read_info_cfg(path: Path) -> dict[str, str]:
    """Parse an ACDC ``Info.cfg`` (``key: value`` per line) into a dict of strings."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: missing Info.cfg")
    info = {}
    for line in path.read_text(errors="replace").splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            info[key.strip()] = value.strip()
    for key in ACDC_PHASES:
        if not info.get(key, "").isdigit():
            raise InputError(f"{path}: needs an integer '{key}:' frame number, got {info.get(key)!r}")
    return info


def _acdc_dir(root: Path) -> Path:
    """The folder holding ``patientNNN`` folders: ``root``, ``root/training``, ``root/database/training``."""
    for candidate in (root, root / "training", root / "database" / "training"):
        if candidate.is_dir() and any(candidate.glob("patient[0-9]*")):
            return candidate
    raise InputError(f"{root}: no ACDC patientNNN folders here or in training/ (is this the ACDC root?)")


def load_acdc(root, phases=ACDC_PHASES, patients=None, label_map: dict | None = None,
              class_names=None) -> list[Volume]:
    """One :class:`Volume` per patient and cardiac phase of the ACDC dataset.

    Args:
        root: the ACDC folder (containing ``training/``) or the ``training`` folder itself.
        phases: any of ``"ED"`` (end-diastole) and ``"ES"`` (end-systole); the frame numbers
            come from each patient's ``Info.cfg``. ``patientNNN_4d.nii.gz`` is ignored.
        patients: ids like ``"patient001"`` or numbers like ``1``; default all.
        label_map, class_names: optional remap of ``0..3`` (e.g. ``{0: 0, 1: 0, 2: 1, 3: 1}``).

    ``case_id`` is ``"patient001_ED"``; classes are background, RV cavity, myocardium, LV cavity;
    ``meta`` holds ``Group``, ``phase``, ``frame``, ``files`` and the whole ``info``.
    """
    root = Path(root)
    phases = tuple(phases)
    if not phases or any(p not in ACDC_PHASES for p in phases):
        raise InputError(f"{root}: phases must be a non-empty subset of {ACDC_PHASES}, got {phases}")
    base = _acdc_dir(root)
    available = sorted(p.name for p in base.glob("patient[0-9]*") if p.is_dir())
    wanted = None if patients is None else [f"patient{p:03d}" if isinstance(p, int) else str(p) for p in patients]
    mapping, names = (None, ACDC_CLASSES) if label_map is None else _check_label_map(label_map, class_names, str(root))
    volumes = []
    for patient in _selected(wanted, available, "patients", str(base)):
        info = read_info_cfg(base / patient / "Info.cfg")
        for phase in phases:
            volumes.append(_load_acdc_phase(base / patient, patient, info, phase, mapping, names))
    return volumes


def _load_acdc_phase(folder: Path, patient: str, info: dict, phase: str, mapping, names) -> Volume:
    frame = int(info[phase])
    image_path = _require_nifti(folder, f"{patient}_frame{frame:02d}", f"{phase} image")
    label_path = _require_nifti(folder, f"{patient}_frame{frame:02d}_gt", f"{phase} label")
    meta = {"dataset": "ACDC", "patient": patient, "Group": info.get("Group"), "phase": phase,
            "frame": frame, "info": info,
            "files": {"image": str(image_path), "label": str(label_path), "info": str(folder / "Info.cfg")}}
    return _labelled_volume(read_modality_files([image_path]), image_path, label_path,
                            f"{patient}_{phase}", ("image",), range(4), mapping, names, meta)


# ============================================================================ BraTS

BRATS_FILE_SUFFIXES = {
    "2019": {"t1": "_t1", "t1ce": "_t1ce", "t2": "_t2", "flair": "_flair", "seg": "_seg"},
    "2023": {"t1": "-t1n", "t1ce": "-t1c", "t2": "-t2w", "flair": "-t2f", "seg": "-seg"},
}
"""File suffix per canonical modality, for BraTS 2019-2021 and BraTS 2023+ naming."""

BRATS_MODALITY_ALIASES = {"t1n": "t1", "t1c": "t1ce", "t1gd": "t1ce", "t2w": "t2", "t2f": "flair"}
"""BraTS 2023 names (and t1gd) accepted as synonyms of the canonical t1, t1ce, t2, flair."""

BRATS_LABELS = {"2019": (0, 1, 2, 4), "2023": (0, 1, 2, 3)}
"""Raw label sets: 1 necrotic core, 2 oedema, 4 (2019-21) or 3 (2023+) enhancing tumour."""

_ET = {"2019": 4, "2023": 3}


def brats_label_map(name: str, naming: str) -> tuple[dict[int, int], tuple[str, ...]]:
    """Named BraTS label maps for one naming: ``(old -> new, class names)``.

    * ``"whole_tumour"``: all tumour labels -> 1;
    * ``"tumour_core"``: necrotic core + enhancing -> 1 (oedema -> background);
    * ``"enhancing_tumour"``: enhancing -> 1;
    * ``"regions"``: three classes necrotic core 1, oedema 2, enhancing 3.
    """
    et = _ET[naming]
    maps = {
        "whole_tumour": ({0: 0, 1: 1, 2: 1, et: 1}, ("background", "whole tumour")),
        "tumour_core": ({0: 0, 1: 1, 2: 0, et: 1}, ("background", "tumour core")),
        "enhancing_tumour": ({0: 0, 1: 0, 2: 0, et: 1}, ("background", "enhancing tumour")),
        "regions": ({0: 0, 1: 1, 2: 2, et: 3}, ("background", "necrotic core", "oedema", "enhancing tumour")),
    }
    if name not in maps:
        raise InputError(f"unknown BraTS label_map {name!r}; use one of {sorted(maps)} or a dict")
    return maps[name]


def _canonical_modality(name: str, source: str) -> str:
    key = BRATS_MODALITY_ALIASES.get(str(name).lower(), str(name).lower())
    if key not in BRATS_FILE_SUFFIXES["2019"] or key == "seg":
        raise InputError(f"{source}: unknown BraTS modality {name!r}; use t1, t1ce, t2 or flair")
    return key


def brats_naming(case_dir: Path) -> str | None:
    """``"2019"`` or ``"2023"`` from the file names in one case folder (``None`` if neither)."""
    case = case_dir.name
    names = [p.name for p in case_dir.iterdir()]
    if any(n.startswith(case + "-") and n.endswith(NIFTI_SUFFIXES) for n in names):
        return "2023"
    if any(n.startswith(case + "_") and n.endswith(NIFTI_SUFFIXES) for n in names):
        return "2019"
    return None


def _brats_case_dirs(root: Path) -> dict[str, Path]:
    """Case folders in ``root`` or one level down (BraTS 2019 has ``HGG/`` and ``LGG/``)."""
    found = {}
    for parent in [root] + sorted(p for p in root.iterdir() if p.is_dir()):
        for folder in sorted(p for p in parent.iterdir() if p.is_dir()):
            if brats_naming(folder) is not None:
                found.setdefault(folder.name, folder)
    if not found:
        raise InputError(f"{root}: no BraTS case folders (<case>/<case>_t1.nii.gz or <case>/<case>-t1n.nii.gz)")
    return found


def load_brats(root, modalities=("t1", "t2"), label_map="whole_tumour", cases=None,
               class_names=None) -> list[Volume]:
    """Load BraTS cases, 2019-2021 or 2023+ naming (detected per case folder).

    Args:
        root: folder of case folders (or of ``HGG``/``LGG`` folders holding them).
        modalities: canonical names ``t1``, ``t1ce``, ``t2``, ``flair`` (2023 names ``t1n``, ``t1c``,
            ``t2w``, ``t2f`` are accepted too); the Volume's modalities get the canonical names.
        label_map: ``"whole_tumour"``, ``"tumour_core"``, ``"enhancing_tumour"``, ``"regions"``
            (see :func:`brats_label_map`; the same class meaning for both namings), a dict
            ``{old: new}`` of raw labels (with ``class_names``), or ``None`` to keep raw labels
            (only valid for 2023 naming, whose labels 0..3 are already contiguous).
        cases: case folder names; default all.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: BraTS folder not found")
    names = [_canonical_modality(m, str(root)) for m in modalities]
    if not names or len(set(names)) != len(names):
        raise InputError(f"{root}: modalities must be distinct and non-empty, got {tuple(modalities)}")
    case_dirs = _brats_case_dirs(root)
    return [_load_brats_case(case_dirs[c], names, label_map, class_names)
            for c in _selected(cases, sorted(case_dirs), "cases", str(root))]


def _brats_mapping(label_map, class_names, naming: str, source: str):
    if isinstance(label_map, str):
        return brats_label_map(label_map, naming)
    if label_map is None:
        if naming != "2023":
            raise InputError(f"{source}: raw BraTS 2019-2021 labels (0, 1, 2, 4) are not contiguous; "
                             "choose a label_map such as 'regions'")
        return None, ("background", "necrotic core", "oedema", "enhancing tumour")
    return _check_label_map(label_map, class_names, source)


def _load_brats_case(folder: Path, names: list[str], label_map, class_names) -> Volume:
    case = folder.name
    naming = brats_naming(folder)
    suffixes = BRATS_FILE_SUFFIXES[naming]
    image_paths = [_require_nifti(folder, case + suffixes[m], f"{m} modality") for m in names]
    label_path = _require_nifti(folder, case + suffixes["seg"], "segmentation")
    mapping, classes = _brats_mapping(label_map, class_names, naming, str(label_path))
    meta = {"dataset": "BraTS 2019-2021" if naming == "2019" else "BraTS 2023+", "naming": naming,
            "files": dict({m: str(p) for m, p in zip(names, image_paths)}, label=str(label_path))}
    if folder.parent.name in ("HGG", "LGG"):
        meta["grade"] = folder.parent.name
    return _labelled_volume(read_modality_files(image_paths), image_paths[0], label_path, case,
                            tuple(names), BRATS_LABELS[naming], mapping, classes, meta)


# ============================================================================ Decathlon

def read_dataset_json(root: Path) -> dict:
    """Read and check a Decathlon ``dataset.json`` (modality, labels, training list)."""
    path = Path(root) / "dataset.json"
    if not path.is_file():
        tasks = sorted(p.parent.name for p in Path(root).glob("*/dataset.json")) if Path(root).is_dir() else []
        hint = (f"; choose one task folder inside it, e.g. {Path(root) / tasks[0]}" if tasks
                else f" (is {root} a Decathlon task folder?)")
        raise InputError(f"{path}: missing dataset.json{hint}")
    try:
        spec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({_one_line(exc)})") from None
    if not isinstance(spec, dict):
        raise InputError(f"{path}: expected a JSON object with 'modality', 'labels' and 'training', "
                         f"got {type(spec).__name__}")
    for key in ("modality", "labels", "training"):
        if key not in spec:
            raise InputError(f"{path}: missing the {key!r} entry")
    return spec


def _indexed_names(table: dict, path: Path, what: str) -> list[str]:
    """``{"0": "FLAIR", "1": "T1w"}`` -> ``["FLAIR", "T1w"]``, checking indices are 0..n-1."""
    try:
        items = sorted((int(k), str(v)) for k, v in table.items())
    except (AttributeError, ValueError):
        raise InputError(f"{path}: {what} must map indices to names, got {table!r}") from None
    if [k for k, _ in items] != list(range(len(items))):
        raise InputError(f"{path}: {what} indices must be 0..n-1, got {[k for k, _ in items]}")
    return [v for _, v in items]


def _decathlon_channels(requested, available: list[str], path: Path) -> tuple[list[int], tuple[str, ...]]:
    """Channel indices and output names for ``requested`` modality names (case-insensitive;
    canonical t1/t1ce/t2/flair also match Task01's T1w/t1gd/T2w/FLAIR)."""
    if requested is None:
        return list(range(len(available))), tuple(available)
    if isinstance(requested, str):  # one name, not its letters
        requested = (requested,)
    requested = tuple(requested)
    if not requested:
        raise InputError(f"{path}: modalities must name at least one of this task's modalities {available}")
    lowered = [a.lower() for a in available]
    synonyms = {"t1": "t1w", "t1ce": "t1gd", "t2": "t2w"}
    index = []
    for name in requested:
        key = str(name).lower()
        key = key if key in lowered else synonyms.get(key, key)
        if key not in lowered:
            raise InputError(f"{path}: modality {name!r} not in this task's modalities {available}")
        if lowered.index(key) in index:
            raise InputError(f"{path}: modality {name!r} requested twice in {list(requested)}")
        index.append(lowered.index(key))
    return index, tuple(str(n) for n in requested)


def load_decathlon(root, modalities=None, label_map: dict | None = None, cases=None,
                   class_names=None) -> list[Volume]:
    """Load the training cases of a Medical Segmentation Decathlon task (e.g. ``Task01_BrainTumour``).

    Args:
        root: the task folder holding ``dataset.json``, ``imagesTr/`` and ``labelsTr/``.
        modalities: distinct names from ``dataset.json`` (case-insensitive; one name may be a
            plain string; default all, in file order). 4-D images carry modalities along their
            last axis.
        label_map: optional ``{old: new}`` dict (with ``class_names``); by default labels and class
            names are those of ``dataset.json``.
        cases: case names such as ``"BRATS_001"``; default the whole training list.

    Only files listed in ``dataset.json`` are read, so the macOS ``._*`` files shipped inside the
    Decathlon tarballs are ignored.
    """
    root = Path(root)
    spec = read_dataset_json(root)
    json_path = root / "dataset.json"
    available_modalities = _indexed_names(spec["modality"], json_path, "'modality'")
    raw_classes = _indexed_names(spec["labels"], json_path, "'labels'")
    channel_index, names = _decathlon_channels(modalities, available_modalities, json_path)
    if label_map is None:
        mapping, classes = None, tuple(raw_classes)
    else:
        mapping, classes = _check_label_map(label_map, class_names, str(json_path))
    pairs = _decathlon_pairs(spec["training"], root, json_path)
    volumes = []
    for case, (image_path, label_path) in _pick(pairs, cases, str(root)).items():
        image, affine, spacing = read_image(image_path, num_modalities=len(available_modalities))
        meta = {"dataset": spec.get("name", root.name),
                "files": {"image": str(image_path), "label": str(label_path)}}
        volumes.append(_labelled_volume((image[channel_index], affine, spacing), image_path, label_path,
                                        case, names, range(len(raw_classes)), mapping, classes, meta))
    return volumes


def _decathlon_pairs(training, root: Path, json_path: Path) -> dict[str, tuple[Path, Path]]:
    """``{case: (image, label)}`` from the ``training`` list of ``dataset.json``."""
    pairs = {}
    for entry in training:
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            raise InputError(f"{json_path}: each 'training' entry needs 'image' and 'label', got {entry!r}")
        image, label = root / entry["image"], root / entry["label"]
        pairs[nifti_case_name(image)] = (image, label)
    if not pairs:
        raise InputError(f"{json_path}: the 'training' list is empty")
    return pairs


def _pick(pairs: dict, cases, source: str) -> dict:
    return {c: pairs[c] for c in _selected(cases, list(pairs), "cases", source)}


# ============================================================================ plain folders

def _nifti_files(directory: Path) -> dict[str, Path]:
    """``{case name: path}`` of the NIfTI files in a folder (hidden files skipped)."""
    return {nifti_case_name(p): p for p in sorted(directory.iterdir())
            if p.is_file() and p.name.endswith(NIFTI_SUFFIXES) and not p.name.startswith(".")}


def load_folder(images_dir, labels_dir, class_names=("background", "foreground"), modalities=None,
                label_map: dict | None = None, label_suffix: str = "", cases=None) -> list[Volume]:
    """Load image/label pairs matched by file name: ``images_dir/X.nii.gz`` with
    ``labels_dir/X{label_suffix}.nii.gz``.

    Args:
        class_names: names of the classes; raw labels must be ``0..len-1`` unless ``label_map``
            (``{old: new}``, values outside it raise) is given, in which case they name the new classes.
        modalities: names of the image channels (default ``("image",)`` or ``channel0..``);
            4-D images carry them along their last axis.
        label_suffix: e.g. ``"_gt"`` or ``"_seg"`` when label files carry one.
        cases: case names (image file names without extension); default all.
    """
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise InputError(f"{folder}: folder not found")
    images = _nifti_files(images_dir)
    if not images:
        raise InputError(f"{images_dir}: no .nii.gz or .nii images")
    labels = _nifti_files(labels_dir)
    if label_map is None:
        mapping, classes, allowed = None, tuple(class_names), range(len(class_names))
    else:
        mapping, classes = _check_label_map(label_map, class_names, str(labels_dir))
        allowed = mapping.keys()
    volumes = []
    for case in _selected(cases, list(images), "cases", str(images_dir)):
        label_path = labels.get(case + label_suffix)
        if label_path is None:
            raise InputError(f"{labels_dir / (case + label_suffix + '.nii.gz')}: missing label file "
                             f"for image {images[case].name}")
        volumes.append(_load_folder_case(images[case], label_path, case, modalities, allowed, mapping, classes))
    return volumes


def _load_folder_case(image_path: Path, label_path: Path, case: str, modalities, allowed, mapping,
                      classes) -> Volume:
    images = read_image(image_path, num_modalities=None if modalities is None else len(modalities))
    count = images[0].shape[0]
    names = tuple(modalities) if modalities is not None else (
        ("image",) if count == 1 else tuple(f"channel{m}" for m in range(count)))
    meta = {"dataset": "folder", "files": {"image": str(image_path), "label": str(label_path)}}
    return _labelled_volume(images, image_path, label_path, case, names, allowed, mapping, classes, meta)
