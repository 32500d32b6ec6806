"""Tests of the simulated cardiac short-axis cine-MRI dataset (the offline ACDC stand-in)."""

import numpy as np
import pytest
from scipy import ndimage

from mixseg_lite import InputError
from mixseg_lite.data.cardiac_sim import (CARDIAC_CLASSES, FIELD_OF_VIEW_MM, LV_CAVITY, MYOCARDIUM,
                                          RV_CAVITY, make_cardiac_volumes)
from mixseg_lite.data.slices import SliceDataset
from mixseg_lite.data.volume import Volume

SQUARE = np.ones((3, 3), dtype=bool)


@pytest.fixture(scope="module")
def volumes():
    return make_cardiac_volumes()


def per_slice_presence(volumes, cls):
    """``(n_volumes, n_slices)`` booleans: does each slice contain class ``cls``?"""
    return np.stack([(v.label == cls).any(axis=(1, 2)) for v in volumes])


def lv_volume_ml(volume):
    return (volume.label == LV_CAVITY).sum() * np.prod(volume.spacing) / 1000.0


def test_shapes_dtypes_and_metadata(volumes):
    assert len(volumes) == 24
    for i, v in enumerate(volumes):
        assert isinstance(v, Volume)
        assert v.image.shape == (1, 8, 64, 64) and v.image.dtype == np.float32
        assert v.label.shape == (8, 64, 64) and v.label.dtype == np.int64
        assert v.image.min() == 0.0 and v.image.max() == 1.0  # min-max scaled per volume
        assert set(np.unique(v.label)) <= {0, 1, 2, 3}
        assert v.case_id == f"simcardiac_{i:03d}"
        assert v.modalities == ("cine-MRI (simulated)",)
        assert v.class_names == CARDIAC_CLASSES == ("background", "RV cavity", "myocardium", "LV cavity")
        assert v.meta["simulated"] is True and v.meta["seed"] == 0
        Volume(v.image, v.label, v.spacing, v.case_id, v.modalities, v.class_names, v.meta)  # validates


def test_spacing_is_anisotropic_and_scales_with_size(volumes):
    for v in volumes:
        z, y, x = v.spacing
        assert 8.0 <= z <= 10.0
        assert y == x == pytest.approx(FIELD_OF_VIEW_MM / 64)
        assert z > 2 * x
    assert make_cardiac_volumes(n_volumes=1, size=128)[0].spacing[1] == pytest.approx(FIELD_OF_VIEW_MM / 128)


def test_class_coverage_and_empty_apical_slices(volumes):
    for cls in (RV_CAVITY, MYOCARDIUM, LV_CAVITY):
        assert per_slice_presence(volumes, cls).any()
    lv = per_slice_presence(volumes, LV_CAVITY)
    assert lv.mean() > 0.7
    assert lv[:, 0].all()  # every basal slice shows the LV
    foreground = np.stack([(v.label > 0).any(axis=(1, 2)) for v in volumes])
    assert 0 < (~foreground).sum() < 0.25 * foreground.size
    assert foreground[:, :2].all()  # empty slices are apical, never basal
    assert (per_slice_presence(volumes, MYOCARDIUM) & ~lv).any()  # myocardium-only apical slices


def test_myocardium_encloses_lv_and_separates_it_from_rv(volumes):
    checked = 0
    for v in volumes:
        for z in range(v.num_slices):
            lv = v.label[z] == LV_CAVITY
            if not lv.any() or not (v.label[z] == MYOCARDIUM).any():
                continue
            grown = ndimage.binary_dilation(lv, structure=SQUARE)
            assert np.isin(v.label[z][grown], (LV_CAVITY, MYOCARDIUM)).all(), f"{v.case_id} slice {z}"
            checked += 1
    assert checked > 100


def test_structures_shrink_from_base_to_apex_and_rv_ends_first(volumes):
    lv, rv = per_slice_presence(volumes, LV_CAVITY), per_slice_presence(volumes, RV_CAVITY)
    for v, lv_slices, rv_slices in zip(volumes, lv, rv):
        areas = (v.label == LV_CAVITY).sum(axis=(1, 2))
        last_lv = np.flatnonzero(lv_slices)[-1]
        assert areas[0] > areas[last_lv]
        assert rv_slices[0] and np.flatnonzero(rv_slices)[-1] <= last_lv
    assert rv.sum() < lv.sum()


def test_intensity_alone_cannot_separate_rv_from_lv_or_blood_from_distractors(volumes):
    for v in volumes:
        image, label = v.image[0], v.label
        lv_median = np.median(image[label == LV_CAVITY])
        assert np.median(image[label == RV_CAVITY]) == pytest.approx(lv_median, rel=0.25)
        assert np.median(image[label == MYOCARDIUM]) < 0.7 * lv_median  # dark ring, bright pools
        assert (image[label == 0] > 0.9 * lv_median).sum() > 50  # fat, stomach, aorta: background


def test_volumes_differ_from_each_other(volumes):
    mid_areas = np.array([(v.label[2] == LV_CAVITY).sum() for v in volumes])
    centres = np.array([ndimage.center_of_mass(v.label[2] == LV_CAVITY) for v in volumes])
    assert mid_areas.std() > 0.1 * mid_areas.mean()
    assert np.ptp(centres, axis=0).min() * FIELD_OF_VIEW_MM / 64 > 10.0  # spread over > 10 mm
    assert np.ptp([v.meta["noise_sigma"] for v in volumes]) > 0.02
    assert not np.allclose(volumes[0].image, volumes[1].image)


def test_deterministic_and_seed_sensitive():
    first, again = make_cardiac_volumes(n_volumes=2, seed=3), make_cardiac_volumes(n_volumes=2, seed=3)
    other = make_cardiac_volumes(n_volumes=2, seed=4)
    for a, b, c in zip(first, again, other):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.label, b.label)
        assert a.spacing == b.spacing
        assert not np.array_equal(a.label, c.label)
        assert not np.allclose(a.image, c.image)


def test_volume_depends_only_on_seed_and_index(volumes):
    fewer = make_cardiac_volumes(n_volumes=2)
    for a, b in zip(fewer, volumes):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.label, b.label)


def test_anatomy_in_millimetres_does_not_depend_on_size(volumes):
    fine = make_cardiac_volumes(n_volumes=6, size=128)
    for coarse_volume, fine_volume in zip(volumes, fine):
        assert lv_volume_ml(coarse_volume) == pytest.approx(lv_volume_ml(fine_volume), rel=0.15)
        coarse_mm2 = (coarse_volume.label[1] == LV_CAVITY).sum() * np.prod(coarse_volume.spacing[1:])
        fine_mm2 = (fine_volume.label[1] == LV_CAVITY).sum() * np.prod(fine_volume.spacing[1:])
        assert coarse_mm2 == pytest.approx(fine_mm2, rel=0.15)
        assert 1000 < fine_mm2 < 2800  # cavity diameter about 40-55 mm near the base


def test_other_sizes_and_slice_counts():
    big = make_cardiac_volumes(n_volumes=1, n_slices=12, size=256, seed=1)[0]
    assert big.image.shape == (1, 12, 256, 256) and big.label.shape == (12, 256, 256)
    assert (big.label[0] == LV_CAVITY).any() and not (big.label[-1] > 0).any()  # stack overshoots apex


def test_slices_feed_the_slice_dataset(volumes):
    dataset = SliceDataset(volumes[:3])
    assert len(dataset) == 24 and dataset.tags.shape == (24, 4)


@pytest.mark.parametrize("kwargs", [{"size": 16}, {"n_volumes": 0}, {"n_slices": 2.5}, {"seed": -1}])
def test_bad_arguments_raise_input_error(kwargs):
    with pytest.raises(InputError):
        make_cardiac_volumes(**kwargs)


def test_binary_lv_variant_keeps_images_and_relabels_the_rest_background(volumes):
    from mixseg_lite.data.cardiac_sim import left_ventricle_only
    from mixseg_lite.train import load_dataset

    binary = left_ventricle_only(volumes)
    for source, lv in zip(volumes, binary):
        assert lv.class_names == ("background", "LV cavity") and lv.case_id == f"{source.case_id}_lv"
        np.testing.assert_array_equal(lv.image, source.image)
        np.testing.assert_array_equal(lv.label, (source.label == LV_CAVITY).astype(np.int64))
    splits = load_dataset("simulated_cardiac_lv", image_size=32, seed=0, n_volumes=6, n_slices=3,
                          split={"full": 1, "weak": 3, "val": 1, "test": 1})
    assert all(v.num_classes == 2 for group in splits.values() for v in group)
