"""The CAM training loop: every ablation row runs, losses are finite, seeded runs are identical."""

import math

import pytest
import torch

from mixseg_lite import InputError
from mixseg_lite.cam import CAMNet
from mixseg_lite.data.brain_sim import make_brain_volumes
from mixseg_lite.data.slices import SliceDataset
from mixseg_lite.models import UNet
from mixseg_lite.train import CAM_METHODS, CAMConfig, evaluate_cam, train_cam, train_supervised
from mixseg_lite.train.cam import (choose_thresholds, empty_baseline, learnt_tags, measure_equivariance,
                                   predict_slices, recalibrate_batchnorm)
from mixseg_lite.transforms import Transform

TINY = dict(epochs=2, steps_per_epoch=1, batch_size=4, base_width=4, depth=2, progress=False)


@pytest.fixture(scope="module")
def data():
    volumes = make_brain_volumes(n_volumes=4, n_slices=6, size=32, modalities=("T1", "T2", "FLAIR"), seed=1,
                                 tumour_probability=1.0)
    return SliceDataset(volumes[:3]), SliceDataset(volumes[3:])


@pytest.mark.parametrize("method", list(CAM_METHODS))
def test_every_method_runs_with_finite_losses(data, method):
    train, test = data
    result = train_cam(train, method=method, modalities=("T2", "FLAIR"), **TINY)
    assert set(result.nets) == {"T2", "FLAIR"} and result.modalities == ("T2", "FLAIR")
    assert len(result.log) == 2 and all(math.isfinite(v) for r in result.log for v in r.values())
    expected = {"cls", "loss"} | {k for k, on in CAM_METHODS[method].items() if on}
    if method == "supervised":
        expected = {"ce_dice", "loss"}
        assert all(isinstance(n, UNet) for n in result.nets.values())
    else:
        assert all(isinstance(n, CAMNet) for n in result.nets.values())
    assert set(result.log[0]) == expected | {"epoch", "seconds"}
    assert not any(n.training for n in result.nets.values())
    rows = evaluate_cam(result, test, thresholds=None if method == "supervised" else 0.5)
    assert [r["modality"] for r in rows] == ["T2", "FLAIR"]
    assert all(0.0 <= r[k] <= 1.0 for r in rows for k in ("dice_3d", "dice_pos", "dice_slice_avg", "accuracy"))


def test_seeded_runs_are_identical_and_seeds_matter(data):
    train, _ = data
    a = train_cam(train, method="cam_er_cmer_kl", modalities=("T1", "FLAIR"), seed=3, **TINY)
    b = train_cam(train, method="cam_er_cmer_kl", modalities=("T1", "FLAIR"), seed=3, **TINY)
    c = train_cam(train, method="cam_er_cmer_kl", modalities=("T1", "FLAIR"), seed=4, **TINY)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in a.log]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in b.log]
    for m in a.nets:
        for (name, pa), pb in zip(a.nets[m].state_dict().items(), b.nets[m].state_dict().values()):
            assert torch.equal(pa, pb), name
    assert strip != [{k: v for k, v in r.items() if k != "seconds"} for r in c.log]


def test_thresholds_predictions_and_empty_baseline(data):
    train, test = data
    result = train_cam(train, method="cam_er", modalities=("FLAIR",), **TINY)
    chosen = choose_thresholds(result, test, thresholds=[0.3, 0.6])
    assert set(chosen) == {"FLAIR"} and chosen["FLAIR"]["threshold"] in (0.3, 0.6)
    pred = predict_slices(result, test, {"FLAIR": chosen["FLAIR"]["threshold"]})["FLAIR"]
    assert pred["labels"].shape == test.labels.shape and pred["positive"].shape == (len(test), 1)
    # Slices predicted negative have empty masks.
    assert not pred["labels"][~pred["positive"][:, 0]].any()
    empty = empty_baseline(test)
    assert empty["method"] == "empty" and empty["dice_3d"] == 0.0
    with pytest.raises(InputError, match="threshold"):
        evaluate_cam(result, test)
    er = measure_equivariance(result, test, {"id": Transform(), "hflip": Transform("hflip")})
    assert er["FLAIR"]["id"] == pytest.approx(0.0, abs=1e-12) and er["FLAIR"]["hflip"] >= 0.0


def test_multilabel_core_and_oedema():
    volumes = make_brain_volumes(n_volumes=2, n_slices=6, size=32, labels="core_oedema", seed=2,
                                 tumour_probability=1.0)
    data = SliceDataset(volumes)
    result = train_cam(data, method="cam_er_cmer_kl", multilabel=True, modalities=("T2", "FLAIR"), **TINY)
    assert result.nets["T2"].multilabel and result.nets["T2"].num_classes == 2  # core, oedema
    rows = evaluate_cam(result, data, thresholds=0.5)
    assert all(math.isfinite(r["accuracy"]) for r in rows)


def test_supervised_entry_point(data):
    train, test = data
    result = train_supervised(train, modalities=("T1",), **TINY)
    assert result.supervised and result.config.method == "supervised"
    pred = predict_slices(result, test)["T1"]
    assert pred["labels"].shape == test.labels.shape


def test_recalibrate_batchnorm_uses_clean_images():
    net = CAMNet(base_width=4, depth=2)
    images = torch.randn(6, 1, 8, 8) * 3 + 2
    recalibrate_batchnorm(net, images, "cpu")
    first_bn = net.unet.encoder.blocks[0][1]
    conv = net.unet.encoder.blocks[0][0]
    with torch.no_grad():
        expected = conv(images).mean(dim=(0, 2, 3))
    assert torch.allclose(first_bn.running_mean, expected, atol=1e-4)
    assert first_bn.momentum == 0.1


def test_bad_input(data):
    train, _ = data
    with pytest.raises(InputError, match="unknown method"):
        CAMConfig(method="seam")
    with pytest.raises(InputError, match="at least 2 modalities"):
        train_cam(train, method="cam_er_cmer", modalities=("T2",), **TINY)
    with pytest.raises(InputError, match="missing modality 'T1ce'"):
        train_cam(train, method="cam", modalities=("T2", "T1ce"), **TINY)
    with pytest.raises(InputError, match="empty"):
        train_cam([], method="cam", **TINY)


def test_reference_scale_trains_with_much_smaller_regularisers(data):
    train, _ = data
    ours = train_cam(train, method="cam_er_cmer", modalities=("T2", "FLAIR"),
                     equivariance_reduction="per_selected_slice", **TINY)
    reference = train_cam(train, method="cam_er_cmer", modalities=("T2", "FLAIR"), **TINY)  # the default
    assert all(math.isfinite(v) for r in reference.log for v in r.values())
    # same first batch, same networks: the reference mean is far below the per-selected-slice sum
    assert reference.log[0]["cmer"] < ours.log[0]["cmer"] / 10
    assert reference.log[0]["er"] <= ours.log[0]["er"]


def test_tag_accuracy_reports_each_network_against_the_majority_answer(data):
    from mixseg_lite.train.cam import tag_accuracy

    train, _ = data
    result = train_cam(train, method="cam", modalities=("T2", "FLAIR"), **TINY)
    accuracy = tag_accuracy(result, train)
    positive = (train.tags[:, 1:] > 0).any(dim=1).float().mean().item()
    assert set(accuracy) == {"T2", "FLAIR"}
    for entry in accuracy.values():
        assert 0.0 <= entry["accuracy"] <= 1.0
        assert entry["majority"] == pytest.approx(max(positive, 1 - positive))


def test_per_modality_weights_train_each_network_with_its_own(data):
    train, _ = data
    both = train_cam(train, method="cam_er", modalities=("T2", "FLAIR"), er_weight=3.0, **TINY)
    mixed = train_cam(train, method="cam_er", modalities=("T2", "FLAIR"), er_weight={"T2": 3.0, "FLAIR": 0.0}, **TINY)
    # ER touches only its own network: T2's network is the same, FLAIR's is not.
    for name, p in both.nets["T2"].state_dict().items():
        torch.testing.assert_close(mixed.nets["T2"].state_dict()[name], p)
    assert any(not torch.equal(mixed.nets["FLAIR"].state_dict()[k], v) for k, v in both.nets["FLAIR"].state_dict().items()
               if v.is_floating_point())
    with pytest.raises(InputError, match="er_weight has no weight for modality 'FLAIR'"):
        train_cam(train, method="cam_er", modalities=("T2", "FLAIR"), er_weight={"T2": 1.0}, **TINY)
    with pytest.raises(InputError, match="cmer_weight must be >= 0"):
        CAMConfig(cmer_weight={"T2": -1.0})
    with pytest.raises(InputError, match="kl_weight must be a number or a mapping"):
        CAMConfig(kl_weight={"T2": "high"})


def test_background_fill_and_foreground_map(data):
    from mixseg_lite.train.cam import transform_images
    from mixseg_lite.transforms import Transform

    images = torch.full((2, 1, 8, 8), 3.0)
    images[:, :, 0, 0] = -1.5  # each slice's background (its minimum)
    shifted = transform_images(Transform("translate", shift=(0.5, 0.0)), images)
    assert torch.all(shifted[:, :, :4] == -1.5) and torch.all(shifted[:, :, 5:] == 3.0)
    assert torch.all(transform_images(Transform("translate", shift=(0.5, 0.0)), images, "zero")[:, :, :4] == 0)
    train, _ = data
    result = train_cam(train, method="cam", modalities=("T2",), foreground_map="difference", **TINY)
    assert result.nets["T2"].foreground == "difference"


def test_validation_curve_is_logged_without_changing_the_training(data):
    train, val = data
    for method in ("cam_er_cmer", "supervised"):
        plain = train_cam(train, method=method, modalities=("T2", "FLAIR"), **TINY)
        watched = train_cam(train, val=val, method=method, modalities=("T2", "FLAIR"), **TINY)
        for record in watched.log:
            assert math.isfinite(record["val_loss"]) and record["val_loss"] > 0
            assert 0.0 <= record["val_accuracy"] <= 1.0
        for m in plain.nets:  # evaluating between epochs touches neither weights nor BatchNorm statistics
            for (name, a), b in zip(plain.nets[m].state_dict().items(), watched.nets[m].state_dict().values()):
                assert torch.equal(a, b), (method, name)


def test_cosine_schedule_and_regulariser_warmup():
    from mixseg_lite.train.cam import learning_rate_at, regulariser_ramp

    cosine, constant = CAMConfig(lr=0.01, lr_schedule="cosine"), CAMConfig(lr=0.01)
    assert learning_rate_at(cosine, 0, 100) == pytest.approx(0.01)
    assert learning_rate_at(cosine, 50, 100) == pytest.approx(0.005)
    assert learning_rate_at(cosine, 99, 100) < 0.01 * 0.001
    assert all(learning_rate_at(constant, done, 100) == 0.01 for done in (0, 50, 99))
    assert [regulariser_ramp(done, 4) for done in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert regulariser_ramp(0, 0) == 1.0


def test_warmup_scales_the_first_steps_regularisers(data):
    # Same seed, same first step: the logged ER / CMER / KL of step 1 are the full ones times 1/2.
    train, _ = data
    one_step = dict(TINY, epochs=1)
    full = train_cam(train, method="cam_er_cmer_kl", modalities=("T2", "FLAIR"), **one_step).log[0]
    warm = train_cam(train, method="cam_er_cmer_kl", modalities=("T2", "FLAIR"), regulariser_warmup=2,
                     **one_step).log[0]
    assert warm["cls"] == full["cls"]
    for term in ("er", "cmer", "kl"):
        assert warm[term] == pytest.approx(0.5 * full[term], rel=1e-5), term


def test_balanced_tag_loss_trains_and_weighs_positives_more(data):
    train, _ = data
    balanced = train_cam(train, method="cam", modalities=("T2",), tag_weighting="balanced", **TINY)
    plain = train_cam(train, method="cam", modalities=("T2",), **TINY)
    assert balanced.log[0]["cls"] != plain.log[0]["cls"] and math.isfinite(balanced.log[-1]["cls"])


def test_supervised_class_balance_reaches_the_upper_bounds_loss(data):
    # supervised_class_balance is passed to losses.mixed.supervised_loss (tested there): same seed
    # and first batch, so only the CE's class weights can make the logged losses differ.
    train, test = data
    one_step = dict(TINY, epochs=1)
    plain = train_supervised(train, modalities=("T2",), **one_step)
    weighted = train_supervised(train, modalities=("T2",), supervised_class_balance=0.5, **one_step)
    assert weighted.log[0]["ce_dice"] != plain.log[0]["ce_dice"] and math.isfinite(weighted.log[0]["ce_dice"])
    plain_val = train_supervised(train, modalities=("T2",), val=test, **one_step).log[0]["val_loss"]
    weighted_val = train_supervised(train, modalities=("T2",), supervised_class_balance=0.5, val=test,
                                    **one_step).log[0]["val_loss"]
    assert weighted_val != plain_val


def test_learnt_tags_needs_more_than_the_majority_answer():
    majority = float(torch.tensor(200 / 280))  # float32, as tag_accuracy computes it
    assert learnt_tags(0.9, majority) and not learnt_tags(majority, majority)
    assert not learnt_tags(float(torch.tensor(200 / 280, dtype=torch.float64)), majority)  # equal up to float32
    assert not learnt_tags(0.6, majority)


def test_tag_rates_compare_each_network_with_answering_no_tumour_everywhere(data):
    from mixseg_lite.train.cam import tag_accuracy, tag_rates

    train, _ = data
    result = train_cam(train, method="cam", modalities=("T2", "FLAIR"), **TINY)
    rates = tag_rates(result, train)
    accuracy = tag_accuracy(result, train)
    positive = (train.tags[:, 1:] > 0).any(dim=1).float().mean().item()
    assert set(rates) == {"T2", "FLAIR"}
    for m, entry in rates.items():
        assert entry["accuracy"] == pytest.approx(accuracy[m]["accuracy"])
        assert entry["positive"] == pytest.approx(positive)
        assert entry["all_negative"] == pytest.approx(1 - positive)
        # accuracy is the sensitivity and specificity weighted by the tag fractions
        assert entry["accuracy"] == pytest.approx(positive * entry["sensitivity"]
                                                  + (1 - positive) * entry["specificity"])
        assert 0.0 <= entry["predicted_positive"] <= 1.0
