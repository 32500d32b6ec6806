"""The brain phantom on the ICBM152 template: MR signal equations, textbook contrasts, tumour
anatomy, determinism, the dataset registry and input errors. No network: the template ships in
the nilearn wheel."""

import math
from pathlib import Path

import numpy as np
import pytest

from mixseg_lite import InputError
from mixseg_lite.data import phantom
from mixseg_lite.data.brain_sim import BACKGROUND, CSF, ENHANCING, GREY, NECROSIS, OEDEMA, WHITE
from mixseg_lite.data.datasets import DATASETS, DEFAULT_SPLITS, load_dataset
from mixseg_lite.data.phantom import (LABEL_SETS, MODALITIES, RELAXATION, SEQUENCES, csf_null_inversion_time,
                                      flair_signal, make_phantom_volumes, spin_echo_signal, tissue_signals)


@pytest.fixture(scope="module")
def subjects():
    """Four subjects with tumours, every contrast, BraTS-style regions, at the default size."""
    return make_phantom_volumes(4, 24, 64, modalities=MODALITIES, seed=1, labels="regions", tumour_probability=1.0)


# ----------------------------------------------------------------------------- signal equations

def test_flair_nulls_csf_at_the_computed_inversion_time():
    t1_csf, t2_csf, pd_csf = RELAXATION[CSF]
    seq = SEQUENCES["FLAIR"]
    ti = csf_null_inversion_time(t1_csf, seq["TR"])
    assert ti == pytest.approx(t1_csf * math.log(2 / (1 + math.exp(-seq["TR"] / t1_csf))))
    assert 2300 < ti < 2600  # about 2.4 s at TR 9 s (REFERENCE E)
    assert abs(float(flair_signal(pd_csf, t1_csf, t2_csf, seq["TR"], seq["TE"], ti))) < 1e-6
    assert tissue_signals("FLAIR")[CSF] < 1e-6
    # Any other inversion time leaves CSF signal; tissues with shorter T1 keep theirs.
    assert flair_signal(pd_csf, t1_csf, t2_csf, seq["TR"], seq["TE"], ti - 200) > 1e-3
    assert tissue_signals("FLAIR")[WHITE] > 0.05


def test_spin_echo_limits():
    # TR >> T1 and TE << T2: the signal is the proton density; TE = T2 divides it by e.
    assert spin_echo_signal(0.8, 1000.0, 100.0, tr=1e6, te=1e-6) == pytest.approx(0.8)
    assert spin_echo_signal(0.8, 1000.0, 100.0, tr=1e6, te=100.0) == pytest.approx(0.8 / math.e, rel=1e-6)
    # Short TR: the shorter T1 recovers more (T1 weighting).
    assert spin_echo_signal(1.0, 800.0, 80.0, 500.0, 10.0) > spin_echo_signal(1.0, 1300.0, 80.0, 500.0, 10.0)


def test_tissue_signals_give_textbook_contrast_before_noise():
    t1, t1ce, t2, flair = (tissue_signals(m) for m in ("T1", "T1ce", "T2", "FLAIR"))
    assert t1[WHITE] > t1[GREY] > t1[CSF]
    assert t2[CSF] > t2[GREY] > t2[WHITE] and t2[OEDEMA] > t2[GREY]
    assert flair[OEDEMA] == max(flair.values()) and flair[CSF] == min(v for k, v in flair.items() if k != BACKGROUND)
    assert t1ce[ENHANCING] > t1ce[WHITE] > t1[ENHANCING] and t1ce[NECROSIS] < t1ce[GREY]
    assert {k: v for k, v in t1ce.items() if k != ENHANCING} == {k: v for k, v in t1.items() if k != ENHANCING}
    with pytest.raises(InputError, match="modality"):
        tissue_signals("DWI")


# ----------------------------------------------------------------------------- generated subjects

def _region_means(volume, modality):
    image, tissue = volume.modality(modality), volume.meta["tissue"]
    return {t: float(image[tissue == t].mean()) for t in (CSF, GREY, WHITE, OEDEMA, NECROSIS, ENHANCING)
            if (tissue == t).sum() >= 5}


def test_shapes_names_labels_and_meta(subjects):
    for i, v in enumerate(subjects):
        assert v.image.shape == (4, 24, 64, 64) and v.image.dtype == np.float32
        assert v.label.shape == (24, 64, 64) and v.label.dtype == np.int64
        assert v.case_id == f"phantom_{i:03d}" and v.modalities == MODALITIES
        assert v.class_names == LABEL_SETS["regions"] == ("background", "necrotic core", "oedema", "enhancing tumour")
        assert v.spacing == pytest.approx((112 / 24, 200 / 64, 200 / 64))
        assert v.meta["simulated"] is True and "MNI" in v.meta["licence"]
        tissue = v.meta["tissue"]
        assert np.array_equal(v.label, np.select([tissue == NECROSIS, tissue == OEDEMA, tissue == ENHANCING],
                                                 [1, 2, 3], 0))
        assert v.meta["has_tumour"] and v.label.any()
        assert np.ptp(v.image[:, tissue == BACKGROUND], axis=1).max() == 0  # skull-stripped: constant outside
    positive = np.concatenate([v.label.any(axis=(1, 2)) for v in subjects])
    assert 0.1 < positive.mean() < 0.9  # slices above and below the tumour are negatives for tags


def test_tissue_order_per_contrast_on_generated_subjects(subjects):
    for v in subjects:
        t1, t1ce, t2, flair = (_region_means(v, m) for m in ("T1", "T1ce", "T2", "FLAIR"))
        assert t1[WHITE] > t1[GREY] > t1[CSF], v.case_id
        assert t2[CSF] > t2[GREY] > t2[WHITE], v.case_id
        assert flair[OEDEMA] == max(flair.values()) and flair[CSF] == min(flair.values()), v.case_id
        assert t1ce[ENHANCING] > t1ce[WHITE], v.case_id  # the enhancing rim (measured: 0.65 std or more)
        if NECROSIS in t1ce:
            assert t1ce[NECROSIS] < t1ce[GREY] < t1ce[WHITE], v.case_id  # a dark necrotic core


def test_oedema_lies_mostly_in_white_matter_and_spares_csf(subjects):
    # The pre-tumour tissue (after the mass effect) under every oedema voxel, pooled over subjects.
    # Measured 0.76-0.85 white matter over seeds 0-3, where white matter is about 0.6 of the brain
    # around the tumours: the threshold leaves a margin for seed noise.
    before = np.concatenate([v.meta["tissue_before_tumour"][v.label == 2] for v in subjects])
    assert (before == WHITE).mean() > 0.6
    assert (before == CSF).mean() < 0.05


def test_same_seed_same_volume_other_seed_other_volume():
    a = make_phantom_volumes(2, 8, 32, modalities=("T1", "FLAIR"), seed=5)
    b = make_phantom_volumes(3, 8, 32, modalities=("T1", "FLAIR"), seed=5)
    for va, vb in zip(a, b):  # the first volumes do not depend on n_volumes
        np.testing.assert_array_equal(va.image, vb.image)
        np.testing.assert_array_equal(va.label, vb.label)
    c = make_phantom_volumes(1, 8, 32, modalities=("T1", "FLAIR"), seed=6)
    assert not np.array_equal(a[0].image, c[0].image)
    # The anatomy and tumour do not depend on the contrasts asked for, nor on the image size.
    d = make_phantom_volumes(1, 8, 32, modalities=("T2",), seed=5)[0]
    np.testing.assert_array_equal(d.label, a[0].label)
    assert make_phantom_volumes(1, 8, 48, seed=5)[0].meta["tumour"] == a[0].meta["tumour"]


def test_tumour_free_subjects_have_no_tumour_label():
    volumes = make_phantom_volumes(1, 8, 32, seed=2, tumour_probability=0.0)
    for v in volumes:
        assert not v.meta["has_tumour"] and v.meta["tumour"] is None and not v.label.any()
        assert not np.isin(v.meta["tissue"], (OEDEMA, NECROSIS, ENHANCING)).any()
    mixed = make_phantom_volumes(5, 8, 32, seed=0, modalities=("T1",))  # default: 80 % with a tumour
    assert [v.meta["has_tumour"] for v in mixed] == [bool(v.label.any()) for v in mixed]
    assert any(v.meta["has_tumour"] for v in mixed) and not all(v.meta["has_tumour"] for v in mixed)


def test_label_sets_agree():
    regions, whole, core = (make_phantom_volumes(1, 8, 32, seed=4, labels=k, tumour_probability=1.0)[0]
                            for k in ("regions", "whole", "core_oedema"))
    assert whole.class_names == ("background", "tumour")
    np.testing.assert_array_equal(whole.label, regions.label > 0)
    np.testing.assert_array_equal(core.label, np.select([np.isin(regions.label, (1, 3)), regions.label == 2], [1, 2], 0))


# ----------------------------------------------------------------------------- registry, notice, errors

def test_registered_like_the_procedural_brain():
    assert "brain_phantom" in DATASETS and DEFAULT_SPLITS["brain_phantom"] == DEFAULT_SPLITS["simulated_brain"]
    splits = load_dataset("brain_phantom", image_size=32, n_volumes=5, n_slices=8, modalities=("T1", "T2"),
                          split={"full": 2, "weak": 1, "val": 1, "test": 1})
    assert {k: len(v) for k, v in splits.items()} == {"full": 2, "weak": 1, "val": 1, "test": 1}
    volume = splits["full"][0]
    assert volume.modalities == ("T1", "T2") and volume.image.shape == (2, 8, 32, 32)
    assert volume.class_names == ("background", "tumour")


def test_mni_notice_is_kept():
    notice = " ".join(phantom.MNI_NOTICE.split())
    assert notice.startswith("Copyright (C) 1993-2004 Louis Collins, McConnell Brain Imaging Centre")
    assert notice in " ".join(phantom.__doc__.split())
    assert notice in " ".join((Path(phantom.__file__).parent / "NOTICE").read_text().split())


@pytest.mark.parametrize("kwargs, match", [
    ({"modalities": ("T1", "DWI")}, "unknown modalities"),
    ({"modalities": ()}, "unknown modalities"),
    ({"modalities": ("T2", "T2")}, "repeated modality"),
    ({"labels": "brats"}, "label set"),
    ({"normalisation": "histogram"}, "normalisation"),
    ({"size": 16}, "size must be an integer >= 32"),
    ({"n_volumes": 0}, "n_volumes"),
    ({"n_slices": 2.5}, "n_slices"),
    ({"tumour_probability": 1.5}, "tumour_probability"),
    ({"noise": -0.1}, "noise"),
    ({"bias": float("nan")}, "bias"),
])
def test_bad_inputs_raise_one_line_input_errors(kwargs, match):
    with pytest.raises(InputError, match=match) as error:
        make_phantom_volumes(**{"n_volumes": 1, "n_slices": 4, "size": 32, **kwargs})
    assert "\n" not in str(error.value)


def test_missing_nilearn_says_what_to_install(monkeypatch):
    monkeypatch.setattr(phantom, "find_spec", lambda name: None)
    with pytest.raises(InputError, match=r"pip install nilearn") as error:
        make_phantom_volumes(1, 4, 32)
    assert "\n" not in str(error.value)
