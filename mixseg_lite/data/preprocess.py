"""Per-volume preprocessing: intensity normalisation, in-plane resampling, label remapping.

Every function takes a :class:`~mixseg_lite.data.volume.Volume` and returns a new one (inputs are
never modified), so steps chain freely and :func:`prepare_volumes` is just their composition.
Only the in-plane axes ``(H, W)`` are ever resampled: 2-D models see axial slices, and keeping
the slice axis untouched keeps slice indices (and so slice-block splits) meaningful.
Images are interpolated linearly, labels by nearest neighbour, and ``spacing`` is updated so
distances (HD95 in mm) stay physical.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import ndimage

from mixseg_lite.data.volume import Volume
from mixseg_lite.errors import InputError, check_choice

NORMALIZE_METHODS = ("minmax", "zscore")
RESIZE_MODES = ("fit", "resize", "crop_pad")


# ----------------------------------------------------------------------------- intensities

def normalize_intensity(volume: Volume, method: str = "zscore",
                        clip_percentiles: tuple[float, float] | None = None,
                        nonzero: bool = False) -> Volume:
    """Normalise each modality of ``volume`` on its own.

    Args:
        method: ``"minmax"`` maps to ``[0, 1]``; ``"zscore"`` to zero mean, unit variance.
        clip_percentiles: e.g. ``(0.5, 99.5)``: clip to these percentiles first, so a few
            extreme voxels (vessels, artefacts) do not squash the contrast of everything else.
        nonzero: compute the statistics over non-zero voxels only and keep zero voxels at zero;
            right for skull-stripped brain MRI (BraTS, Decathlon), whose background is exactly 0.

    A constant modality becomes all zeros rather than dividing by zero.
    """
    check_choice(method, NORMALIZE_METHODS, "normalisation", volume.case_id)
    channels = [_normalize_channel(ch, method, clip_percentiles, nonzero, volume.case_id)
                for ch in volume.image]
    return replace(volume, image=np.stack(channels).astype(np.float32), meta=dict(volume.meta))


def _normalize_channel(channel: np.ndarray, method: str, clip_percentiles, nonzero: bool,
                       source: str) -> np.ndarray:
    """One modality ``(Z, H, W)`` normalised as described in :func:`normalize_intensity`."""
    keep = channel != 0 if nonzero else np.ones(channel.shape, dtype=bool)
    values = channel[keep]
    if values.size == 0:  # an all-zero modality: nothing to normalise
        return np.zeros_like(channel, dtype=np.float32)
    out = channel.astype(np.float32)
    if clip_percentiles is not None:
        low, high = _check_percentiles(clip_percentiles, source)
        lo, hi = np.percentile(values, [low, high])
        out = np.clip(out, lo, hi)
        values = out[keep]
    if method == "minmax":
        lo, span = float(values.min()), float(values.max() - values.min())
        out = (out - lo) / span if span > 0 else np.zeros_like(out)
    else:
        std = float(values.std())
        out = (out - float(values.mean())) / std if std > 0 else np.zeros_like(out)
    if nonzero:
        out[~keep] = 0.0
    return out.astype(np.float32)


def _check_percentiles(clip_percentiles, source: str) -> tuple[float, float]:
    try:
        low, high = (float(p) for p in clip_percentiles)
    except (TypeError, ValueError):
        raise InputError(f"{source}: clip_percentiles must be two numbers, got {clip_percentiles!r}") from None
    if not 0 <= low < high <= 100:
        raise InputError(f"{source}: clip_percentiles must satisfy 0 <= low < high <= 100, got {clip_percentiles!r}")
    return low, high


# ----------------------------------------------------------------------------- geometry

def _pair(size, what: str, source: str) -> tuple:
    """``size`` as an ``(H, W)`` pair of positive numbers (an int means a square)."""
    pair = (size, size) if np.isscalar(size) else tuple(size)
    if len(pair) != 2 or not all(np.isscalar(s) and s > 0 for s in pair):
        raise InputError(f"{source}: {what} must be a positive number or an (H, W) pair, got {size!r}")
    return pair


def resize_inplane(volume: Volume, size) -> Volume:
    """Resample every slice to exactly ``size`` ``(H, W)`` pixels (aspect ratio may change).

    Uses ``scipy.ndimage.zoom`` with ``grid_mode=True`` so the field of view is preserved exactly:
    the new pixel size is ``old_size * old_pixels / new_pixels``.
    """
    height, width = (int(s) for s in _pair(size, "size", volume.case_id))
    old_h, old_w = volume.image.shape[2:]
    factors = (height / old_h, width / old_w)
    image = _zoom(volume.image, factors, order=1, shape=(height, width))
    label = None if volume.label is None else _zoom(volume.label[None], factors, order=0,
                                                    shape=(height, width))[0]
    spacing = (volume.spacing[0], volume.spacing[1] * old_h / height, volume.spacing[2] * old_w / width)
    return replace(volume, image=image.astype(np.float32),
                   label=None if label is None else label.astype(np.int64),
                   spacing=tuple(float(s) for s in spacing), meta=dict(volume.meta))


def _zoom(stack: np.ndarray, factors: tuple[float, float], order: int, shape: tuple[int, int]) -> np.ndarray:
    """Zoom the last two axes of a ``(C, Z, H, W)`` array to exactly ``shape``."""
    out = ndimage.zoom(stack, (1, 1) + tuple(factors), order=order, mode="nearest", grid_mode=True)
    # zoom rounds the output size; guard against an off-by-one from floating point
    if out.shape[2:] != shape:
        out = crop_or_pad_array(out, shape, pad_values=[0] * out.shape[0])
    return out


def resample_inplane(volume: Volume, pixel_size) -> Volume:
    """Resample slices to a target pixel size in mm (a number or a ``(y, x)`` pair).

    The pixel count is rounded, so the resulting ``spacing`` is the closest exact value.
    """
    target_y, target_x = _pair(pixel_size, "pixel_size", volume.case_id)
    old_h, old_w = volume.image.shape[2:]
    height = max(1, int(round(old_h * volume.spacing[1] / target_y)))
    width = max(1, int(round(old_w * volume.spacing[2] / target_x)))
    return resize_inplane(volume, (height, width))


def crop_or_pad_array(stack: np.ndarray, shape: tuple[int, int], pad_values) -> np.ndarray:
    """Centre-crop or pad the last two axes of ``(C, ..., H, W)`` to ``shape``.

    ``pad_values`` holds one fill value per leading channel ``C``.
    """
    out = stack
    for axis, target in zip((-2, -1), shape):
        current = out.shape[axis]
        if current > target:
            start = (current - target) // 2
            out = np.take(out, np.arange(start, start + target), axis=axis)
        elif current < target:
            before = (target - current) // 2
            widths = [(0, 0)] * out.ndim
            widths[axis] = (before, target - current - before)
            out = np.stack([np.pad(ch, widths[1:], constant_values=v) for ch, v in zip(out, pad_values)])
    return out


def crop_or_pad_inplane(volume: Volume, size) -> Volume:
    """Centre-crop or pad every slice to ``size`` ``(H, W)`` without resampling.

    Images are padded with each modality's minimum (its background), labels with 0; the
    spacing is unchanged.
    """
    shape = tuple(int(s) for s in _pair(size, "size", volume.case_id))
    pad_values = [float(ch.min()) for ch in volume.image]
    image = crop_or_pad_array(volume.image, shape, pad_values)
    label = None if volume.label is None else crop_or_pad_array(volume.label[None], shape, [0])[0]
    return replace(volume, image=image.astype(np.float32), label=label, meta=dict(volume.meta))


def fit_inplane(volume: Volume, size) -> Volume:
    """Pad slices to the aspect ratio of ``size``, then resize: both in-plane axes zoom by the
    same factor (nothing is stretched or cropped)."""
    height, width = (int(s) for s in _pair(size, "size", volume.case_id))
    old_h, old_w = volume.image.shape[2:]
    scale = max(old_h / height, old_w / width)
    padded = crop_or_pad_inplane(volume, (max(old_h, round(height * scale)), max(old_w, round(width * scale))))
    return resize_inplane(padded, (height, width))


# ----------------------------------------------------------------------------- labels

def remap_label_array(label: np.ndarray, mapping: dict[int, int], source: str) -> np.ndarray:
    """Map label values with ``mapping`` (old -> new); a value missing from it raises.

    Raising (instead of silently sending unknown values to background) catches a wrong task
    mapping, e.g. a BraTS 2019 map applied to BraTS 2023 labels.
    """
    if not mapping:
        raise InputError(f"{source}: empty label map")
    keys = np.array(sorted(int(k) for k in mapping), dtype=np.int64)
    values = np.array([int(mapping[k]) for k in sorted(mapping, key=int)], dtype=np.int64)
    present = np.unique(label)
    unknown = np.setdiff1d(present, keys)
    if unknown.size:
        raise InputError(f"{source}: label values {unknown[:5].tolist()} not in the label map "
                         f"(maps {keys.tolist()})")
    return values[np.searchsorted(keys, label)].astype(np.int64)


def remap_labels(volume: Volume, mapping: dict[int, int], class_names=None) -> Volume:
    """A copy of ``volume`` with labels mapped old -> new, e.g. BraTS whole tumour ``{0:0, 1:1, 2:1, 4:1}``.

    ``class_names`` names the new classes (background first); by default ``"class k"``.
    """
    if volume.label is None:
        raise InputError(f"{volume.case_id}: cannot remap labels of an unlabelled volume")
    label = remap_label_array(volume.label, mapping, volume.case_id)
    if class_names is None:
        class_names = default_class_names(max(int(v) for v in mapping.values()) + 1)
    return replace(volume, label=label, class_names=tuple(class_names), meta=dict(volume.meta))


def default_class_names(num_classes: int) -> tuple[str, ...]:
    """``("background", "class 1", ..., "class C-1")``."""
    return ("background",) + tuple(f"class {k}" for k in range(1, num_classes))


def select_modalities(volume: Volume, names) -> Volume:
    """A copy keeping modalities ``names`` in that order (see :meth:`Volume.select_modalities`)."""
    return volume.select_modalities(names)


# ----------------------------------------------------------------------------- all together

def prepare_volumes(volumes: list[Volume], size=None, pixel_size=None, resize: str = "fit",
                    normalize: str | None = "zscore", clip_percentiles=None, nonzero: bool = False,
                    label_map: dict[int, int] | None = None, class_names=None,
                    modalities=None) -> list[Volume]:
    """Select modalities, remap labels, normalise, then resample each volume.

    Args:
        size: target slice size ``(H, W)`` (or an int); how it is reached is set by ``resize``:
            ``"fit"`` pads to the aspect ratio then resizes, ``"resize"`` stretches,
            ``"crop_pad"`` centre-crops or pads without interpolation.
        pixel_size: resample to this pixel size in mm first (applied before ``size``).
        normalize: ``"zscore"``, ``"minmax"`` or ``None``; see :func:`normalize_intensity`.
        label_map, class_names: see :func:`remap_labels`.
        modalities: names to keep, in order.
    """
    check_choice(resize, RESIZE_MODES, "resize mode")
    return [_prepare_one(v, size, pixel_size, resize, normalize, clip_percentiles, nonzero,
                         label_map, class_names, modalities) for v in volumes]


def _prepare_one(volume, size, pixel_size, resize, normalize, clip_percentiles, nonzero,
                 label_map, class_names, modalities) -> Volume:
    if modalities is not None:
        volume = select_modalities(volume, modalities)
    if label_map is not None:
        volume = remap_labels(volume, label_map, class_names)
    if normalize is not None:
        volume = normalize_intensity(volume, normalize, clip_percentiles, nonzero)
    if pixel_size is not None:
        volume = resample_inplane(volume, pixel_size)
    if size is not None:
        step = {"fit": fit_inplane, "resize": resize_inplane, "crop_pad": crop_or_pad_inplane}[resize]
        volume = step(volume, size)
    return volume
