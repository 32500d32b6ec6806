"""Tiny fake datasets written in each real on-disk layout, for loader tests.

Images are *axis coded*: voxel ``(i, j, k)`` of modality ``m`` holds ``i + 100 j + 10000 k +
100000 m``, so a test can tell from a value which NIfTI axis ended up where and which modality
file it came from. Labels vary along ``i`` only and cover the whole label set of the layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (12, 10, 4)
"""NIfTI ``(i, j, k)`` shape of every fake volume (loaders give ``(Z, H, W) = (4, 10, 12)``)."""

ZOOMS = (1.5, 1.25, 8.0)
"""Voxel sizes ``(di, dj, dk)`` in mm; loaders report spacing ``(z, y, x) = (8.0, 1.25, 1.5)``."""

DECATHLON_TASKS = {
    "Task01_BrainTumour": {"modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
                           "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor",
                                      "3": "enhancing tumour"}, "prefix": "BRATS_{:03d}"},
    "Task03_Liver": {"modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver", "2": "cancer"},
                     "prefix": "liver_{}"},
    "Task05_Prostate": {"modality": {"0": "T2", "1": "ADC"}, "labels": {"0": "background", "1": "PZ", "2": "TZ"},
                        "prefix": "prostate_{:02d}"},
}


def affine_for(zooms=ZOOMS, origin=(-10.0, -20.0, 5.0)) -> np.ndarray:
    """A diagonal affine with the given voxel sizes and origin."""
    affine = np.diag(list(zooms) + [1.0])
    affine[:3, 3] = origin
    return affine


def write_nifti(path: Path, data: np.ndarray, zooms=ZOOMS, affine: np.ndarray | None = None) -> Path:
    """Write ``data`` (NIfTI axis order) to ``path``; the header zooms follow the affine."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = affine_for(zooms) if affine is None else affine
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path


def axis_coded(shape=SHAPE, modality: int = 0) -> np.ndarray:
    """``value(i, j, k) = i + 100 j + 10000 k + 100000 modality`` as float32."""
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return (i + 100 * j + 10000 * k + 100000 * modality).astype(np.float32)


def striped_label(values, shape=SHAPE) -> np.ndarray:
    """Labels that vary along ``i`` only, in stripes covering every value of ``values``."""
    values = np.asarray(values, dtype=np.uint8)
    stripe = values[(np.arange(shape[0]) * len(values)) // shape[0]]
    return np.broadcast_to(stripe[:, None, None], shape).copy()


def truncate(path: Path) -> Path:
    """Cut a file to half its size (a broken download)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])
    return Path(path)


def write_garbage(path: Path) -> Path:
    """Replace a file by bytes that are not NIfTI (nor gzip)."""
    Path(path).write_bytes(np.random.default_rng(0).bytes(400))
    return Path(path)


# ----------------------------------------------------------------------------- ACDC

def make_acdc(root: Path, num_patients: int = 2, ed: int = 1, es: int = 3) -> Path:
    """``root/training/patientNNN/`` with ``Info.cfg``, ED/ES frames and ``_gt`` files, and a
    4-D cine file; returns ``root``."""
    for n in range(1, num_patients + 1):
        folder = Path(root) / "training" / f"patient{n:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        group = ("NOR", "DCM", "HCM", "MINF", "RV")[n % 5]
        (folder / "Info.cfg").write_text(f"ED: {ed}\nES: {es}\nGroup: {group}\nHeight: 180.0\n"
                                         f"NbFrame: 30\nWeight: 80.0\n")
        for frame in (ed, es):
            write_nifti(folder / f"patient{n:03d}_frame{frame:02d}.nii.gz", axis_coded() + frame)
            write_nifti(folder / f"patient{n:03d}_frame{frame:02d}_gt.nii.gz", striped_label([0, 1, 2, 3]))
        write_nifti(folder / f"patient{n:03d}_4d.nii.gz", np.stack([axis_coded()] * 3, axis=-1))
    return Path(root)


# ----------------------------------------------------------------------------- BraTS

BRATS_SUFFIXES = {"2019": ("_t1", "_t1ce", "_t2", "_flair", "_seg"),
                  "2023": ("-t1n", "-t1c", "-t2w", "-t2f", "-seg")}
"""File suffixes in canonical order t1, t1ce, t2, flair, then the segmentation."""


def brats_case_name(naming: str, n: int) -> str:
    return f"BraTS19_TEST_{n:03d}_1" if naming == "2019" else f"BraTS-GLI-{n:05d}-000"


def make_brats(root: Path, naming: str = "2019", num_cases: int = 2, grade_folders: bool = False) -> Path:
    """BraTS case folders (2019-2021 or 2023+ naming); modality ``m`` of the canonical order
    t1, t1ce, t2, flair is axis coded with ``modality=m``. With ``grade_folders`` the cases sit
    in ``HGG/`` like the BraTS 2019 training set. Returns ``root``."""
    suffixes = BRATS_SUFFIXES[naming]
    labels = [0, 1, 2, 4] if naming == "2019" else [0, 1, 2, 3]
    for n in range(1, num_cases + 1):
        case = brats_case_name(naming, n)
        folder = Path(root) / ("HGG" if grade_folders else "") / case
        for m, suffix in enumerate(suffixes[:4]):
            write_nifti(folder / f"{case}{suffix}.nii.gz", axis_coded(modality=m))
        write_nifti(folder / f"{case}{suffixes[4]}.nii.gz", striped_label(labels))
    return Path(root)


# ----------------------------------------------------------------------------- Decathlon

def make_decathlon(root: Path, task: str = "Task01_BrainTumour", num_cases: int = 2, modality: dict | None = None,
                   labels: dict | None = None, prefix: str | None = None, image_fn=None) -> Path:
    """A Decathlon task folder ``root/<task>`` with ``dataset.json``, ``imagesTr`` (4-D when
    multi-modal, modality last), ``labelsTr`` and the stray macOS ``._*`` files the real tarballs
    contain; returns the task folder.

    ``task`` names one of :data:`DECATHLON_TASKS`, or any folder name when ``modality`` and
    ``labels`` (the ``dataset.json`` tables, e.g. ``{"0": "CT"}``) describe a task of your own;
    given for a known task they replace its tables (a subset of Task01's modalities, say).
    ``prefix`` formats case names from 1, 2, ... (default the task's, else ``case_{:03d}``).
    ``image_fn(n, m)`` returns modality ``m`` of case ``n`` (0-based) in NIfTI order (default
    :func:`axis_coded` with ``modality=m``); labels are :func:`striped_label` over all labels.
    """
    spec = DECATHLON_TASKS.get(task, {})
    modality = modality if modality is not None else spec["modality"]
    labels = labels if labels is not None else spec["labels"]
    prefix = prefix or spec.get("prefix", "case_{:03d}")
    image_fn = image_fn or (lambda n, m: axis_coded(modality=m))
    folder = Path(root) / task
    num_modalities = len(modality)
    training = []
    for n in range(num_cases):
        case = prefix.format(n + 1)
        channels = [np.asarray(image_fn(n, m), dtype=np.float32) for m in range(num_modalities)]
        image = channels[0] if num_modalities == 1 else np.stack(channels, axis=-1)
        write_nifti(folder / "imagesTr" / f"{case}.nii.gz", image)
        write_nifti(folder / "labelsTr" / f"{case}.nii.gz", striped_label(range(len(labels)), channels[0].shape))
        (folder / "imagesTr" / f"._{case}.nii.gz").write_bytes(b"\x00\x05\x16\x07AppleDouble")
        training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
    dataset = {"name": task.split("_", 1)[-1], "tensorImageSize": "4D" if num_modalities > 1 else "3D",
               "modality": modality, "labels": labels, "numTraining": num_cases,
               "numTest": 0, "training": training, "test": []}
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=4))
    return folder


def hounsfield_like(n: int = 0, m: int = 0, shape=SHAPE) -> np.ndarray:
    """A CT-like image in Hounsfield units (an ``image_fn`` for :func:`make_decathlon`): soft tissue
    of 40-60 HU varying along ``i`` and ``j`` (and with the case ``n``), plus one metal voxel of
    3000 HU, the kind of extreme that CT normalisation must clip."""
    i, j, _ = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    image = (40.0 + i + j + n).astype(np.float32)
    image[0, 0, 0] = 3000.0
    return image


# ----------------------------------------------------------------------------- plain folder

def make_folder(root: Path, num_cases: int = 2, label_values=(0, 1), label_suffix: str = "") -> tuple[Path, Path]:
    """``root/images/caseN.nii.gz`` and ``root/labels/caseN{label_suffix}.nii.gz``; returns both folders."""
    images, labels = Path(root) / "images", Path(root) / "labels"
    for n in range(num_cases):
        write_nifti(images / f"case{n}.nii.gz", axis_coded())
        write_nifti(labels / f"case{n}{label_suffix}.nii.gz", striped_label(label_values))
    return images, labels
