"""Training from image tags with cross-modal equivariant CAMs: one function for every ablation row.

REFERENCE B. One :class:`mixseg_lite.cam.CAMNet` per modality, no weight sharing. Each step draws
a batch of slices (all modalities, co-registered) and ONE transform ``pi`` for the whole batch,
runs every network on ``x`` and on ``pi(x)`` and adds, per modality ``i``::

    L_i = L_cls                                   (tags, both views)            every row
        + er_weight   * ER_i                      (pi(M_i(x)) vs M_i(pi(x)))    "cam_er" and up
        + cmer_weight * CMER_i                    (vs the other modalities)      "cam_er_cmer" and up
        + kl_weight   * KL_i                      (class predictions, tau)       "cam_er_cmer_kl"

The networks are independent, so one AdamW over all of them on ``sum_i L_i`` is the same as one
optimiser per network: the stop-gradients inside CMER and KL keep each ``L_i`` on network ``i``.
ER and CMER compare normalised CAMs (:func:`mixseg_lite.cam.normalize_cam`; CMER L2-normalises
them again) inside the pixels the transform keeps (:meth:`Transform.valid_mask`). By default these
are the foreground CAMs, the maps that become masks (the present class's map ``M_1`` as in the
reference code, or ``M_present - M_absent`` up to a factor with ``foreground_map="difference"``,
see :meth:`CAMNet.foreground_maps`); ``equivariance_maps="all"`` constrains every class map
instead. Every row is classified on both views, so the rows differ only in the regularisers, not
in how much augmentation they saw. After training, BatchNorm statistics are re-estimated on the
clean training images (:func:`recalibrate_batchnorm`).

As the reference code (gaurav104/WSS-CMER) by default: ER and CMER are averaged over batch x
channels x pixels (``equivariance_reduction="reference"``; our first scale, ``"per_selected_slice"``,
is 2.5-4x (ER) and thousands of times (CMER) stronger at the same weight), and the pixels a
transform uncovers get the slice's background value (``transform_fill``). Not copied: its
independent shift of each modality by up to 10 % (it misregisters the pairs CMER compares) and its
per-slice z-score (the simulated images are z-scored per volume). The loss weights may differ per
modality (``er_weight={"T2": 10, "FLAIR": 100}``): each network has its own loss.

``"supervised"`` is the upper bound: a plain :class:`mixseg_lite.models.UNet` per modality trained
with pixel-wise cross-entropy + soft Dice on the full masks of the same slices, same optimiser,
steps and transforms (as augmentation).

Defaults are ours, sized to train in seconds to a minute on the simulated brains (40x40 to
64x64) on a CPU: lr 2e-3, weight decay 1e-4, batch 32, a UNet of widths 8/16/32. The paper used
AdamW with lr 5e-5, weight decay 0.5, batch 16, 30 epochs on 240x240 BraTS slices; pass those to
reproduce its setting. Three training options are not the paper's and are off by default; the
committed sweep (``experiments/cam_ablation.py``) turns them on because without them some networks
never learnt their tags: ``lr_schedule="cosine"`` (decay to 0, so the curves settle by the last
epoch), ``tag_weighting="balanced"`` (a network answering "no tumour" everywhere is no longer a
cheap optimum: the regularisers are 0 on slices predicted negative) and ``regulariser_warmup``
(the tag loss alone shapes the first epochs, before ER / CMER / KL pull the maps flat).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from mixseg_lite.cam import (FOREGROUND_MAPS, THRESHOLDS, CAMNet, cam_to_mask, choose_threshold, normalize_cam, predict_cams,
                             tag_targets)
from mixseg_lite.data.slices import SliceDataset, index_batches
from mixseg_lite.data.volume import Volume
from mixseg_lite.errors import InputError, check_choice, check_field, check_nonempty, is_number
from mixseg_lite.evaluation import evaluate_tag_segmentation
from mixseg_lite.losses.cam import (REDUCTIONS, balanced_class_weights, class_kl, classification_loss,
                                    cross_modal_equivariance_loss, equivariance_loss)
from mixseg_lite.losses.mixed import supervised_loss
from mixseg_lite.models import NORMS, UNet
from mixseg_lite.runtime import pick_device, seed_everything
from mixseg_lite.transforms import KINDS, RANDOM_KINDS, Transform, sample_transform

# Which regularisers each ablation row switches on; their weights live in CAMConfig.
CAM_METHODS: dict[str, dict] = {
    "cam":            {"er": False, "cmer": False, "kl": False},
    "cam_er":         {"er": True, "cmer": False, "kl": False},
    "cam_er_cmer":    {"er": True, "cmer": True, "kl": False},
    "cam_er_cmer_kl": {"er": True, "cmer": True, "kl": True},
    "supervised":     {"er": False, "cmer": False, "kl": False},
}
"""Ablation rows of REFERENCE B; ``"cam_er_cmer_kl"`` is the method, ``"supervised"`` the upper bound."""

EQUIVARIANCE_MAPS = ("foreground", "all")
TAG_WEIGHTINGS = ("none", "balanced")
"""How slices count in the tag loss: all the same (the paper), or each tag class the same
(:func:`mixseg_lite.losses.cam.balanced_class_weights` of the training slices)."""
LR_SCHEDULES = ("constant", "cosine")
"""Learning rate over the run: constant (the paper), or cosine from ``lr`` to 0 over every step,
so the last epochs take small steps and the curves settle where the run ends."""
TRANSFORM_FILLS = ("background", "zero")
LOSS_WEIGHTS = ("er_weight", "cmer_weight", "kl_weight")
"""Weights that may differ per modality: a number, or ``{modality: number}``. Each network has its
own loss ``L_i``, so its weights can be its own (contrasts differ in how much ER they tolerate)."""

# Every numeric and boolean field of CAMConfig: (type, lowest, highest, None allowed), as
# mixseg_lite.train.mixed.FIELD_RANGES; the loss weights (LOSS_WEIGHTS) are checked on their own.
CAM_FIELD_RANGES: dict[str, tuple[str, float | None, float | None, bool]] = {
    "epochs": ("int", 0, None, False), "steps_per_epoch": ("int", 1, None, True), "batch_size": ("int", 1, None, False),
    "base_width": ("int", 1, None, False), "depth": ("int", 1, 8, False), "seed": ("int", 0, None, False),
    "regulariser_warmup": ("int", 0, None, False),
    "lr": ("positive", 0, None, False), "tau": ("positive", 0, None, False),
    "weight_decay": ("number", 0, None, False), "max_shift": ("number", 0, 0.99, False),
    "supervised_dice_weight": ("number", None, None, False),
    "supervised_class_balance": ("number", 0, None, False),
    "multilabel": ("bool", None, None, False), "recalibrate_norm": ("bool", None, None, False),
    "progress": ("bool", None, None, False),
}


@dataclass
class CAMConfig:
    """Hyper-parameters of one run. Loss weights and scales are the paper's code's; the optimiser
    values and the network size are our fast CPU choices (the paper's are in the module docstring)."""

    method: str = "cam_er_cmer_kl"
    epochs: int = 10
    steps_per_epoch: int | None = None  # default: one pass over the training slices
    batch_size: int = 32
    lr: float = 2e-3                    # [choose]; paper 5e-5 (BraTS)
    weight_decay: float = 1e-4          # [choose]; paper 0.5
    lr_schedule: str = "constant"       # [choose] LR_SCHEDULES; paper constant
    # Loss weights, each a number or {modality: number} (LOSS_WEIGHTS), in the units of
    # equivariance_reduction: the paper's 1, 1, 0.5 at the reference code's scale.
    er_weight: float | dict[str, float] = 1.0
    cmer_weight: float | dict[str, float] = 1.0
    kl_weight: float | dict[str, float] = 0.5
    tau: float = 10.0                   # paper
    # [choose] "balanced": each tag class weighs the same in the tag loss (positives are ~30 % of the
    # slices); "none" is the paper's plain cross-entropy (TAG_WEIGHTINGS).
    tag_weighting: str = "none"
    # [choose] epochs over which the ER / CMER / KL weights ramp linearly from 0 to their value
    # (per step); 0 is the paper (full weights from the first step).
    regulariser_warmup: int = 0
    transform_kinds: tuple[str, ...] = RANDOM_KINDS
    max_shift: float = 0.3              # paper: translation up to 30 %
    scale_range: tuple[float, float] = (0.7, 1.3)  # [choose]
    multilabel: bool = False            # BCE per foreground class instead of softmax present/absent
    supervised_dice_weight: float = 1.0  # "supervised" row: CE + this * soft Dice
    # [choose] "supervised" row: class weights of its CE, (N / N_k) ** this (losses.mixed.supervised_loss);
    # 0 is plain CE, under which some networks of the committed sweep never left "no tumour".
    supervised_class_balance: float = 0.0
    equivariance_maps: str = "foreground"  # [choose] maps ER / CMER compare: "foreground" CAMs or "all" maps
    # How ER and CMER average (mixseg_lite.losses.cam.REDUCTIONS): "reference" is the reference
    # code's mean over batch x channels x pixels; "per_selected_slice" (our first version) is 2.5-4x
    # (ER) and thousands of times (CMER) stronger at the same weight.
    equivariance_reduction: str = "reference"
    # The foreground CAM (constrained and thresholded): the present class's map M1 as the reference
    # code, or "difference" M1 - mean(M0, M1) (mixseg_lite.cam.FOREGROUND_MAPS).
    foreground_map: str = "present"
    # Pixels a transform uncovers: the slice's background value as the reference code ("background",
    # its minimum: air outside the head), or 0 ("zero": mid-grey in z-scored images, an artificial edge).
    transform_fill: str = "background"
    modalities: tuple[str, ...] | None = None  # default: every modality of the volumes
    base_width: int = 8
    depth: int = 3
    norm: str = "batch"
    recalibrate_norm: bool = True       # re-estimate BatchNorm statistics on clean images at the end
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        check_choice(self.method, CAM_METHODS, "method")
        check_choice(self.equivariance_maps, EQUIVARIANCE_MAPS, "equivariance_maps")
        check_choice(self.tag_weighting, TAG_WEIGHTINGS, "tag_weighting")
        check_choice(self.lr_schedule, LR_SCHEDULES, "lr_schedule")
        check_choice(self.equivariance_reduction, REDUCTIONS, "equivariance_reduction")
        check_choice(self.foreground_map, FOREGROUND_MAPS, "foreground_map")
        check_choice(self.transform_fill, TRANSFORM_FILLS, "transform_fill")
        check_choice(self.norm, NORMS, "norm")
        for name, (kind, low, high, allow_none) in CAM_FIELD_RANGES.items():
            check_field(name, getattr(self, name), kind, low, high, allow_none)
        for name in LOSS_WEIGHTS:
            value = getattr(self, name)
            values = list(value.values()) if isinstance(value, dict) else [value]
            if (isinstance(value, dict) and not all(isinstance(k, str) for k in value)) or not values or \
                    not all(is_number(v) for v in values):
                raise InputError(f"{name} must be a number or a mapping modality -> number, got {value!r}")
        for name in (*LOSS_WEIGHTS, "supervised_dice_weight"):
            value = getattr(self, name)
            if any(v < 0 for v in (value.values() if isinstance(value, dict) else [value])):
                raise InputError(f"{name} must be >= 0 (a negative weight would maximise its loss), got {value}")
        if (isinstance(self.transform_kinds, str) or not isinstance(self.transform_kinds, (tuple, list))
                or not self.transform_kinds or any(kind not in KINDS for kind in self.transform_kinds)):
            raise InputError(f"transform_kinds must be a non-empty list of {', '.join(KINDS)}, "
                             f"got {self.transform_kinds!r}")
        if (not isinstance(self.scale_range, (tuple, list)) or len(self.scale_range) != 2
                or not all(is_number(s) for s in self.scale_range)
                or not 0 < self.scale_range[0] <= self.scale_range[1]):
            raise InputError(f"scale_range must be two numbers (low, high) with 0 < low <= high, "
                             f"got {self.scale_range!r}")
        if self.modalities is not None and (isinstance(self.modalities, str)
                                            or not isinstance(self.modalities, (tuple, list))
                                            or len(self.modalities) < 1
                                            or not all(isinstance(m, str) for m in self.modalities)):
            raise InputError(f"modalities must be a list of modality names or None, got {self.modalities!r}")
        pick_device(self.device)  # an unavailable device fails here, naming the available ones
        self.transform_kinds = tuple(self.transform_kinds)
        self.scale_range = tuple(float(s) for s in self.scale_range)
        if self.modalities is not None:
            self.modalities = tuple(self.modalities)

    @property
    def terms(self) -> dict:
        return CAM_METHODS[self.method]

    def weight(self, name: str, modality: str) -> float:
        """The weight ``name`` (one of :data:`LOSS_WEIGHTS`) of ``modality``'s loss."""
        value = getattr(self, name)
        if not isinstance(value, dict):
            return float(value)
        if modality not in value:
            raise InputError(f"{name} has no weight for modality {modality!r}, only for {sorted(value)}")
        return float(value[modality])


@dataclass
class CAMResult:
    """What :func:`train_cam` returns: one trained network per modality (eval mode) and the log.

    ``log`` has one dict per epoch: ``epoch``, ``seconds``, and the mean of every loss term over
    the epoch's steps, summed over modalities (``loss``, ``cls``, ``er``, ``cmer``, ``kl``,
    or ``ce_dice`` for the supervised row); with validation data also ``val_loss`` (the row's fit
    term on the untransformed validation slices, unweighted, summed over modalities: the tag
    cross-entropy, or CE + Dice for the supervised row) and ``val_accuracy`` (tag accuracy, mean
    over modalities), both with the running BatchNorm statistics of that moment.
    """

    nets: dict[str, nn.Module]
    config: CAMConfig
    modalities: tuple[str, ...]
    class_names: tuple[str, ...]
    log: list[dict] = field(default_factory=list)

    @property
    def supervised(self) -> bool:
        return self.config.method == "supervised"


def _dataset(data) -> SliceDataset:
    if isinstance(data, SliceDataset):
        dataset = data
    else:
        check_nonempty(len(data), "list of volumes", "train_cam")
        dataset = SliceDataset(list(data))
    check_nonempty(len(dataset), "set of training slices", "train_cam")
    return dataset


def _modality_columns(dataset: SliceDataset, modalities) -> tuple[tuple[str, ...], list[int]]:
    names = tuple(modalities) if modalities is not None else tuple(dataset.modalities)
    missing = [m for m in names if m not in dataset.modalities]
    if missing:
        raise InputError(f"missing modality {missing[0]!r}; the data has {list(dataset.modalities)}")
    return names, [dataset.modalities.index(m) for m in names]


def train_cam(data: list[Volume] | SliceDataset, config: CAMConfig | None = None,
              val: SliceDataset | None = None, **overrides) -> CAMResult:
    """Train one network per modality for one ablation row (see :data:`CAM_METHODS`).

    Args:
        data: training volumes (or a :class:`SliceDataset` of them); CAM rows use only the slice
            tags derived from the masks, ``"supervised"`` uses the masks themselves.
        config: a :class:`CAMConfig`; keyword ``overrides`` replace its fields
            (``train_cam(vols, method="cam", epochs=2)``).
        val: validation slices: when given, every epoch logs ``val_loss`` and ``val_accuracy``
            (the curve that shows whether training has flattened; nothing is chosen from it here).

    Returns:
        :class:`CAMResult` with the networks in eval mode and the per-epoch log. Runs are
        reproducible for a given ``seed`` on a given device and thread count.
    """
    config = dataclasses.replace(config or CAMConfig(), **overrides)
    dataset = _dataset(data)
    modalities, columns = _modality_columns(dataset, config.modalities)
    for name in LOSS_WEIGHTS:  # a per-modality weight must name every modality trained
        for m in modalities:
            config.weight(name, m)
    terms = config.terms
    if (terms["cmer"] or terms["kl"]) and len(modalities) < 2:
        raise InputError(f"method {config.method!r} is cross-modal and needs at least 2 modalities, "
                         f"got {list(modalities)}")
    if config.multilabel and dataset.num_classes < 2:
        raise InputError("multi-label CAMs need at least one foreground class")
    sampler = seed_everything(config.seed)
    device = pick_device(config.device)

    supervised = config.method == "supervised"
    C = dataset.num_classes
    nets = {}
    for m in modalities:
        if supervised:
            nets[m] = UNet(1, C, config.base_width, config.depth, config.norm)
        else:
            nets[m] = CAMNet(1, C - 1 if config.multilabel else 2, config.base_width, config.depth, config.norm,
                             multilabel=config.multilabel, foreground=config.foreground_map)
        nets[m].to(device).train()
    parameters = [p for net in nets.values() for p in net.parameters()]
    optimiser = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    steps = config.steps_per_epoch or max(1, math.ceil(len(dataset) / config.batch_size))
    batches = index_batches(len(dataset), config.batch_size, sampler)
    step_fn = _supervised_step if supervised else _cam_step
    targets = tag_targets(dataset.tags, config.multilabel)
    class_weights = (balanced_class_weights(targets, config.multilabel).to(device)
                     if config.tag_weighting == "balanced" and not supervised else None)
    if val is not None:
        val_columns = _modality_columns(val, modalities)[1]
    warmup_steps = config.regulariser_warmup * steps

    log: list[dict] = []
    bar = tqdm(range(config.epochs), desc=config.method, disable=not config.progress)
    for epoch in bar:
        start = time.perf_counter()
        sums: dict[str, float] = {}
        for step in range(steps):
            batch = dataset.batch(next(batches))
            images = batch["image"][:, columns].to(device)
            # Regulariser weights ramp from 0 to 1 over the warm-up (1 from the start without one).
            done = epoch * steps + step  # steps taken before this one
            ramp = regulariser_ramp(done, warmup_steps)
            for group in optimiser.param_groups:
                group["lr"] = learning_rate_at(config, done, config.epochs * steps)
            losses = step_fn(nets, modalities, images, batch, config, sampler, device,
                             class_weights=class_weights, ramp=ramp)
            optimiser.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimiser.step()
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
        record = {"epoch": epoch + 1, **{k: v / steps for k, v in sums.items()},
                  "seconds": time.perf_counter() - start}
        if val is not None:
            record.update(_validation_curve_point(nets, modalities, val, val_columns, config, device))
        log.append(record)
        bar.set_postfix({k: round(v, 3) for k, v in record.items() if k not in ("epoch", "seconds")})
    if config.recalibrate_norm:
        for m, col in zip(modalities, columns):
            recalibrate_batchnorm(nets[m], dataset.images[:, col:col + 1], device)
    for net in nets.values():
        net.eval()
    return CAMResult(nets, config, modalities, tuple(dataset.class_names), log)


def learning_rate_at(config: CAMConfig, done: int, total: int) -> float:
    """The learning rate of the step after ``done`` of ``total`` steps: ``lr`` (constant), or
    ``lr * (1 + cos(pi * done / total)) / 2`` (cosine: ``lr`` at the first step, near 0 at the last)."""
    if config.lr_schedule == "constant":
        return config.lr
    return config.lr * 0.5 * (1 + math.cos(math.pi * done / total))


def regulariser_ramp(done: int, warmup_steps: int) -> float:
    """Factor of the ER / CMER / KL weights at the step after ``done``: ``(done + 1) / warmup_steps``
    up to 1, so the tag loss alone shapes the first steps; 1 throughout without a warm-up."""
    return min(1.0, (done + 1) / warmup_steps) if warmup_steps else 1.0


@torch.no_grad()
def _validation_curve_point(nets, modalities, val: SliceDataset, columns, config: CAMConfig, device,
                            batch_size: int = 64) -> dict[str, float]:
    """``val_loss`` and ``val_accuracy`` of the networks as they are now (eval mode, then back)."""
    supervised = config.method == "supervised"
    targets = tag_targets(val.tags, config.multilabel)
    truth = (val.tags[:, 1:] > 0).any(dim=1)
    loss, accuracy = 0.0, 0.0
    for m, col in zip(modalities, columns):
        net = nets[m].eval()
        outputs = [net(val.images[s:s + batch_size, col:col + 1].to(device)) for s in range(0, len(val), batch_size)]
        if supervised:
            logits = torch.cat(outputs).cpu()
            loss += float(supervised_loss(logits, val.labels, config.supervised_dice_weight,
                                          config.supervised_class_balance))
            positive = (logits.argmax(1) > 0).flatten(1).any(1)
        else:
            scores = torch.cat([s for s, _ in outputs]).cpu()
            loss += float(classification_loss(scores, scores, targets, config.multilabel))
            positive = net.predict_positive(scores).any(dim=1)
        accuracy += float((positive == truth).float().mean()) / len(modalities)
        net.train()
    return {"val_loss": loss, "val_accuracy": accuracy}


@torch.no_grad()
def recalibrate_batchnorm(net: nn.Module, images: torch.Tensor, device, batch_size: int = 64) -> None:
    """Re-estimate BatchNorm running statistics on untransformed ``images`` ``(N, 1, H, W)``.

    Training batches mix each image with its transformed copy (zero-filled borders, zoom), so the
    running statistics describe a different input distribution than the one evaluated. The CAM
    scores are means over whole maps, so even a small shift of those statistics moves every
    slice's score and flips predicted tags; one pass over the clean training images (cumulative
    average, no gradient, weights unchanged) fixes that.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the pass
    was_training = net.training
    net.train()
    for start in range(0, len(images), batch_size):
        net(images[start:start + batch_size].to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    net.train(was_training)


def train_supervised(data: list[Volume] | SliceDataset, config: CAMConfig | None = None, **overrides) -> CAMResult:
    """The fully supervised upper bound: :func:`train_cam` with ``method="supervised"``."""
    return train_cam(data, config, **{**overrides, "method": "supervised"})


def _cam_step(nets, modalities, images, batch, config: CAMConfig, sampler, device,
              class_weights: torch.Tensor | None = None, ramp: float = 1.0) -> dict[str, torch.Tensor]:
    """Losses of one batch for the CAM rows; ``images`` is ``(B, M, H, W)``; ``class_weights`` of
    the tag loss (``tag_weighting``), ``ramp`` the warm-up factor of the regulariser weights.
    The logged terms include their weights (and the ramp)."""
    terms, B = config.terms, images.shape[0]
    pi = sample_transform(sampler, config.transform_kinds, config.max_shift, config.scale_range)
    valid = pi.valid_mask(*images.shape[-2:], device=device)
    transformed_images = transform_images(pi, images, config.transform_fill)
    targets = tag_targets(batch["tags"], config.multilabel).to(device)
    positive = (batch["tags"][:, 1:] > 0).any(dim=1).to(device)

    scores, t_scores, pi_cams, cams_of_pi, predicted, predicted_on_pi = [], [], [], [], [], []
    for i, m in enumerate(modalities):
        net = nets[m]
        # Both views in one forward pass: half the Python overhead, same arithmetic per view.
        s, maps = net(torch.cat([images[:, i:i + 1], transformed_images[:, i:i + 1]]))
        scores.append(s[:B])
        t_scores.append(s[B:])
        # The regularisers see the foreground CAMs (what becomes the mask) or every class map.
        maps = net.foreground_maps(maps) if config.equivariance_maps == "foreground" else maps
        # ER and CMER compare CAMs as they are thresholded: ReLU + min-max normalised. (Raw maps in
        # CMER also match the arbitrary shape of the negative evidence; that trained worse.)
        cams = normalize_cam(maps)
        pi_cams.append(pi.apply(cams[:B]))
        cams_of_pi.append(cams[B:])
        predicted.append(net.predict_positive(s[:B].detach()).any(dim=1))
        predicted_on_pi.append(net.predict_positive(s[B:].detach()).any(dim=1))

    losses = {"cls": sum(classification_loss(s, ts, targets, config.multilabel, class_weights)
                         for s, ts in zip(scores, t_scores))}
    if terms["er"]:
        losses["er"] = sum(ramp * config.weight("er_weight", m) * equivariance_loss(a, b, positive, valid,
                                                                            config.equivariance_reduction)
                           for m, a, b in zip(modalities, pi_cams, cams_of_pi))
    if terms["cmer"]:
        if config.equivariance_reduction == "reference":
            # As the reference: the partner's prediction on pi(x) selects the slices of the pair
            # pi(M_i(x)) vs M_j(pi(x)), its prediction on x those of the other pair.
            selection = {"predicted_positive": torch.stack(predicted_on_pi),
                         "predicted_positive_original": torch.stack(predicted)}
        else:
            selection = {"predicted_positive": torch.stack(predicted)}
        weights = torch.tensor([ramp * config.weight("cmer_weight", m) for m in modalities], device=device)
        losses["cmer"] = (weights * cross_modal_equivariance_loss(
            torch.stack(pi_cams), torch.stack(cams_of_pi), positive, valid=valid,
            reduction=config.equivariance_reduction, **selection)).sum()
    if terms["kl"]:
        M = len(modalities)
        kl = 0.0
        for i in range(M):
            for j in range(M):
                if i != j:  # both views, averaged over the other modalities
                    kl = kl + ramp * config.weight("kl_weight", modalities[i]) * 0.5 * (
                        class_kl(scores[i], scores[j], config.tau, config.multilabel)
                        + class_kl(t_scores[i], t_scores[j], config.tau, config.multilabel)) / (M - 1)
        losses["kl"] = kl
    losses["loss"] = sum(losses.values())
    return losses


def transform_images(pi: Transform, images: torch.Tensor, fill: str = "background") -> torch.Tensor:
    """``pi(images)`` for ``(B, M, H, W)`` images; pixels the transform uncovers get the slice's
    background value (``fill="background"``: each slice's minimum, the air around the head) or 0.

    Every transform here is linear with zero fill, so ``pi(x - b) + b`` fills with ``b`` exactly.
    """
    if fill == "zero":
        return pi.apply(images)
    background = images.amin(dim=(-2, -1), keepdim=True)
    return pi.apply(images - background) + background


def _supervised_step(nets, modalities, images, batch, config: CAMConfig, sampler, device,
                     **_unused) -> dict[str, torch.Tensor]:
    """Pixel-wise cross-entropy on the full masks, same transform draw as the CAM rows."""
    pi = sample_transform(sampler, config.transform_kinds, config.max_shift, config.scale_range)
    labels = batch["label"].to(device)
    # Augment with the same transform family (labels by nearest neighbour), for a fair bound.
    images_t, labels_t = transform_images(pi, images, config.transform_fill), pi.apply(labels[:, None])[:, 0]
    both = torch.cat([labels, labels_t])
    # Cross-entropy + Dice: with ~1 % tumour pixels, CE alone first learns to predict nothing.
    loss = sum(supervised_loss(nets[m](torch.cat([images[:, i:i + 1], images_t[:, i:i + 1]])), both,
                               config.supervised_dice_weight, config.supervised_class_balance)
               for i, m in enumerate(modalities))
    return {"ce_dice": loss, "loss": loss}


# ----------------------------------------------------------------------------------------------
# Prediction and evaluation


@torch.no_grad()
def predict_slices(result: CAMResult, dataset: SliceDataset, thresholds: dict[str, float] | float | None = None,
                   batch_size: int = 64) -> dict[str, dict[str, torch.Tensor]]:
    """Masks of every slice of ``dataset``, per modality.

    Returns ``{modality: {"labels": (N, H, W) int64, "positive": (N, K) bool, "maps": (N, K, H, W)}}``:
    for CAM rows ``maps`` are the raw foreground CAMs and ``labels`` their thresholded masks
    (needs ``thresholds``, one per modality or one for all; ``None`` skips ``labels``); for the
    supervised row ``labels`` is the arg-max, ``positive`` "mask not empty" and ``maps`` the
    foreground softmax probabilities.
    """
    out = {}
    _, columns = _modality_columns(dataset, result.modalities)
    for m, col in zip(result.modalities, columns):
        net, images = result.nets[m], dataset.images[:, col:col + 1]
        if result.supervised:
            device = next(net.parameters()).device
            logits = torch.cat([net(images[s:s + batch_size].to(device)).cpu()
                                for s in range(0, len(images), batch_size)])
            labels = logits.argmax(1)
            positive = torch.stack([(labels == c).flatten(1).any(1) for c in range(1, logits.shape[1])], 1)
            out[m] = {"labels": labels, "positive": positive, "maps": logits.softmax(1)[:, 1:]}
            continue
        scores, maps = predict_cams(net, images, batch_size)
        entry = {"positive": net.predict_positive(scores), "maps": net.foreground_maps(maps)}
        if thresholds is not None:
            t = thresholds[m] if isinstance(thresholds, dict) else thresholds
            entry["labels"] = cam_to_mask(entry["maps"], entry["positive"], t)
        out[m] = entry
    return out


def learnt_tags(accuracy: float, majority: float) -> bool:
    """Whether a network tags slices better than always answering the majority tag (the two
    numbers of :func:`tag_accuracy`); one that does not has no CAM worth thresholding, whatever its
    Dice. A tolerance of 1e-6 keeps float32 accuracies equal to the majority on the failing side."""
    return accuracy > majority + 1e-6


def tag_accuracy(result: CAMResult, dataset: SliceDataset) -> dict[str, dict[str, float]]:
    """How well each network tells positive from negative slices of ``dataset`` (e.g. its own
    training slices): ``{modality: {"accuracy", "majority"}}``, ``majority`` the accuracy of always
    answering the more frequent tag. A network at or below ``majority`` has not learnt its tags, and
    its CAMs are meaningless (issue: a T2 network predicting no positive slice at all)."""
    positive = (dataset.tags[:, 1:] > 0).any(dim=1)
    majority = float(max(positive.float().mean(), 1 - positive.float().mean()))
    predictions = predict_slices(result, dataset, None)
    return {m: {"accuracy": float((entry["positive"].any(dim=1) == positive).float().mean()), "majority": majority}
            for m, entry in predictions.items()}


@torch.no_grad()
def measure_equivariance(result: CAMResult, dataset: SliceDataset, transforms: dict, batch_size: int = 64) -> dict:
    """How far each trained network is from equivariant: ER on the positive slices of ``dataset``.

    For every named :class:`mixseg_lite.transforms.Transform`, the mean over tumour slices of
    :func:`mixseg_lite.losses.cam.equivariance_loss` between ``pi(CAM(x))`` and ``CAM(pi(x))``
    (normalised foreground CAMs, inside the transform's valid pixels), networks in eval mode.
    Returns ``{modality: {transform_name: er}}``; 0 means perfectly equivariant.
    """
    if result.supervised:
        raise InputError("measure_equivariance needs CAM networks, not the supervised row")
    positive = (dataset.tags[:, 1:] > 0).any(dim=1)
    if not positive.any():
        raise InputError("measure_equivariance: the dataset has no tumour slice")
    _, columns = _modality_columns(dataset, result.modalities)
    out = {}
    for m, col in zip(result.modalities, columns):
        net, images = result.nets[m], dataset.images[positive][:, col:col + 1]
        cams = normalize_cam(net.foreground_maps(predict_cams(net, images, batch_size)[1]))
        out[m] = {}
        for name, pi in transforms.items():
            transformed = transform_images(pi, images, result.config.transform_fill)
            cams_of_pi = normalize_cam(net.foreground_maps(predict_cams(net, transformed, batch_size)[1]))
            valid = pi.valid_mask(*images.shape[-2:])
            # The mean squared difference per valid pixel of each slice (whatever the training reduction).
            er = equivariance_loss(pi.apply(cams), cams_of_pi, torch.ones(len(images), dtype=torch.bool), valid,
                                   reduction="per_selected_slice")
            out[m][name] = float(er)
    return out


def _class_labels(result: CAMResult, dataset: SliceDataset) -> torch.Tensor:
    """Targets in the label space of the predictions: softmax CAMs predict 'tumour' as one class."""
    if result.supervised or result.config.multilabel:
        return dataset.labels
    return (dataset.labels > 0).long()


def choose_thresholds(result: CAMResult, val: SliceDataset, thresholds=THRESHOLDS) -> dict[str, dict]:
    """Per modality, the CAM threshold with the best mean 3-D Dice on ``val``.

    Returns ``{modality: {"threshold": t, "sweep": {t: dice_3d}}}``; the supervised row needs no
    threshold (``{"threshold": None, "sweep": {}}``).
    """
    if result.supervised:
        return {m: {"threshold": None, "sweep": {}} for m in result.modalities}
    predictions = predict_slices(result, val)
    labels = _class_labels(result, val)
    out = {}
    for m, p in predictions.items():
        best, sweep = choose_threshold(p["maps"], p["positive"], labels, val.volume_index, thresholds)
        out[m] = {"threshold": best, "sweep": sweep}
    return out


def evaluate_cam(result: CAMResult, test: SliceDataset,
                 thresholds: dict[str, float] | float | None = None) -> list[dict]:
    """One row per modality: ``{"method", "modality", "threshold", "dice_3d", "dice_pos",
    "dice_slice_avg", "accuracy"}`` (see :mod:`mixseg_lite.evaluation`)."""
    predictions = predict_slices(result, test, thresholds)
    labels = _class_labels(result, test)
    num_classes = len(result.class_names) if result.supervised or result.config.multilabel else 2
    rows = []
    for m, p in predictions.items():
        if "labels" not in p:
            raise InputError(f"evaluate_cam: no CAM threshold for modality {m!r}; pass thresholds")
        scores = evaluate_tag_segmentation(p["labels"], labels, test.volume_index, p["positive"], num_classes)
        t = None if result.supervised else (thresholds[m] if isinstance(thresholds, dict) else thresholds)
        rows.append({"method": result.config.method, "modality": m, "threshold": t,
                     **{k: v for k, v in scores.items() if k != "per_class"}})
    return rows


def empty_baseline(test: SliceDataset, binary: bool = True) -> dict:
    """The empty-mask baseline row, scored by the very same function as the methods."""
    labels = (test.labels > 0).long() if binary else test.labels
    pred = torch.zeros_like(labels)
    num_classes = 2 if binary else len(test.class_names)
    scores = evaluate_tag_segmentation(pred, labels, test.volume_index, None, num_classes)
    return {"method": "empty", "modality": "-", "threshold": None,
            **{k: v for k, v in scores.items() if k != "per_class"}}


def tag_rates(result: CAMResult, dataset: SliceDataset) -> dict[str, dict[str, float]]:
    """How each network tags the slices of ``dataset``, beside the constant answer "no tumour".

    Returns ``{modality: {"accuracy", "all_negative", "predicted_positive", "positive",
    "sensitivity", "specificity"}}``: ``all_negative`` is the accuracy of answering "no tumour"
    for every slice (the empty-mask baseline's tag accuracy, ``1 - positive``);
    ``predicted_positive`` and ``positive`` the fractions of slices predicted and truly tagged
    positive; ``sensitivity`` / ``specificity`` the accuracy on the positive / negative slices (NaN
    when there are none). A network below ``all_negative`` calls more slices wrongly than saying
    "no tumour" everywhere would, and the two fractions say in which direction it errs.
    """
    positive = (dataset.tags[:, 1:] > 0).any(dim=1)
    predictions = predict_slices(result, dataset, None)
    out = {}
    for m, entry in predictions.items():
        predicted = entry["positive"].any(dim=1)
        right = predicted == positive
        out[m] = {"accuracy": float(right.float().mean()), "all_negative": float((~positive).float().mean()),
                  "predicted_positive": float(predicted.float().mean()), "positive": float(positive.float().mean()),
                  "sensitivity": float(right[positive].float().mean()) if positive.any() else math.nan,
                  "specificity": float(right[~positive].float().mean()) if (~positive).any() else math.nan}
    return out


# ----------------------------------------------------------------------------------------------
# Flat CAMs (the trivial minimiser of ER and CMER) and admissibility

FLAT_CAM_LEVEL = float(THRESHOLDS[0])
"""A slice's foreground CAM is *flat* when its normalised map (:func:`mixseg_lite.cam.normalize_cam`:
ReLU, then per-slice min-max) stays below this level at every pixel: 0.05, the lowest threshold
:func:`choose_thresholds` may pick. Such a slice gets an empty mask at every candidate threshold,
and a flat map is (within ``FLAT_CAM_LEVEL ** 2`` per pixel) the map that is 0 everywhere, which
makes ER and CMER 0 whatever the image: their trivial minimiser. It arises when the raw foreground
map is constant or <= 0 everywhere (the ReLU zeroes it) while the slice is still predicted positive
(the absent class's map is lower still). With ``normalize_cam``'s ``eps = 1e-5`` the normalised
peak of a map whose ReLU'd range is ``r`` is ``r / (r + 1e-5)``: flat means ``r`` below about
5e-7, in practice exactly 0. The level is on the normalised map, so it does not depend on the
network's scale, and any map with a real peak (normalised maximum close to 1) is never flat."""

FLAT_CAM_BOUND = 0.5
"""Admissibility (:func:`cam_admissible`): at most this share of a network's predicted-positive
(training) slices may have a flat CAM. Above it, most of the slices the network calls positive
get the empty mask whatever the threshold, so its Dice measures how often its maps collapsed,
not how good they are. The failures this rule targets are flat on (nearly) every such slice
(fraction near 1); healthy networks are near 0; the bound sits halfway, so that a few flat maps
on marginal slices (the tumour's thin ends) do not reject a network, and a verdict does not hinge
on its exact value (the fraction is recorded, so any other bound can be re-checked)."""


@torch.no_grad()
def flat_cam_fraction(result: CAMResult, dataset: SliceDataset,
                      level: float = FLAT_CAM_LEVEL) -> dict[str, dict[str, float]]:
    """Per modality, the share of the slices of ``dataset`` that the network predicts positive whose
    foreground CAM is flat (its normalised map below ``level`` everywhere, :data:`FLAT_CAM_LEVEL`).

    Returns ``{modality: {"flat_fraction", "n_predicted_positive"}}``; with several foreground
    classes (multi-label) the fraction is over the (slice, class) pairs predicted present.
    ``flat_fraction`` is NaN when the network predicts no slice positive (it has no map to
    threshold at all; :func:`cam_admissible` rejects it).
    """
    if result.supervised:
        raise InputError("flat_cam_fraction needs CAM networks, not the supervised row")
    if not is_number(level) or not 0 < level <= 1:
        raise InputError(f"flat_cam_fraction: level must be in (0, 1] (normalised CAMs), got {level!r}")
    out = {}
    for m, entry in predict_slices(result, dataset, None).items():
        positive = entry["positive"]
        peak = normalize_cam(entry["maps"]).amax(dim=(2, 3))  # (N, K) normalised maximum per map
        n = int(positive.sum())
        out[m] = {"flat_fraction": int((peak[positive] < level).sum()) / n if n else math.nan,
                  "n_predicted_positive": n}
    return out


def cam_admissible(accuracy: float, majority: float, flat_fraction: float | None = None,
                   bound: float | None = FLAT_CAM_BOUND) -> bool:
    """Whether a trained network may stand in a comparison of the CAM ablation: it learnt its tags
    (:func:`learnt_tags`) and, unless ``flat_fraction`` is None (not measured, e.g. the supervised
    row) or ``bound`` is None (check off), at most ``bound`` of its predicted-positive slices have a
    flat CAM (:func:`flat_cam_fraction`); a NaN fraction (no slice predicted positive) fails."""
    if not learnt_tags(float(accuracy), float(majority)):
        return False
    if flat_fraction is None or bound is None:
        return True
    flat_fraction = float(flat_fraction)
    return math.isfinite(flat_fraction) and flat_fraction <= bound


@torch.no_grad()
def validation_dice_3d(result: CAMResult, val: SliceDataset) -> dict[str, float]:
    """Per modality, the 3-D Dice of ``val`` that a run is chosen by: at the CAM threshold chosen on
    ``val`` itself (:func:`choose_thresholds`), or the supervised row's arg-max masks. Validation
    data only. The networks are measured in eval mode and left in the mode they were in, so this
    can run between epochs (the convergence curves of ``experiments/cam_ablation.py``)."""
    modes = {m: net.training for m, net in result.nets.items()}
    for net in result.nets.values():
        net.eval()
    try:
        if result.supervised:
            return {row["modality"]: row["dice_3d"] for row in evaluate_cam(result, val, None)}
        return {m: c["sweep"][c["threshold"]] for m, c in choose_thresholds(result, val).items()}
    finally:
        for m, net in result.nets.items():
            net.train(modes[m])


def flattening_epoch(values, tolerance: float = 0.01, window: int = 3) -> int | None:
    """The epoch (1-based) from which a validation curve no longer rises: the first epoch whose
    running mean over the last ``window`` epochs no later running mean exceeds by more than
    ``tolerance``. For a rising score (validation Dice, tag accuracy); pass ``-loss`` for a loss.
    The running mean smooths the epoch-to-epoch noise of a small validation set and lags a plateau
    by up to ``window - 1`` epochs (on the side of a longer budget); 0.01 is half the smallest Dice
    difference a verdict resolves (``mixseg_lite.stats.DELTAS``). NaN values (no
    validation volume with a tumour) are skipped; None when every value is NaN."""
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise InputError(f"flattening_epoch: window must be an integer >= 1, got {window!r}")
    if not is_number(tolerance) or tolerance < 0:
        raise InputError(f"flattening_epoch: tolerance must be a number >= 0, got {tolerance!r}")
    values = [float(v) for v in values]
    smooth = []
    for end in range(1, len(values) + 1):
        recent = [v for v in values[max(0, end - window):end] if math.isfinite(v)]
        smooth.append(sum(recent) / len(recent) if recent else math.nan)
    finite = [i for i, v in enumerate(smooth) if math.isfinite(v)]
    if not finite:
        return None
    for i in finite:
        if all(smooth[j] <= smooth[i] + tolerance for j in finite if j > i):
            return i + 1
    return finite[-1] + 1  # unreachable: the last finite epoch always qualifies
