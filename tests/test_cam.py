"""CAMNet, CAM normalisation, CAM -> mask, and the threshold sweep."""

import numpy as np
import pytest
import torch

from mixseg_lite import InputError
from mixseg_lite.cam import (THRESHOLDS, CAMNet, cam_to_mask, choose_threshold, normalize_cam, predict_cams, tag_targets,
                             threshold_at_edge)


def test_camnet_scores_are_the_mean_of_bias_free_maps():
    torch.manual_seed(0)
    net = CAMNet(in_channels=1, num_classes=2, base_width=4, depth=2)
    scores, maps = net(torch.randn(3, 1, 16, 16))
    assert scores.shape == (3, 2) and maps.shape == (3, 2, 16, 16)
    assert torch.allclose(scores, maps.mean(dim=(2, 3)))
    assert net.unet.decoder.head.bias is None
    # Bias-free head: the class maps are a linear function of the last features.
    feats = net.unet.decoder.features(net.unet.encoder(torch.randn(1, 1, 16, 16)))
    assert torch.allclose(net.unet.decoder.head(2 * feats), 2 * net.unet.decoder.head(feats))


def test_foreground_maps_and_predictions():
    maps = torch.randn(2, 2, 8, 8)
    # The reference code's foreground CAM: the present class's own map.
    softmax = CAMNet(num_classes=2, base_width=4, depth=2)
    assert torch.equal(softmax.foreground_maps(maps), maps[:, 1:])
    # Softmax ignores what both classes share: "difference" is present minus the class mean.
    difference = CAMNet(num_classes=2, base_width=4, depth=2, foreground="difference")
    assert torch.allclose(difference.foreground_maps(maps), (maps[:, 1:] - maps[:, :1]) / 2)
    assert torch.allclose(difference.foreground_maps(maps + 5.0), difference.foreground_maps(maps), atol=1e-5)
    with pytest.raises(InputError, match="foreground"):
        CAMNet(foreground="absent")
    scores = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    assert softmax.predict_positive(scores).tolist() == [[True], [False]]
    multi = CAMNet(num_classes=2, base_width=4, depth=2, multilabel=True)
    assert torch.equal(multi.foreground_maps(maps), maps)
    assert multi.predict_positive(scores).tolist() == [[False, True], [True, False]]


def test_tag_targets():
    tags = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    assert tag_targets(tags).tolist() == [0, 1, 1]
    assert tag_targets(tags, multilabel=True).tolist() == [[0, 0], [0, 1], [1, 1]]
    with pytest.raises(InputError, match="tags"):
        tag_targets(torch.ones(3))


def test_normalize_cam():
    maps = torch.tensor([[[[-1.0, 0.0], [1.0, 3.0]]]])
    out = normalize_cam(maps)
    assert torch.allclose(out, torch.tensor([[[[0.0, 0.0], [1 / 3, 1.0]]]]), atol=1e-4)
    assert float(out.max()) < 1.0  # eps keeps the maximum just below 1
    # Constant maps (and all-negative ones, constant after the ReLU) give zeros, never NaN.
    const = normalize_cam(torch.stack([torch.full((1, 4, 4), 2.0), torch.full((1, 4, 4), -3.0)]))
    assert torch.equal(const, torch.zeros_like(const))
    # Per sample and channel.
    two = normalize_cam(torch.stack([maps[0], 10 * maps[0]]))
    assert torch.allclose(two[0], two[1], atol=1e-4)


def test_cam_to_mask():
    maps = torch.zeros(3, 1, 4, 4)
    maps[:, 0, 1:3, 1:3] = 1.0
    maps[:, 0, 0, 0] = 0.4
    positive = torch.tensor([True, True, False])
    mask = cam_to_mask(maps, positive, threshold=0.5)
    assert mask.shape == (3, 4, 4) and mask.dtype == torch.int64
    assert mask[0].sum() == 4 and mask[0, 1:3, 1:3].all()
    assert mask[2].sum() == 0  # predicted negative: empty mask whatever the CAM
    assert cam_to_mask(maps, positive, threshold=0.3)[0].sum() == 5
    # Two foreground classes: the higher normalised CAM wins among the classes predicted present.
    two = torch.zeros(1, 2, 2, 2)
    two[0, 0, 0, :] = 1.0
    two[0, 1, 1, :] = 1.0
    assert cam_to_mask(two, torch.tensor([[True, True]]), 0.5)[0].tolist() == [[1, 1], [2, 2]]
    assert cam_to_mask(two, torch.tensor([[False, True]]), 0.5)[0].tolist() == [[0, 0], [2, 2]]
    with pytest.raises(InputError, match="threshold"):
        cam_to_mask(maps, positive, 1.5)
    with pytest.raises(InputError, match="classes per slice"):
        cam_to_mask(two, torch.tensor([True]), 0.5)


def test_choose_threshold_finds_the_known_best():
    # Target squares of side 4; CAM = 1 inside, 0.6 on a one-pixel ring, 0 elsewhere. The
    # normalised ring sits just below 0.6 (eps), so thresholds from 0.6 up give a perfect mask
    # and lower ones add the ring.
    labels = torch.zeros(4, 8, 8, dtype=torch.int64)
    labels[:2, 2:6, 2:6] = 1
    maps = torch.zeros(4, 1, 8, 8)
    maps[:2, 0, 1:7, 1:7] = 0.6
    maps[:2, 0, 2:6, 2:6] = 1.0
    positive = torch.tensor([True, True, False, False])
    volume_index = torch.tensor([0, 0, 1, 1])
    best, sweep = choose_threshold(maps, positive, labels, volume_index)
    assert set(sweep) == set(THRESHOLDS) and THRESHOLDS[0] == 0.05 and THRESHOLDS[-1] == 0.95
    assert threshold_at_edge(0.95) and threshold_at_edge(0.05) and not threshold_at_edge(0.5)
    assert threshold_at_edge(0.7, [0.3, 0.7]) and not threshold_at_edge(0.7, [0.7])
    assert best == 0.6 and sweep[best] == pytest.approx(1.0)  # ties go to the lower threshold
    assert sweep[0.55] == pytest.approx(2 * 16 / (36 + 16))  # ring included: 36 px predicted per slice
    best, _ = choose_threshold(maps, positive, labels, volume_index, thresholds=[0.3, 0.7])
    assert best == 0.7


def test_predict_cams_batches_and_restores_mode():
    net = CAMNet(base_width=4, depth=2)
    net.train()
    images = torch.randn(5, 1, 8, 8)
    scores, maps = predict_cams(net, images, batch_size=2)
    assert scores.shape == (5, 2) and maps.shape == (5, 2, 8, 8) and net.training
    net.eval()
    with torch.no_grad():
        assert torch.allclose(net(images)[0], scores, atol=1e-6)


def test_bad_input():
    with pytest.raises(InputError, match="num_classes"):
        CAMNet(num_classes=1)
    with pytest.raises(InputError, match=r"\(B, C, H, W\)"):
        normalize_cam(torch.zeros(4, 4))
    with pytest.raises(InputError, match="divisible"):
        CAMNet(depth=3)(torch.zeros(1, 1, 10, 10))
    assert np.isclose(THRESHOLDS[1] - THRESHOLDS[0], 0.05)
