"""Tag-supervision evaluation on hand-made volumes with known answers, and the slice-average trap."""

import numpy as np
import pytest
import torch

from mixseg_lite import InputError
from mixseg_lite.evaluation import (
    dice_3d, dice_per_volume, dice_positive_slices, dice_slice_average, empty_prediction,
    evaluate_tag_segmentation, slice_accuracy, slice_dice,
)
from mixseg_lite.metrics import dice


@pytest.fixture
def two_volumes():
    """Volume 0: 4 slices, tumour (a 2x2 square) on slices 1 and 2. Volume 1: 4 empty slices."""
    target = np.zeros((8, 4, 4), dtype=np.int64)
    target[1, :2, :2] = 1
    target[2, :2, :2] = 1
    volume_index = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    return target, volume_index


def test_slice_dice_matches_metrics_dice(two_volumes):
    target, _ = two_volumes
    rng = np.random.default_rng(0)
    pred = rng.random(target.shape) > 0.7
    assert np.allclose(slice_dice(pred, target), [dice(p, t) for p, t in zip(pred, target)])


def test_perfect_prediction(two_volumes):
    target, vi = two_volumes
    scores = evaluate_tag_segmentation(target, target, vi)
    assert scores["dice_3d"] == 1.0 and scores["dice_pos"] == 1.0
    assert scores["dice_slice_avg"] == 1.0 and scores["accuracy"] == 1.0


def test_empty_baseline_trap(two_volumes):
    target, vi = two_volumes
    empty = empty_prediction(target)
    assert empty.shape == target.shape and not empty.any()
    scores = evaluate_tag_segmentation(empty, target, vi)
    # 6 of 8 slices are empty and predicted empty: slice-averaged Dice 0.75, accuracy 0.75...
    assert scores["dice_slice_avg"] == pytest.approx(0.75)
    assert scores["accuracy"] == pytest.approx(0.75)
    # ...but the one tumour volume gets 3-D Dice 0, and so do its positive slices.
    assert scores["dice_3d"] == 0.0 and scores["dice_pos"] == 0.0
    # Counting tumour-free volumes would hand the empty mask a free 1.0.
    assert dice_3d(empty, target, vi, include_empty_volumes=True) == pytest.approx(0.5)


def test_half_right_prediction_known_numbers(two_volumes):
    target, vi = two_volumes
    pred = np.zeros_like(target)
    pred[1, :2, :2] = 1        # slice 1 perfect
    pred[2, :2, 0] = 1         # slice 2: 2 of 4 pixels -> Dice 2*2/(2+4) = 2/3
    pred[5, 3, 3] = 1          # a false alarm in the tumour-free volume
    assert dice_per_volume(pred, target, vi) == {0: pytest.approx(2 * 6 / (6 + 8)), 1: 0.0}
    assert dice_3d(pred, target, vi) == pytest.approx(12 / 14)  # only volume 0 has tumour
    assert dice_positive_slices(pred, target) == pytest.approx((1 + 2 / 3) / 2)
    assert dice_slice_average(pred, target) == pytest.approx((1 + 2 / 3 + 5 * 1 + 0) / 8)
    predicted = pred.reshape(8, -1).any(1)
    assert slice_accuracy(predicted, target) == pytest.approx(7 / 8)
    scores = evaluate_tag_segmentation(torch.from_numpy(pred), torch.from_numpy(target), torch.from_numpy(vi))
    assert scores["dice_3d"] == pytest.approx(12 / 14) and scores["accuracy"] == pytest.approx(7 / 8)


def test_predicted_tags_can_differ_from_mask(two_volumes):
    target, vi = two_volumes
    # A classifier that says "positive" on slice 0 while its mask stays empty is still wrong there.
    tags = np.zeros(8, dtype=bool)
    tags[[0, 1, 2]] = True
    scores = evaluate_tag_segmentation(target, target, vi, predicted_positive=tags)
    assert scores["accuracy"] == pytest.approx(7 / 8) and scores["dice_3d"] == 1.0


def test_multi_class_means_over_foreground_classes():
    target = np.zeros((2, 2, 2), dtype=np.int64)
    target[0, 0, 0], target[0, 1, 1] = 1, 2
    pred = target.copy()
    pred[0, 1, 1] = 0  # class 2 missed
    scores = evaluate_tag_segmentation(pred, target, np.array([0, 0]), num_classes=3)
    assert scores["per_class"][1]["dice_3d"] == 1.0 and scores["per_class"][2]["dice_3d"] == 0.0
    assert scores["dice_3d"] == 0.5


def test_no_positive_slices_gives_nan_not_an_error():
    target = np.zeros((3, 2, 2), dtype=np.int64)
    assert np.isnan(dice_positive_slices(target, target))
    assert np.isnan(dice_3d(target, target, np.zeros(3)))
    assert dice_slice_average(target, target) == 1.0


def test_bad_input(two_volumes):
    target, vi = two_volumes
    with pytest.raises(InputError, match="slice stacks"):
        dice_slice_average(target[0], target[0])
    with pytest.raises(InputError, match="slice stacks"):
        evaluate_tag_segmentation(target[:4], target, vi)
    with pytest.raises(InputError, match="volume_index"):
        dice_3d(target, target, vi[:3])
    with pytest.raises(InputError, match="one value per slice"):
        slice_accuracy(np.zeros(3, dtype=bool), target)
    with pytest.raises(InputError, match="columns"):
        evaluate_tag_segmentation(target, target, vi, predicted_positive=np.zeros((8, 2), dtype=bool))


def test_volume_dice_scores_skip_volumes_without_the_class_and_average_to_dice_3d():
    from mixseg_lite.evaluation import volume_dice_scores

    target = np.zeros((4, 4, 4), dtype=np.int64)
    target[0, :2, :2] = 1          # volume 0: a 4-pixel object
    target[3, :, :] = 1            # volume 2: 16 pixels
    pred = np.zeros_like(target)
    pred[0, :2, :1] = 1            # Dice 2*2/(2+4) = 2/3
    pred[1, 0, 0] = 1              # false alarm in volume 1, which has no object: left out
    pred[3, :, :] = 1              # Dice 1
    volume_index = np.array([0, 1, 2, 2])
    scores = volume_dice_scores(pred, target, volume_index)
    np.testing.assert_allclose(scores, [2 / 3, 1.0])
    assert scores.mean() == pytest.approx(dice_3d(pred, target, volume_index))
