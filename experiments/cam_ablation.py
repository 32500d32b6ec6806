"""REFERENCE B ablation on the simulated brains or the brain phantom, loss weights chosen on validation data.

Regenerates ``results/cam_ablation_brain.csv`` (one row per pairing x row x weights x seed x
modality, plus the empty-mask baseline per pairing and seed) and ``results/cam_ablation_brain_curves.csv``
(the per-epoch training losses and validation tag loss / accuracy of every run)::

    python experiments/cam_ablation.py --workers 2 --out results/cam_ablation_brain.csv

On the brain phantom (real ICBM152 anatomy, ``mixseg_lite.data.phantom``), first the validation
curves that choose the budget (``--curves-only``: the rows of seed 0 for 40 epochs, each epoch's
validation tag loss, tag accuracy and 3-D Dice), then the same rows at a shorter budget whose ends
are compared with the long runs' (``mixseg_lite.reproduction.cam_budget_check``: 24 epochs end at
the same validation Dice on average, where 40 for every run would not fit the sweep's wall time),
then the sweep at that budget::

    python experiments/cam_ablation.py --dataset brain_phantom --curves-only --workers 2 --out results/cam_convergence_phantom.csv
    python experiments/cam_ablation.py --dataset brain_phantom --curves-only --epochs 24 --workers 2 --out results/cam_budget_check_phantom.csv
    python experiments/cam_ablation.py --dataset brain_phantom --epochs 24 --grid coarse --workers 2 --out results/cam_ablation_phantom.csv

More seeds for the claims, the weights still chosen on seeds 0-4 (``--extra-seeds``: only the rows
at the chosen weights are trained on the new seeds; column ``choosing_seed``)::

    python experiments/cam_ablation.py --dataset brain_phantom --epochs 24 --grid coarse --extra-seeds 5 6 7 8 9 --workers 2 --out results/cam_ablation_phantom.csv

The weights are chosen in three stages, each on the validation volumes only (mean validation 3-D
Dice over the seeds; ties go to the smaller weight), among the weights under which every network of
every seed learnt its tags (beats the majority answer on its training slices,
``mixseg_lite.train.cam.learnt_tags``;
large ER and CMER weights flatten the CAMs until the tag scores barely move, and such a network's
maps are not worth thresholding however its Dice comes out):

1. ``cam`` and ``cam_er`` at every ER weight of :data:`GRID`                 -> the ER weight of
   each modality (ER acts on its own network only, so each network's weight is chosen on its own
   validation Dice, and the ``cam_er`` run with those weights is exactly the grid runs' networks);
2. ``cam_er_cmer`` at those ER weights and every CMER weight                 -> the CMER weight of the
   pairing (mean over both modalities: CMER couples the networks);
3. ``cam_er_cmer_kl`` at both and every KL weight                            -> the KL weight;

then the supervised upper bound (:data:`SUPERVISED_EPOCHS`), its class balance chosen the same way
(:data:`SUPERVISED_GRID`). A weight chosen at the top of its grid
extends the grid once by a factor of 100 (:data:`EXTEND`) and is chosen again, so that no chosen
weight sits on the edge of what was tried without being flagged.

Flat CAMs. A network whose normalised foreground CAM is 0 on the slices it calls positive is a
trivial minimiser of ER and CMER (``mixseg_lite.train.cam.FLAT_CAM_LEVEL``). On the phantom
(``--flat-bound``, default ``mixseg_lite.train.cam.FLAT_CAM_BOUND`` = 0.5 there) a weight is
admissible only when, besides learning its tags, every network under it has a flat CAM on at most
that share of its predicted-positive training slices (``mixseg_lite.train.cam.cam_admissible``;
columns ``flat_cam_fraction`` and ``train_predicted_positive``). The committed brain file was
chosen without this rule, and its command still regenerates it so (``--flat-bound`` turns it on).

Every trained row is written to the CSV; the column ``chosen`` marks the rows of the chosen
weights, which the claims compare (``mixseg_lite.claims.cam_claims``). Each finished run is kept as
a JSON file under ``runs/cam_ablation/`` (``runs/cam_ablation_phantom/`` for the phantom) and
reused, so an interrupted sweep resumes where it stopped (``--workers 2`` trains two runs at a
time, one torch thread each); a run trained on another dataset or budget is never reused (the
budget is in the run's name whenever it differs from :data:`EPOCHS`).

Every row trains with :data:`RECIPE` (ours; the reference code's plain CE, constant lr and
full regulariser weights from the first step left networks answering "no tumour" on every
training slice: 7 of 100 in the first sweep, see the closing note of issue 11).

Budget curves (``--curves-only``, :data:`CURVE_EPOCHS` by default): the sweep's recipe, cosine
schedule included, stretched over the long budget, on the rows of :func:`curve_rows` (every row
at the paper's weights, plus ER and CMER at the top of their grids). The script prints, per run,
the epoch from which the validation 3-D Dice and tag accuracy stop rising
(``mixseg_lite.train.cam.flattening_epoch``: 3-epoch running mean, within 0.01) and the latest of
them, the budget to pass as ``--epochs``. A run of N epochs decays its rate sooner than the
stretched one; the sweep's own curves (``*_curves.csv``) show whether each of its runs settled.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# Images of 64x64 (the minimum), 14 training / 8 validation / 10 test volumes of 20 slices.
TASK = {"image_size": 64, "n_volumes": 32, "n_slices": 20, "split": {"train": 14, "val": 8, "test": 10}}
PAIRINGS = [("T1", "T2"), ("T2", "FLAIR")]  # the paper's default pairing first
T1CE_PAIRING = ("T1ce", "FLAIR")  # --t1ce: the third pairing (the enhancing rim against the oedema)
SEEDS = [0, 1, 2, 3, 4]
EPOCHS = 12  # 108 steps of batch 32 for every row (the 2-hour budget; curves: *_curves.csv)
SUPERVISED_EPOCHS = 12
CURVE_EPOCHS = 40  # --curves-only: long enough to see the slowest row flatten
# Per dataset: the default output files and run folders, and whether flat CAMs make a weight
# inadmissible by default (at mixseg_lite.train.cam.FLAT_CAM_BOUND; off: the rule of the committed
# brain file, learnt tags only).
DATASETS = {
    "simulated_brain": {"out": "results/cam_ablation_brain.csv", "runs": "runs/cam_ablation",
                        "curves_out": "results/cam_convergence_brain.csv", "curves_runs": "runs/cam_convergence_brain",
                        "flat_check": False},
    "brain_phantom": {"out": "results/cam_ablation_phantom.csv", "runs": "runs/cam_ablation_phantom",
                      "curves_out": "results/cam_convergence_phantom.csv", "curves_runs": "runs/cam_convergence_phantom",
                      "flat_check": True},
}
# Ours, for every row (mixseg_lite.train.cam.CAMConfig): lr 1e-2 with a cosine decay to 0 (at the
# constant 2e-3 of the first sweep the tag loss still fell at epoch 12 and the supervised T1 network
# of seed 2 predicted nothing after 24 epochs; at 1e-2 it reached validation Dice 0.64 in 12), a
# class-balanced tag loss and a 3-epoch linear warm-up of the ER / CMER / KL weights (each alone
# let T2 + FLAIR seed 2's method row, which answered "no tumour" everywhere, learn its tags).
RECIPE = {"lr": 1e-2, "lr_schedule": "cosine", "tag_weighting": "balanced", "regulariser_warmup": 3}
# The supervised upper bound's CE weighs tumour pixels up, (N / N_k) ** class balance, chosen on
# validation as the CAM weights: with plain CE + Dice 3 of its 20 networks never predicted a tumour
# pixel, with 0.5 (the mixed-supervision recipes) T1 of T1 + T2 seed 2 still did not.
SUPERVISED_GRID = {"supervised_class_balance": [0.5, 0.75, 1.0]}
# Weights in the reference code's units (mixseg_lite.losses.cam.REDUCTIONS "reference"). The first
# value of each list is the paper's; the others span what the reference scale lets the term do.
GRID = {"er_weight": [1.0, 10.0, 100.0], "cmer_weight": [1.0, 10.0, 100.0, 1000.0, 10000.0],
        "kl_weight": [0.5, 0.05, 5.0]}
# --grid coarse: the same span with every other CMER decade and two class balances, for a budget
# that does not fit the full grid in the wall time (12 instead of 15 runs per pairing and seed,
# before the extensions).
COARSE_GRID = {"er_weight": [1.0, 10.0, 100.0], "cmer_weight": [1.0, 100.0, 10000.0], "kl_weight": [0.5, 0.05, 5.0]}
COARSE_SUPERVISED_GRID = {"supervised_class_balance": [0.5, 1.0]}
PAPER = {name: values[0] for name, values in GRID.items()}
EXTEND = 100.0  # a weight chosen at the top of its grid: try EXTEND x that weight once more
METRICS = ("dice_3d", "dice_pos", "dice_slice_avg", "accuracy")
COLUMNS = ["pairing", "seed", "method", "modality", "er_weight", "cmer_weight", "kl_weight",
           "supervised_class_balance", "chosen",
           *METRICS, "val_dice_3d", "threshold", "threshold_at_edge", "train_accuracy", "train_majority",
           "train_seconds", "final_cls"]
FLAT_COLUMNS = ["flat_cam_fraction", "train_predicted_positive"]  # written whenever admissibility uses them
CURVE_COLUMNS = ["pairing", "method", "run", "seed", "epoch", "loss", "cls", "er", "cmer", "kl", "ce_dice",
                 "val_loss", "val_accuracy", "seconds"]
CURVE_DICE_COLUMNS = ["val_dice_3d", "val_dice_3d_T1", "val_dice_3d_T1ce", "val_dice_3d_T2", "val_dice_3d_FLAIR"]
# --curves-only starts the slowest rows first (seconds per epoch in cam_ablation_brain_curves.csv)
SLOWEST_FIRST = ["supervised", "cam_er_cmer_kl", "cam_er_cmer", "cam", "cam_er"]


def _weight_text(value) -> str:
    return "+".join(f"{m}{v:g}" for m, v in value.items()) if isinstance(value, dict) else f"{value:g}"


def epochs_of(method: str, plan: dict | None = None) -> int:
    """The budget of ``method``: the plan's (``--epochs``), else :data:`EPOCHS` / :data:`SUPERVISED_EPOCHS`."""
    plan = plan or {}
    if method == "supervised":
        return plan.get("supervised_epochs") or SUPERVISED_EPOCHS
    return plan.get("epochs") or EPOCHS


def run_name(pairing, method: str, weights: dict, seed: int, plan: dict | None = None) -> str:
    parts = [f"{k.split('_')[0]}={_weight_text(weights[k])}" for k in ("er_weight", "cmer_weight", "kl_weight")
             if k in weights]
    if epochs_of(method, plan) != EPOCHS:
        parts.append(f"epochs={epochs_of(method, plan)}")
    if method == "supervised":
        parts += [f"cb={weights['supervised_class_balance']:g}"]
    return "_".join(["+".join(pairing), method, *parts, f"seed{seed}"])


def make_volumes(dataset: str, pairing, seed: int) -> list:
    """The volumes of :data:`TASK` for ``pairing`` and ``seed`` on ``dataset``."""
    if dataset == "brain_phantom":
        from mixseg_lite.data.phantom import make_phantom_volumes as make
    elif dataset == "simulated_brain":
        from mixseg_lite.data.brain_sim import make_brain_volumes as make
    else:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(DATASETS)}")
    return make(TASK["n_volumes"], TASK["n_slices"], TASK["image_size"], modalities=pairing, seed=seed)


def _validation_dice_hook():
    """A stand-in for ``mixseg_lite.train.cam._validation_curve_point`` (called by ``train_cam``
    after each epoch) that adds the validation 3-D Dice (``validation_dice_3d``) to the epoch's
    record: mean over the modalities and ``val_dice_3d_<modality>``. It changes no weight, no
    BatchNorm statistic and no random draw, so the run trains exactly as without it."""
    from mixseg_lite.train import cam as cam_module

    original = cam_module._validation_curve_point

    def point(nets, modalities, val, columns, config, device, *args, **kwargs):
        record = original(nets, modalities, val, columns, config, device, *args, **kwargs)
        result = cam_module.CAMResult(nets, config, tuple(modalities), tuple(val.class_names))
        dice = cam_module.validation_dice_3d(result, val)
        record["val_dice_3d"] = sum(dice.values()) / len(dice)
        record.update({f"val_dice_3d_{m}": d for m, d in dice.items()})
        return record

    return point


def train_one(pairing, method: str, weights: dict, seed: int, folder: Path, plan: dict | None = None) -> Path:
    """Train one row on one seed, evaluate it on validation (threshold) and test; cache as JSON.

    ``plan``: ``dataset`` (default ``simulated_brain``), ``epochs`` / ``supervised_epochs``
    (default :data:`EPOCHS` / :data:`SUPERVISED_EPOCHS`) and ``curve_dice`` (log the validation
    3-D Dice after every epoch)."""
    from unittest import mock

    import torch

    from mixseg_lite.cam import threshold_at_edge
    from mixseg_lite.data.slices import SliceDataset, split_volumes
    from mixseg_lite.train import cam as cam_module
    from mixseg_lite.train.cam import (CAMConfig, choose_thresholds, empty_baseline, evaluate_cam, flat_cam_fraction,
                                       tag_accuracy, train_cam)

    plan = plan or {}
    dataset = plan.get("dataset", "simulated_brain")
    path = folder / f"{run_name(pairing, method, weights, seed, plan)}.json"
    if path.exists():
        return path
    torch.set_num_threads(1)
    volumes = make_volumes(dataset, pairing, seed)
    data = {k: SliceDataset(v) for k, v in split_volumes(volumes, TASK["split"], seed=seed).items()}
    epochs = epochs_of(method, plan)
    config = CAMConfig(method=method, epochs=epochs, modalities=pairing, seed=seed, progress=False,
                       **RECIPE, **{**PAPER, **weights})
    started = time.perf_counter()
    if plan.get("curve_dice"):
        with mock.patch.object(cam_module, "_validation_curve_point", _validation_dice_hook()):
            result = train_cam(data["train"], config, val=data["val"])
    else:
        result = train_cam(data["train"], config, val=data["val"])
    seconds = time.perf_counter() - started
    train_accuracy = tag_accuracy(result, data["train"])
    flat = {} if result.supervised else flat_cam_fraction(result, data["train"])
    thresholds, val_dice = None, {}
    if not result.supervised:
        chosen = choose_thresholds(result, data["val"])
        thresholds = {m: c["threshold"] for m, c in chosen.items()}
        val_dice = {m: c["sweep"][thresholds[m]] for m, c in chosen.items()}
    else:
        val_dice = {row["modality"]: row["dice_3d"] for row in evaluate_cam(result, data["val"], None)}
    rows = []
    for row in evaluate_cam(result, data["test"], thresholds):
        m = row["modality"]
        rows.append({"method": method, "modality": m, **{k: row[k] for k in METRICS},
                     "val_dice_3d": val_dice[m], "threshold": None if thresholds is None else thresholds[m],
                     "threshold_at_edge": None if thresholds is None else threshold_at_edge(thresholds[m]),
                     "train_accuracy": train_accuracy[m]["accuracy"], "train_majority": train_accuracy[m]["majority"],
                     "train_seconds": seconds, "final_cls": result.log[-1].get("cls") if result.log else None,
                     "flat_cam_fraction": flat[m]["flat_fraction"] if m in flat else None,
                     "train_predicted_positive": flat[m]["n_predicted_positive"] if m in flat else None})
    empty = empty_baseline(data["test"])
    rows.append({"method": "empty", "modality": "-", **{k: empty[k] for k in METRICS}})
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pairing": list(pairing), "seed": seed, "weights": weights, "rows": rows,
                               "log": result.log, "dataset": dataset, "epochs": epochs}))
    tmp.replace(path)
    print(f"{path.stem}: {seconds:.0f} s, val 3-D Dice "
          + ", ".join(f"{r['modality']} {r['val_dice_3d']:.3f}" for r in rows[:-1]), flush=True)
    return path


def run_stage(jobs: list, folder: Path, workers: int, plan: dict | None = None) -> list:
    """Train ``jobs`` = [(pairing, method, weights, seed)]; returns [(job, loaded JSON)]. A finished
    run of another dataset or budget in ``folder`` stops the sweep (it would be reused silently)."""
    if not jobs:
        return []
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            paths = list(pool.map(train_one, *zip(*jobs), [folder] * len(jobs), [plan] * len(jobs)))
    else:
        paths = [train_one(*job, folder, plan) for job in jobs]
    out = []
    for job, path in zip(jobs, paths):
        run = json.loads(path.read_text())
        dataset, epochs = (plan or {}).get("dataset", "simulated_brain"), epochs_of(job[1], plan)
        # runs of the committed brain sweep predate these keys: they are simulated brains at EPOCHS
        if (run.get("dataset", "simulated_brain"), run.get("epochs", epochs)) != (dataset, epochs):
            raise SystemExit(f"{path}: trained on {run.get('dataset')} for {run.get('epochs')} epochs, not "
                             f"{dataset} for {epochs}; use another --runs folder")
        out.append((job, run))
    return out


def _flat_fraction(row: dict, seed: int):
    if row["method"] == "supervised":
        return None  # no CAM: the rule is about CAMs
    if "flat_cam_fraction" not in row:
        raise SystemExit(f"{row['modality']} {row['method']} seed {seed}: no flat-CAM fraction recorded (a run "
                         "from before the measure); retrain it in a fresh --runs folder, or drop --flat-bound")
    return row["flat_cam_fraction"]


def choose(runs: list, pairing, method: str, fixed: dict, name: str, modality: str | None = None,
           values=None, flat_bound: float | None = None) -> float:
    """The value of ``name`` (among ``values``, default its grid) with the best mean validation 3-D
    Dice over seeds (and over the pairing's modalities, or of ``modality`` only); ties go to the
    smaller weight. Only values under which every one of those networks learnt its tags
    (``mixseg_lite.train.cam.learnt_tags``) and, with ``flat_bound``, has a flat CAM on at most
    that share of its predicted-positive training slices (``mixseg_lite.train.cam.cam_admissible``)
    are admissible; when none is, the best of all is returned with a warning."""
    from mixseg_lite.train.cam import cam_admissible, learnt_tags

    scores, failed, flat = {}, {}, {}
    for value in values or GRID[name]:
        weights = {**fixed, name: value}
        rows = [(seed, row) for (p, m, w, seed), run in runs if p == pairing and m == method and w == weights
                for row in run["rows"] if row["method"] != "empty" and modality in (None, row["modality"])]
        scores[value] = sum(row["val_dice_3d"] for _, row in rows) / len(rows)
        failed[value] = [f"{row['modality']} seed {seed}" for seed, row in rows
                         if not learnt_tags(row["train_accuracy"], row["train_majority"])]
        flat[value] = [] if flat_bound is None else [
            f"{row['modality']} seed {seed} ({_flat_fraction(row, seed):.2f})" for seed, row in rows
            if learnt_tags(row["train_accuracy"], row["train_majority"])
            and not cam_admissible(row["train_accuracy"], row["train_majority"], _flat_fraction(row, seed), flat_bound)]
    admissible = [value for value in scores if not failed[value] and not flat[value]]
    best = max(sorted(admissible or scores), key=lambda value: scores[value])
    if flat_bound is None:
        warning = "WARNING: no value lets every network learn its tags"
    else:
        warning = (f"WARNING: no value lets every network learn its tags with flat CAMs on at most {flat_bound:g} "
                   "of its predicted-positive slices")
    print(f"{'+'.join(pairing)} {method}{' ' + modality if modality else ''}: validation 3-D Dice by {name} "
          + ", ".join(f"{v:g}: {s:.3f}" + (f" (tags not learnt: {', '.join(failed[v])})" if failed[v] else "")
                      + (f" (flat CAMs: {', '.join(flat[v])})" if flat[v] else "")
                      for v, s in scores.items())
          + f" -> {best:g}" + ("" if admissible else f" {warning}"),
          flush=True)
    return best


def weight_stage(runs: list, method: str, name: str, chosen: dict, args, per_modality: bool = False) -> list:
    """Train ``method`` at ``chosen[pairing]`` and every value of ``name`` in its grid, plus EXTEND x
    the top value for a pairing that chose the top; sets ``chosen[pairing][name]`` (per modality
    with ``per_modality``: ER acts on each network alone) and returns the new runs."""
    grid = args.grid_values[name]
    new = run_stage([(p, method, {**chosen[p], name: v}, s) for p in args.pairings for s in args.seeds for v in grid],
                    args.runs, args.workers, args.plan)

    def pick(p, values):
        if per_modality:
            return {m: choose(runs + new, p, method, chosen[p], name, m, values, args.flat_bound) for m in p}
        return choose(runs + new, p, method, chosen[p], name, values=values, flat_bound=args.flat_bound)

    best = {p: pick(p, grid) for p in args.pairings}
    top, extended = max(grid), max(grid) * EXTEND
    at_top = [p for p in args.pairings if top in (best[p].values() if per_modality else [best[p]])]
    new += run_stage([(p, method, {**chosen[p], name: extended}, s) for p in at_top for s in args.seeds],
                     args.runs, args.workers, args.plan)
    for p in at_top:
        best[p] = pick(p, [*grid, extended])
    for p in args.pairings:
        chosen[p][name] = best[p]
    return new


def chosen_jobs(chosen: dict, pairings: list, seeds: list[int]) -> list:
    """The runs of the chosen weights only, one per row of the ablation, pairing and seed: the
    rows the claims compare (``--extra-seeds``). The ER weights may differ per modality: one run
    trains each network at its own (ER acts on each network alone)."""
    keys = {"cam": (), "cam_er": ("er_weight",), "cam_er_cmer": ("er_weight", "cmer_weight"),
            "cam_er_cmer_kl": ("er_weight", "cmer_weight", "kl_weight"), "supervised": ("supervised_class_balance",)}
    return [(p, method, {k: chosen[p][k] for k in names}, s)
            for s in seeds for p in pairings for method, names in keys.items()]


def curve_rows() -> list[tuple[str, dict]]:
    """The rows whose curves choose the budget: every row at the paper's weights (the supervised
    bound at the middle of its class-balance grid), and ER and CMER at the top of their grids
    (the strongest regularisers, which change the maps most and may train slowest)."""
    balances = SUPERVISED_GRID["supervised_class_balance"]
    er, cmer, kl = PAPER["er_weight"], PAPER["cmer_weight"], PAPER["kl_weight"]
    rows = [("cam", {}), ("cam_er", {"er_weight": er}), ("cam_er", {"er_weight": max(GRID["er_weight"])}),
            ("cam_er_cmer", {"er_weight": er, "cmer_weight": cmer}),
            ("cam_er_cmer", {"er_weight": er, "cmer_weight": max(GRID["cmer_weight"])}),
            ("cam_er_cmer_kl", {"er_weight": er, "cmer_weight": cmer, "kl_weight": kl}),
            ("supervised", {"supervised_class_balance": balances[len(balances) // 2]})]
    return [row for i, row in enumerate(rows) if row not in rows[:i]]  # a grid whose top is the paper's


def curves(args) -> None:
    """``--curves-only``: the long runs of :func:`curve_rows`, their per-epoch validation curves
    (``args.out``), and the epoch from which the slowest of them stops rising."""
    from mixseg_lite.train.cam import flattening_epoch

    started = time.perf_counter()
    jobs = sorted([(p, method, weights, s) for p in args.pairings for s in args.seeds for method, weights in curve_rows()],
                  key=lambda job: SLOWEST_FIRST.index(job[1]))  # two workers then finish together
    runs = run_stage(jobs, args.runs, args.workers, args.plan)
    rows, budget = [], []
    for (pairing, method, weights, seed), run in runs:
        name = run_name(pairing, method, weights, seed, args.plan)
        own = {k: weights.get(k) for k in (*PAPER, *SUPERVISED_GRID)}
        rows += [{"pairing": "+".join(pairing), "method": method, "run": name, "seed": seed, **own, **entry}
                 for entry in run["log"]]
        dice = flattening_epoch([entry["val_dice_3d"] for entry in run["log"]])
        accuracy = flattening_epoch([entry["val_accuracy"] for entry in run["log"]])
        budget += [e for e in (dice, accuracy) if e is not None]
        print(f"{name}: validation 3-D Dice {run['log'][-1]['val_dice_3d']:.3f} at the last epoch, stops rising at "
              f"epoch {dice}; tag accuracy {run['log'][-1]['val_accuracy']:.3f}, stops rising at epoch {accuracy}",
              flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        columns = [*CURVE_COLUMNS[:4], *PAPER, *SUPERVISED_GRID, *CURVE_COLUMNS[4:-1], *CURVE_DICE_COLUMNS, "seconds"]
        writer = csv.DictWriter(f, columns, extrasaction="ignore", restval="")
        writer.writeheader()
        writer.writerows(rows)
    slowest, ran = max(budget, default=None), epochs_of("cam", args.plan)
    print(f"wrote {args.out} ({len(rows)} rows); the slowest row stops rising at epoch {slowest} of {ran}: pass it "
          "as --epochs" + (" WARNING: a curve still rises at the last epoch; rerun with a longer --epochs"
                           if slowest == ran else "") + f"; {(time.perf_counter() - started) / 60:.1f} min", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="simulated_brain",
                        help="simulated_brain (procedural, the committed file) or brain_phantom (ICBM152 anatomy)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: results/cam_ablation_<brain|phantom>.csv (cam_convergence_... with --curves-only)")
    parser.add_argument("--runs", type=Path, default=None,
                        help="folder of the finished runs (default: runs/cam_ablation[_phantom], "
                             "runs/cam_convergence_<brain|phantom> with --curves-only)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"budget of every row (default {EPOCHS} on simulated_brain, {CURVE_EPOCHS} with "
                             "--curves-only; required on brain_phantom: choose it from the curves)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help=f"default {' '.join(map(str, SEEDS))} (0 with --curves-only)")
    parser.add_argument("--t1ce", action="store_true", help="also the pairing T1ce + FLAIR")
    parser.add_argument("--grid", choices=("full", "coarse"), default="full",
                        help="weight grids: GRID and SUPERVISED_GRID, or COARSE_GRID and COARSE_SUPERVISED_GRID")
    parser.add_argument("--flat-bound", type=float, default=None,
                        help="admit a weight only when every network has a flat CAM on at most this share of its "
                             "predicted-positive training slices (default 0.5 on brain_phantom, off on simulated_brain)")
    parser.add_argument("--extra-seeds", type=int, nargs="+", default=None,
                        help="after choosing the weights on --seeds, train only the chosen rows on these seeds "
                             "too (column choosing_seed False): more seeds for the claims, the choice unchanged")
    parser.add_argument("--curves-only", action="store_true",
                        help="only the long validation curves of seed 0 that choose --epochs")
    args = parser.parse_args()
    setting = DATASETS[args.dataset]
    if args.epochs is None and args.dataset != "simulated_brain" and not args.curves_only:
        parser.error(f"--epochs is required on {args.dataset}: run --curves-only first and pass the epoch "
                     "from which the slowest row stops rising")
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be >= 1")
    if args.flat_bound is not None and not 0 <= args.flat_bound <= 1:
        parser.error("--flat-bound is a share of slices, between 0 and 1")
    if args.flat_bound is None and setting["flat_check"]:
        from mixseg_lite.train.cam import FLAT_CAM_BOUND

        args.flat_bound = FLAT_CAM_BOUND
    epochs = args.epochs or (CURVE_EPOCHS if args.curves_only else None)
    args.plan = {"dataset": args.dataset, "epochs": epochs, "supervised_epochs": epochs,
                 "curve_dice": args.curves_only}
    args.pairings = [*PAIRINGS, *([T1CE_PAIRING] if args.t1ce else [])]
    args.seeds = args.seeds or ([0] if args.curves_only else SEEDS)
    args.out = args.out or Path(setting["curves_out" if args.curves_only else "out"])
    args.runs = args.runs or Path(setting["curves_runs" if args.curves_only else "runs"])
    if args.curves_only:
        return curves(args)
    args.grid_values = {**(GRID if args.grid == "full" else COARSE_GRID),
                        **(SUPERVISED_GRID if args.grid == "full" else COARSE_SUPERVISED_GRID)}
    started = time.perf_counter()

    runs = run_stage([(p, "cam", {}, s) for p in args.pairings for s in args.seeds], args.runs, args.workers, args.plan)
    chosen: dict = {p: {} for p in args.pairings}
    runs += weight_stage(runs, "cam_er", "er_weight", chosen, args, per_modality=True)
    for method, name in (("cam_er_cmer", "cmer_weight"), ("cam_er_cmer_kl", "kl_weight")):
        runs += weight_stage(runs, method, name, chosen, args)
    balances = args.grid_values["supervised_class_balance"]
    runs += run_stage([(p, "supervised", {"supervised_class_balance": cb}, s) for p in args.pairings
                       for s in args.seeds for cb in balances], args.runs, args.workers, args.plan)
    for p in args.pairings:
        chosen[p]["supervised_class_balance"] = choose(runs, p, "supervised", {}, "supervised_class_balance",
                                                       values=balances, flat_bound=args.flat_bound)

    extra = run_stage(chosen_jobs(chosen, args.pairings, args.extra_seeds or []), args.runs, args.workers, args.plan)

    rows, curves_rows = [], []
    for (pairing, method, weights, seed), run in [*runs, *extra]:
        for row in run["rows"]:
            if row["method"] == "empty" and method != "cam":
                continue  # one empty baseline per pairing and seed
            m = row["modality"]
            # The weights this modality's network trained with (None: the term is off in this row);
            # "chosen" when they are the ones chosen for its method.
            own = {k: (weights[k][m] if isinstance(weights[k], dict) else weights[k]) if k in weights and m != "-"
                   else None for k in (*PAPER, *SUPERVISED_GRID)}
            best = {k: (v[m] if isinstance(v, dict) else v) for k, v in chosen[pairing].items()} if m != "-" else {}
            is_chosen = all(best[k] == own[k] for k in weights) if m != "-" else True
            rows.append({"pairing": "+".join(pairing), "seed": seed, **own, "chosen": is_chosen,
                         "choosing_seed": seed in args.seeds, **row})
        curves_rows += [{"pairing": "+".join(pairing), "method": method,
                         "run": run_name(pairing, method, weights, seed, args.plan), "seed": seed, **entry}
                        for entry in run["log"]]
    columns = [*COLUMNS, *(FLAT_COLUMNS if args.flat_bound is not None else []),
               *(["choosing_seed"] if args.extra_seeds else [])]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    curve_path = args.out.with_name(args.out.stem + "_curves.csv")
    with curve_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, CURVE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(curves_rows)
    edges = [r for r in rows if r.get("threshold_at_edge") and r["chosen"]]
    print(f"wrote {args.out} ({len(rows)} rows) and {curve_path}; chosen weights {chosen}; chosen rows with a "
          f"threshold on the grid's edge: {len(edges)}; "
          f"{(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
