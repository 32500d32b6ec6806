"""The full-training driver: datasets by name, checkpoints, exact resumption, results on disk.

Models here are tiny (widths 4/8 on 32x32 slices, one or two steps per epoch) so every training
run takes a second or two even on a busy 2-core machine.
"""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import pytest
import torch
import yaml
import numpy as np
from fake_datasets import hounsfield_like, make_acdc, make_brats, make_decathlon, write_nifti

import mixseg_lite.data.datasets as datasets
import mixseg_lite.train.mixed as mixed
from mixseg_lite import InputError
from mixseg_lite.data.atlas import atlas_dir
from mixseg_lite.train import load_dataset, run_experiment
from mixseg_lite.data.datasets import (DATASETS, DEFAULT_SPLITS, PUBLIC_DATASETS, default_split, resolve_split,
                                       suggest_split)
from mixseg_lite.train.experiment import supported_methods

ROOT = Path(__file__).resolve().parents[1]

TINY = {"base_width": 4, "depth": 2, "batch_size": 4, "progress": False, "figures": False}


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: fixed reduction order, and no spinning threads on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cardiac():
    return load_dataset("simulated_cardiac", image_size=32, n_volumes=7, n_slices=2,
                        split={"full": 2, "weak": 2, "val": 1, "test": 2})


def _weights(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- datasets

def test_simulated_cardiac_split_by_volume(cardiac):
    assert {k: len(v) for k, v in cardiac.items()} == {"full": 2, "weak": 2, "val": 1, "test": 2}
    ids = [v.case_id for vols in cardiac.values() for v in vols]
    assert len(ids) == len(set(ids)) == 7
    assert cardiac["full"][0].image.shape == (1, 2, 32, 32)


def test_resolve_split_counts_fractions_and_rest():
    assert resolve_split({"full": 2, "weak": None, "val": 0.1, "test": 0.25}, 20, "x") == \
        {"full": 2, "weak": 11, "val": 2, "test": 5}
    assert resolve_split({"full": 1, "test": 0.01}, 10, "x") == {"full": 1, "test": 1}  # at least one
    with pytest.raises(InputError, match=r"3 cases cannot be split into full=2, test=2 \(that needs 4\)"):
        resolve_split({"full": 2, "test": 2}, 3, "x")
    with pytest.raises(InputError, match="only one split group"):
        resolve_split({"full": None, "weak": None}, 3, "x")
    with pytest.raises(InputError, match="must be a count"):
        resolve_split({"full": "two"}, 3, "x")


def test_unknown_dataset_and_missing_data_dir(tmp_path):
    with pytest.raises(InputError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")
    with pytest.raises(InputError, match="set data_dir"):
        load_dataset("acdc", None)
    with pytest.raises(InputError, match="/path/to/ACDC: data_dir not found"):
        load_dataset("acdc", "/path/to/ACDC")


def test_acdc_keeps_both_phases_of_a_patient_together_and_caches(tmp_path, monkeypatch):
    root = make_acdc(tmp_path / "ACDC", num_patients=4)
    builds = []
    original = datasets._build_public
    monkeypatch.setattr(datasets, "_build_public", lambda *a: builds.append(a) or original(*a))
    kwargs = dict(image_size=16, split={"full": 1, "weak": None, "test": 1}, cache_dir=tmp_path / "cache")
    splits = load_dataset("acdc", root, **kwargs)
    assert {k: len(v) for k, v in splits.items()} == {"full": 2, "weak": 4, "val": 0, "test": 2}
    for vols in splits.values():
        patients = {v.meta["patient"] for v in vols}
        assert all(sum(v.meta["patient"] == p for v in vols) == 2 for p in patients)  # ED and ES
    assert splits["full"][0].image.shape[2:] == (16, 16)
    assert splits["full"][0].image.max() <= 1.0  # ACDC is min-max scaled, as in the paper
    load_dataset("acdc", root, **kwargs)
    assert len(builds) == 1  # the second call came from the cache
    source = root / "training" / "patient001" / "patient001_frame01_gt.nii.gz"
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    load_dataset("acdc", root, **kwargs)
    assert len(builds) == 2  # a changed source rebuilds the entry
    assert len(load_dataset("acdc", root, **kwargs, max_cases=2)["weak"]) == 0  # 2 patients: full + test


def test_brats_and_prostate_layouts(tmp_path):
    brats = load_dataset("brats", make_brats(tmp_path / "brats", num_cases=2), image_size=16,
                         split={"full": 1, "test": 1}, cache=False)
    assert brats["full"][0].modalities == ("t1", "t2")
    assert brats["full"][0].class_names == ("background", "whole tumour")
    prostate = load_dataset("decathlon_prostate", make_decathlon(tmp_path, "Task05_Prostate", 3),
                            image_size=16, split={"full": 1, "weak": None, "test": 1}, cache=False)
    assert prostate["weak"][0].modalities == ("T2", "ADC") and prostate["weak"][0].num_classes == 3


# ----------------------------------------------------------------------------- any Decathlon task, split sizes

TASK01_SUBSET = {"0": "FLAIR", "1": "T1w", "2": "t1gd"}
TASK01_LABELS = {"0": "background", "1": "edema", "2": "enhancing tumour"}


def _rolled(n, m):
    """Modality m is the axis-coded image rolled by m along i: z-scoring cannot make two modalities equal."""
    return np.roll(np.arange(12 * 10 * 4, dtype=np.float32).reshape(12, 10, 4) ** 1.5, m, axis=0) + n


def test_any_decathlon_task_six_cases_modalities_and_classes_from_dataset_json(tmp_path):
    task = make_decathlon(tmp_path, "Task01_BrainTumour", num_cases=6, modality=TASK01_SUBSET,
                          labels=TASK01_LABELS, image_fn=_rolled)
    kwargs = dict(image_size=16, cache_dir=tmp_path / "cache")
    splits = load_dataset("decathlon", task, **kwargs)  # 6 cases, no split written by hand
    assert {k: len(v) for k, v in splits.items()} == {"full": 1, "weak": 2, "val": 1, "test": 2}
    ids = sorted(v.case_id for vols in splits.values() for v in vols)
    assert ids == [f"BRATS_{n:03d}" for n in range(1, 7)]
    volume = splits["full"][0]
    assert volume.modalities == ("FLAIR", "T1w", "t1gd")
    assert volume.class_names == ("background", "edema", "enhancing tumour")
    assert volume.image.shape == (3, 4, 16, 16) and volume.spacing[0] == 8.0
    picked = load_dataset("decathlon", task, modalities=["t1gd", "flair"], **kwargs)["full"][0]
    assert picked.case_id == volume.case_id and picked.modalities == ("t1gd", "flair")
    np.testing.assert_array_equal(picked.image, volume.image[[2, 0]])
    assert load_dataset("decathlon", task, modalities="T1w", **kwargs)["test"][0].modalities == ("T1w",)
    with pytest.raises(InputError, match=r"dataset.json: modality 'T2w' not in this task's modalities "
                                         r"\['FLAIR', 'T1w', 't1gd'\]"):
        load_dataset("decathlon", task, modalities=["T2w"], **kwargs)
    with pytest.raises(InputError) as info:
        load_dataset("decathlon", task, split={"full": 3, "weak": None, "val": 4, "test": 8}, **kwargs)
    assert str(info.value) == ("dataset 'decathlon': 6 cases cannot be split into full=3, weak=None, val=4, test=8 "
                               "(that needs 15); with 6 cases use e.g. {'full': 1, 'weak': 2, 'val': 1, 'test': 2}")


def test_any_decathlon_task_ct_is_clipped_before_z_scoring(tmp_path):
    liver = make_decathlon(tmp_path, "Task03_Liver", num_cases=4, labels={"0": "background", "1": "liver",
                                                                          "2": "tumour"}, image_fn=hounsfield_like)
    splits = load_dataset("decathlon", liver, image_size=16, cache=False)
    assert {k: len(v) for k, v in splits.items()} == {"full": 1, "weak": 1, "val": 1, "test": 1}
    ct = splits["test"][0]
    assert ct.modalities == ("CT",) and ct.class_names == ("background", "liver", "tumour")
    assert ct.image.shape == (1, 4, 16, 16)
    # The 3000 HU metal voxel is clipped to the 99.5th percentile; the same data named MR are only z-scored.
    mr = make_decathlon(tmp_path, "Task99_SameAsMR", num_cases=4, modality={"0": "MRI"},
                        labels={"0": "background", "1": "liver", "2": "tumour"}, image_fn=hounsfield_like)
    mr_image = load_dataset("decathlon", mr, image_size=16, cache=False)["test"][0].image
    assert float(ct.image.max()) < 3 < 10 < float(mr_image.max())


def test_decathlon_prostate_is_the_generic_loader_with_prostate_defaults(tmp_path):
    task = make_decathlon(tmp_path, "Task05_Prostate", num_cases=6)
    split = {"full": 2, "weak": None, "test": 2}
    generic = load_dataset("decathlon", task, image_size=16, split=split, cache=False)
    prostate = load_dataset("decathlon_prostate", task, image_size=16, split=split, cache=False)
    for group in generic:
        assert [v.case_id for v in generic[group]] == [v.case_id for v in prostate[group]]
        for a, b in zip(generic[group], prostate[group]):
            assert a.modalities == b.modalities == ("T2", "ADC") and a.class_names == b.class_names
            np.testing.assert_array_equal(a.image, b.image)
    # 6 cases are too few for the paper's prostate split (3 full, 4 val, 8 test): the proportional one
    assert {k: len(v) for k, v in load_dataset("decathlon_prostate", task, image_size=16, cache=False).items()} == \
        {"full": 1, "weak": 2, "val": 1, "test": 2}


def test_decathlon_bad_task_folders_are_one_line_errors(tmp_path):
    task = make_decathlon(tmp_path, "Task03_Liver", num_cases=4)
    write_nifti(task / "labelsTr" / "liver_2.nii.gz", np.zeros((12, 10, 5), dtype=np.uint8))  # another grid

    def error(data_dir, **kwargs) -> str:
        with pytest.raises(InputError) as info:
            load_dataset("decathlon", data_dir, image_size=16, cache=False, **kwargs)
        assert "\n" not in str(info.value)
        return str(info.value)

    assert re.search(r"labelsTr/liver_2.nii.gz: label NIfTI shape \(12, 10, 5\) differs from image liver_2.nii.gz "
                     r"shape \(12, 10, 4\)", error(task))
    assert re.search(r"Task03_Liver/dataset.json: modality 'T1' not in this task's modalities \['CT'\]",
                     error(task, modalities=["T1"]))
    assert re.search(r"dataset.json: missing dataset.json; choose one task folder inside it, e.g. .*Task03_Liver",
                     error(tmp_path))  # the folder above the task
    (task / "dataset.json").unlink()
    assert re.search(r"Task03_Liver/dataset.json: missing dataset.json \(is .* a Decathlon task folder\?\)",
                     error(task))


@pytest.mark.parametrize("cases, expected", [
    (4, (1, 1, 1, 1)), (5, (1, 2, 1, 1)), (6, (1, 2, 1, 2)), (10, (1, 5, 2, 2)), (20, (2, 10, 3, 5)),
    (32, (3, 16, 5, 8)), (100, (10, 50, 15, 25)), (484, (48, 242, 73, 121)),
])
def test_default_split_scales_with_the_number_of_cases(cases, expected):
    counts = default_split("decathlon", cases)
    assert tuple(counts[g] for g in ("full", "weak", "val", "test")) == expected
    assert sum(counts.values()) == cases and suggest_split(cases) == counts


def test_reference_splits_are_kept_where_they_fit():
    # Unchanged defaults (committed notebook outputs depend on them): the reference split wherever
    # it leaves every group non-empty, the proportional rule only below that.
    assert default_split("simulated_cardiac", 24) == DEFAULT_SPLITS["simulated_cardiac"]
    assert default_split("simulated_brain", 16) == DEFAULT_SPLITS["simulated_brain"]
    assert default_split("atlas", 10) == DEFAULT_SPLITS["atlas"]
    assert default_split("acdc", 100) == {"full": 5, "weak": 65, "val": 10, "test": 20}
    assert default_split("acdc", 36) == {"full": 5, "weak": 1, "val": 10, "test": 20}
    assert default_split("brats", 60) == {"full": 5, "weak": 37, "val": 6, "test": 12}
    assert default_split("decathlon_prostate", 32) == {"full": 3, "weak": 17, "val": 4, "test": 8}
    assert default_split("decathlon_prostate", 16) == {"full": 3, "weak": 1, "val": 4, "test": 8}
    # too few for the reference (it would leave no weak case, or not fit at all): proportional
    assert default_split("decathlon_prostate", 15) == {"full": 2, "weak": 7, "val": 2, "test": 4}
    assert default_split("simulated_cardiac", 20) == {"full": 2, "weak": 10, "val": 3, "test": 5}
    assert default_split("acdc", 35, unit="patients") == {"full": 4, "weak": 17, "val": 5, "test": 9}


def test_impossible_splits_say_which_sizes_would_work():
    with pytest.raises(InputError) as info:
        default_split("decathlon", 3)
    assert str(info.value) == ("dataset 'decathlon': 3 cases cannot be split by the default rule (full 10%, val 15%, "
                               "test 25%, weak the rest, at least 1 each, so at least 4 cases); with 3 cases pass "
                               "e.g. split={'full': 1, 'weak': 1, 'test': 1}")
    with pytest.raises(InputError, match=r"2 patients cannot be split into full=5, weak=None \(that needs 5\); "
                                         r"with 2 patients use e.g. \{'full': 1, 'test': 1\}"):
        resolve_split({"full": 5, "weak": None}, 2, "dataset 'acdc'", unit="patients")
    with pytest.raises(InputError, match="1 case cannot be split .* at least 2 cases are needed"):
        resolve_split({"full": 1, "test": 1}, 1, "x")
    for cases in (2, 3, 4, 7):  # every suggestion is itself a valid split of that many cases
        assert resolve_split(suggest_split(cases), cases, "x") == suggest_split(cases)


@pytest.mark.skipif(not (atlas_dir() / "aal.nii.gz").is_file(), reason="mricron-data not installed")
def test_atlas_blocks_spread_over_the_splits(tmp_path):
    splits = load_dataset("atlas", image_size=32, cache_dir=tmp_path)
    assert {k: len(v) for k, v in splits.items()} == {"full": 2, "weak": 4, "val": 1, "test": 3}
    assert all(v.case_id.startswith("colin27_z") for vols in splits.values() for v in vols)


# ----------------------------------------------------------------------------- training

def test_run_writes_checkpoints_metrics_and_figures(cardiac, tmp_path):
    result = run_experiment(cardiac, "kl_ent", tmp_path, epochs=2, params={"dataset": "simulated_cardiac"},
                            **{**TINY, "figures": True})
    assert [r["epoch"] for r in result.log] == [1, 2]
    assert {"val_dice_teacher", "val_dice_student"} <= set(result.log[-1])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [(r["method"], r["branch"]) for r in metrics["rows"]] == [("kl_ent", "teacher"), ("kl_ent", "student")]
    assert all({"dice", "hd95_mm"} <= set(r) for r in metrics["rows"])
    assert metrics["params"]["dataset"] == "simulated_cardiac" and metrics["params"]["best_epoch"] == result.best_epoch
    for name in ("training_curves.png", "predictions.png", "checkpoints/last.pt", "checkpoints/best.pt",
                 "checkpoints/run.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    best = torch.load(tmp_path / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    scores = [r["val_dice_student"] for r in result.log]
    assert best["epoch"] == result.best_epoch == 1 + scores.index(max(scores))
    assert _same_weights(best["model"], _weights(result.model))  # the evaluated model is the best one


def test_resume_after_interruption_equals_uninterrupted_run(cardiac, tmp_path, monkeypatch):
    straight = run_experiment(cardiac, "kl_ent", tmp_path / "straight", epochs=4, **TINY)

    validations = []
    validate = mixed.validation_dice

    def interrupted(*args, **kwargs):  # Ctrl-C at the end of the third epoch, before its checkpoint
        validations.append(1)
        if len(validations) == 3:
            raise KeyboardInterrupt
        return validate(*args, **kwargs)

    monkeypatch.setattr(mixed, "validation_dice", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cardiac, "kl_ent", tmp_path / "resumed", epochs=4, **TINY)
    assert not (tmp_path / "resumed" / "checkpoints" / "best.pt").exists()  # written when training ends
    monkeypatch.setattr(mixed, "validation_dice", validate)
    resumed = run_experiment(cardiac, "kl_ent", tmp_path / "resumed", epochs=4, **TINY)

    assert resumed.start_epoch == 2
    assert resumed.log == straight.log
    assert (resumed.best_epoch, resumed.best_val_dice) == (straight.best_epoch, straight.best_val_dice)
    assert _same_weights(_weights(resumed.model), _weights(straight.model))
    for name in ("last.pt", "best.pt"):
        a = torch.load(tmp_path / "straight" / "checkpoints" / name, map_location="cpu", weights_only=True)
        b = torch.load(tmp_path / "resumed" / "checkpoints" / name, map_location="cpu", weights_only=True)
        assert _same_weights(a["model"], b["model"]), name
    assert resumed.rows == straight.rows


def test_resume_to_more_epochs_and_finished_run_is_only_evaluated(cardiac, tmp_path):
    run_experiment(cardiac, "lower_bound", tmp_path, epochs=1, **TINY)
    longer = run_experiment(cardiac, "lower_bound", tmp_path, epochs=2, **TINY)
    assert longer.start_epoch == 1 and len(longer.log) == 2 and longer.train_seconds > 0
    again = run_experiment(cardiac, "lower_bound", tmp_path, epochs=2, **TINY)
    assert again.start_epoch == 2 and again.log == longer.log and again.rows == longer.rows
    assert [r["branch"] for r in again.rows] == ["teacher"]  # the bounds never train the student


def test_missing_checkpoint_starts_fresh_and_corrupt_one_is_a_clear_error(cardiac, tmp_path):
    fresh = run_experiment(cardiac, "kl_ent", tmp_path, epochs=1, **TINY)  # resume=True, nothing there
    assert fresh.start_epoch == 0
    last = tmp_path / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:200])  # truncated, e.g. a full disk
    with pytest.raises(InputError, match="last.pt: cannot read the last-epoch checkpoint, truncated or corrupt"):
        run_experiment(cardiac, "kl_ent", tmp_path, epochs=2, **TINY)
    torch.save({"weights": 1}, last)
    with pytest.raises(InputError, match="not a mixseg-lite last-epoch checkpoint"):
        run_experiment(cardiac, "kl_ent", tmp_path, epochs=2, **TINY)
    restarted = run_experiment(cardiac, "kl_ent", tmp_path, epochs=1, resume=False, **TINY)
    assert restarted.start_epoch == 0 and restarted.log == fresh.log


def test_resuming_with_other_settings_is_refused(cardiac, tmp_path):
    run_experiment(cardiac, "kl_ent", tmp_path, epochs=1, **TINY)
    with pytest.raises(InputError, match=r"different settings \(base_width\)"):
        run_experiment(cardiac, "kl_ent", tmp_path, epochs=2, **{**TINY, "base_width": 8})
    with pytest.raises(InputError, match="different settings.*method"):
        run_experiment(cardiac, "kl", tmp_path, epochs=2, **TINY)


def test_checkpoints_survive_a_library_that_gained_an_option(cardiac, tmp_path):
    run_experiment(cardiac, "kl_ent", tmp_path, epochs=1, **TINY)
    run_file = tmp_path / "checkpoints" / "run.json"
    recorded = json.loads(run_file.read_text())
    del recorded["settings"]["weak_kind"], recorded["settings"]["lr"]  # as if written before they existed
    run_file.write_text(json.dumps(recorded))
    assert run_experiment(cardiac, "kl_ent", tmp_path, epochs=1, **TINY).start_epoch == 1  # defaults: fine
    recorded = json.loads(run_file.read_text())
    del recorded["settings"]["lr"]
    run_file.write_text(json.dumps(recorded))
    with pytest.raises(InputError, match=r"different settings \(lr\)"):
        run_experiment(cardiac, "kl_ent", tmp_path, epochs=1, lr=0.01, **TINY)


def test_bad_methods_and_options(cardiac, tmp_path):
    with pytest.raises(InputError, match="supports .*'kl_ent'.*'cam_er_cmer_kl'"):
        run_experiment(cardiac, "magic", tmp_path)
    assert "upper_bound" in supported_methods() and "cam" in supported_methods()
    with pytest.raises(InputError, match="not used by the mixed-supervision"):
        run_experiment(cardiac, "kl_ent", tmp_path, tau=3.0, **TINY)
    with pytest.raises(InputError, match=r"splits\['weak'\] is empty"):
        run_experiment({**cardiac, "weak": []}, "kl_ent", tmp_path, **TINY)


def test_cam_rows_with_empty_baseline_and_reuse(tmp_path):
    splits = load_dataset("simulated_brain", image_size=32, n_volumes=5, n_slices=6, modalities=("T1", "T2"),
                          split={"full": 2, "weak": 1, "val": 1, "test": 1})
    options = {**TINY, "batch_size": 8, "amp": False, "weak_kind": "seeds"}  # ignored by CAM rows
    result = run_experiment(splits, "cam_er_cmer_kl", tmp_path, epochs=1, **{**options, "figures": True})
    assert [(r["method"], r["branch"]) for r in result.rows] == [("cam_er_cmer_kl", "T1"), ("cam_er_cmer_kl", "T2"),
                                                                  ("empty", "-")]
    assert set(result.thresholds) == {"T1", "T2"} and (tmp_path / "predictions.png").is_file()
    again = run_experiment(splits, "cam_er_cmer_kl", tmp_path, epochs=1, **options)
    assert again.start_epoch == 1 and again.rows == result.rows
    with pytest.raises(InputError, match="amp"):
        run_experiment(splits, "cam", tmp_path / "amp", epochs=1, **{**options, "amp": True})


# ----------------------------------------------------------------------------- configs

def _parameters_cell(notebook: Path) -> dict:
    """Names and literal values of the cell tagged ``parameters`` of a py:percent source (via ast)."""
    cell = notebook.read_text().split('# %% tags=["parameters"]', 1)[1].split("\n# %%", 1)[0]
    values = {}
    for statement in ast.parse(cell).body:
        assert isinstance(statement, ast.Assign) and isinstance(statement.targets[0], ast.Name), \
            f"{notebook.name}: parameters must be `name = <literal>`"
        values[statement.targets[0].id] = ast.literal_eval(statement.value)
    return values


CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def test_every_dataset_has_a_config():
    # Paper-scale (GPU) configs, plus CPU-scale variants named <dataset>_cpu.
    assert {p.stem for p in CONFIGS if not p.stem.endswith("_cpu")} == {"acdc", "brats", "decathlon",
                                                                       "decathlon_prostate", "atlas"}
    assert {p.stem for p in CONFIGS if p.stem.endswith("_cpu")} == {"atlas_cpu"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_config_keys_are_parameters_of_notebook_04(config):
    parameters = _parameters_cell(ROOT / "notebooks" / "04_full_training.py")
    values = yaml.safe_load(config.read_text())
    assert set(values) <= set(parameters), f"not parameters of notebook 04: {set(values) - set(parameters)}"
    assert "output_dir" not in values  # the output folder is chosen when running (mixseg-lite run -o)
    for key, value in values.items():
        default = parameters[key]
        if default is not None and value is not None:  # same kind of value as the notebook's default
            assert isinstance(value, type(default)) or (type(default) is float and type(value) is int), key
    assert values["dataset"] in DATASETS and values["method"] in supported_methods()
    assert values["image_size"] % 2 ** (values["depth"] - 1) == 0
    if config.stem.endswith("_cpu"):  # sized for a 2-core CPU: float32, a narrower UNet
        assert values["amp"] is False and values["base_width"] < 64 and values["device"] == "auto"
    else:
        assert (values["base_width"], values["depth"], values["amp"], values["device"]) == (64, 5, True, "auto")
    resolve_split(values["split"], 100, config.name)
    if values["dataset"] in PUBLIC_DATASETS:
        assert values["data_dir"].startswith("/path/to/")  # a placeholder the user replaces
        with pytest.raises(InputError, match="data_dir not found"):
            load_dataset(values["dataset"], values["data_dir"], values["image_size"])
