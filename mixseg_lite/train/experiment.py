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
import math
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
        hint = "" if CAM_METHODS else " (the CAM methods of Patel & Dolz need mixseg_lite.train.cam, which is not installed)"
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
    fig = plot_training_log(result.log, result.method, result.best_epoch,
                            title=f"method {result.method}: training log of one run (seed {getattr(result.config, 'seed', '?')})")
    fig.savefig(path, dpi=100, bbox_inches="tight")
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
    checkpoint = f"best validation epoch {result.best_epoch}" if result.best_val_dice is not None else "last epoch"
    fig = show_predictions(volume, shown, slices,
                           title=f"method {result.method}: predictions on test volume {volume.case_id} ({checkpoint})")
    fig.savefig(path, dpi=100, bbox_inches="tight")  # tight: the class legend below the grid is kept whole
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- lesson helpers (notebook 04)

# Readable names of the terms a training log records (``loss_<term>``, ``share_<term>``; the keys of
# :func:`~mixseg_lite.train.mixed.mixed_objective` and of the semi-supervised objective), with one
# colour per term in every panel: the colour of the ablation row that adds the term (KL blue,
# entropy red, ...; :data:`mixseg_lite.plotting.METHOD_COLOURS`), the teacher's own loss black.
TERM_NAMES = {"sup": "teacher: L_s (CE + Dice on D_s)", "weak": "student: partial CE L_w", "kd": "student: KL",
              "ent": "student: entropy", "pseudo": "student: pseudo-mask CE", "cons": "consistency",
              "sup_b": "second network: L_s", "cps": "cross pseudo-supervision"}
_TERM_ROWS = {"weak": "weak_only", "kd": "kl", "ent": "ent", "pseudo": "pseudo", "cons": "mean_teacher", "cps": "cps"}


def term_colour(term: str) -> str:
    """Colour of a logged loss term (``"kd"``, ``"ent"``, ...): the teacher's L_s black, a student
    term the colour of the ablation row that adds it, anything else a spare colour."""
    from mixseg_lite.plotting import method_colour

    if term in ("sup", "sup_b"):
        return "#000000" if term == "sup" else "#7f7f7f"
    return method_colour(_TERM_ROWS.get(term, term))


def plot_training_log(log: list[dict], method: str, best_epoch: int | None = None, title: str | None = None):
    """The per-epoch log of one run in up to three panels, returned as a Figure:

    * the loss terms as they enter the objective (weights included), mean over the epoch's steps;
    * the gradient share of each student term (``share_*`` keys; panel left out without them):
      ``||d term / d z_S|| / sum over terms of ||d term / d z_S||`` on the student logits ``z_S`` at
      the first step of the epoch (:func:`~mixseg_lite.train.mixed.gradient_shares`), between 0 and 1;
    * the validation Dice of each branch (``val_dice_*`` keys), with the epoch ``best_epoch`` marked.

    A term keeps its colour in both loss panels (:func:`term_colour`); the teacher branch is
    black, the student the colour of ``method``.
    """
    import matplotlib.pyplot as plt

    from mixseg_lite.plotting import method_colour

    keys = list(log[0]) if log else []
    loss_keys = [k for k in keys if k not in ("epoch", "seconds") and not k.startswith(("val_", "share_"))]
    share_keys = [k for k in keys if k.startswith("share_")]
    val_keys = [k for k in keys if k.startswith("val_dice_")]
    panels = ["loss"] + (["share"] if share_keys else []) + (["val"] if val_keys else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    axes = dict(zip(panels, axes[0]))
    epochs = [r["epoch"] for r in log]
    letters = iter("abc")

    def name(term: str) -> str:
        return TERM_NAMES.get(term, term.replace("_", " "))

    ax = axes["loss"]
    for key in loss_keys:
        term = key[len("loss_"):] if key.startswith("loss_") else key
        ax.plot(epochs, [r.get(key, np.nan) for r in log], marker=".", color=term_colour(term), label=name(term))
    ax.set(xlabel="epoch", ylabel="weighted loss term\n(mean over the epoch's steps)",
           title=f"({next(letters)}) loss terms of the objective")
    if share_keys:
        ax = axes["share"]
        for key in share_keys:
            term = key[len("share_"):]
            ax.plot(epochs, [r.get(key, np.nan) for r in log], marker=".", color=term_colour(term),
                    label=name(term).replace("student: ", ""))
        ax.set(xlabel="epoch", ylabel="gradient share on the student logits\n(first step of each epoch)",
               ylim=(-0.02, 1.02), title=f"({next(letters)}) which term pulls the student")
    if val_keys:
        ax = axes["val"]
        for key in val_keys:
            branch = key[len("val_dice_"):]
            ax.plot(epochs, [r.get(key, np.nan) for r in log], marker=".", label=branch,
                    color="#000000" if branch == "teacher" else method_colour(method))
        if best_epoch:
            ax.axvline(best_epoch, color="grey", ls="--", lw=1, label=f"best epoch ({best_epoch})")
        ax.set(xlabel="epoch", ylabel="validation Dice (3-D, mean over classes)", ylim=(0, 1),
               title=f"({next(letters)}) validation Dice of each branch")
    for ax in axes.values():
        ax.grid(alpha=0.3)
        if epochs:
            ax.set_xticks(epochs if len(epochs) <= 12 else ax.get_xticks())
        if ax.lines:  # below the panel, never over a curve (save with bbox_inches="tight")
            ax.legend(fontsize=7.5, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def settings_summary(config, splits: dict[str, list[Volume]] | None = None) -> str:
    """The few settings of a run a reader needs, one line each with what it means (the whole
    config is in ``metrics.json`` under ``params -> config``). ``splits`` (as passed to
    :func:`run_experiment`) gives the steps per epoch of a mixed-supervision run."""
    if not isinstance(config, MixedConfig):  # CAM rows: their own fields
        fields = ", ".join(f"{k} {getattr(config, k)}" for k in ("epochs", "batch_size", "lr", "seed")
                           if hasattr(config, k))
        return f"method {config.method}: {fields}"
    steps = config.steps_per_epoch
    if steps is None and splits is not None:
        n_main = sum(v.num_slices for v in splits.get("weak") or []) if uses_weak_images(config.method) else 0
        n_main = n_main or sum(v.num_slices for v in splits.get("full") or [])
        steps = max(1, -(-n_main // config.batch_size))
    terms = METHODS[config.method]
    student = terms["student"]
    lines = [f"method {config.method}, recipe {config.recipe!r}: which terms are trained, and with which values "
             "for what the paper leaves open",
             f"budget: {config.epochs} epochs" + (f" x {steps} steps" if steps else "")
             + f"; a step takes {config.batch_size} slices of D_s" + (f" and {config.batch_size} of D_w" if
                                                                        uses_weak_images(config.method) else ""),
             f"optimiser: {config.optimizer}, learning rate {config.lr:g}, weight decay {config.weight_decay:g}, "
             f"schedule {config.schedule}",
             f"teacher loss L_s: cross-entropy with class weights (1/frequency)^{config.class_balance:g}"
             + (f" + {config.dice_weight:g} x Dice" if config.dice_weight else "") + ", on D_s only"]
    if student:
        lines.append(f"lambda_w = {config.lambda_w:g}: weight of the student's partial cross-entropy on the "
                     "labelled (seed) pixels")
    if terms["kd"]:
        lines.append(f"lambda_kd = {config.lambda_kd:g}: weight of KL(teacher || student) at temperature "
                     f"{config.temperature:g}, on {'D_s and D_w' if config.kd_on == 'all' else 'D_s'}, teacher "
                     + ("detached (KL trains the student only)" if config.detach_teacher else "not detached"))
    if terms["ent"] or terms["pseudo"]:
        what = "entropy" if terms["ent"] else "pseudo-mask cross-entropy"
        ramp = (f", ramped up linearly from 0 (epoch 1) to full weight (epoch {config.ramp_up_epochs + 1})"
                if config.ramp_up_epochs else ", full weight from the first step")
        lines.append(f"lambda_ent = {config.lambda_ent:g}: weight of the student's {what} on "
                     f"{'D_w' if config.entropy_on == 'weak' else 'D_s and D_w'}{ramp}")
    widths = [config.base_width * 2 ** i for i in range(config.depth)]
    lines.append(f"network: UNet, one encoder and two decoders, widths {widths[0]}..{widths[-1]} "
                 f"(base_width {config.base_width}, depth {config.depth}), {config.norm} normalisation; seed {config.seed}")
    return "\n".join(lines)


def _state_of(model) -> dict:
    if isinstance(model, torch.nn.Module):
        return model.state_dict()
    if isinstance(model, dict):
        return {k: _state_of(v) for k, v in model.items()}
    return {}


def _leaves(value, prefix: str = ""):
    """``(path, leaf)`` for every tensor or plain value in nested dicts, lists and tuples."""
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            yield from _leaves(value[key], f"{prefix}/{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{prefix}/{index}")
    else:
        yield prefix, value


def _same_value(a, b) -> tuple[bool, float]:
    """Whether two leaves are bit for bit equal (NaN equal to NaN), and their largest absolute
    difference (0 when equal or not numbers; inf for leaves of different kinds or shapes)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape \
                or a.dtype != b.dtype:
            return False, math.inf
        if not a.is_floating_point():
            return (True, 0.0) if torch.equal(a, b) else (False, math.inf)
        nan_a, nan_b = torch.isnan(a), torch.isnan(b)
        if not torch.equal(nan_a, nan_b):
            return False, math.inf
        if torch.equal(a[~nan_a], b[~nan_b]):
            return True, 0.0
        return False, float((a[~nan_a].double() - b[~nan_b].double()).abs().max())
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True, 0.0
    if type(a) is type(b) and a == b:
        return True, 0.0
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return False, abs(float(a) - float(b))
    return False, math.inf


def compare_runs(first: ExperimentResult, second: ExperimentResult) -> dict:
    """How exactly two runs of the same settings agree, e.g. a run interrupted and resumed and an
    uninterrupted one (:func:`run_experiment` with the same settings and different folders).

    Compares the per-epoch logs, the test rows, and every stored value of the evaluated model and
    of both checkpoints (``last.pt``: weights, optimiser state, batch positions, random state, log;
    ``best.pt``: the best weights). Returns ``{"log": bool, "rows": bool, "values": n,
    "identical": k, "max_difference": float, "different": [paths of the first few differing
    values]}``; ``identical == values`` means the two runs are the same bit for bit.
    """
    pairs = [("model", _state_of(first.model), _state_of(second.model))]
    for key in ("last", "best"):
        paths = (first.files.get(key), second.files.get(key))
        if all(p is not None and Path(p).is_file() for p in paths):
            pairs.append((f"{key}.pt", _load(Path(paths[0]), key), _load(Path(paths[1]), key)))
    values = identical = 0
    largest = 0.0
    different = []
    for name, a, b in pairs:
        leaves_a, leaves_b = dict(_leaves(a)), dict(_leaves(b))
        for path in sorted(leaves_a.keys() | leaves_b.keys()):
            values += 1
            if path not in leaves_a or path not in leaves_b:
                same, gap = False, math.inf
            else:
                same, gap = _same_value(leaves_a[path], leaves_b[path])
            identical += same
            largest = max(largest, gap)
            if not same and len(different) < 5:
                different.append(f"{name}{path}")
    return {"log": first.log == second.log, "rows": first.rows == second.rows, "values": values,
            "identical": identical, "max_difference": largest, "different": different}
