"""Datasets: simulated volumes, NIfTI loaders, the real atlas, and 2-D slice views of them."""

from mixseg_lite.data.volume import Volume
from mixseg_lite.data.atlas import ALL_GROUPS, DEFAULT_GROUPS, atlas_split, load_atlas, read_atlas
from mixseg_lite.data.cache import load_cached
from mixseg_lite.data.datasets import DATASETS, default_split, load_dataset, resolve_split
from mixseg_lite.data.nifti import load_acdc, load_brats, load_decathlon, load_folder
from mixseg_lite.data.preprocess import (normalize_intensity, prepare_volumes, remap_labels,
                                         resample_inplane, resize_inplane)

__all__ = ["Volume"]

__all__ += ["DATASETS", "default_split", "load_dataset", "resolve_split",
            "ALL_GROUPS", "DEFAULT_GROUPS", "atlas_split", "load_atlas", "read_atlas", "load_cached",
            "load_acdc", "load_brats", "load_decathlon", "load_folder", "normalize_intensity",
            "prepare_volumes", "remap_labels", "resample_inplane", "resize_inplane"]
