"""The simulated multi-modal brain dataset: shapes, determinism, tumour statistics, MRI contrasts."""

import numpy as np
import pytest

from mixseg_lite import InputError
from mixseg_lite.data.brain_sim import (
    CSF, ENHANCING, GREY, LABEL_SETS, NECROSIS, OEDEMA, WHITE, make_brain_volumes,
)
from mixseg_lite.data.slices import SliceDataset


@pytest.fixture(scope="module")
def volumes():
    return make_brain_volumes(n_volumes=12, n_slices=16, size=48, modalities=("T1", "T2", "FLAIR", "T1ce"), seed=3)


def test_shapes_names_and_meta(volumes):
    assert len(volumes) == 12
    for i, v in enumerate(volumes):
        assert v.image.shape == (4, 16, 48, 48) and v.image.dtype == np.float32
        assert v.label.shape == (16, 48, 48) and v.label.dtype == np.int64
        assert v.case_id == f"simbrain_{i:03d}"
        assert v.meta["simulated"] is True
        assert v.class_names == ("background", "tumour")
        assert v.modalities == ("T1", "T2", "FLAIR", "T1ce")
        assert len(v.spacing) == 3 and v.spacing[1] == v.spacing[2] > 0


def test_deterministic_and_prefix_stable():
    a = make_brain_volumes(n_volumes=3, n_slices=8, size=32, seed=5)
    b = make_brain_volumes(n_volumes=5, n_slices=8, size=32, seed=5)
    for va, vb in zip(a, b):
        np.testing.assert_array_equal(va.image, vb.image)
        np.testing.assert_array_equal(va.label, vb.label)
    c = make_brain_volumes(n_volumes=3, n_slices=8, size=32, seed=6)
    assert not np.array_equal(a[0].image, c[0].image)


def test_tumour_free_volumes_and_slices_exist_and_position_varies(volumes):
    has_tumour = [bool(v.label.any()) for v in volumes]
    assert any(has_tumour) and not all(has_tumour)
    assert has_tumour == [v.meta["has_tumour"] for v in volumes]
    positive = np.concatenate([v.label.any(axis=(1, 2)) for v in volumes])
    assert 0.1 < positive.mean() < 0.6  # many slices without tumour, as in BraTS
    # The tumour moves along every axis, so slice position alone does not give the tag away.
    centres = np.array([np.argwhere(v.label).mean(0) for v in volumes if v.label.any()])
    assert (centres.std(axis=0) > 1.5).all()
    assert centres[:, 0].max() - centres[:, 0].min() > 4  # z-centres (in slices) differ


def test_co_registered_one_label_map_for_all_modalities(volumes):
    v = volumes[int(np.argmax([x.label.sum() for x in volumes]))]
    # select_modalities keeps one label map; the tumour changes every contrast at the same voxels.
    tissue = v.meta["tissue"]
    tumour = v.label > 0
    assert np.array_equal(tumour, np.isin(tissue, (OEDEMA, NECROSIS, ENHANCING)))
    for m in v.modalities:
        assert v.select_modalities([m]).label is v.label
    ds = SliceDataset(volumes)
    assert ds.images.shape[1] == 4 and ds.tags.shape == (len(ds), 2)


def _mean(v, modality, tissue_index):
    return float(v.modality(modality)[v.meta["tissue"] == tissue_index].mean())


def test_per_modality_tissue_contrast(volumes):
    for v in volumes:
        if not v.meta["has_tumour"] or not (v.meta["tissue"] == OEDEMA).any():
            continue
        # Oedema is bright on T2 and FLAIR; the core is dark on T1; the rim enhances on T1ce.
        assert _mean(v, "T2", OEDEMA) > _mean(v, "T2", WHITE)
        assert _mean(v, "FLAIR", OEDEMA) > _mean(v, "FLAIR", WHITE)
        core_t1 = v.modality("T1")[np.isin(v.meta["tissue"], (NECROSIS, ENHANCING))].mean()
        assert core_t1 < _mean(v, "T1", WHITE)
        if (v.meta["tissue"] == ENHANCING).any():
            # Contrast uptake: the rim gains far more from T1 to T1ce than white matter does (a thin
            # rim is partial-volumed at 48 px, so its plain mean is not always above white matter).
            uptake = v.modality("T1ce") - v.modality("T1")
            assert uptake[v.meta["tissue"] == ENHANCING].mean() > uptake[v.meta["tissue"] == WHITE].mean() + 0.5
        # Healthy tissue: WM > GM on T1, CSF brightest on T2 and suppressed on FLAIR.
        assert _mean(v, "T1", WHITE) > _mean(v, "T1", GREY)
        assert _mean(v, "T2", CSF) > _mean(v, "T2", GREY)
        assert _mean(v, "FLAIR", CSF) < _mean(v, "FLAIR", WHITE)


def test_normalisations():
    z = make_brain_volumes(n_volumes=2, n_slices=6, size=32, normalisation="zscore")
    for v in z:
        head = v.meta["tissue"] > 0
        for m in range(v.image.shape[0]):
            assert abs(v.image[m][head].mean()) < 1e-3 and abs(v.image[m][head].std() - 1) < 1e-3
    mm = make_brain_volumes(n_volumes=2, n_slices=6, size=32, normalisation="minmax")
    assert all(v.image.min() >= 0 and v.image.max() <= 1 for v in mm)


def test_core_oedema_labels():
    vols = make_brain_volumes(n_volumes=4, n_slices=12, size=32, labels="core_oedema", seed=1)
    assert vols[0].class_names == LABEL_SETS["core_oedema"]
    whole = make_brain_volumes(n_volumes=4, n_slices=12, size=32, seed=1)
    for a, b in zip(vols, whole):
        assert np.array_equal(a.label > 0, b.label > 0)
    assert any((v.label == 1).any() and (v.label == 2).any() for v in vols)


@pytest.mark.parametrize("kwargs, words", [
    ({"modalities": ("T1", "PD")}, "unknown modalities"),
    ({"modalities": ("T1", "T1")}, "repeated modality"),
    ({"labels": "enhancing"}, "label set"),
    ({"normalisation": "histogram"}, "normalisation"),
    ({"size": 16}, "size"),
    ({"tumour_probability": 1.5}, "tumour_probability"),
])
def test_bad_arguments(kwargs, words):
    with pytest.raises(InputError, match=words):
        make_brain_volumes(n_volumes=1, n_slices=4, **kwargs)
