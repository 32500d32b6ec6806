"""Flat CAMs (the trivial minimiser of ER and CMER), admissibility, the validation Dice between
epochs and where a validation curve stops rising (mixseg_lite.train.cam, issue 24)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mixseg_lite import InputError
from mixseg_lite.cam import CAMNet
from mixseg_lite.data.slices import SliceDataset
from mixseg_lite.data.volume import Volume
from mixseg_lite.train.cam import (FLAT_CAM_BOUND, FLAT_CAM_LEVEL, CAMConfig, CAMResult, cam_admissible,
                                   choose_thresholds, flat_cam_fraction, flattening_epoch, validation_dice_3d)


class ImageMaps(CAMNet):
    """A CAM network whose present-class map is the image itself and whose absent-class map is a
    constant ``offset`` below the image's mean: every slice is predicted positive for offset > 0,
    none for offset < 0, and the foreground CAM is flat exactly where the image is (nearly) flat."""

    def __init__(self, offset: float = 1.0):
        super().__init__(1, 2, base_width=2, depth=1)
        self.offset = offset

    def forward(self, x):
        absent = x.mean(dim=(2, 3), keepdim=True).expand_as(x) - self.offset
        maps = torch.cat([absent, x], dim=1)
        return maps.mean(dim=(2, 3)), maps


def _slices(amplitudes: list[float], background: float = 0.0) -> SliceDataset:
    """One volume, one slice per amplitude: a constant background plus a 2x2 spot of that
    amplitude (the spot is the tumour label, so a thresholded CAM can find it)."""
    image = np.full((1, len(amplitudes), 8, 8), background, dtype=np.float32)
    label = np.zeros((len(amplitudes), 8, 8), dtype=np.int64)
    for z, amplitude in enumerate(amplitudes):
        image[0, z, 3:5, 3:5] += amplitude
        label[z, 3:5, 3:5] = 1
    return SliceDataset([Volume(image, label, (1.0, 1.0, 1.0), "spots", ("T2",), ("background", "tumour"))])


def _result(net: torch.nn.Module, method: str = "cam") -> CAMResult:
    return CAMResult({"T2": net}, CAMConfig(method=method, progress=False), ("T2",), ("background", "tumour"))


def test_a_flat_cam_is_one_no_threshold_can_turn_into_a_mask():
    # amplitude 0: a constant map; 1e-8: a range far below normalize_cam's eps (normalised peak
    # ~0.001); -0.5: a map <= 0 everywhere, zeroed by the ReLU (the slice is still predicted
    # positive: the absent map is lower); 1e-3 and 1: real peaks (normalised maximum ~0.99 and 1).
    data = _slices([0.0, 1e-8, -0.5, 1e-3, 1.0])
    assert flat_cam_fraction(_result(ImageMaps()), data) == {"T2": {"flat_fraction": 0.6, "n_predicted_positive": 5}}
    # flat slices get an empty mask at every candidate threshold: their spots are missed whatever
    # the threshold, the others are found
    sweep = choose_thresholds(_result(ImageMaps()), data)["T2"]["sweep"]
    assert max(sweep.values()) == pytest.approx(2 * 8 / (20 + 8))  # 2 of 5 spots (4 pixels each) found exactly
    assert FLAT_CAM_LEVEL == 0.05 and 0 < FLAT_CAM_BOUND < 1
    # a stricter level counts the 1e-3 slice too (normalised peak 1e-3 / (1e-3 + 1e-5) ~ 0.99)
    assert flat_cam_fraction(_result(ImageMaps()), data, level=0.995)["T2"]["flat_fraction"] == 0.8


def test_a_network_that_calls_no_slice_positive_has_no_flat_fraction():
    out = flat_cam_fraction(_result(ImageMaps(offset=-1.0)), _slices([1.0, 1.0]))["T2"]
    assert out["n_predicted_positive"] == 0 and math.isnan(out["flat_fraction"])
    with pytest.raises(InputError, match="supervised"):
        flat_cam_fraction(_result(ImageMaps(), method="supervised"), _slices([1.0]))
    with pytest.raises(InputError, match="level"):
        flat_cam_fraction(_result(ImageMaps()), _slices([1.0]), level=0.0)


@pytest.mark.parametrize("accuracy, majority, flat, bound, expected", [
    (0.7, 0.7, 0.0, 0.5, False),        # answers the majority tag: never admissible
    (0.9, 0.7, None, 0.5, True),        # not measured (the supervised row): tags only
    (0.9, 0.7, 0.5, 0.5, True),         # at the bound
    (0.9, 0.7, 0.51, 0.5, False),       # above it
    (0.9, 0.7, math.nan, 0.5, False),   # no slice predicted positive
    (0.9, 0.7, 1.0, None, True),        # check off: the committed brain sweep's rule
    ("0.9", "0.7", "0.25", 0.5, True),  # numbers as read back from a CSV
])
def test_admissibility_needs_learnt_tags_and_few_flat_cams(accuracy, majority, flat, bound, expected):
    assert cam_admissible(accuracy, majority, flat, bound) is expected


def test_validation_dice_between_epochs_leaves_the_networks_as_they_were():
    data = _slices([0.0, 1.0, 2.0])
    net = ImageMaps()
    net.train()
    dice = validation_dice_3d(_result(net), data)
    assert net.training
    chosen = choose_thresholds(_result(net), data)["T2"]
    assert dice == {"T2": chosen["sweep"][chosen["threshold"]]}


@pytest.mark.parametrize("values, expected", [
    ([0.1, 0.3, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6], 6),    # plateau from epoch 4; its trailing 3-epoch mean from 6
    ([0.1, 0.2, 0.3, 0.4, 0.5], 5),                    # still rising at the end: the last epoch
    ([0.5, 0.51, 0.5, 0.505, 0.5], 1),                 # flat within the tolerance from the start
    ([math.nan, 0.2, 0.4, 0.4, 0.4, 0.4], 5),          # NaN epochs (no tumour in validation) skipped
    ([math.nan, math.nan], None),
])
def test_flattening_epoch(values, expected):
    assert flattening_epoch(values) == expected
    assert flattening_epoch([-v for v in [2.0, 1.0, 0.5, 0.5, 0.5]], window=1) == 3  # a loss, negated
    with pytest.raises(InputError, match="window"):
        flattening_epoch([0.1], window=0)
