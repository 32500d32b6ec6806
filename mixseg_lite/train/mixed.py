"""Training with mixed supervision: one function for every ablation row of REFERENCE A.

Each step draws a batch from the fully labelled set ``D_s`` and one from the weakly labelled
set ``D_w``, runs them through the shared encoder together, and combines::

    L = L_s(teacher on D_s full masks)
      + L_w(student on the weak masks of D_s and D_w)
      + lambda_kd  * KL(p_teacher.detach() || p_student)     on D_s and D_w
      + lambda_ent * H(p_student)                             on D_w (and D_s if entropy_on_full)
      [ + lambda_ent * CE(p_student, argmax p_student)        instead of H, for "pseudo" ]

Ablation rows (``METHODS``): ``lower_bound`` (teacher on D_s only), ``weak_only`` (student with
L_w only), ``kl``, ``ent``, ``kl_ent`` (the method), ``pseudo`` (KL + pseudo-masks) and
``upper_bound`` (teacher on all images with full masks).
"""

from __future__ import annotations

import dataclasses
import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mixseg_lite.data.slices import SliceDataset
from mixseg_lite.data.volume import Volume
from mixseg_lite.errors import InputError, check_choice, check_nonempty
from mixseg_lite.losses.mixed import (entropy_loss, kl_distillation, partial_cross_entropy,
                                      pseudo_mask_loss, supervised_loss)
from mixseg_lite.metrics import evaluate_volumes, summarize
from mixseg_lite.models import DualBranchUNet
from mixseg_lite.runtime import pick_device, seed_everything

# Which terms each ablation row switches on; the weights themselves live in MixedConfig.
METHODS: dict[str, dict] = {
    "lower_bound": {"student": False, "kd": False, "ent": False, "pseudo": False, "all_full": False},
    "weak_only":   {"student": True, "kd": False, "ent": False, "pseudo": False, "all_full": False},
    "kl":          {"student": True, "kd": True, "ent": False, "pseudo": False, "all_full": False},
    "ent":         {"student": True, "kd": False, "ent": True, "pseudo": False, "all_full": False},
    "kl_ent":      {"student": True, "kd": True, "ent": True, "pseudo": False, "all_full": False},
    "pseudo":      {"student": True, "kd": True, "ent": False, "pseudo": True, "all_full": False},
    "upper_bound": {"student": False, "kd": False, "ent": False, "pseudo": False, "all_full": True},
}


@dataclass
class MixedConfig:
    """Hyper-parameters of one mixed-supervision run. Values marked [choose] are our choices
    (the paper did not publish them); every notebook states and exposes them."""

    method: str = "kl_ent"
    epochs: int = 10
    steps_per_epoch: int | None = None  # default: enough steps to see every D_w slice once
    batch_size: int = 8                 # slices per group (D_s and D_w) per step
    lr: float = 5e-3
    weight_decay: float = 1e-4
    lambda_kd: float = 10.0             # [choose]: KL must outweigh the foreground-only seed loss
    lambda_ent: float = 0.1             # [choose]; also weights the pseudo-mask term
    temperature: float = 1.0            # [choose]
    pseudo_threshold: float | None = None
    ramp_up_epochs: int = 5             # [choose] entropy/pseudo weight grows linearly over these epochs
    entropy_on_full: bool = False
    dice_weight: float = 1.0            # L_s = CE + dice_weight * Dice; Dice keeps the small RV from being ignored
    class_balance: float = 0.5          # CE class weights (1/frequency)**class_balance; 0 is plain CE
    weak_kind: str = "seeds"
    base_width: int = 8
    depth: int = 3
    norm: str = "group"                 # [choose]: BatchNorm running statistics lag the shared encoder
    seed: int = 0
    device: str = "auto"
    amp: bool = False                   # bfloat16 autocast on CPU, float16 + GradScaler on CUDA
    channels_last: bool = True          # ~30% faster convolutions on CPU as well as GPU
    compile: bool = False
    select_best: bool = True            # return the weights of the best validation epoch
    progress: bool = True

    def __post_init__(self) -> None:
        check_choice(self.method, METHODS, "method")
        if self.epochs < 0 or self.batch_size < 1:
            raise InputError(f"epochs must be >= 0 and batch_size >= 1, got {self.epochs}, {self.batch_size}")
        if self.class_balance < 0 or self.dice_weight < 0:
            raise InputError(f"class_balance and dice_weight must be >= 0, got {self.class_balance}, "
                             f"{self.dice_weight}")

    @property
    def terms(self) -> dict:
        return METHODS[self.method]


@dataclass
class TrainResult:
    """What :func:`train_mixed` returns: the model, the per-epoch log and the final evaluation."""

    model: DualBranchUNet
    config: MixedConfig
    log: list[dict] = field(default_factory=list)
    branches: tuple[str, ...] = ("teacher", "student")


def _batch_stream(n: int, batch_size: int, seed: int, stream: int, skip: int = 0):
    """Endless index batches (shuffled passes over ``range(n)``), the first ``skip`` dropped."""
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, stream]).generate_state(1)[0]))

    def batches():
        while True:
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, batch_size):
                yield order[start:start + batch_size]

    it = batches()
    for _ in range(skip):
        next(it)
    return it


def reported_branches(method: str) -> tuple[str, ...]:
    """Branches worth reporting: the bounds never train the student."""
    return ("teacher", "student") if METHODS[method]["student"] else ("teacher",)


def train_mixed(full: list[Volume], weak: list[Volume], val: list[Volume] | None = None,
                config: MixedConfig | None = None, checkpoint: str | Path | None = None,
                resume: bool = False, **overrides) -> TrainResult:
    """Train a :class:`DualBranchUNet` for one ablation row.

    Args:
        full: volumes of ``D_s`` (full masks).
        weak: volumes of ``D_w`` (their full masks are only used to derive weak labels, except
            for ``upper_bound``, which trains on them as full masks).
        val: volumes evaluated after every epoch (mean foreground Dice per branch in the log); with
            ``config.select_best`` the returned model has the weights of the best epoch on them.
        config: a :class:`MixedConfig`; keyword ``overrides`` replace its fields.
        checkpoint: file written atomically after every epoch (model, optimiser, batch counts, log,
            best weights so far).
        resume: continue from ``checkpoint`` if it exists; the result equals an uninterrupted run.

    Returns:
        :class:`TrainResult` with the trained model (in eval mode) and the per-epoch log.
    """
    config = dataclasses.replace(config or MixedConfig(), **overrides)
    check_nonempty(len(full), "fully labelled set D_s", "train_mixed")
    terms = config.terms
    if (terms["student"] or terms["all_full"]) and not weak:
        raise InputError(f"method {config.method!r} needs weakly labelled volumes (D_w is empty)")
    seed_everything(config.seed)
    device = pick_device(config.device)

    full_ds = SliceDataset(full, weak_kind=config.weak_kind, weak_seed=config.seed)
    # The upper bound draws from D_w too, with its full masks: same images per step as the method.
    uses_weak_set = terms["student"] or terms["all_full"]
    weak_ds = SliceDataset(weak, weak_kind=config.weak_kind, weak_seed=config.seed + 1) if uses_weak_set else None
    model = DualBranchUNet(len(full_ds.modalities), full_ds.num_classes, config.base_width,
                           config.depth, config.norm).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda")
    step_model = torch.compile(model) if config.compile else model

    # Every ablation row takes the same number of steps, sized by D_w, so rows differ only in
    # their losses, not in how long they trained.
    n_main = sum(v.num_slices for v in weak) or len(full_ds)
    steps = config.steps_per_epoch or max(1, math.ceil(n_main / config.batch_size))
    log: list[dict] = []
    start_epoch = 0
    best_score, best_state = -math.inf, None
    full_cursor = weak_cursor = 0  # batches drawn so far from each stream
    if resume and checkpoint is not None and Path(checkpoint).exists():
        state = _load_checkpoint(checkpoint, device)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        torch.set_rng_state(state["torch_rng"])
        log, start_epoch = state["log"], state["epoch"]
        best_score, best_state = state["best_score"], state["best_state"]
        full_cursor, weak_cursor = state["full_cursor"], state["weak_cursor"]
    # Each stream has its own generator, so a resumed run replays exactly the same batches.
    full_batches = _batch_stream(len(full_ds), config.batch_size, config.seed, 0, full_cursor)
    weak_batches = (_batch_stream(len(weak_ds), config.batch_size, config.seed, 1, weak_cursor)
                    if weak_ds is not None else None)

    autocast = _autocast(device, config.amp)
    bar = tqdm(range(start_epoch, config.epochs), desc=f"{config.method}", disable=not config.progress,
               initial=start_epoch, total=config.epochs)
    for epoch in bar:
        model.train()
        # Entropy sharpens whatever the student predicts, so it waits until KL has made that sensible.
        confidence_weight = config.lambda_ent * min(1.0, epoch / config.ramp_up_epochs) if config.ramp_up_epochs else config.lambda_ent
        sums: dict[str, float] = {}
        for _ in range(steps):
            full_idx = next(full_batches)
            full_cursor += 1
            batch_s = full_ds.batch(full_idx)
            images, n_s = batch_s["image"], len(full_idx)
            if weak_ds is not None:
                weak_idx = next(weak_batches)
                weak_cursor += 1
                batch_w = weak_ds.batch(weak_idx)
                images = torch.cat([images, batch_w["image"]])
            images = _to_device(images, device, config.channels_last)
            with autocast:
                if terms["student"]:
                    teacher, student = step_model(images)
                else:
                    teacher = model.teacher_logits(images)
                if terms["all_full"]:  # every image of the step has its full mask
                    supervised, full_labels = teacher, torch.cat([batch_s["label"], batch_w["label"]])
                else:
                    supervised, full_labels = teacher[:n_s], batch_s["label"]
                losses = {"sup": supervised_loss(supervised.float(), _to_device(full_labels, device),
                                                 config.dice_weight, config.class_balance)}
                if terms["student"]:
                    weak_targets = _to_device(torch.cat([batch_s["weak"], batch_w["weak"]]), device)
                    student = student.float()
                    losses["weak"] = partial_cross_entropy(student, weak_targets)
                    unlabelled_part = student if config.entropy_on_full else student[n_s:]
                    if terms["kd"]:
                        losses["kd"] = config.lambda_kd * kl_distillation(student, teacher.float(), config.temperature)
                    if terms["ent"]:
                        losses["ent"] = confidence_weight * entropy_loss(unlabelled_part)
                    if terms["pseudo"]:
                        losses["pseudo"] = confidence_weight * pseudo_mask_loss(unlabelled_part, config.pseudo_threshold)
                total = sum(losses.values())
            optimiser.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.step(optimiser)
            scaler.update()
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
        record = {"epoch": epoch + 1, **{f"loss_{k}": v / steps for k, v in sums.items()}}
        if val:
            for branch, dice in validation_dice(model, val, device, config.method).items():
                record[f"val_dice_{branch}"] = dice
        log.append(record)
        score = record.get(f"val_dice_{reported_branches(config.method)[-1]}")
        if config.select_best and score is not None and score > best_score:
            best_score, best_state = score, {k: v.detach().clone() for k, v in model.state_dict().items()}
        bar.set_postfix({k: round(v, 3) for k, v in record.items() if k != "epoch"})
        if checkpoint is not None:
            _save_checkpoint(checkpoint, model, optimiser, log, epoch + 1, full_cursor, weak_cursor,
                             best_score, best_state)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, config, log, reported_branches(config.method))


def _autocast(device: torch.device, enabled: bool):
    if not enabled:
        return nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _to_device(tensor: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    if device.type == "cuda":
        tensor = tensor.pin_memory().to(device, non_blocking=True)
    else:
        tensor = tensor.to(device)
    return tensor.contiguous(memory_format=torch.channels_last) if channels_last else tensor


def _save_checkpoint(path, model, optimiser, log, epoch, full_cursor, weak_cursor,
                     best_score, best_state) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "log": log, "epoch": epoch, "full_cursor": full_cursor, "weak_cursor": weak_cursor,
                "best_score": best_score, "best_state": best_state}, tmp)
    tmp.replace(path)  # atomic: an interrupted save never leaves a half-written checkpoint


def _load_checkpoint(path, device) -> dict:
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise InputError(f"{path}: cannot read checkpoint ({type(error).__name__}: {error}); "
                         "delete it or pass resume=False to start afresh") from error
    missing = {"model", "optimiser", "log", "epoch", "full_cursor", "weak_cursor"} - set(state)
    if missing:
        raise InputError(f"{path}: not a mixseg-lite training checkpoint (missing {sorted(missing)})")
    return state


@torch.no_grad()
def predict_volumes(model: DualBranchUNet, volumes: list[Volume], device: torch.device | str | None = None,
                    batch_size: int = 32) -> dict[str, list[np.ndarray]]:
    """Argmax predictions of both branches, restacked into ``(Z, H, W)`` volumes.

    Returns ``{"teacher": [...], "student": [...]}``, one int64 array per volume.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: dict[str, list[np.ndarray]] = {"teacher": [], "student": []}
    for volume in volumes:
        slices = torch.from_numpy(np.ascontiguousarray(volume.image.transpose(1, 0, 2, 3)))
        preds = {"teacher": [], "student": []}
        for start in range(0, len(slices), batch_size):
            teacher, student = model(slices[start:start + batch_size].to(device))
            preds["teacher"].append(teacher.argmax(1).cpu())
            preds["student"].append(student.argmax(1).cpu())
        for branch in out:
            out[branch].append(torch.cat(preds[branch]).numpy())
    model.train(was_training)
    return out


def validation_dice(model: DualBranchUNet, volumes: list[Volume], device, method: str) -> dict[str, float]:
    """Mean foreground Dice over volumes for each reported branch."""
    predictions = predict_volumes(model, volumes, device)
    return {branch: summarize(evaluate_volumes(predictions[branch], volumes))["mean"]["dice"]["mean"]
            for branch in reported_branches(method)}


def evaluate_mixed(result: TrainResult, volumes: list[Volume]) -> list[dict]:
    """Per-branch rows ``{"method", "branch", "dice", "dice_std", "hd95_mm", "hd95_std", "per_class"}``.

    Dice and HD95 (mm) are computed per 3-D volume and foreground class, averaged over classes
    per volume, then mean and std over volumes.
    """
    predictions = predict_volumes(result.model, volumes)
    rows = []
    for branch in result.branches:
        summary = summarize(evaluate_volumes(predictions[branch], volumes))
        rows.append({"method": result.config.method, "branch": branch,
                     "dice": summary["mean"]["dice"]["mean"], "dice_std": summary["mean"]["dice"]["std"],
                     "hd95_mm": summary["mean"]["hd95_mm"]["mean"], "hd95_std": summary["mean"]["hd95_mm"]["std"],
                     "per_class": {c: {m: s["mean"] for m, s in v.items()} for c, v in summary["per_class"].items()}})
    return rows


def run_mixed_ablation(methods: list[str], full: list[Volume], weak: list[Volume], test: list[Volume],
                       config: MixedConfig | None = None, val: list[Volume] | None = None,
                       **overrides) -> tuple[list[dict], dict[str, TrainResult]]:
    """Train one model per ablation row with otherwise identical settings and evaluate it on ``test``.

    Returns the result rows of :func:`evaluate_mixed` for every method (teacher and student
    branches where the student is trained) and the :class:`TrainResult` of each method.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise InputError(f"unknown methods {unknown}; choose from {list(METHODS)}")
    rows, results = [], {}
    for method in methods:
        results[method] = train_mixed(full, weak, val, config, method=method, **overrides)
        rows += evaluate_mixed(results[method], test)
    return rows, results
