"""Class activation maps (CAMs) from a UNet trained on image tags, and from CAMs to masks.

REFERENCE B: each modality has its own small UNet whose last layer is a bias-free 1x1 conv to one
map per class at full resolution; the class scores are the global average of those maps. Because
the head has no bias and the pooling is a plain mean, the score of a class is exactly the mean of
its map, so the maps *are* the CAMs: no gradient tricks, no upsampling.

Two ways to read the tags:

- ``multilabel=False`` (the paper): ``num_classes`` mutually exclusive image classes with softmax
  cross-entropy; for tumour present / absent ``num_classes=2``, channel 0 = absent, channel 1 =
  present. Foreground maps are channels ``1..``.
- ``multilabel=True``: one map per *foreground* class (``num_classes`` = number of foreground
  classes, e.g. core and oedema), each an independent present / absent decision with binary
  cross-entropy; every channel is a foreground map.

From CAM to mask (:func:`cam_to_mask`): a slice predicted positive keeps its foreground CAM,
normalised by :func:`normalize_cam` and thresholded; a slice predicted negative gets an empty mask.
The threshold is chosen on validation data by :func:`choose_threshold` (sweep 0.05..0.95).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mixseg_lite.errors import InputError, check_choice, check_nonempty
from mixseg_lite.models import UNet

THRESHOLDS = tuple(np.round(np.arange(0.05, 0.96, 0.05), 2).tolist())
"""Default threshold grid of :func:`choose_threshold`: 0.05, 0.10, ..., 0.95. The paper sweeps
0.2..0.8; strongly regularised CAMs are flat and pick the top of that grid, so it is wider here
(a choice on either end of the grid is flagged, see :func:`threshold_at_edge`)."""

FOREGROUND_MAPS = ("present", "difference")
"""Which map of a softmax :class:`CAMNet` is the foreground CAM: the present class's own map
(the reference code) or its difference from the mean of all class maps."""


class CAMNet(nn.Module):
    """A small UNet with a bias-free 1x1 head whose maps are CAMs.

    ``forward(x: (B, C_in, H, W)) -> (scores (B, num_classes), maps (B, num_classes, H, W))``
    with ``scores = maps.mean((2, 3))`` (global average pooling).

    Args:
        in_channels: image channels (1: one modality per network, as in the paper).
        num_classes: maps / scores; 2 for tumour absent / present with softmax; the number of
            foreground classes with ``multilabel=True``.
        base_width, depth, norm: of the :class:`mixseg_lite.models.UNet`.
        multilabel: read scores with sigmoid + BCE per class instead of softmax + CE.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, base_width: int = 8, depth: int = 3,
                 norm: str = "batch", multilabel: bool = False, foreground: str = "present"):
        super().__init__()
        if num_classes < (1 if multilabel else 2):
            raise InputError(f"CAMNet needs num_classes >= {1 if multilabel else 2} "
                             f"({'multi-label' if multilabel else 'softmax'}), got {num_classes}")
        check_choice(foreground, FOREGROUND_MAPS, "foreground")
        self.unet = UNet(in_channels, num_classes, base_width, depth, norm, head_bias=False)
        self.multilabel = multilabel
        self.num_classes = num_classes
        self.foreground = foreground

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.unet(x)
        return maps.mean(dim=(2, 3)), maps

    def foreground_maps(self, maps: torch.Tensor) -> torch.Tensor:
        """``(B, K, H, W)`` CAMs of the K foreground classes, the maps that become masks.

        Multi-label: the maps themselves. Softmax, ``foreground="present"`` (the reference code):
        the maps of the foreground classes, ``M_c`` for ``c = 1..``. ``foreground="difference"``:
        ``M_c - mean_k M_k``; softmax ignores any map added to every class, so only that part of
        ``M_c`` decides the prediction (for two classes, ``(M_present - M_absent) / 2``).
        """
        if self.multilabel or self.foreground == "present":
            return maps[:, 1:] if not self.multilabel else maps
        return maps[:, 1:] - maps.mean(dim=1, keepdim=True)

    def predict_positive(self, scores: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` bool: foreground class k predicted present.

        Softmax: the arg-max class is k (so at most one per slice); multi-label: ``score > 0``.
        """
        if self.multilabel:
            return scores > 0
        winner = scores.argmax(dim=1, keepdim=True)
        return winner == torch.arange(1, self.num_classes, device=scores.device)[None]


def tag_targets(tags: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
    """Classification targets from :attr:`SliceDataset.tags` ``(B, C)`` (column 0 = background).

    Softmax (two classes): ``(B,)`` int64, 1 when any foreground class is present.
    Multi-label: ``(B, C - 1)`` float, one column per foreground class.
    """
    if tags.ndim != 2 or tags.shape[1] < 2:
        raise InputError(f"tags must be (B, C) with C >= 2 (background first), got shape {tuple(tags.shape)}")
    foreground = tags[:, 1:]
    return foreground.float() if multilabel else (foreground > 0).any(dim=1).long()


def normalize_cam(maps: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """ReLU, then per sample and channel ``(M - min) / (max - min + eps)`` over space.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)`` with values in ``[0, 1)``. A constant map (also one
    that is negative everywhere, hence 0 after the ReLU) becomes all zeros, never NaN.
    Differentiable, so losses can use it.
    """
    if maps.ndim != 4:
        raise InputError(f"maps must be (B, C, H, W), got shape {tuple(maps.shape)}")
    maps = torch.relu(maps)
    low = maps.amin(dim=(2, 3), keepdim=True)
    high = maps.amax(dim=(2, 3), keepdim=True)
    return (maps - low) / (high - low + eps)


def cam_to_mask(maps: torch.Tensor, predicted_positive: torch.Tensor, threshold: float) -> torch.Tensor:
    """Label map from foreground CAMs.

    Args:
        maps: ``(B, K, H, W)`` raw foreground CAMs (normalised here with :func:`normalize_cam`).
        predicted_positive: ``(B,)`` or ``(B, K)`` bool, class k predicted present in the slice.
        threshold: on the normalised CAM, in ``[0, 1]``.

    Returns:
        ``(B, H, W)`` int64: 0 = background, ``k + 1`` where foreground class k's normalised CAM is
        ``>= threshold`` and the class is predicted present (the highest such CAM wins when
        several are). With one foreground class this is a 0/1 mask. Slices predicted negative are
        all 0.
    """
    if maps.ndim != 4:
        raise InputError(f"maps must be (B, K, H, W), got shape {tuple(maps.shape)}")
    if predicted_positive.shape[:1] != maps.shape[:1]:
        raise InputError(f"predicted_positive {tuple(predicted_positive.shape)} must have one row per slice "
                         f"({maps.shape[0]})")
    positive = predicted_positive.reshape(maps.shape[0], -1).bool().to(maps.device)
    if positive.shape[1] != maps.shape[1]:
        raise InputError(f"predicted_positive has {positive.shape[1]} classes per slice, maps have {maps.shape[1]}")
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"threshold {threshold} must be in [0, 1] (normalised CAMs)")
    cams = normalize_cam(maps) * positive[:, :, None, None]
    best, index = cams.max(dim=1)
    # A zero CAM (slice predicted negative, or below the map's minimum) never counts as foreground,
    # even at threshold 0.
    return torch.where(best >= max(threshold, 1e-12), index + 1, torch.zeros_like(index))


@torch.no_grad()
def predict_cams(net: CAMNet, images: torch.Tensor, batch_size: int = 64,
                 device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ``(N, C)`` and maps ``(N, C, H, W)`` of ``net`` (eval mode) for ``images``, on the CPU."""
    check_nonempty(len(images), "stack of images", "predict_cams")
    device = device or next(net.parameters()).device
    was_training = net.training
    net.eval()
    scores, maps = [], []
    for start in range(0, len(images), batch_size):
        s, m = net(images[start:start + batch_size].to(device))
        scores.append(s.cpu())
        maps.append(m.cpu())
    net.train(was_training)
    return torch.cat(scores), torch.cat(maps)


def choose_threshold(maps: torch.Tensor, predicted_positive: torch.Tensor, labels, volume_index,
                     thresholds=THRESHOLDS) -> tuple[float, dict[float, float]]:
    """Sweep CAM thresholds on validation slices; keep the one with the best mean 3-D Dice.

    Args:
        maps: ``(N, K, H, W)`` raw foreground CAMs of the validation slices.
        predicted_positive: ``(N,)`` or ``(N, K)`` predicted tags.
        labels: ``(N, H, W)`` true label maps (classes ``0..K``).
        volume_index: ``(N,)`` volume of each slice; Dice is per 3-D volume.
        thresholds: candidates (default :data:`THRESHOLDS`, 0.05..0.95).

    Returns:
        ``(best_threshold, {threshold: mean 3-D Dice})``; ties go to the lower threshold.
        3-D Dice is :func:`mixseg_lite.evaluation.evaluate_tag_segmentation`'s ``dice_3d``.
    """
    from mixseg_lite.evaluation import evaluate_tag_segmentation

    thresholds = [float(t) for t in thresholds]
    if not thresholds:
        raise InputError("choose_threshold needs at least one candidate threshold")
    scores = {}
    for t in thresholds:
        pred = cam_to_mask(maps, predicted_positive, t)
        scores[t] = evaluate_tag_segmentation(pred, labels, volume_index, predicted_positive,
                                              num_classes=maps.shape[1] + 1)["dice_3d"]
    best = max(thresholds, key=lambda t: (np.nan_to_num(scores[t], nan=-1.0), -t))
    return best, scores


def threshold_at_edge(threshold: float, thresholds=THRESHOLDS) -> bool:
    """True when ``threshold`` is the lowest or highest candidate: the best value may lie beyond
    the grid, so widen it before trusting the choice."""
    thresholds = [float(t) for t in thresholds]
    return len(thresholds) > 1 and float(threshold) in (min(thresholds), max(thresholds))
