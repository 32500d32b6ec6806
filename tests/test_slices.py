"""Slice views of volumes: restacking predictions and the batch streams both trainers draw from."""

import numpy as np
import pytest
import torch

from mixseg_lite import InputError
from mixseg_lite.data.cardiac_sim import make_cardiac_volumes
from mixseg_lite.data.slices import SliceDataset, index_batches


def test_to_volumes_restacks_slice_maps_in_z_order():
    volumes = make_cardiac_volumes(3, 4, 32, seed=0)
    dataset = SliceDataset(volumes)
    restacked = dataset.to_volumes(dataset.labels)
    assert [r.shape for r in restacked] == [v.label.shape for v in volumes]
    for r, v in zip(restacked, volumes):
        np.testing.assert_array_equal(r, v.label)
    # rows in any order come back in z order
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))
    dataset.volume_index, dataset.slice_index = dataset.volume_index[order], dataset.slice_index[order]
    for r, v in zip(dataset.to_volumes(dataset.labels[order]), volumes):
        np.testing.assert_array_equal(r, v.label)
    with pytest.raises(InputError, match="3 slice maps for a dataset of 12 slices"):
        dataset.to_volumes(np.zeros((3, 32, 32)))


def test_index_batches_cover_every_index_once_per_pass_and_skip_resumes_the_stream():
    stream = index_batches(10, 4, torch.Generator().manual_seed(3))
    first_pass = [next(stream) for _ in range(3)]
    assert [len(b) for b in first_pass] == [4, 4, 2]
    assert sorted(torch.cat(first_pass).tolist()) == list(range(10))
    uninterrupted = [next(stream).tolist() for _ in range(4)]
    resumed = index_batches(10, 4, torch.Generator().manual_seed(3), skip=3)
    assert [next(resumed).tolist() for _ in range(4)] == uninterrupted
