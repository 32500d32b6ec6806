"""Weak-label generators: they never lie, and each models its kind of annotation."""

import numpy as np
import pytest
from scipy import ndimage

from mixseg_lite import UNLABELLED
from mixseg_lite.errors import InputError
from mixseg_lite.weak import (boxes, eroded_seeds, image_tags, make_weak_label,
                              random_points, scribbles)

EIGHT = ndimage.generate_binary_structure(2, 2)
NUM_CLASSES = 4


def disc(shape, centre, radius):
    rows, cols = np.indices(shape)
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius ** 2


def ellipse(shape, centre, radii, angle):
    rows, cols = np.indices(shape)
    dr, dc = rows - centre[0], cols - centre[1]
    u = dr * np.cos(angle) + dc * np.sin(angle)
    v = -dr * np.sin(angle) + dc * np.cos(angle)
    return (u / radii[0]) ** 2 + (v / radii[1]) ** 2 <= 1


def ring(shape, centre, inner, outer):
    return disc(shape, centre, outer) & ~disc(shape, centre, inner)


def synthetic_mask(seed, shape=(64, 72)):
    """Discs, ellipses and rings of random classes, some touching the border, plus tiny blobs."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, dtype=np.int64)
    for _ in range(rng.integers(2, 6)):
        centre = rng.integers(-4, shape[0] + 4), rng.integers(-4, shape[1] + 4)
        shape_kind = rng.integers(3)
        if shape_kind == 0:
            region = disc(shape, centre, rng.uniform(2, 14))
        elif shape_kind == 1:
            region = ellipse(shape, centre, rng.uniform(2, 16, size=2), rng.uniform(0, np.pi))
        else:
            inner = rng.uniform(3, 10)
            region = ring(shape, centre, inner, inner + rng.uniform(2, 6))
        mask[region] = rng.integers(1, NUM_CLASSES)
    row, col = rng.integers(0, shape[0] - 2), rng.integers(0, shape[1] - 2)
    mask[row:row + 2, col:col + 2] = rng.integers(1, NUM_CLASSES)  # a 2x2 structure
    mask[rng.integers(shape[0]), rng.integers(shape[1])] = rng.integers(1, NUM_CLASSES)  # 1 pixel
    return mask


MASKS = [synthetic_mask(seed) for seed in range(6)]
KIND_OPTIONS = [("seeds", {}), ("scribbles", {}), ("scribbles", {"fraction": 1.0, "background_margin": 1}),
                ("boxes", {}), ("boxes", {"inner_seed": True}), ("points", {}),
                ("points", {"points_per_class": 20, "radius": 3}), ("full", {})]


def components(mask):
    """(class, bool map) of every 8-connected foreground structure."""
    found = []
    for class_index in range(1, int(mask.max()) + 1):
        labelled, count = ndimage.label(mask == class_index, structure=EIGHT)
        found += [(class_index, labelled == k) for k in range(1, count + 1)]
    return found


# ----------------------------------------------------------------------------- all kinds


@pytest.mark.parametrize("kind, options", KIND_OPTIONS)
@pytest.mark.parametrize("mask_index", range(len(MASKS)))
def test_weak_labels_never_lie(kind, options, mask_index):
    mask = MASKS[mask_index]
    weak = make_weak_label(mask, kind, seed=mask_index, num_classes=NUM_CLASSES, **options)
    assert weak.dtype == np.int64 and weak.shape == mask.shape
    labelled = weak != UNLABELLED
    assert labelled.any()
    np.testing.assert_array_equal(weak[labelled], mask[labelled])


def test_full_is_an_int64_copy():
    mask = MASKS[0].astype(np.uint8)
    weak = make_weak_label(mask, "full")
    assert weak.dtype == np.int64
    np.testing.assert_array_equal(weak, mask)
    weak[...] = 0
    np.testing.assert_array_equal(mask, MASKS[0])


def test_make_weak_label_defaults_match_the_generators():
    mask = MASKS[1]
    np.testing.assert_array_equal(make_weak_label(mask, "seeds"), eroded_seeds(mask))
    np.testing.assert_array_equal(make_weak_label(mask, "scribbles", seed=3), scribbles(mask, 3))
    np.testing.assert_array_equal(make_weak_label(mask, "boxes"), boxes(mask))
    np.testing.assert_array_equal(make_weak_label(mask, "points", seed=3), random_points(mask, 3))


# ----------------------------------------------------------------------------- seeds


def stepwise_seed_reference(mask, iterations):
    """Per structure: erode one step at a time, keep the last non-empty result."""
    weak = np.full(mask.shape, UNLABELLED)
    for class_index, structure in components(mask):
        for _ in range(iterations):
            eroded = ndimage.binary_erosion(structure, EIGHT)
            if not eroded.any():
                break
            structure = eroded
        weak[structure] = class_index
    return weak


@pytest.mark.parametrize("iterations", [0, 1, 3, 10])
def test_seeds_match_stepwise_erosion_with_retry(iterations):
    for mask in MASKS:
        np.testing.assert_array_equal(eroded_seeds(mask, iterations), stepwise_seed_reference(mask, iterations))


def test_seeds_on_a_big_disc_match_ten_binary_erosions():
    mask = disc((96, 96), (48, 40), 30).astype(np.int64) * 2
    expected = ndimage.binary_erosion(mask == 2, structure=EIGHT, iterations=10)
    weak = make_weak_label(mask, "seeds", num_classes=3)
    assert expected.sum() > 100
    np.testing.assert_array_equal(weak == 2, expected)
    assert set(np.unique(weak)) == {2, UNLABELLED}


def test_seeds_label_no_background_and_keep_every_structure():
    for mask in MASKS:
        weak = eroded_seeds(mask)
        assert not (weak == 0).any()
        for class_index, structure in components(mask):
            assert (weak[structure] == class_index).any()


def test_seeds_keep_a_tiny_structure_whole():
    mask = np.zeros((20, 20), dtype=np.int64)
    mask[5:7, 5:7] = 1
    mask[12, 12] = 2
    weak = eroded_seeds(mask, iterations=10)
    np.testing.assert_array_equal(weak == 1, mask == 1)
    np.testing.assert_array_equal(weak == 2, mask == 2)


def test_seeds_of_an_empty_slice_are_all_unlabelled():
    weak = make_weak_label(np.zeros((16, 16), dtype=np.int64), "seeds", num_classes=3)
    assert (weak == UNLABELLED).all()


# ----------------------------------------------------------------------------- scribbles


def test_scribbles_are_thin_connected_and_label_background():
    mask = np.zeros((80, 80), dtype=np.int64)
    mask[disc(mask.shape, (40, 40), 22)] = 1
    mask[disc(mask.shape, (40, 40), 10)] = 2  # a ring of class 1 around a disc of class 2
    weak = scribbles(mask, seed=1)
    for class_index in (1, 2):
        stroke = weak == class_index
        assert 0 < stroke.sum() < 0.2 * (mask == class_index).sum()
        assert ndimage.label(stroke, structure=EIGHT)[1] == 1
    background_stroke = weak == 0
    assert background_stroke.any()
    assert ndimage.label(background_stroke, structure=EIGHT)[1] == 1
    distance_to_foreground = ndimage.distance_transform_edt(mask == 0)[background_stroke]
    assert distance_to_foreground.min() > 3 and distance_to_foreground.max() <= 5


def test_scribbles_reach_every_structure_even_tiny_ones():
    for seed, mask in enumerate(MASKS):
        weak = scribbles(mask, seed=seed)
        for class_index, structure in components(mask):
            assert (weak[structure] == class_index).any()


def test_scribbles_depend_only_on_the_seed():
    mask = MASKS[2]
    np.testing.assert_array_equal(scribbles(mask, seed=5), scribbles(mask, seed=5))
    assert not np.array_equal(scribbles(mask, seed=5), scribbles(mask, seed=6))


def test_scribbles_on_an_empty_slice_label_only_background():
    weak = scribbles(np.zeros((20, 30), dtype=np.int64), seed=0, fraction=1.0)
    assert set(np.unique(weak)) == {0, UNLABELLED}
    assert (weak[10] == 0).all()


# ----------------------------------------------------------------------------- boxes


def test_boxes_label_outside_background_and_leave_inside_unlabelled():
    for mask in MASKS:
        inside = np.zeros(mask.shape, dtype=bool)
        for _, structure in components(mask):
            rows, cols = np.nonzero(structure)
            inside[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
        weak = boxes(mask)
        assert (weak[~inside] == 0).all()
        assert (weak[inside] == UNLABELLED).all()


def test_boxes_inner_seed_labels_the_centre_when_it_belongs_to_the_structure():
    mask = np.zeros((40, 40), dtype=np.int64)
    mask[disc(mask.shape, (10, 10), 5)] = 1
    mask[ring(mask.shape, (28, 28), 4, 8)] = 2  # centre lies in the hole: no seed
    weak = boxes(mask, inner_seed=True)
    assert weak[10, 10] == 1 and (weak == 1).sum() == 1
    assert not (weak == 2).any()


def test_boxes_of_an_empty_slice_are_all_background():
    assert (boxes(np.zeros((8, 8), dtype=np.int64)) == 0).all()


# ----------------------------------------------------------------------------- points


def test_points_draw_at_most_points_per_class():
    mask = MASKS[3].copy()
    mask[0, 0] = 3  # class 3 may now have fewer pixels than the clicks asked for
    for points in (1, 5, 40):
        weak = random_points(mask, seed=2, points_per_class=points)
        for class_index in range(NUM_CLASSES):
            assert (weak == class_index).sum() == min(points, (mask == class_index).sum())


def test_points_depend_only_on_the_seed():
    mask = MASKS[4]
    np.testing.assert_array_equal(random_points(mask, seed=7), random_points(mask, seed=7))
    assert not np.array_equal(random_points(mask, seed=7), random_points(mask, seed=8))


def test_point_discs_stay_in_their_class_and_around_a_click():
    mask = MASKS[0]
    clicks = random_points(mask, seed=1, points_per_class=3)
    discs = random_points(mask, seed=1, points_per_class=3, radius=2.5)
    assert (discs != UNLABELLED).sum() > (clicks != UNLABELLED).sum()
    assert ((clicks == UNLABELLED) | (discs == clicks)).all()
    near_a_click = ndimage.distance_transform_edt(clicks == UNLABELLED) <= 2.5
    assert near_a_click[discs != UNLABELLED].all()


# ----------------------------------------------------------------------------- 3-D and tags


@pytest.mark.parametrize("kind, options", KIND_OPTIONS)
def test_volumes_are_processed_slice_by_slice_with_derived_seeds(kind, options):
    volume = np.stack(MASKS[:3] + [np.zeros_like(MASKS[0])])
    weak = make_weak_label(volume, kind, seed=11, num_classes=NUM_CLASSES, **options)
    assert weak.shape == volume.shape and weak.dtype == np.int64
    for z in range(volume.shape[0]):
        slice_seed = int(np.random.SeedSequence([11, z]).generate_state(1)[0])
        expected = make_weak_label(volume[z], kind, seed=slice_seed, num_classes=NUM_CLASSES, **options)
        np.testing.assert_array_equal(weak[z], expected)


def test_slices_of_a_volume_get_different_points():
    volume = np.stack([MASKS[0], MASKS[0]])
    weak = make_weak_label(volume, "points", seed=0)
    assert not np.array_equal(weak[0], weak[1])


def test_image_tags():
    mask = np.zeros((6, 6), dtype=np.int64)
    mask[1, 1] = 2
    np.testing.assert_array_equal(image_tags(mask, 4), [True, False, True, False])
    volume = np.stack([mask, np.zeros_like(mask), np.full_like(mask, 3)])
    tags = image_tags(volume, 4)
    assert tags.dtype == bool and tags.shape == (3, 4)
    np.testing.assert_array_equal(tags, [[1, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]])


# ----------------------------------------------------------------------------- bad input


def test_unknown_kind_lists_the_valid_kinds():
    with pytest.raises(InputError, match="unknown weak kind 'polygons'.*seeds, scribbles, boxes, points, full"):
        make_weak_label(MASKS[0], "polygons")


def test_unknown_option_is_named():
    with pytest.raises(InputError, match="unknown option.*radius.*'seeds'.*iterations"):
        make_weak_label(MASKS[0], "seeds", radius=2)
    with pytest.raises(InputError, match="unknown option.*'full'.*none"):
        make_weak_label(MASKS[0], "full", iterations=2)


@pytest.mark.parametrize("kind, options, message", [
    ("seeds", {"iterations": -1}, "iterations must be an integer >= 0"),
    ("scribbles", {"fraction": 0}, r"fraction must be a number in \(0, 1\]"),
    ("scribbles", {"background_margin": 0}, "background_margin must be an integer >= 1"),
    ("boxes", {"inner_seed": "yes"}, "inner_seed must be True or False"),
    ("points", {"points_per_class": 2.5}, "points_per_class must be an integer >= 1"),
    ("points", {"radius": -1}, "radius must be a number >= 0"),
])
def test_bad_option_values_are_named(kind, options, message):
    with pytest.raises(InputError, match=message):
        make_weak_label(MASKS[0], kind, **options)


def test_labels_out_of_range_are_rejected():
    with pytest.raises(InputError, match=r"label values \[3\] outside the class range 0..2"):
        make_weak_label(MASKS[0], "seeds", num_classes=3)
    with pytest.raises(InputError, match=r"label values \[-1\]"):
        eroded_seeds(np.full((4, 4), -1))
    with pytest.raises(InputError, match="255 marks unlabelled"):
        boxes(np.full((4, 4), UNLABELLED))


@pytest.mark.parametrize("mask, message", [
    (np.zeros(5, dtype=np.int64), r"mask must be 2-D \(H, W\) or 3-D \(Z, H, W\), got shape \(5,\)"),
    (np.zeros((2, 2, 2, 2), dtype=np.int64), "got shape"),
    (np.zeros((0, 4), dtype=np.int64), "is empty"),
    (np.full((4, 4), 0.5), "non-integer values"),
    (np.full((4, 4), "a"), "integer class labels"),
])
def test_bad_masks_are_rejected(mask, message):
    with pytest.raises(InputError, match=message):
        make_weak_label(mask, "full")


def test_bad_seed_and_num_classes_are_rejected():
    with pytest.raises(InputError, match="seed must be a non-negative integer"):
        make_weak_label(MASKS[0], "points", seed=-1)
    with pytest.raises(InputError, match="num_classes must be an integer"):
        make_weak_label(MASKS[0], "points", num_classes=0)
    with pytest.raises(InputError, match="mask must be 2-D"):
        eroded_seeds(np.stack([MASKS[0]]))


def test_integral_float_masks_are_accepted():
    mask = MASKS[5]
    np.testing.assert_array_equal(eroded_seeds(mask.astype(np.float32)), eroded_seeds(mask))
