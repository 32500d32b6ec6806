"""Full training runs: train one ablation row, keep checkpoints, evaluate, write results.

The driver behind notebook 04 and the ``configs/*.yaml`` files (the data come from
:func:`mixseg_lite.data.datasets.load_dataset`):

* :func:`run_experiment` trains one method with per-epoch validation, keeps ``last.pt`` (every
  epoch) and ``best.pt`` (best validation Dice of the reported branch) in ``checkpoint_dir``,
  resumes after an interruption, evaluates the best checkpoint on the test split and writes
  ``metrics.json``, ``training_curves.png`` and ``predictions.png`` to ``output_dir``.

Mixed-supervision rows (REFERENCE A, :data:`mixseg_lite.train.mixed.METHODS`) are trained by one
call of :func:`~mixseg_lite.train.mixed.train_mixed` with ``checkpoint=last.pt, resume=True``: it
validates and checkpoints every epoch, keeps the best validation weights, and resumes exactly, so a
run interrupted after epoch ``k`` and restarted ends with the same log and weights as an
uninterrupted one. Tag-supervised CAM rows (REFERENCE B, :data:`mixseg_lite.train.cam.CAM_METHODS`)
are trained by :func:`~mixseg_lite.train.cam.train_cam`, which has no per-epoch validation or
checkpoints: their ``best.pt`` is the final model, and an unfinished CAM run starts over.

Checkpoint files (``checkpoint_dir``, default ``output_dir/checkpoints``):

* ``run.json``: the settings that must not change within one run (method, model, optimiser,
  losses, seed, the case ids of every split). Resuming with different settings raises
  :class:`~mixseg_lite.errors.InputError`; ``epochs``, ``device``, ``amp``, ``channels_last`` and
  ``compile`` may change (train 10 epochs, then resume to 20 on a GPU).
* ``last.pt``: written atomically by ``train_mixed`` after every epoch (model, optimiser, batch
  counts, log, best weights so far). A missing one means a fresh start; an unreadable one raises
  ``InputError`` rather than silently discarding hours of training (delete it, or pass
  ``resume=False``).
* ``best.pt``: written when training ends: the weights of the best validation epoch (the last
  epoch without validation data) with ``epoch``, ``val_dice`` and ``selection`` (the log key that
  chose it), loadable with ``torch.load(..., weights_only=True)``. These are the weights
  evaluated on the test split.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mixseg_lite.data.datasets import SPLIT_GROUPS
from mixseg_lite.data.slices import SliceDataset
from mixseg_lite.data.volume import Volume
from mixseg_lite.errors import InputError
from mixseg_lite.evaluation import empty_prediction, volume_dice_scores
from mixseg_lite.metrics import evaluate_volumes, summarize_per_volume
from mixseg_lite.models import DualBranchUNet
from mixseg_lite.results import write_metrics
from mixseg_lite.train import cam as _cam
from mixseg_lite.train.cam import CAM_METHODS
from mixseg_lite.train.mixed import (METHODS, MixedConfig, TrainResult, evaluate_mixed, predict_volumes, train_mixed,
                                    uses_weak_images)

CHECKPOINT_NAMES = {"last": "last.pt", "best": "best.pt", "run": "run.json"}
# Settings that may change between an interrupted run and its resumption.
_RESUMABLE_CHANGES = ("epochs", "progress", "device", "amp", "channels_last", "compile")
_LAST_KEYS = ("model", "optimiser", "log", "epoch")


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` returns.

    ``rows`` are the test rows written to ``metrics.json``; ``log`` is the whole per-epoch
    training log (also the epochs of earlier, interrupted calls); ``start_epoch`` the number of
    epochs already done when this call began (0 for a fresh run); ``model`` the evaluated
    (best) model, a :class:`DualBranchUNet` or, for CAM rows, ``{modality: network}``;
    ``files`` the paths written; ``train_seconds`` the wall time of the training done here.
    For CAM rows ``best_epoch`` is the last epoch (no per-epoch validation) and ``thresholds``
    the CAM thresholds chosen on the validation split.
    """

    method: str
    rows: list[dict]
    log: list[dict]
    best_epoch: int | None
    best_val_dice: float | None
    start_epoch: int
    model: object
    config: object
    files: dict[str, Path] = field(default_factory=dict)
    train_seconds: float = 0.0
    thresholds: dict | float | None = None  # CAM rows: the CAM threshold of each modality
    speed: dict | None = None  # mixed rows: memory format and autocast as resolved, with why (TrainResult.speed)


def supported_methods() -> list[str]:
    """Every method :func:`run_experiment` can train."""
    return list(METHODS) + list(CAM_METHODS)


def reported_branch(method: str) -> str:
    """The branch whose validation Dice chooses ``best.pt``: the student where it is trained."""
    return "student" if METHODS[method]["student"] else "teacher"


def run_experiment(splits: dict[str, list[Volume]], method: str = "kl_ent",
                   output_dir: str | os.PathLike = "outputs/experiment", *,
                   checkpoint_dir: str | os.PathLike | None = None, resume: bool = True, config=None,
                   params: dict | None = None, figures: bool = True, progress: bool = True,
                   **overrides) -> ExperimentResult:
    """Train ``method`` on ``splits``, validate every epoch, keep checkpoints, evaluate on ``test``.

    Args:
        splits: ``{"full", "weak", "val", "test"}`` volumes, e.g. from :func:`load_dataset`;
            ``full`` and ``test`` must not be empty; without ``val`` the last epoch is the best.
        method: a row of :data:`~mixseg_lite.train.mixed.METHODS` (REFERENCE A) or of
            :data:`~mixseg_lite.train.cam.CAM_METHODS` (REFERENCE B); see :func:`supported_methods`.
        output_dir: receives ``metrics.json``, ``training_curves.png``, ``predictions.png``.
        checkpoint_dir: ``last.pt``, ``best.pt``, ``run.json``; default ``output_dir/checkpoints``.
        resume: continue from ``last.pt`` when it exists (a missing one starts afresh; a corrupt
            one, or one from different settings, raises :class:`InputError`); ``False`` deletes
            the checkpoints and starts afresh. A finished run is evaluated without training.
        config: a :class:`MixedConfig` (or ``CAMConfig`` for CAM rows); ``overrides`` replace its
            fields (``epochs=20, lr=1e-3, base_width=64, depth=5, amp=True, ...``). Overrides the
            chosen family does not know are dropped when ``None`` or ``False`` (they mean "off"
            or "library default"), and ``weak_kind`` is dropped for CAM rows (their weak labels
            are image tags); any other unknown option raises :class:`InputError`.
        params: extra entries for ``metrics.json``'s ``params`` (e.g. the notebook's parameters).
        figures: write the two PNG figures.
        progress: show a progress bar over epochs.

    Returns:
        :class:`ExperimentResult`. ``metrics.json`` rows are
        ``{"method", "branch", "dice", "dice_std", "hd95_mm", "hd95_std"}`` per reported branch
        (for CAM rows ``branch`` is the modality, plus the empty-mask baseline row).
    """
    if method not in METHODS and method not in CAM_METHODS:
        hint = "" if CAM_METHODS else " (REFERENCE B rows need mixseg_lite.train.cam, which is not installed)"
        raise InputError(f"unknown method {method!r}; run_experiment supports {supported_methods()}{hint}")
    splits = _check_splits(splits, needs_weak=method in METHODS and uses_weak_images(method))
    output_dir = Path(output_dir)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else output_dir / "checkpoints"
    paths = {key: checkpoint_dir / filename for key, filename in CHECKPOINT_NAMES.items()}
    if method in METHODS:
        result = _run_mixed(splits, method, paths, resume, config, progress, overrides)
    else:
        result = _run_cam(splits, method, paths, resume, config, progress, overrides)
    result.files.update({"last": paths["last"], "best": paths["best"]})
    if figures:
        result.files["curves"] = _save_curves(result, output_dir / "training_curves.png")
        result.files["predictions"] = _save_predictions(result, splits["test"], output_dir / "predictions.png")
    run_params = {**(params or {}), "method": method, "config": dataclasses.asdict(result.config),
                  "best_epoch": result.best_epoch, "best_val_dice": result.best_val_dice,
                  "epochs_done": len(result.log), "checkpoint": "best", "speed": result.speed}
    result.files["metrics"] = write_metrics(output_dir, result.rows, run_params)
    return result


def _check_splits(splits, needs_weak: bool) -> dict[str, list[Volume]]:
    if not isinstance(splits, dict):
        raise InputError(f"splits must be a dict of volume lists (from load_dataset), got {type(splits).__name__}")
    unknown = sorted(set(splits) - set(SPLIT_GROUPS))
    if unknown:
        raise InputError(f"splits has unknown groups {unknown}; use {SPLIT_GROUPS}")
    splits = {g: list(splits.get(g) or []) for g in SPLIT_GROUPS}
    for group in ("full", "test") + (("weak",) if needs_weak else ()):
        if not splits[group]:
            raise InputError(f"splits[{group!r}] is empty; the experiment needs {group} volumes")
    return splits


def _config_for(cls, config, method: str, overrides: dict, cam: bool):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = {k: v for k, v in overrides.items() if k not in names}
    bad = {k: v for k, v in unknown.items() if v is not None and v is not False and not (cam and k == "weak_kind")}
    if bad:
        family = "CAM (train_cam)" if cam else "mixed-supervision (train_mixed)"
        raise InputError(f"method {method!r}: option(s) {bad} are not used by the {family} training; "
                         f"its options are {sorted(names)}")
    known = {k: v for k, v in overrides.items() if k in names and v is not None}
    if config is not None and not isinstance(config, cls):
        raise InputError(f"method {method!r} needs a {cls.__name__}, got {type(config).__name__}")
    return dataclasses.replace(config or cls(), **{**known, "method": method})


def _settings(config) -> dict:
    """The fields of a config that change the result, JSON-normalised (tuples become lists)."""
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k not in _RESUMABLE_CHANGES}
    return json.loads(json.dumps(fields, default=str))


def _fingerprint(config, splits: dict[str, list[Volume]]) -> dict:
    """What identifies a run: settings that change the result, and which cases are in which split."""
    first = splits["full"][0]
    return json.loads(json.dumps({
        "settings": _settings(config), "splits": {g: [v.case_id for v in vols] for g, vols in splits.items()},
        "slice_shape": list(first.image.shape[:1] + first.image.shape[2:]),
        "class_names": list(first.class_names)}, default=str))


def _differences(recorded: dict, current: dict, defaults: dict) -> list[str]:
    """Names of the settings in which two fingerprints differ.

    An option the library gained after the run started counts as unchanged while it has its
    default value (the run was trained that way), so upgrading does not orphan a checkpoint;
    an option the library dropped cannot matter any more.
    """
    before, now = recorded.get("settings", {}), current["settings"]
    changed = {k for k in before.keys() & now.keys() if before[k] != now[k]}
    changed |= {k for k in now.keys() - before.keys() if now[k] != defaults.get(k)}
    changed |= {k for k in ("splits", "slice_shape", "class_names") if recorded.get(k) != current[k]}
    return sorted(changed)


def _prepare_checkpoints(paths: dict[str, Path], fingerprint: dict, resume: bool, defaults: dict) -> None:
    """Start afresh (``resume=False``) or check that the checkpoints belong to this run."""
    paths["run"].parent.mkdir(parents=True, exist_ok=True)
    if not resume:
        for key in ("last", "best", "run"):
            paths[key].unlink(missing_ok=True)
    elif paths["run"].is_file():
        try:
            recorded = json.loads(paths["run"].read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"{paths['run']}: unreadable ({error}); delete the checkpoint folder or pass "
                             "resume=False") from None
        changed = _differences(recorded, fingerprint, defaults)
        if changed:
            raise InputError(f"{paths['run'].parent}: holds a run with different settings ({', '.join(changed)}); "
                             "use another checkpoint_dir, or resume=False to overwrite it")
    temp = paths["run"].with_suffix(".json.tmp")
    temp.write_text(json.dumps(fingerprint, indent=1))
    temp.replace(paths["run"])


def _load(path: Path, what: str, required=()) -> dict:
    """Read a checkpoint (tensors and plain values only) or raise one clear line."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for damaged files
        raise InputError(f"{path}: cannot read the {what} checkpoint, truncated or corrupt? "
                         f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                         "delete it, or pass resume=False to start afresh") from None
    missing = [k for k in required if not isinstance(state, dict) or k not in state]
    if missing:
        raise InputError(f"{path}: not a mixseg-lite {what} checkpoint (missing {missing}); "
                         "delete it, or pass resume=False to start afresh")
    return state


def _check_shapes(path: Path, saved: dict, model: torch.nn.Module) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in saved.items()}
    if expected != found:
        differing = sorted(k for k in set(expected) | set(found) if expected.get(k) != found.get(k))[:3]
        raise InputError(f"{path}: weights do not fit this model (e.g. {differing}); it comes from "
                         "another model size or dataset: use another checkpoint_dir or resume=False")


def _atomic_save(payload: dict, path: Path) -> None:
    temp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, temp)
    temp.replace(path)  # an interrupted save never leaves a half-written checkpoint


def _best_epoch(log: list[dict], selection: str, has_best_weights: bool) -> tuple[int, float | None]:
    """The epoch whose weights ``train_mixed`` kept: the first with the highest validation score
    (it replaces its best only on a strict improvement), or the last epoch without validation."""
    scores = [record.get(selection) for record in log]
    if not has_best_weights or not any(score is not None for score in scores):
        return len(log), None
    best = max(score for score in scores if score is not None)
    return scores.index(best) + 1, float(best)


def _run_mixed(splits, method, paths, resume, config, progress, overrides) -> ExperimentResult:
    config = _config_for(MixedConfig, config, method, overrides, cam=False)
    if "select_best" in {f.name for f in dataclasses.fields(MixedConfig)}:
        config = dataclasses.replace(config, select_best=True)  # best.pt is what gets evaluated
    selection = f"val_dice_{reported_branch(method)}"
    full, weak, val, test = (splits[g] for g in SPLIT_GROUPS)
    _prepare_checkpoints(paths, _fingerprint(config, splits), resume, _settings(MixedConfig()))
    start_epoch = 0
    if paths["last"].is_file():  # check it here, so a damaged file fails before any work
        reference = DualBranchUNet(len(full[0].modalities), full[0].num_classes, config.base_width, config.depth,
                                   config.norm)
        state = _load(paths["last"], "last-epoch", _LAST_KEYS)
        _check_shapes(paths["last"], state["model"], reference)
        start_epoch = int(state["epoch"])
        del state

    # One call for the whole run: train_mixed checkpoints every epoch, resumes exactly, and keeps
    # the best validation weights (in last.pt too, so an interruption never loses them).
    started = time.perf_counter()
    result = train_mixed(full, weak, val or None, dataclasses.replace(config, progress=progress),
                         checkpoint=paths["last"], resume=True, epochs=max(config.epochs, start_epoch))
    train_seconds = time.perf_counter() - started
    log = result.log
    state = _load(paths["last"], "last-epoch", _LAST_KEYS) if paths["last"].is_file() else {}
    best_weights = state.get("best_state")
    best_epoch, best_score = _best_epoch(log, selection, best_weights is not None)
    _atomic_save({"model": {k: v.detach().cpu() for k, v in (best_weights or result.model.state_dict()).items()},
                  "epoch": best_epoch, "val_dice": best_score, "selection": selection}, paths["best"])
    del state

    model = result.model
    model.load_state_dict(_load(paths["best"], "best-epoch", ("model",))["model"])
    model.eval()
    rows = evaluate_mixed(TrainResult(model, config, log, result.branches), test)
    rows = [{k: row[k] for k in ("method", "branch", "dice", "dice_std", "hd95_mm", "hd95_std")} for row in rows]
    return ExperimentResult(method, rows, log, best_epoch, best_score, start_epoch, model, config,
                            train_seconds=train_seconds, speed=result.speed)


# ----------------------------------------------------------------------------- CAM rows (REFERENCE B)

def _run_cam(splits, method, paths, resume, config, progress, overrides) -> ExperimentResult:
    config = _config_for(_cam.CAMConfig, config, method, overrides, cam=True)
    config = dataclasses.replace(config, progress=progress)
    train, val, test = splits["full"] + splits["weak"], splits["val"], splits["test"]
    _prepare_checkpoints(paths, _fingerprint(config, splits), resume, _settings(_cam.CAMConfig()))
    # Zero epochs builds the networks exactly as train_cam does, so a checkpoint can be loaded.
    result = _cam.train_cam(train, config, epochs=0, progress=False)
    start_epoch, train_seconds = 0, 0.0
    if paths["last"].is_file():
        state = _load(paths["last"], "CAM", ("nets", "epoch", "log"))
        if set(state["nets"]) != set(result.nets):
            raise InputError(f"{paths['last']}: networks for {sorted(state['nets'])}, this run has "
                             f"{sorted(result.nets)}; use another checkpoint_dir or resume=False")
        for m, net in result.nets.items():
            _check_shapes(paths["last"], state["nets"][m], net)
        if int(state["epoch"]) >= config.epochs:  # finished: evaluate it as it is
            start_epoch = int(state["epoch"])
            for m, net in result.nets.items():
                net.load_state_dict(state["nets"][m])
            result.log = list(state["log"])
    if start_epoch < config.epochs:
        # train_cam has no per-epoch hook and no resume: an unfinished run starts over.
        started = time.perf_counter()
        result = _cam.train_cam(train, config)
        train_seconds = time.perf_counter() - started
        payload = {"nets": {m: {k: v.detach().cpu() for k, v in net.state_dict().items()}
                            for m, net in result.nets.items()},
                   "epoch": config.epochs, "log": result.log, "val_dice": None}
        _atomic_save(payload, paths["last"])
        _atomic_save(payload, paths["best"])

    test_ds = SliceDataset(test)
    if val:
        chosen = _cam.choose_thresholds(result, SliceDataset(val))
        thresholds = {m: c["threshold"] for m, c in chosen.items()}
    else:
        thresholds = 0.5  # [choose] without validation data to sweep the threshold on
    if result.supervised:
        thresholds = None
    scores = _cam.evaluate_cam(result, test_ds, thresholds)
    predictions = _cam.predict_slices(result, test_ds, thresholds)
    binary = not (result.supervised or result.config.multilabel)
    targets = [_binary_volume(v) if binary else v for v in test]
    target_labels = ((test_ds.labels > 0).long() if binary else test_ds.labels).numpy()
    num_classes = 2 if binary else test_ds.num_classes
    volume_index = test_ds.volume_index.numpy()

    def row_for(name: str, branch: str, labels: np.ndarray, score: dict, threshold) -> dict:
        """Test row of one label map ``(N, H, W)``: the tag-supervision metrics (``score``) with
        their spread over volumes, and HD95 in mm of the restacked volumes (mean, std over volumes)."""
        hd95 = summarize_per_volume(evaluate_volumes(test_ds.to_volumes(labels), targets))["mean"]["hd95_mm"]
        dice_std = volume_dice_scores(labels, target_labels, volume_index, num_classes).std()
        return {"method": name, "branch": branch, "dice": score["dice_3d"], "dice_std": float(dice_std),
                "hd95_mm": hd95["mean"], "hd95_std": hd95["std"], "dice_pos": score["dice_pos"],
                "dice_slice_avg": score["dice_slice_avg"], "accuracy": score["accuracy"], "threshold": threshold}

    rows = [row_for(method, row["modality"], predictions[row["modality"]]["labels"].numpy(), row, row["threshold"])
            for row in scores]
    rows.append(row_for("empty", "-", empty_prediction(target_labels), _cam.empty_baseline(test_ds, binary=binary),
                        None))
    return ExperimentResult(method, rows, result.log, len(result.log) or None, None, start_epoch, result.nets,
                            result.config, train_seconds=train_seconds, thresholds=thresholds)


def _binary_volume(volume: Volume) -> Volume:
    return Volume(volume.image, (volume.label > 0).astype(np.int64), volume.spacing, volume.case_id,
                  volume.modalities, ("background", "foreground"), volume.meta)


# ----------------------------------------------------------------------------- figures

def _save_curves(result: ExperimentResult, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    log = result.log
    loss_keys = [k for k in (log[0] if log else {}) if k not in ("epoch", "seconds") and not k.startswith("val_")]
    val_keys = [k for k in (log[0] if log else {}) if k.startswith("val_dice_")]
    fig, axes = plt.subplots(1, 2 if val_keys else 1, figsize=(10 if val_keys else 5, 3.2), squeeze=False)
    epochs = [r["epoch"] for r in log]
    for key in loss_keys:
        axes[0, 0].plot(epochs, [r.get(key, np.nan) for r in log], marker=".", label=key.replace("loss_", ""))
    axes[0, 0].set(xlabel="epoch", ylabel="training loss (epoch mean)", title=f"{result.method}: losses")
    if val_keys:
        for key in val_keys:
            axes[0, 1].plot(epochs, [r[key] for r in log], marker=".", label=key.replace("val_dice_", ""))
        if result.best_epoch:
            axes[0, 1].axvline(result.best_epoch, color="grey", ls="--", lw=1, label=f"best (epoch {result.best_epoch})")
        axes[0, 1].set(xlabel="epoch", ylabel="validation Dice", title="validation (3-D, mean over classes)")
    for ax in axes.ravel():
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _save_predictions(result: ExperimentResult, test: list[Volume], path: Path) -> Path:
    import matplotlib.pyplot as plt

    from mixseg_lite.plotting import show_predictions

    path.parent.mkdir(parents=True, exist_ok=True)
    volume = max(test, key=lambda v: int((v.label > 0).sum()))  # the test volume with most to see
    with_foreground = np.flatnonzero((volume.label > 0).any(axis=(1, 2)))
    candidates = with_foreground if with_foreground.size else np.arange(volume.num_slices)
    slices = sorted({int(candidates[i]) for i in np.linspace(0, len(candidates) - 1, min(3, len(candidates))).round().astype(int)})
    if isinstance(result.model, torch.nn.Module):
        predicted = predict_volumes(result.model, [volume])
        shown = {branch: predicted[branch][0] for branch in
                 (("teacher", "student") if METHODS[result.method]["student"] else ("teacher",))}
    else:
        dataset = SliceDataset([volume])
        predicted = _cam.predict_slices(_cam.CAMResult(result.model, result.config, tuple(result.model),
                                                       volume.class_names, result.log),
                                        dataset, result.thresholds if result.thresholds is not None else 0.5)
        shown = {m: dataset.to_volumes(p["labels"])[0] for m, p in predicted.items() if "labels" in p}
    fig = show_predictions(volume, shown, slices, title=f"{result.method}: test volume {volume.case_id}")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
