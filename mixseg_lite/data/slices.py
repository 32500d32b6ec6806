"""2-D slice views of 3-D volumes, and splits of volumes into supervision groups.

A :class:`SliceDataset` holds every axial slice of a list of :class:`Volume` as stacked tensors,
with its full mask, an optional weak mask and image-level tags, plus the volume and slice index
each slice came from, so predictions can be restacked into 3-D volumes for evaluation.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from mixseg_lite.data.volume import Volume
from mixseg_lite.errors import InputError, check_nonempty


class SliceDataset(Dataset):
    """All axial slices of ``volumes``.

    Item ``i`` is a dict with ``image`` ``(M, H, W)`` float32, ``label`` ``(H, W)`` int64 (full
    mask), ``weak`` ``(H, W)`` int64 (weak mask with :data:`mixseg_lite.UNLABELLED`; equal to
    ``label`` when ``weak_kind`` is None), ``tags`` ``(C,)`` float32 (1 where the class is present),
    ``volume`` and ``slice`` (int64 indices into ``volumes``).

    Args:
        volumes: labelled volumes sharing modalities, class names and in-plane size.
        weak_kind: ``None`` or a kind accepted by :func:`mixseg_lite.weak.make_weak_label`.
        weak_seed: base seed; slice ``(v, z)`` uses a seed derived from ``(weak_seed, v, z)``.
        weak_options: extra keyword arguments for the weak-label generator.
    """

    def __init__(self, volumes: list[Volume], weak_kind: str | None = None, weak_seed: int = 0,
                 weak_options: dict | None = None):
        check_nonempty(len(volumes), "list of volumes", "SliceDataset")
        first = volumes[0]
        for v in volumes:
            if v.label is None:
                raise InputError(f"{v.case_id}: volume has no label map; SliceDataset needs labels")
            if v.image.shape[2:] != first.image.shape[2:] or v.modalities != first.modalities:
                raise InputError(f"{v.case_id}: slice size {v.image.shape[2:]} / modalities {v.modalities} "
                                 f"differ from {first.case_id} ({first.image.shape[2:]} / {first.modalities}); "
                                 "resample or crop volumes to one size first")
            if v.class_names != first.class_names:
                raise InputError(f"{v.case_id}: class names {v.class_names} differ from {first.class_names}")
        self.volumes = volumes
        self.class_names = first.class_names
        self.modalities = first.modalities
        self.weak_kind = weak_kind
        images, labels, weak, vol_idx, sl_idx = [], [], [], [], []
        for v_i, v in enumerate(volumes):
            for z in range(v.num_slices):
                images.append(v.image[:, z])
                labels.append(v.label[z])
                vol_idx.append(v_i)
                sl_idx.append(z)
                if weak_kind is not None:
                    from mixseg_lite.weak import make_weak_label

                    seed = int(np.random.SeedSequence([weak_seed, v_i, z]).generate_state(1)[0])
                    weak.append(make_weak_label(v.label[z], weak_kind, seed=seed,
                                                num_classes=v.num_classes, **(weak_options or {})))
        self.images = torch.from_numpy(np.stack(images).astype(np.float32))
        self.labels = torch.from_numpy(np.stack(labels).astype(np.int64))
        self.weak = torch.from_numpy(np.stack(weak).astype(np.int64)) if weak else self.labels
        self.volume_index = torch.tensor(vol_idx, dtype=torch.int64)
        self.slice_index = torch.tensor(sl_idx, dtype=torch.int64)
        C = len(self.class_names)
        present = torch.stack([(self.labels == c).flatten(1).any(1) for c in range(C)], dim=1)
        self.tags = present.float()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": self.labels[i], "weak": self.weak[i],
                "tags": self.tags[i], "volume": self.volume_index[i], "slice": self.slice_index[i]}

    def batch(self, index: torch.Tensor) -> dict:
        """Several items at once as stacked tensors (faster than a DataLoader for in-memory data)."""
        return {"image": self.images[index], "label": self.labels[index], "weak": self.weak[index],
                "tags": self.tags[index], "volume": self.volume_index[index], "slice": self.slice_index[index]}

    def to_volumes(self, labels) -> list[np.ndarray]:
        """Per-slice maps ``(N, H, W)`` (in this dataset's slice order) back into one ``(Z, H, W)``
        int64 array per volume, slices in ``z`` order."""
        labels = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels)
        if labels.shape[0] != len(self):
            raise InputError(f"{labels.shape[0]} slice maps for a dataset of {len(self)} slices")
        volume_index, slice_index = self.volume_index.numpy(), self.slice_index.numpy()
        out = []
        for v in range(len(self.volumes)):
            rows = np.flatnonzero(volume_index == v)
            out.append(labels[rows[np.argsort(slice_index[rows])]].astype(np.int64))
        return out


def index_batches(n: int, batch_size: int, generator: torch.Generator, skip: int = 0):
    """Endless stream of index batches for :meth:`SliceDataset.batch`: shuffled passes over
    ``range(n)`` (the last batch of a pass may be smaller), the first ``skip`` batches dropped so a
    resumed run continues the very same stream. ``generator`` is the only source of randomness."""
    def batches():
        while True:
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, batch_size):
                yield order[start:start + batch_size]

    stream = batches()
    for _ in range(skip):
        next(stream)
    return stream


def split_volumes(volumes: list[Volume], sizes: dict[str, int], seed: int = 0) -> dict[str, list[Volume]]:
    """Split volumes (never slices: no patient in two groups) into named groups of given sizes.

    ``sizes`` maps a group name to a count, e.g. ``{"full": 3, "weak": 12, "val": 3, "test": 6}``;
    the order of volumes is shuffled with ``seed`` first. Raises :class:`InputError` when the
    counts ask for more volumes than there are.
    """
    total = sum(sizes.values())
    if total > len(volumes):
        raise InputError(f"split asks for {total} volumes {sizes} but only {len(volumes)} are available")
    order = np.random.default_rng(seed).permutation(len(volumes))
    groups, start = {}, 0
    for name, n in sizes.items():
        groups[name] = [volumes[i] for i in order[start:start + n]]
        start += n
    return groups
