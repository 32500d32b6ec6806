"""A real image with real hand-drawn labels, offline: the Colin27 brain and its AAL atlas.

The Debian/Ubuntu package ``mricron-data`` installs ``ch2.nii.gz`` (Colin27: one subject's T1,
averaged from 27 scans, 181x217x181 at 1 mm) and ``aal.nii.gz`` (the 116 AAL regions, drawn by
hand on that same brain, on the identical grid). Grouping AAL regions into deep grey-matter
structures turns them into a small, real, multi-class 2-D segmentation task.

Caveats, because there is only one subject:

* Train and test slices come from the same brain. :func:`load_atlas` therefore cuts the axial
  slices into contiguous *blocks* that act as pseudo-volumes, and drops ``gap`` slices between
  neighbouring blocks so no training slice touches a test slice. Adjacent 1-mm slices are nearly
  identical; without the gap a test score would partly measure memorisation.
* Which structures a slice contains is largely a function of its height (the amygdala sits
  below the caudate's body, the cerebellum below everything), so image-level tags correlate
  with slice position. A weakly supervised model can exploit this; :func:`atlas_split` spreads
  every split over the whole height so no split sees only one level of the brain.

The cerebellum (AAL 91..116) is not in :data:`DEFAULT_GROUPS`: it is about 2.7 times the volume
of all six deep structures together, would dominate pixel-wise losses, and its presence is almost
a function of slice height alone. Pass ``groups=ALL_GROUPS`` to include it.

Axes follow :mod:`mixseg_lite.data.nifti`: ``(Z, H, W) = (k, j, i)``; the files are RAS, so ``Z``
runs inferior to superior, rows posterior to anterior and columns left to right (show slices
with ``imshow(..., origin="lower")`` for anterior up).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mixseg_lite.data.nifti import AFFINE_TOLERANCE_MM, read_image, read_label
from mixseg_lite.data.preprocess import crop_or_pad_inplane, normalize_intensity, resize_inplane
from mixseg_lite.data.volume import Volume
from mixseg_lite.errors import InputError

ATLAS_DIR = Path("/usr/share/mricron/templates")
"""Where ``mricron-data`` installs the templates; ``$MIXSEG_ATLAS_DIR`` overrides it."""

T1_FILE, LABEL_FILE = "ch2.nii.gz", "aal.nii.gz"

DEFAULT_GROUPS: dict[str, tuple[int, ...]] = {
    "caudate": (71, 72),
    "putamen": (73, 74),
    "pallidum": (75, 76),
    "thalamus": (77, 78),
    "hippocampus": (37, 38),
    "amygdala": (41, 42),
}
"""Deep structures as AAL region numbers (left, right), one class each."""

CEREBELLUM_GROUP: dict[str, tuple[int, ...]] = {"cerebellum": tuple(range(91, 117))}
"""Cerebellar hemispheres and vermis, AAL 91..116."""

ALL_GROUPS: dict[str, tuple[int, ...]] = {**DEFAULT_GROUPS, **CEREBELLUM_GROUP}

SLICE_RANGES = ("labelled", "brain", "all")
_BRAIN_MARGIN = 4  # voxels kept around the AAL brain outline when cropping in-plane


def atlas_dir() -> Path:
    """The atlas folder: ``$MIXSEG_ATLAS_DIR`` if set, else :data:`ATLAS_DIR`."""
    return Path(os.environ.get("MIXSEG_ATLAS_DIR") or ATLAS_DIR)


def atlas_files(directory: Path | None = None) -> tuple[Path, Path]:
    """``(ch2.nii.gz, aal.nii.gz)`` in the atlas folder; raises a how-to-install message if missing."""
    directory = atlas_dir() if directory is None else Path(directory)
    paths = (directory / T1_FILE, directory / LABEL_FILE)
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"AAL atlas not found in {directory} (missing {', '.join(missing)}): install the "
                         "Debian/Ubuntu package mricron-data (sudo apt-get install mricron-data) "
                         "or set MIXSEG_ATLAS_DIR")
    return paths


def _check_groups(groups: dict, source: str) -> None:
    """Groups must be named, non-empty, use AAL numbers 1..116, and not overlap."""
    if not isinstance(groups, dict) or not groups:
        raise InputError(f"{source}: groups must be a non-empty dict name -> AAL region numbers")
    seen: dict[int, str] = {}
    for name, ids in groups.items():
        ids = tuple(ids)
        if not ids or not all(isinstance(r, (int, np.integer)) and 1 <= r <= 116 for r in ids):
            raise InputError(f"{source}: group {name!r} needs AAL region numbers in 1..116, got {ids}")
        for region in ids:
            if region in seen:
                raise InputError(f"{source}: AAL region {region} is in both {seen[region]!r} and {name!r}")
            seen[region] = name


def read_atlas(groups: dict = DEFAULT_GROUPS) -> Volume:
    """The whole Colin27 T1 and the grouped AAL label map as one ``(1, 181, 217, 181)`` Volume.

    Label ``c`` (1-based, in the order of ``groups``) marks the regions of the ``c``-th group.
    Raises unless ch2 and aal share shape and affine.
    """
    image, label, _, spacing, meta = _read_arrays(groups)
    return Volume(image[None], label, spacing, "colin27", ("T1",), ("background",) + tuple(groups), meta)


def _read_arrays(groups: dict):
    """``(image, label, brain, spacing, meta)``: T1 ``(Z, H, W)``, grouped labels, brain mask
    (any AAL region). Arrays rather than a Volume, so the full grid is never checked twice."""
    t1_path, aal_path = atlas_files()
    _check_groups(groups, str(aal_path))
    image, t1_affine, spacing = read_image(t1_path, num_modalities=1)
    regions, aal_affine = read_label(aal_path, range(256))
    if image.shape[1:] != regions.shape or not np.allclose(t1_affine, aal_affine, atol=AFFINE_TOLERANCE_MM):
        raise InputError(f"{aal_path}: grid {regions.shape} / affine differ from {t1_path.name} "
                         f"{image.shape[1:]}; the atlas must be drawn on the same grid")
    group_of_region = np.zeros(256, dtype=np.int64)  # lookup table: AAL region -> class
    for c, ids in enumerate(groups.values(), start=1):
        group_of_region[list(ids)] = c
    meta = {"subject": "Colin27", "files": {"image": str(t1_path), "label": str(aal_path)},
            "groups": {name: list(ids) for name, ids in groups.items()}, "affine": t1_affine.tolist()}
    return image[0], group_of_region[regions], regions > 0, spacing, meta


def _extent(mask: np.ndarray) -> tuple[int, int]:
    """First and one-past-last index where ``mask`` (1-D) is true."""
    where = np.flatnonzero(mask)
    if where.size == 0:
        raise InputError("atlas: the selected groups label no voxel")
    return int(where[0]), int(where[-1]) + 1


def _slice_range(label: np.ndarray, brain: np.ndarray, slices: str) -> tuple[int, int]:
    """Axial range ``[z0, z1)`` to keep, see ``slices`` in :func:`load_atlas`."""
    if slices not in SLICE_RANGES:
        raise InputError(f"atlas: slices must be one of {SLICE_RANGES}, got {slices!r}")
    if slices == "all":
        return 0, label.shape[0]
    mask = brain if slices == "brain" else label > 0
    return _extent(mask.any(axis=(1, 2)))


def _crop_to_brain(image, label, brain, z0: int, z1: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Slices ``z0:z1`` inside the in-plane brain bounding box (+ margin); returns the crop too."""
    rows = _extent(brain.any(axis=(0, 2)))
    cols = _extent(brain.any(axis=(0, 1)))
    (r0, r1), (c0, c1) = [(max(a - _BRAIN_MARGIN, 0), min(b + _BRAIN_MARGIN, n))
                          for (a, b), n in zip((rows, cols), brain.shape[1:])]
    crop = {"z": [z0, z1], "rows": [r0, r1], "cols": [c0, c1]}
    return image[None, z0:z1, r0:r1, c0:c1], label[z0:z1, r0:r1, c0:c1], crop


def block_ranges(num_slices: int, block_size: int, gap: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of contiguous blocks of ``block_size`` slices with ``gap`` slices between.

    A remainder shorter than half a block is absorbed (with the gap before it) by the last block
    rather than dropped or kept as a sliver, so no slice at the end of the range is lost.
    """
    if block_size < 1 or gap < 0:
        raise InputError(f"atlas: need block_size >= 1 and gap >= 0, got {block_size} and {gap}")
    blocks, start = [], 0
    while start < num_slices:
        stop = min(start + block_size, num_slices)
        if blocks and stop - start < max(1, block_size // 2):
            blocks[-1] = (blocks[-1][0], stop)
        else:
            blocks.append((start, stop))
        start = stop + gap
    return blocks


def load_atlas(groups: dict = DEFAULT_GROUPS, size: int = 64, block_size: int = 4, gap: int = 2,
               slices: str = "labelled") -> list[Volume]:
    """The Colin27 T1 + grouped AAL labels as slice blocks (pseudo-volumes) of ``size x size`` slices.

    Args:
        groups: class name -> AAL region numbers; class ``c`` is the ``c``-th group
            (default :data:`DEFAULT_GROUPS`: six deep structures; :data:`ALL_GROUPS` adds the
            cerebellum).
        size: in-plane size after cropping to the brain (plus a 4-voxel margin), padding to a
            square and resizing (image linear, labels nearest; spacing updated).
        block_size: axial slices per block; gap: slices dropped between neighbouring blocks.
        slices: axial range to cut into blocks: ``"labelled"`` (slices with any group; default),
            ``"brain"`` (any AAL region) or ``"all"``.

    Intensities are min-max normalised to [0, 1] over the whole kept stack (one scale for every
    block). Each block's ``meta["slices"]`` lists its original axial indices (``k`` in the NIfTI
    file); ``case_id`` is ``"colin27_zKKK-KKK"`` (first and last index).
    """
    image, label, brain, spacing, meta = _read_arrays(groups)
    z0, z1 = _slice_range(label, brain, slices)
    image, label, crop = _crop_to_brain(image, label, brain, z0, z1)
    stack = Volume(image, label, spacing, "colin27", ("T1",), ("background",) + tuple(groups),
                   dict(meta, crop=crop))
    side = max(image.shape[2:])
    stack = resize_inplane(crop_or_pad_inplane(stack, (side, side)), (size, size))
    stack = normalize_intensity(stack, "minmax")  # after resizing, so each range is exactly [0, 1]
    return [_block(stack, z0, start, stop, n) for n, (start, stop) in
            enumerate(block_ranges(stack.num_slices, block_size, gap))]


def _block(stack: Volume, z0: int, start: int, stop: int, index: int) -> Volume:
    """Slices ``start:stop`` of the kept stack as one pseudo-volume (copies, not views)."""
    first, last = z0 + start, z0 + stop - 1
    meta = dict(stack.meta, block=index, slices=list(range(first, last + 1)))
    return Volume(stack.image[:, start:stop].copy(), stack.label[start:stop].copy(), stack.spacing,
                  f"colin27_z{first:03d}-{last:03d}", stack.modalities, stack.class_names, meta)


def atlas_split(volumes: list[Volume], sizes: dict[str, int], seed: int = 0) -> dict[str, list[Volume]]:
    """Split atlas blocks into named groups that each span the whole height of the brain.

    Like :func:`mixseg_lite.data.slices.split_volumes` (same ``sizes`` argument), but instead of
    a random draw, blocks are dealt out in order of height, each going to the group furthest
    behind its share, so a group of 3 blocks gets one low, one middle and one high block. ``seed``
    only breaks ties between groups. Use ``split_volumes`` instead for a plain random split; the
    gap between blocks already keeps any split's slices apart.
    """
    total = sum(sizes.values())
    if total > len(volumes) or any(n < 0 for n in sizes.values()):
        raise InputError(f"atlas split asks for {sizes} blocks but only {len(volumes)} are available")
    ordered = sorted(volumes, key=lambda v: v.meta.get("slices", [0])[0])
    # spread the chosen blocks evenly over the height when not all are used
    picks = np.round(np.linspace(0, len(ordered) - 1, total)).astype(int) if total else []
    tie_break = np.random.default_rng(seed).permutation(len(sizes))
    names = list(sizes)
    groups: dict[str, list[Volume]] = {name: [] for name in names}
    for dealt, index in enumerate(picks, start=1):
        deficit = [sizes[n] * dealt / total - len(groups[n]) if len(groups[n]) < sizes[n] else -np.inf
                   for n in names]
        best = max(range(len(names)), key=lambda g: (deficit[g], -tie_break[g]))
        groups[names[best]].append(ordered[index])
    return groups
