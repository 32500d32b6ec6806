"""The Colin27 + AAL atlas from the Debian package mricron-data (real data, installed offline)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from fake_datasets import affine_for, axis_coded, striped_label, write_nifti

from mixseg_lite.data.atlas import (ALL_GROUPS, DEFAULT_GROUPS, atlas_dir, atlas_split, block_ranges,
                                    load_atlas, read_atlas)
from mixseg_lite.errors import InputError


def _require_atlas() -> None:
    """Skip without the package, except on CI, which must install mricron-data."""
    if all((atlas_dir() / name).is_file() for name in ("ch2.nii.gz", "aal.nii.gz")):
        return
    message = f"mricron-data not installed ({atlas_dir()} lacks ch2.nii.gz / aal.nii.gz)"
    if os.environ.get("CI"):
        pytest.fail(message + "; CI must install it (apt-get install mricron-data)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def blocks():
    _require_atlas()
    return load_atlas(size=64, block_size=4, gap=2)


def test_blocks_carry_every_deep_structure(blocks):
    assert len(blocks) >= 8
    first = blocks[0]
    assert first.class_names == ("background",) + tuple(DEFAULT_GROUPS)
    assert first.modalities == ("T1",) and first.image.shape[1:] == (4, 64, 64)
    assert first.spacing[0] == 1.0 and first.spacing[1] == first.spacing[2] > 1.0
    present = np.unique(np.concatenate([b.label.ravel() for b in blocks]))
    assert present.tolist() == list(range(len(first.class_names)))
    assert min(b.image.min() for b in blocks) == 0.0 and max(b.image.max() for b in blocks) == 1.0


def test_blocks_are_contiguous_and_never_touch(blocks):
    for block in blocks:
        slices = block.meta["slices"]
        assert slices == list(range(slices[0], slices[-1] + 1)) and len(slices) == block.num_slices
        assert block.case_id == f"colin27_z{slices[0]:03d}-{slices[-1]:03d}"
    for below, above in zip(blocks, blocks[1:]):
        assert above.meta["slices"][0] - below.meta["slices"][-1] - 1 >= 2  # the gap


def test_slices_with_any_structure_match_the_reference():
    _require_atlas()
    full = read_atlas(ALL_GROUPS)
    assert full.image.shape == (1, 181, 217, 181)
    assert int((full.label > 0).any(axis=(1, 2)).sum()) == 88  # REFERENCE section D
    stack = load_atlas(ALL_GROUPS, size=64, block_size=181, gap=0, slices="all")
    assert len(stack) == 1 and stack[0].num_slices == 181
    assert 80 <= int((stack[0].label > 0).any(axis=(1, 2)).sum()) <= 88  # nearest resizing may lose a sliver


def test_spread_split_covers_the_height(blocks):
    groups = atlas_split(blocks, {"train": 5, "val": 2, "test": 3}, seed=1)
    assert {k: len(v) for k, v in groups.items()} == {"train": 5, "val": 2, "test": 3}
    ids = [v.case_id for g in groups.values() for v in g]
    assert len(set(ids)) == len(ids)
    lowest = {k: min(v.meta["slices"][0] for v in g) for k, g in groups.items()}
    highest = {k: max(v.meta["slices"][0] for v in g) for k, g in groups.items()}
    middle = np.median([b.meta["slices"][0] for b in blocks])
    assert all(lowest[k] < middle < highest[k] for k in groups)
    with pytest.raises(InputError):
        atlas_split(blocks, {"train": len(blocks) + 1})


def test_block_ranges_absorb_a_short_remainder():
    assert block_ranges(14, 4, 2) == [(0, 4), (6, 10), (12, 14)]
    assert block_ranges(13, 4, 2) == [(0, 4), (6, 13)]
    with pytest.raises(InputError):
        block_ranges(10, 0, 1)


def test_missing_atlas_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXSEG_ATLAS_DIR", str(tmp_path))
    with pytest.raises(InputError) as info:
        load_atlas()
    message = str(info.value)
    assert str(tmp_path) in message and "mricron-data" in message and "MIXSEG_ATLAS_DIR" in message
    assert "\n" not in message


def test_atlas_on_another_grid_is_refused(tmp_path, monkeypatch):
    write_nifti(tmp_path / "ch2.nii.gz", axis_coded())
    write_nifti(tmp_path / "aal.nii.gz", striped_label([0, 71, 72]), affine=affine_for(origin=(0, 0, 0)))
    monkeypatch.setenv("MIXSEG_ATLAS_DIR", str(tmp_path))
    with pytest.raises(InputError, match="aal.nii.gz.*same grid"):
        load_atlas()
    with pytest.raises(InputError, match="region 71 is in both"):
        load_atlas(groups={"a": (71,), "b": (71, 72)})
