"""NIfTI loaders on tiny fake datasets written in each real layout (see fake_datasets.py)."""

from __future__ import annotations

import numpy as np
import pytest
from fake_datasets import (SHAPE, affine_for, axis_coded, brats_case_name, make_acdc, make_brats,
                           make_decathlon, make_folder, striped_label, truncate, write_garbage,
                           write_nifti)

from mixseg_lite.data.nifti import load_acdc, load_brats, load_decathlon, load_folder
from mixseg_lite.data.preprocess import (crop_or_pad_inplane, fit_inplane, normalize_intensity,
                                         prepare_volumes, remap_labels, resample_inplane,
                                         resize_inplane)
from mixseg_lite.errors import InputError

ZHW = SHAPE[::-1]  # (Z, H, W) = (k, j, i)
SPACING_ZYX = (8.0, 1.25, 1.5)


def assert_axis_coded(image_channel: np.ndarray, modality: int = 0, offset: float = 0.0) -> None:
    """Our (Z, H, W) voxel (k, j, i) must hold the NIfTI voxel (i, j, k)."""
    expected = axis_coded(modality=modality).transpose(2, 1, 0) + offset
    np.testing.assert_array_equal(image_channel, expected)


def assert_input_error(load, filename: str) -> str:
    """``load()`` raises InputError with one line that names ``filename``."""
    with pytest.raises(InputError) as info:
        load()
    message = str(info.value)
    assert filename in message, message
    assert "\n" not in message, message
    return message


# ----------------------------------------------------------------------------- ACDC

def test_acdc_loads_each_patient_and_phase_in_our_axis_order(tmp_path):
    volumes = load_acdc(make_acdc(tmp_path, num_patients=2))
    assert [v.case_id for v in volumes] == ["patient001_ED", "patient001_ES", "patient002_ED", "patient002_ES"]
    ed = volumes[0]
    assert ed.image.shape == (1,) + ZHW and ed.image.dtype == np.float32
    assert ed.label.shape == ZHW and ed.label.dtype == np.int64
    assert ed.spacing == SPACING_ZYX
    assert_axis_coded(ed.image[0], offset=1)           # ED is frame 01
    assert_axis_coded(volumes[1].image[0], offset=3)   # ES is frame 03
    assert ed.class_names == ("background", "RV cavity", "myocardium", "LV cavity")
    assert set(np.unique(ed.label)) == {0, 1, 2, 3}
    assert (ed.label[:, :, 0] == 0).all() and (ed.label[:, :, -1] == 3).all()  # labels vary along W = i
    assert ed.meta["phase"] == "ED" and ed.meta["frame"] == 1 and ed.meta["Group"] == "DCM"
    assert ed.meta["files"]["image"].endswith("patient001_frame01.nii.gz")


def test_acdc_selects_patients_phases_and_remaps(tmp_path):
    root = make_acdc(tmp_path, num_patients=3)
    volumes = load_acdc(root / "training", phases=("ES",), patients=[2, "patient003"],
                        label_map={0: 0, 1: 0, 2: 1, 3: 1}, class_names=("background", "LV+myo"))
    assert [v.case_id for v in volumes] == ["patient002_ES", "patient003_ES"]
    assert volumes[0].class_names == ("background", "LV+myo")
    assert set(np.unique(volumes[0].label)) == {0, 1}


def test_acdc_bad_inputs_name_the_file(tmp_path):
    root = make_acdc(tmp_path, num_patients=1)
    folder = root / "training" / "patient001"
    (folder / "patient001_frame03_gt.nii.gz").unlink()
    assert_input_error(lambda: load_acdc(root), "patient001_frame03_gt.nii.gz")
    (folder / "Info.cfg").write_text("Group: NOR\n")
    assert_input_error(lambda: load_acdc(root), "Info.cfg")
    assert_input_error(lambda: load_acdc(root, patients=[7]), "patient007")
    assert_input_error(lambda: load_acdc(root, phases=("mid",)), str(root))


# ----------------------------------------------------------------------------- BraTS

@pytest.mark.parametrize("naming", ["2019", "2023"])
def test_brats_both_namings_give_the_same_volumes(tmp_path, naming):
    volumes = load_brats(make_brats(tmp_path, naming), modalities=("flair", "t1"), label_map="regions")
    assert [v.case_id for v in volumes] == [brats_case_name(naming, 1), brats_case_name(naming, 2)]
    v = volumes[0]
    assert v.modalities == ("flair", "t1") and v.image.shape == (2,) + ZHW
    assert_axis_coded(v.image[0], modality=3)  # flair is the 4th canonical modality
    assert_axis_coded(v.image[1], modality=0)
    assert v.class_names == ("background", "necrotic core", "oedema", "enhancing tumour")
    assert np.unique(v.label).tolist() == [0, 1, 2, 3]
    assert v.spacing == SPACING_ZYX
    whole = load_brats(tmp_path, modalities=("t2",), label_map="whole_tumour", cases=[v.case_id])[0]
    assert whole.class_names == ("background", "whole tumour")
    np.testing.assert_array_equal(whole.label, (v.label > 0).astype(np.int64))


def test_brats_2019_grade_folders_and_2023_aliases(tmp_path):
    old = load_brats(make_brats(tmp_path / "b19", "2019", grade_folders=True), modalities=("t1ce",))
    assert old[0].meta["grade"] == "HGG" and old[0].meta["naming"] == "2019"
    new = load_brats(make_brats(tmp_path / "b23", "2023"), modalities=("t1c", "t2f"), label_map="enhancing_tumour")
    assert new[0].modalities == ("t1ce", "flair")
    assert_axis_coded(new[0].image[0], modality=1)
    assert new[0].label.max() == 1 and (new[0].label == 1).sum() == (striped_label([0, 1, 2, 3]) == 3).sum()


def test_brats_bad_inputs_name_the_file(tmp_path):
    root = make_brats(tmp_path, "2019", num_cases=1)
    case = brats_case_name("2019", 1)
    (root / case / f"{case}_t2.nii.gz").unlink()
    assert_input_error(lambda: load_brats(root, modalities=("t1", "t2")), f"{case}_t2.nii.gz")
    write_nifti(root / case / f"{case}_seg.nii.gz", striped_label([0, 1, 2, 3]))  # 2023 labels in 2019 naming
    assert_input_error(lambda: load_brats(root, modalities=("t1",)), f"{case}_seg.nii.gz")
    write_nifti(root / case / f"{case}_t1ce.nii.gz", axis_coded(), affine=affine_for(origin=(0, 0, 0)))
    assert_input_error(lambda: load_brats(root, modalities=("t1", "t1ce")), f"{case}_t1ce.nii.gz")
    with pytest.raises(InputError, match="unknown BraTS modality"):
        load_brats(root, modalities=("pd",))


# ----------------------------------------------------------------------------- Decathlon

def test_decathlon_brain_tumour_4d_images_select_modalities(tmp_path):
    task = make_decathlon(tmp_path, "Task01_BrainTumour", num_cases=2)
    volumes = load_decathlon(task)
    assert [v.case_id for v in volumes] == ["BRATS_001", "BRATS_002"]  # the ._ files are skipped
    assert volumes[0].modalities == ("FLAIR", "T1w", "t1gd", "T2w")
    assert volumes[0].class_names == ("background", "edema", "non-enhancing tumor", "enhancing tumour")
    for m in range(4):
        assert_axis_coded(volumes[0].image[m], modality=m)
    picked = load_decathlon(task, modalities=("t2w", "flair"), cases=["BRATS_002"],
                            label_map={0: 0, 1: 1, 2: 1, 3: 1}, class_names=("background", "tumour"))[0]
    assert picked.modalities == ("t2w", "flair") and picked.case_id == "BRATS_002"
    assert_axis_coded(picked.image[0], modality=3)
    assert_axis_coded(picked.image[1], modality=0)
    assert np.unique(picked.label).tolist() == [0, 1]
    assert load_decathlon(task, modalities=("t1ce",))[0].modalities == ("t1ce",)


@pytest.mark.parametrize("task, modalities, classes", [
    ("Task03_Liver", ("CT",), ("background", "liver", "cancer")),
    ("Task05_Prostate", ("T2", "ADC"), ("background", "PZ", "TZ")),
])
def test_decathlon_liver_and_prostate(tmp_path, task, modalities, classes):
    volume = load_decathlon(make_decathlon(tmp_path, task, num_cases=1))[0]
    assert volume.modalities == modalities and volume.class_names == classes
    assert volume.image.shape == (len(modalities),) + ZHW and volume.spacing == SPACING_ZYX
    assert_axis_coded(volume.image[-1], modality=len(modalities) - 1)


def test_decathlon_bad_inputs_name_the_file(tmp_path):
    task = make_decathlon(tmp_path, "Task05_Prostate", num_cases=1)
    write_nifti(task / "imagesTr" / "prostate_01.nii.gz", axis_coded())  # 3-D where T2+ADC expected
    assert_input_error(lambda: load_decathlon(task), "prostate_01.nii.gz")
    assert_input_error(lambda: load_decathlon(task, modalities=("DWI",)), "dataset.json")
    (task / "dataset.json").write_text("{not json")
    assert_input_error(lambda: load_decathlon(task), "dataset.json")
    (task / "dataset.json").unlink()
    assert_input_error(lambda: load_decathlon(task), "dataset.json")


def test_decathlon_any_task_written_by_hand(tmp_path):
    # A Task01-like subset (3 of its 4 modalities, 3 labels) and a single-modality CT task.
    brain = make_decathlon(tmp_path, "Task01_BrainTumour", num_cases=2,
                           modality={"0": "FLAIR", "1": "T1w", "2": "t1gd"},
                           labels={"0": "background", "1": "edema", "2": "enhancing tumour"})
    volumes = load_decathlon(brain)
    assert volumes[0].modalities == ("FLAIR", "T1w", "t1gd") and volumes[0].image.shape == (3,) + ZHW
    assert volumes[0].class_names == ("background", "edema", "enhancing tumour")
    assert_axis_coded(volumes[1].image[2], modality=2)
    assert load_decathlon(brain, modalities="t1gd")[0].modalities == ("t1gd",)  # one name, not its letters
    ct = make_decathlon(tmp_path, "Task97_Tiny", num_cases=1, modality={"0": "CT"},
                        labels={"0": "background", "1": "liver", "2": "tumour"})
    volume = load_decathlon(ct)[0]
    assert volume.case_id == "case_001" and volume.modalities == ("CT",)
    assert volume.class_names == ("background", "liver", "tumour")


def test_decathlon_modality_choices_and_task_folder_errors(tmp_path):
    task = make_decathlon(tmp_path, "Task05_Prostate", num_cases=1)
    assert "requested twice" in assert_input_error(lambda: load_decathlon(task, modalities=("T2", "t2")),
                                                   "dataset.json")
    assert "at least one" in assert_input_error(lambda: load_decathlon(task, modalities=()), "dataset.json")
    message = assert_input_error(lambda: load_decathlon(tmp_path), "dataset.json")  # the folder above the task
    assert "choose one task folder inside it" in message and "Task05_Prostate" in message
    (task / "dataset.json").write_text("[1, 2]")
    assert "expected a JSON object" in assert_input_error(lambda: load_decathlon(task), "dataset.json")


# ----------------------------------------------------------------------------- plain folders

def test_folder_pairs_by_name_and_suffix(tmp_path):
    images, labels = make_folder(tmp_path, num_cases=3, label_values=(0, 1, 2), label_suffix="_seg")
    volumes = load_folder(images, labels, class_names=("bg", "a", "b"), label_suffix="_seg", cases=["case2"])
    assert [v.case_id for v in volumes] == ["case2"] and volumes[0].modalities == ("image",)
    assert_axis_coded(volumes[0].image[0])
    assert np.unique(volumes[0].label).tolist() == [0, 1, 2]


def _bad_image(kind: str, shape=SHAPE):
    """Image data for one kind of bad input."""
    data = axis_coded(shape)
    if kind == "nan":
        data[1, 2, 3] = np.nan
    elif kind == "inf":
        data[0, 0, 0] = np.inf
    elif kind == "2d":
        data = data[:, :, 0]
    elif kind == "5d":
        data = data[..., None, None].repeat(2, axis=4)
    return data


@pytest.mark.parametrize("kind", ["missing image label", "missing label", "shape", "affine", "label values",
                                  "truncated", "truncated label", "garbage", "empty", "nan", "inf", "2d", "5d"])
def test_folder_every_bad_input_raises_naming_the_file(tmp_path, kind):
    images, labels = make_folder(tmp_path, num_cases=1)
    image, label = images / "case0.nii.gz", labels / "case0.nii.gz"
    if kind == "missing image label":
        write_nifti(images / "case9.nii.gz", axis_coded())
        label = labels / "case9.nii.gz"
    elif kind == "missing label":
        label.unlink()
    elif kind == "shape":
        write_nifti(label, striped_label([0, 1], shape=(12, 10, 5)))
    elif kind == "affine":
        write_nifti(label, striped_label([0, 1]), affine=affine_for(origin=(-10.0, -20.0, 5.5)))
    elif kind == "label values":
        write_nifti(label, striped_label([0, 1, 7]))
    elif kind == "truncated":
        truncate(image)
    elif kind == "truncated label":
        truncate(label)
    elif kind == "garbage":
        write_garbage(image)
    elif kind == "empty":
        image.write_bytes(b"")
    else:
        write_nifti(image, _bad_image(kind))
    culprit = label if kind in ("missing image label", "missing label", "shape", "affine", "label values",
                                "truncated label") else image
    message = assert_input_error(lambda: load_folder(images, labels), culprit.name)
    assert str(culprit.parent) in message


def test_folder_accepts_tiny_affine_rounding(tmp_path):
    images, labels = make_folder(tmp_path, num_cases=1)
    write_nifti(labels / "case0.nii.gz", striped_label([0, 1]), affine=affine_for(origin=(-10.0, -20.0, 5.0001)))
    assert load_folder(images, labels)[0].label.shape == ZHW


# ----------------------------------------------------------------------------- preprocessing

def _volume(tmp_path):
    images, labels = make_folder(tmp_path, num_cases=1, label_values=(0, 1, 2))
    return load_folder(images, labels, class_names=("bg", "a", "b"))[0]


def test_normalisation_per_modality(tmp_path):
    v = _volume(tmp_path)
    z = normalize_intensity(v, "zscore")
    assert abs(z.image.mean()) < 1e-4 and abs(z.image.std() - 1) < 1e-3
    m = normalize_intensity(v, "minmax", clip_percentiles=(5, 95))
    assert m.image.min() == 0 and m.image.max() == 1
    assert v.image.max() > 1  # input untouched
    with pytest.raises(InputError, match="clip_percentiles"):
        normalize_intensity(v, "minmax", clip_percentiles=(90, 10))


def test_resampling_updates_spacing_and_keeps_labels_nearest(tmp_path):
    v = _volume(tmp_path)  # (Z, H, W) = (4, 10, 12), spacing (8, 1.25, 1.5)
    r = resize_inplane(v, (20, 6))
    assert r.image.shape == (1, 4, 20, 6) and r.spacing == (8.0, 0.625, 3.0)
    assert set(np.unique(r.label)) <= {0, 1, 2}
    p = resample_inplane(v, 2.5)
    assert p.image.shape == (1, 4, 5, 7)
    assert p.spacing[1] == pytest.approx(2.5) and p.spacing[2] == pytest.approx(18 / 7)
    c = crop_or_pad_inplane(v, (14, 8))
    assert c.image.shape == (1, 4, 14, 8) and c.spacing == v.spacing
    assert (c.label[:, :2] == 0).all() and c.image[0, 0, 0, 0] == v.image.min()
    f = fit_inplane(v, 24)
    assert f.image.shape == (1, 4, 24, 24)  # 12x12 after padding: both axes zoom by 2
    assert f.spacing == (8.0, 1.25 / 2, 1.5 / 2)


def test_label_remap_and_prepare_volumes(tmp_path):
    v = _volume(tmp_path)
    merged = remap_labels(v, {0: 0, 1: 1, 2: 1}, ("bg", "any"))
    assert merged.class_names == ("bg", "any") and merged.label.max() == 1
    with pytest.raises(InputError, match=r"label values \[2\] not in the label map"):
        remap_labels(v, {0: 0, 1: 1})
    out = prepare_volumes([v], size=16, normalize="minmax", label_map={0: 0, 1: 0, 2: 1},
                          class_names=("bg", "b"))[0]
    assert out.image.shape == (1, 4, 16, 16) and out.class_names == ("bg", "b")
    assert 0 <= out.image.min() and out.image.max() <= 1
