"""Metrics on masks small enough to check by hand."""

import numpy as np
import pytest

from mixseg_lite.data.volume import Volume
from mixseg_lite.errors import InputError
from mixseg_lite.metrics import dice, evaluate_volume, evaluate_volumes, hd95, summarize_per_volume


def square(shape=(32, 32), rows=(10, 20), cols=(10, 20)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows[0]:rows[1], cols[0]:cols[1]] = True
    return mask


# --- Dice -----------------------------------------------------------------------------------

def test_dice_of_two_overlapping_squares():
    # 10x10 squares shifted by 3 columns overlap on 10x7 = 70 pixels: 2*70 / (100+100).
    assert dice(square(), square(cols=(13, 23))) == pytest.approx(0.7)


def test_dice_of_nested_squares():
    # 4x4 inside 10x10: 2*16 / (16+100).
    assert dice(square(rows=(12, 16), cols=(12, 16)), square()) == pytest.approx(32 / 116)


def test_dice_identical_disjoint_and_empty_conventions():
    empty = np.zeros((8, 8), dtype=bool)
    assert dice(square(), square()) == 1.0
    assert dice(square(), square(cols=(21, 31))) == 0.0
    assert dice(empty, empty) == 1.0
    assert dice(square((8, 8), (2, 4), (2, 4)), empty) == 0.0
    assert dice(empty, square((8, 8), (2, 4), (2, 4))) == 0.0


def test_dice_works_in_3d():
    pred = np.zeros((4, 5, 5), dtype=bool)
    target = np.zeros((4, 5, 5), dtype=bool)
    pred[0:2] = True       # 50 voxels
    target[1:4] = True     # 75 voxels, 25 shared
    assert dice(pred, target) == pytest.approx(50 / 125)


# --- HD95 -----------------------------------------------------------------------------------
# A 10x10 square against itself shifted by 3 pixels: every surface pixel is at most 3 pixels
# from the other surface, and the whole far side (10 of 36 surface pixels > 5 %) is exactly 3
# away, so the 95th percentile is 3 pixels converted to mm along the shifted axis.

def test_hd95_identical_masks_is_zero():
    assert hd95(square(), square(), (1.0, 1.0)) == 0.0
    assert hd95(square(), square(), (2.0, 0.5)) == 0.0


def test_hd95_square_shifted_by_three_pixels_isotropic():
    assert hd95(square(), square(cols=(13, 23)), (1.0, 1.0)) == pytest.approx(3.0)
    assert hd95(square(), square(rows=(13, 23)), (1.0, 1.0)) == pytest.approx(3.0)


def test_hd95_uses_anisotropic_spacing():
    spacing = (2.0, 0.5)  # (y, x) mm
    assert hd95(square(), square(cols=(13, 23)), spacing) == pytest.approx(3 * 0.5)
    assert hd95(square(), square(rows=(13, 23)), spacing) == pytest.approx(3 * 2.0)


def test_hd95_is_symmetric():
    small, big = square(rows=(12, 16), cols=(12, 16)), square()
    assert hd95(small, big, (1.0, 1.0)) == hd95(big, small, (1.0, 1.0))


def test_hd95_3d_cube_shifted_along_z_by_slice_thickness():
    spacing = (5.0, 1.5, 1.5)  # thick slices, as in cardiac MRI
    pred = np.zeros((12, 16, 16), dtype=bool)
    pred[2:8, 3:13, 3:13] = True
    one_slice, two_slices = np.roll(pred, 1, axis=0), np.roll(pred, 2, axis=0)
    assert hd95(pred, one_slice, spacing) == pytest.approx(5.0)
    assert hd95(pred, two_slices, spacing) == pytest.approx(10.0)


def test_hd95_mask_on_array_border_has_a_surface():
    # The whole array is foreground: its 28 border pixels are its surface. Against the central
    # 2x2 square, the 4 array corners (14 % of them, so inside the top 5 %) are (3, 3) px away.
    full = np.ones((8, 8), dtype=bool)
    assert hd95(full, full, (1.0, 1.0)) == 0.0
    assert hd95(full, square((8, 8), (3, 5), (3, 5)), (1.0, 1.0)) == pytest.approx(np.hypot(3, 3))


def test_hd95_surface_uses_face_connectivity_as_monai():
    # MONAI's edges are mask XOR binary_erosion(mask) with scipy's default (face-connected)
    # structure. The centre of a plus sign has all its face neighbours inside, so it is not
    # surface: the plus and its arms alone have the same surface and HD95 is 0. (Full
    # connectivity would put the centre on the surface, 1 px from the arms, giving 0.8 px.)
    plus = np.zeros((5, 5), dtype=bool)
    plus[2, 1:4] = plus[1:4, 2] = True
    arms = plus.copy()
    arms[2, 2] = False
    assert hd95(plus, arms, (2.0, 0.5)) == 0.0
    plus_3d = np.zeros((5, 5, 5), dtype=bool)
    plus_3d[2, 2, 1:4] = plus_3d[2, 1:4, 2] = plus_3d[1:4, 2, 2] = True
    arms_3d = plus_3d.copy()
    arms_3d[2, 2, 2] = False
    assert hd95(plus_3d, arms_3d, (5.0, 1.5, 1.5)) == 0.0


def test_hd95_empty_conventions():
    empty = np.zeros((10, 20), dtype=bool)
    some = square((10, 20), (2, 5), (2, 5))
    worst = np.hypot(10 * 2.0, 20 * 0.5)  # diagonal of the 20 mm x 10 mm field of view
    assert hd95(empty, empty, (2.0, 0.5)) == 0.0
    assert hd95(some, empty, (2.0, 0.5)) == pytest.approx(worst)
    assert hd95(empty, some, (2.0, 0.5)) == pytest.approx(worst)
    empty_3d = np.zeros((4, 6, 8), dtype=bool)
    some_3d = empty_3d.copy()
    some_3d[1, 2, 3] = True
    assert hd95(some_3d, empty_3d, (5.0, 1.5, 1.5)) == pytest.approx(np.sqrt(20**2 + 9**2 + 12**2))


@pytest.mark.parametrize("spacing, problem", [
    ((1.0,), "has 1 values"),
    ((1.0, 1.0, 1.0), "has 3 values"),
    ((1.0, 0.0), "positive"),
    ((1.0, -2.0), "positive"),
    ((1.0, float("nan")), "positive"),
])
def test_hd95_rejects_bad_spacing(spacing, problem):
    with pytest.raises(InputError, match=problem):
        hd95(square(), square(), spacing)


def test_mask_shape_mismatch_raises():
    with pytest.raises(InputError, match="differs"):
        dice(square((32, 32)), square((32, 30)))
    with pytest.raises(InputError, match="numbers of axes"):
        hd95(np.zeros((2, 32, 32), bool), square((32, 32)), (1.0, 1.0))


# --- evaluate_volume(s) ---------------------------------------------------------------------

CLASS_NAMES = ("background", "RV", "LV")


def labelled_pair():
    """Target: RV square and LV square; prediction: RV exact, LV shifted 3 px, on 2 slices."""
    target = np.zeros((2, 32, 32), dtype=np.int64)
    target[:, 2:8, 2:8] = 1
    target[:, 10:20, 10:20] = 2
    pred = np.zeros_like(target)
    pred[:, 2:8, 2:8] = 1
    pred[:, 10:20, 13:23] = 2
    return pred, target


def test_evaluate_volume_rows_per_foreground_class():
    pred, target = labelled_pair()
    rows = evaluate_volume(pred, target, (10.0, 1.0, 1.0), CLASS_NAMES, case_id="patient001")
    assert [r["class"] for r in rows] == ["RV", "LV"]
    assert all(r["case_id"] == "patient001" for r in rows)
    assert set(rows[0]) == {"case_id", "class", "dice", "hd95_mm"}
    assert rows[0]["dice"] == 1.0 and rows[0]["hd95_mm"] == 0.0
    assert rows[1]["dice"] == pytest.approx(0.7)
    assert rows[1]["hd95_mm"] == pytest.approx(3.0)


def test_evaluate_volume_2d_and_absent_class():
    target = np.zeros((16, 16), dtype=np.int64)
    target[4:8, 4:8] = 1
    rows = evaluate_volume(target.copy(), target, (1.0, 1.0), CLASS_NAMES)
    assert rows[0] == {"case_id": None, "class": "RV", "dice": 1.0, "hd95_mm": 0.0}
    assert rows[1]["dice"] == 1.0 and rows[1]["hd95_mm"] == 0.0  # LV absent in both


def test_evaluate_volume_bad_inputs_name_the_case():
    pred, target = labelled_pair()
    with pytest.raises(InputError, match=r"patient007: mask shape .* differs"):
        evaluate_volume(pred[:, :30], target, (10.0, 1.0, 1.0), CLASS_NAMES, "patient007")
    bad = pred.copy()
    bad[0, 0, 0] = 3
    with pytest.raises(InputError, match=r"patient007 prediction: label values \[3\] outside"):
        evaluate_volume(bad, target, (10.0, 1.0, 1.0), CLASS_NAMES, "patient007")
    with pytest.raises(InputError, match=r"patient007 target: label values \[-1\] outside"):
        evaluate_volume(pred, target - (target == 0), (10.0, 1.0, 1.0), CLASS_NAMES, "patient007")
    with pytest.raises(InputError, match="patient007: spacing .* has 2 values but the mask has 3"):
        evaluate_volume(pred, target, (1.0, 1.0), CLASS_NAMES, "patient007")
    with pytest.raises(InputError, match="integer class indices"):
        evaluate_volume(pred.astype(float), target, (10.0, 1.0, 1.0), CLASS_NAMES, "patient007")


def make_volume(label, case_id):
    image = np.zeros((1, *label.shape), dtype=np.float32)
    return Volume(image, label, (10.0, 1.0, 1.0), case_id, class_names=CLASS_NAMES)


def test_evaluate_volumes_uses_each_volume_metadata():
    pred, target = labelled_pair()
    volumes = [make_volume(target, "a"), make_volume(target, "b")]
    rows = evaluate_volumes([target, pred], volumes)
    assert [(r["case_id"], r["class"]) for r in rows] == [("a", "RV"), ("a", "LV"),
                                                          ("b", "RV"), ("b", "LV")]
    assert rows[1]["dice"] == 1.0 and rows[3]["dice"] == pytest.approx(0.7)


def test_evaluate_volumes_bad_inputs():
    _, target = labelled_pair()
    with pytest.raises(InputError, match="2 predictions for 1 volumes"):
        evaluate_volumes([target, target], [make_volume(target, "a")])
    unlabelled = make_volume(target, "c")
    unlabelled.label = None
    with pytest.raises(InputError, match="c: volume has no label"):
        evaluate_volumes([target], [unlabelled])


# --- summarize ------------------------------------------------------------------------------

RECORDS = [
    {"case_id": "a", "class": "RV", "dice": 0.6, "hd95_mm": 4.0},
    {"case_id": "a", "class": "LV", "dice": 0.8, "hd95_mm": 2.0},
    {"case_id": "b", "class": "RV", "dice": 0.8, "hd95_mm": 8.0},
    {"case_id": "b", "class": "LV", "dice": 1.0, "hd95_mm": 0.0},
]


def test_summarize_per_class():
    summary = summarize_per_volume(RECORDS)
    rv, lv = summary["per_class"]["RV"], summary["per_class"]["LV"]
    assert rv["dice"] == pytest.approx({"mean": 0.7, "std": 0.1, "n": 2})
    assert rv["hd95_mm"] == pytest.approx({"mean": 6.0, "std": 2.0, "n": 2})
    assert lv["dice"] == pytest.approx({"mean": 0.9, "std": 0.1, "n": 2})
    assert lv["hd95_mm"] == pytest.approx({"mean": 1.0, "std": 1.0, "n": 2})


def test_summarize_mean_averages_classes_within_each_volume_first():
    # Volume means: dice a=0.7, b=0.9; hd95 a=3, b=4. Population std (ddof=0) over 2 volumes.
    summary = summarize_per_volume(RECORDS)
    assert summary["mean"]["dice"] == pytest.approx({"mean": 0.8, "std": 0.1, "n": 2})
    assert summary["mean"]["hd95_mm"] == pytest.approx({"mean": 3.5, "std": 0.5, "n": 2})


def test_summarize_selected_metrics_and_bad_records():
    assert set(summarize_per_volume(RECORDS, metrics=("dice",))["mean"]) == {"dice"}
    with pytest.raises(InputError, match="empty"):
        summarize_per_volume([])
    with pytest.raises(InputError, match="lacks keys"):
        summarize_per_volume([{"case_id": "a", "class": "RV", "dice": 1.0}])
    with pytest.raises(InputError, match="appears twice"):
        summarize_per_volume(RECORDS + RECORDS[:1])
