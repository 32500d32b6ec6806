"""The one data structure every dataset produces: a 3-D, possibly multi-modal, labelled volume.

Simulated datasets, NIfTI loaders and the atlas all return lists of :class:`Volume`, so
training, weak-label generation and 3-D evaluation never care where the data came from.
Axis convention: ``image`` is ``(M, Z, H, W)`` (modality, slice, row, column) and ``label``
is ``(Z, H, W)``; 2-D models see axial slices ``image[:, z]``; ``spacing`` is ``(z, y, x)``
in millimetres so HD95 can be reported in mm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mixseg_lite.errors import InputError, check_label_values, check_same_spatial_shape


@dataclass
class Volume:
    """A 3-D image stack with an optional integer label map.

    Attributes:
        image: float32 array ``(M, Z, H, W)``; ``M`` co-registered modalities.
        label: int64 array ``(Z, H, W)`` of class indices ``0..C-1``, or ``None`` if unlabelled.
        spacing: voxel size ``(z, y, x)`` in millimetres.
        case_id: identifier used in error messages and result tables.
        modalities: one name per image channel, e.g. ``("T1", "T2")``.
        class_names: one name per class, background first.
        meta: free-form provenance (source files, affine, phase, ...).
    """

    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float]
    case_id: str
    modalities: tuple[str, ...] = ("image",)
    class_names: tuple[str, ...] = ("background", "foreground")
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image.ndim != 4:
            raise InputError(f"{self.case_id}: image must be (M, Z, H, W), got shape {self.image.shape}")
        if len(self.modalities) != self.image.shape[0]:
            raise InputError(f"{self.case_id}: {self.image.shape[0]} image channels but "
                             f"{len(self.modalities)} modality names {self.modalities}")
        if len(self.spacing) != 3:
            raise InputError(f"{self.case_id}: spacing must be (z, y, x), got {self.spacing}")
        if not np.isfinite(self.image).all():
            raise InputError(f"{self.case_id}: image contains NaN or inf intensities")
        if self.label is not None:
            check_same_spatial_shape(self.image.shape, self.label.shape, self.case_id)
            check_label_values(self.label, self.num_classes, self.case_id)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_slices(self) -> int:
        return self.image.shape[1]

    def modality(self, name: str) -> np.ndarray:
        """The ``(Z, H, W)`` array of one modality, by name."""
        if name not in self.modalities:
            raise InputError(f"{self.case_id}: missing modality {name!r}; has {list(self.modalities)}")
        return self.image[self.modalities.index(name)]

    def select_modalities(self, names) -> "Volume":
        """A copy restricted to ``names`` in that order."""
        names = tuple(names)
        image = np.stack([self.modality(n) for n in names])
        return Volume(image, self.label, self.spacing, self.case_id, names, self.class_names,
                      dict(self.meta))
