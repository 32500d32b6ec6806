"""Training with mixed supervision: one function for every ablation row of REFERENCE A.

Each step draws a batch from the fully labelled set ``D_s`` and one from the weakly labelled
set ``D_w``, runs them through the shared encoder together, and combines (:func:`mixed_objective`)::

    L = L_s(teacher on D_s full masks)
      + lambda_w   * L_w(student on the weak masks of D_s and D_w)
      + lambda_kd  * KL(teacher || student)                   on D_s and D_w (kd_on="all") or D_s only
      + lambda_ent * H(p_student)                             on D_w (entropy_on="weak") or both
      [ + lambda_ent * CE(p_student, argmax p_student)        instead of H, for "pseudo" ]

Two recipes fill every choice the paper leaves open (:data:`RECIPES`): ``"ours"`` and
``"authors"``, the values and quirks of the authors' own training script (josedolz/
MSL-student-becomes-master, ``main.py`` at commit 68b98c2; REFERENCE A.1). Every field on which
they differ is a :class:`MixedConfig` field, documented there.

Ablation rows (``METHODS``): ``lower_bound`` (teacher on D_s only), ``weak_only`` (student with
L_w only), ``kl``, ``ent``, ``kl_ent`` (the method), ``pseudo`` (KL + pseudo-masks) and
``upper_bound`` (teacher on all images with full masks). Two semi-supervised rows use the images
of D_w but not their weak labels, on the same UNet (encoder + teacher decoder) as the lower bound
(:mod:`mixseg_lite.losses.semi`)::

    mean_teacher:  L = L_s(net on D_s) + lambda_semi * r(t) * mean (softmax net(x_w) - softmax ema(x_w + noise))^2
    cps:           L = L_s(a on D_s) + L_s(b on D_s) + lambda_semi * [CE(a, argmax b) + CE(b, argmax a)] on D_s and D_w

with ``r(t)`` the sigmoid ramp-up over ``ramp_up_epochs``; the EMA network follows the trained one
with decay 0.99 after each step; CPS's second network ``b`` is initialised from another seed.
Both report the trained network ``net`` / ``a`` (branch "teacher"), as SSL4MIS evaluates them.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mixseg_lite.data.slices import SliceDataset, index_batches
from mixseg_lite.data.volume import Volume
from mixseg_lite.errors import InputError, check_choice, check_field, check_nonempty, is_number
from mixseg_lite.losses.semi import (consistency_loss, cross_pseudo_supervision_loss, ema_decay, ema_update,
                                     sigmoid_rampup)
from mixseg_lite.losses.mixed import (authors_entropy, authors_kl_distillation, entropy_loss, kl_distillation,
                                      partial_cross_entropy, pseudo_mask_loss, supervised_loss)
from mixseg_lite.metrics import evaluate_volumes, summarize_per_volume
from mixseg_lite.models import DualBranchUNet
from mixseg_lite.weak import WEAK_KINDS
from mixseg_lite.runtime import pick_device, seed_everything, set_deterministic

# Which terms each ablation row switches on; the weights themselves live in MixedConfig.
# "semi" rows use D_w's images without their labels (issue: what do the weak labels buy?).
METHODS: dict[str, dict] = {
    "lower_bound":  {"student": False, "kd": False, "ent": False, "pseudo": False, "all_full": False, "semi": None},
    "weak_only":    {"student": True, "kd": False, "ent": False, "pseudo": False, "all_full": False, "semi": None},
    "kl":           {"student": True, "kd": True, "ent": False, "pseudo": False, "all_full": False, "semi": None},
    "ent":          {"student": True, "kd": False, "ent": True, "pseudo": False, "all_full": False, "semi": None},
    "kl_ent":       {"student": True, "kd": True, "ent": True, "pseudo": False, "all_full": False, "semi": None},
    "pseudo":       {"student": True, "kd": True, "ent": False, "pseudo": True, "all_full": False, "semi": None},
    "upper_bound":  {"student": False, "kd": False, "ent": False, "pseudo": False, "all_full": True, "semi": None},
    "mean_teacher": {"student": False, "kd": False, "ent": False, "pseudo": False, "all_full": False,
                     "semi": "mean_teacher"},
    "cps":          {"student": False, "kd": False, "ent": False, "pseudo": False, "all_full": False, "semi": "cps"},
}

# Semi-supervised rows (their papers' / SSL4MIS's ACDC values): consistency weight, EMA decay,
# and the noise added to the EMA teacher's input (Gaussian, sd 0.1, clipped to +-0.2).
SEMI_DEFAULT_WEIGHT = {"mean_teacher": 0.1, "cps": 1.5}
EMA_DECAY = 0.99
MT_NOISE_SD, MT_NOISE_CLIP = 0.1, 0.2


# The recipes. "ours": our choices where the paper is silent, each with a measured reason
# (docs/recipes.md). "authors": what the authors' script main.py (commit 68b98c2) does when run with
# the command its README gives for the main experiments (`--epochs 600 --xtimes_weak 5 --weight_KL 50
# --weight_Entropy 1 --weight_Weakly 0.1 --temperature 2`); line numbers of main.py in the comments.
# "authors_defaults": the same script at its argparse defaults (xtimes_weak 1, weight_KL 20), which
# the committed sweeps of 2026-12-02 used under the name "authors".
RECIPES: dict[str, dict] = {
    "ours": {
        "lambda_kd": 10.0, "temperature": 1.0, "kd_on": "all", "detach_teacher": True, "kd_form": "standard",
        "lambda_ent": 0.1, "entropy_on": "weak", "entropy_form": "pixel", "ramp_up_epochs": 5,
        "lambda_w": 1.0, "weak_loss": "pooled", "dice_weight": 1.0, "class_balance": 0.5, "norm": "group",
        "optimizer": "adamw", "lr": 5e-3, "betas": (0.9, 0.999), "weight_decay": 1e-4, "schedule": "constant",
        "init": "default", "duplicate_full_batch": False, "weak_batch_multiple": 1,
    },
    "authors": {
        "lambda_kd": 50.0,            # --weight_KL 50 in the README's command (argparse default 20, l.357)
        "temperature": 2.0,           # T = 2 (l.361)
        "kd_on": "full",              # KL on the D_s outputs only (l.266-269)
        "detach_teacher": False,      # the teacher receives KL gradient
        "kd_form": "authors",         # KLDivLoss(log_softmax(softmax(z_t)/T), softmax(softmax(z_s)/T)) * 0.5 T^2
        "lambda_ent": 1.0,            # weight_Entropy = 1 (l.358)
        "entropy_on": "all",          # student outputs of D_s and D_w (l.272)
        "entropy_form": "authors",    # -(softmax * log_softmax).mean() over B*C*H*W, D_s counted three times
        "ramp_up_epochs": 0,          # no ramp-up
        "lambda_w": 0.1,              # weight_Weakly = 0.1 (l.359)
        "weak_loss": "per_set",       # pCE(D_s) + pCE(D_w), each a mean over its own seed pixels (l.255-260)
        "dice_weight": 0.0, "class_balance": 0.0,  # plain cross-entropy teacher (l.243)
        "norm": "batch",              # BatchNorm (UNet_Base.py)
        "optimizer": "adam", "lr": 1e-4, "betas": (0.9, 0.99), "weight_decay": 0.0,  # l.169
        "schedule": "authors_halving",  # lr halved when epoch % (best epoch + 100) == 0 (l.349-352)
        "init": "xavier",             # weights_init: xavier_normal convs, BatchNorm weight N(1, 0.02)
        "duplicate_full_batch": True,  # net(cat(x_s, x_s, x_w)) (l.233)
        "weak_batch_multiple": 5,     # --xtimes_weak 5: a D_w batch of 5 x 8 = 40 slices per step (default 1)
    },
}
RECIPES["authors_defaults"] = {**RECIPES["authors"], "lambda_kd": 20.0, "weak_batch_multiple": 1}
CHOICES = {"kd_on": ("all", "full"), "kd_form": ("standard", "authors"), "entropy_on": ("weak", "all"),
           "entropy_form": ("pixel", "authors"), "weak_loss": ("pooled", "per_set"),
           "optimizer": ("adamw", "adam"), "schedule": ("constant", "authors_halving"),
           "init": ("default", "xavier"), "norm": ("group", "batch", "instance", "none")}


# Every other field: (type, lowest, highest, None allowed); "int" excludes bools, "number" is int or float.
FIELD_RANGES: dict[str, tuple[str, float | None, float | None, bool]] = {
    "epochs": ("int", 0, None, False), "steps_per_epoch": ("int", 1, None, True), "batch_size": ("int", 1, None, False),
    "base_width": ("int", 1, None, False), "depth": ("int", 1, 8, False), "seed": ("int", 0, None, False),
    "ramp_up_epochs": ("int", 0, None, False), "weak_batch_multiple": ("int", 1, None, False),
    "lr": ("positive", 0, None, False), "temperature": ("positive", 0, None, False),
    "weight_decay": ("number", 0, None, False), "dice_weight": ("number", 0, None, False),
    "class_balance": ("number", 0, None, False), "pseudo_threshold": ("number", 0, 1, True),
    "lambda_kd": ("number", None, None, False), "lambda_ent": ("number", None, None, False),
    "lambda_w": ("number", None, None, False), "lambda_semi": ("number", None, None, True),
    "detach_teacher": ("bool", None, None, False), "duplicate_full_batch": ("bool", None, None, False),
    "channels_last": ("bool", None, None, True),
    "compile": ("bool", None, None, True), "deterministic": ("bool", None, None, False),
    "select_best": ("bool", None, None, False), "progress": ("bool", None, None, False),
}


def check_recipe_overrides(overrides: dict) -> None:
    """One-line :class:`InputError` unless every key of ``overrides`` is a recipe field."""
    if not isinstance(overrides, dict):
        raise InputError(f"recipe_overrides must be a mapping of recipe fields to values, got {overrides!r}")
    unknown = sorted(set(overrides) - set(RECIPES["ours"]))
    if unknown:
        raise InputError(f"recipe_overrides: unknown fields {unknown}; choose from {sorted(RECIPES['ours'])}")


def recipe_table() -> list[dict]:
    """One row per recipe field: its value under each recipe (for the notebooks and README)."""
    return [{"field": name, **{recipe: str(values[name]) for recipe, values in RECIPES.items()}}
            for name in RECIPES["ours"]]


@dataclass
class MixedConfig:
    """Hyper-parameters of one mixed-supervision run.

    ``recipe`` ("ours" or "authors", :data:`RECIPES`) fills every field left at None when the
    config is created; a value you pass wins. The filled values stay: for another recipe make a
    new config (``dataclasses.replace(config, recipe=...)`` would keep the first recipe's values). The recipe fields:

    - ``lambda_kd``, ``temperature``: KL weight and temperature ``T``.
    - ``kd_on``: "all" distils on D_s and D_w outputs; "full" on D_s only (authors).
    - ``detach_teacher``: True stops KL gradients at the teacher (ours); False lets KL pull the
      teacher towards the student too (authors).
    - ``kd_form``: "standard" ``T^2 mean_i KL(p_t || p_s)`` on logits / T; "authors" the script's
      expression on doubly-softmaxed outputs with 'mean' reduction
      (:func:`~mixseg_lite.losses.mixed.authors_kl_distillation`).
    - ``lambda_ent``, ``entropy_on`` ("weak": D_w; "all": D_s and D_w), ``entropy_form`` ("pixel":
      mean pixel entropy; "authors": the script's ``-(softmax * log_softmax).mean()`` = H / C per
      pixel, over its concatenation in which each D_s output appears three times).
    - ``ramp_up_epochs``: entropy / pseudo-mask weight grows linearly over these epochs (0: none).
    - ``lambda_w``, ``weak_loss``: partial-CE weight; "pooled" one mean over the seed pixels of
      D_s and D_w together, "per_set" the sum of one mean per set (authors).
    - ``dice_weight``, ``class_balance``: teacher loss ``L_s`` = (class-weighted) CE +
      dice_weight * Dice; 0 and 0 is the authors' plain CE.
    - ``norm``: "group" (ours: BatchNorm's running statistics lag the shared encoder) or "batch".
    - ``optimizer`` ("adamw", "adam"), ``lr``, ``betas``, ``weight_decay``, ``schedule``
      ("constant", or "authors_halving": halve the rate after epoch i > 0 when
      ``i % (best epoch + 100) == 0``), ``init`` ("default" torch init, "xavier" the script's).
    - ``duplicate_full_batch``: feed ``cat(x_s, x_s, x_w)`` as the script does (the teacher reads
      the first copy, the student the second; BatchNorm sees D_s twice), instead of ``cat(x_s, x_w)``.

    Left as ours in both recipes (say so when comparing): the step budget (``epochs``,
    ``steps_per_epoch``; the script trains 1000 epochs), batches drawn by shuffled passes (the
    script draws each D_w batch from a fresh shuffled loader and skips short D_s batches), and
    model selection on the reported branch's validation Dice (the script: the student's).
    """

    method: str = "kl_ent"
    recipe: str = "ours"
    epochs: int = 10
    steps_per_epoch: int | None = None  # default: enough steps to see every D_w slice once
    batch_size: int = 8                 # slices per group (D_s and D_w) per step
    lr: float | None = None
    weight_decay: float | None = None
    betas: tuple[float, float] | None = None
    optimizer: str | None = None
    schedule: str | None = None
    init: str | None = None
    lambda_kd: float | None = None
    lambda_ent: float | None = None     # also weights the pseudo-mask term
    lambda_w: float | None = None
    temperature: float | None = None
    kd_on: str | None = None
    detach_teacher: bool | None = None
    kd_form: str | None = None
    entropy_on: str | None = None
    entropy_form: str | None = None
    weak_loss: str | None = None
    duplicate_full_batch: bool | None = None
    weak_batch_multiple: int | None = None  # D_w slices per step = batch_size x this (the script's xtimes_weak)
    pseudo_threshold: float | None = None
    lambda_semi: float | None = None    # mean_teacher / cps weight; None: SEMI_DEFAULT_WEIGHT of the method
    ramp_up_epochs: int | None = None
    dice_weight: float | None = None    # L_s = CE + dice_weight * Dice; Dice keeps the small RV from being ignored
    class_balance: float | None = None  # CE class weights (1/frequency)**class_balance; 0 is plain CE
    weak_kind: str = "seeds"
    base_width: int = 8
    depth: int = 3
    norm: str | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool | str = False             # bfloat16 autocast on CPU, float16 + GradScaler on CUDA; "auto": by hardware
    channels_last: bool | None = None   # None: chosen by the hardware (hardware.choose_channels_last), logged
    compile: bool | None = None         # torch.compile; None: when the training is long enough to pay back (hardware.choose_compile)
    deterministic: bool = False         # identical CUDA runs (runtime.set_deterministic), at some speed cost
    select_best: bool = True            # return the weights of the best validation epoch
    progress: bool = True

    def __post_init__(self) -> None:
        check_choice(self.method, METHODS, "method")
        check_choice(self.recipe, RECIPES, "recipe")
        for name, value in RECIPES[self.recipe].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        for name, choices in {**CHOICES, "weak_kind": WEAK_KINDS}.items():
            check_choice(getattr(self, name), choices, name)
        for name, (kind, low, high, allow_none) in FIELD_RANGES.items():
            check_field(name, getattr(self, name), kind, low, high, allow_none)
        if self.amp not in (True, False, "auto") or not isinstance(self.amp, (bool, str)):
            raise InputError(f"amp must be True, False or 'auto' (bfloat16/float16 where the hardware has fast "
                             f"kernels), got {self.amp!r}")
        for name in ("lambda_kd", "lambda_ent", "lambda_w", "lambda_semi"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise InputError(f"{name} must be >= 0 (a negative weight would maximise its loss), "
                                 f"got {getattr(self, name)}")
        if (not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2
                or not all(is_number(b) and 0 <= b < 1 for b in self.betas)):
            raise InputError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = tuple(float(b) for b in self.betas)
        pick_device(self.device)  # an unavailable device fails here, naming the available ones

    @property
    def terms(self) -> dict:
        return METHODS[self.method]

    @property
    def semi_weight(self) -> float:
        """``lambda_semi``, or the default of this row's semi-supervised method. Resolved here, not
        when the config is made: one config serves every row of an ablation (``method`` replaced)."""
        if self.lambda_semi is not None:
            return self.lambda_semi
        return SEMI_DEFAULT_WEIGHT.get(self.terms["semi"], 0.0)


@dataclass
class TrainResult:
    """What :func:`train_mixed` returns: the model, the per-epoch log and the final evaluation."""

    model: DualBranchUNet
    config: MixedConfig
    log: list[dict] = field(default_factory=list)
    branches: tuple[str, ...] = ("teacher", "student")
    # Weights after the last epoch; ``model`` holds the best validation epoch's when select_best.
    last_state: dict | None = None
    best_epoch: int | None = None       # 1-based epoch of ``model``'s weights
    # What the hardware choices resolved to, and why: {"channels_last", "channels_last_reason", "amp", "amp_reason"}.
    speed: dict | None = None


def resolve_speed(config: MixedConfig, device: torch.device) -> tuple[MixedConfig, dict]:
    """``channels_last=None`` and ``amp="auto"`` replaced by the hardware's choice; the reasons.

    The choices (:func:`mixseg_lite.hardware.choose_channels_last`,
    :func:`~mixseg_lite.hardware.bf16_autocast_is_fast`) follow ``make bench`` measurements, so a
    default never slows a run down; a value the user set is kept, and the reason says when the
    hardware makes it slow.
    """
    from mixseg_lite.hardware import bf16_autocast_is_fast, choose_channels_last

    if config.channels_last is None:
        channels_last, layout_reason = choose_channels_last(device)
    else:
        channels_last, layout_reason = config.channels_last, "set in the config"
    fast, amp_reason = bf16_autocast_is_fast(device)
    if config.amp == "auto":
        amp = fast
    else:
        amp = config.amp
        amp_reason = "set in the config" + (f"; {amp_reason}" if amp and not fast else "")
    speed = {"channels_last": channels_last, "channels_last_reason": layout_reason, "amp": amp, "amp_reason": amp_reason}
    return dataclasses.replace(config, channels_last=channels_last, amp=amp), speed


def _compile_or_eager(model: torch.nn.Module, config: MixedConfig, device: torch.device, planned_steps: int,
                      full_ds: SliceDataset, with_weak: bool, speed: dict) -> tuple[torch.nn.Module, dict]:
    """The network the student rows step with: ``torch.compile(model)`` or ``model``; ``speed``
    gains ``compile`` and ``compile_reason``.

    ``config.compile=None`` asks :func:`mixseg_lite.hardware.choose_compile` (compile only when
    the ``planned_steps`` pay back the compilation). A compiled network is tried at once on a copy,
    forward and backward on a batch of the real shape, so a platform where compilation fails
    trains in eager mode (with the error as the reason) instead of failing mid-run; a compile the
    user asked for (``True``) that fails raises.
    """
    from mixseg_lite.hardware import choose_compile, compiled_once

    key = f"{type(model).__name__} {config.base_width}x{config.depth} batch {config.batch_size}x{config.weak_batch_multiple}"
    if config.compile is None:
        wanted, reason = choose_compile(device, planned_steps, key)
    else:
        wanted, reason = config.compile, "set in the config"
    if not wanted or not terms_use_compiled(config.method):
        return model, {**speed, "compile": False, "compile_reason": reason if wanted is False or config.compile is None
                       else "the teacher-only rows do not use the compiled network"}
    n_images = config.batch_size * (2 if config.duplicate_full_batch else 1) + (
        config.batch_size * config.weak_batch_multiple if with_weak else 0)
    trial = copy.deepcopy(model)
    example = _to_device(torch.zeros(n_images, *full_ds.images.shape[1:]), device, config.channels_last)
    try:
        with _autocast(device, config.amp):
            outputs = torch.compile(trial)(example)
        sum(o.float().sum() for o in outputs).backward()
    except Exception as error:  # noqa: BLE001 - any compiler failure: eager, with the reason
        if config.compile:
            raise
        return model, {**speed, "compile": False,
                       "compile_reason": f"eager: torch.compile failed here ({type(error).__name__}: "
                                         f"{str(error).splitlines()[0][:200] if str(error) else ''})"}
    finally:
        del trial
    compiled_once(key)
    return torch.compile(model), {**speed, "compile": True, "compile_reason": reason}


def _stream_generator(seed: int, stream: int) -> torch.Generator:
    """An independent generator per batch stream (0: D_s, 1: D_w), derived from the run's seed."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, stream]).generate_state(1)[0]))


def steps_per_epoch(full: list[Volume], weak: list[Volume], config: MixedConfig) -> int:
    """Steps of one epoch: ``config.steps_per_epoch``, else D_w's slices (D_s's without D_w) per batch."""
    n_main = sum(v.num_slices for v in weak) or sum(v.num_slices for v in full)
    return config.steps_per_epoch or max(1, math.ceil(n_main / config.batch_size))


def terms_use_compiled(method: str) -> bool:
    """Whether a row steps through the (possibly compiled) dual-branch forward: the student rows;
    the bounds call the teacher branch alone, the semi-supervised rows their own objective."""
    return bool(METHODS[method]["student"]) and not METHODS[method]["semi"]


def reported_branches(method: str) -> tuple[str, ...]:
    """Branches worth reporting: the bounds never train the student."""
    return ("teacher", "student") if METHODS[method]["student"] else ("teacher",)


def train_mixed(full: list[Volume], weak: list[Volume], val: list[Volume] | None = None,
                config: MixedConfig | None = None, checkpoint: str | Path | None = None,
                resume: bool = False, planned_steps: int | None = None, **overrides) -> TrainResult:
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
        planned_steps: the compiled steps ``compile=None`` may count on to pay back compilation
            (default: this row's ``epochs x steps``; :func:`run_mixed_ablation` passes the steps of
            all its student rows, which share one compilation).

    Returns:
        :class:`TrainResult` with the trained model (in eval mode) and the per-epoch log.
    """
    config = dataclasses.replace(config or MixedConfig(), **overrides)
    check_nonempty(len(full), "fully labelled set D_s", "train_mixed")
    terms = config.terms
    if uses_weak_images(config.method) and not weak:
        raise InputError(f"method {config.method!r} needs weakly labelled volumes (D_w is empty)")
    seed_everything(config.seed)
    device = pick_device(config.device)
    config, speed = resolve_speed(config, device)
    if config.deterministic:
        set_deterministic(True)

    full_ds = SliceDataset(full, weak_kind=config.weak_kind, weak_seed=config.seed)
    # The upper bound draws from D_w too, with its full masks: same images per step as the method.
    weak_ds = (SliceDataset(weak, weak_kind=config.weak_kind, weak_seed=config.seed + 1)
               if uses_weak_images(config.method) else None)
    model = _new_network(full_ds, config, device)
    # Mean Teacher's EMA copy, or CPS's second network (initialised from another seed); both are
    # saved in the checkpoint, so a resumed run equals an uninterrupted one.
    ema = partner = None
    if terms["semi"] == "mean_teacher":
        ema = copy.deepcopy(model).requires_grad_(False)
    elif terms["semi"] == "cps":
        torch.manual_seed(config.seed + 1_000_003)
        partner = _new_network(full_ds, config, device)
        seed_everything(config.seed)
    optimiser = make_optimiser(model if partner is None else torch.nn.ModuleList([model, partner]), config)
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda")

    # Every ablation row takes the same number of steps, sized by D_w, so rows differ only in
    # their losses, not in how long they trained.
    steps = steps_per_epoch(full, weak, config)
    step_model, speed = _compile_or_eager(model, config, device, planned_steps or steps * config.epochs, full_ds,
                                          weak_ds is not None, speed)
    log: list[dict] = []
    start_epoch = 0
    best_score, best_state, best_epoch = -math.inf, None, 0
    selected_epoch = None  # 1-based epoch whose weights select_best returns
    full_cursor = weak_cursor = 0  # batches drawn so far from each stream
    if resume and checkpoint is not None and Path(checkpoint).exists():
        state = _load_checkpoint(checkpoint, device)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        torch.set_rng_state(state["torch_rng"].cpu())  # map_location may have moved it
        log, start_epoch = state["log"], state["epoch"]
        best_score, best_state = state["best_score"], state["best_state"]
        best_epoch, selected_epoch = state.get("best_epoch", 0), state.get("selected_epoch")
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        for network, key in ((ema, "ema"), (partner, "partner")):
            if network is not None:
                network.load_state_dict(state[key])
        full_cursor, weak_cursor = state["full_cursor"], state["weak_cursor"]
    # Each stream has its own generator, so a resumed run replays exactly the same batches.
    full_batches = index_batches(len(full_ds), config.batch_size, _stream_generator(config.seed, 0), full_cursor)
    # The step count stays sized by D_w / batch_size for every recipe, so a larger D_w batch (the
    # authors' xtimes_weak) shows each step more weak slices, not fewer steps.
    weak_batches = (index_batches(len(weak_ds), config.batch_size * config.weak_batch_multiple,
                                  _stream_generator(config.seed, 1), weak_cursor)
                    if weak_ds is not None else None)

    autocast = _autocast(device, config.amp)
    bar = tqdm(range(start_epoch, config.epochs), desc=f"{config.method}", disable=not config.progress,
               initial=start_epoch, total=config.epochs)
    for epoch in bar:
        model.train()
        # Entropy sharpens whatever the student predicts, so it waits until KL has made that sensible.
        confidence_weight = config.lambda_ent * min(1.0, epoch / config.ramp_up_epochs) if config.ramp_up_epochs else config.lambda_ent
        sums: dict[str, float] = {}
        shares: dict[str, float] = {}
        for step in range(steps):
            full_idx = next(full_batches)
            full_cursor += 1
            batch_s = full_ds.batch(full_idx)
            images, n_s = batch_s["image"], len(full_idx)
            if config.duplicate_full_batch and terms["student"]:
                images = torch.cat([images, images])  # the script's cat(x_s, x_s, x_w)
            if weak_ds is not None:
                weak_idx = next(weak_batches)
                weak_cursor += 1
                batch_w = weak_ds.batch(weak_idx)
                images = torch.cat([images, batch_w["image"]])
            images = _to_device(images, device, config.channels_last)
            with autocast:
                student = None
                if terms["semi"]:  # D_w's images only, its labels unused
                    losses = semi_objective(model, images, n_s, _to_device(batch_s["label"], device), config,
                                            epoch, ema=ema, partner=partner)
                elif terms["student"]:
                    teacher, student = step_model(images)
                else:
                    teacher = model.teacher_logits(images)
                if not terms["semi"]:
                    if terms["all_full"]:  # every image of the step has its full mask
                        full_labels = torch.cat([batch_s["label"], batch_w["label"]])
                    else:
                        full_labels = batch_s["label"]
                    weak_targets = (torch.cat([batch_s["weak"], batch_w["weak"]]) if terms["student"] else None)
                    losses = mixed_objective(teacher, student, n_s, _to_device(full_labels, device),
                                             None if weak_targets is None else _to_device(weak_targets, device),
                                             config, confidence_weight)
                total = sum(losses.values())
            if step == 0 and student is not None and len(losses) > 1:
                # How much of the pull on the student's logits each term carries (first step of
                # the epoch): a weight means little without its term's scale.
                shares = gradient_shares({k: v for k, v in losses.items() if k != "sup"}, student)
            optimiser.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.step(optimiser)
            scaler.update()
            if ema is not None:  # Mean Teacher: after each step, with the reference's warm-up of the decay
                ema_update(ema, model, ema_decay(full_cursor, EMA_DECAY))
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
        record = {"epoch": epoch + 1, **{f"loss_{k}": v / steps for k, v in sums.items()},
                  **{f"share_{k}": v for k, v in shares.items()}}
        if val:
            for branch, dice in validation_dice(model, val, device, config.method).items():
                record[f"val_dice_{branch}"] = dice
        log.append(record)
        score = record.get(f"val_dice_{reported_branches(config.method)[-1]}")
        if config.select_best and score is not None and score > best_score:
            best_score, best_state = score, {k: v.detach().clone() for k, v in model.state_dict().items()}
            selected_epoch = epoch + 1
        if score is not None and score >= best_score:
            best_epoch = epoch  # the script keeps its best epoch index for the learning-rate rule
        if config.schedule == "authors_halving" and epoch > 0 and epoch % (best_epoch + 100) == 0:
            for group in optimiser.param_groups:
                group["lr"] *= 0.5
        bar.set_postfix({k: round(v, 3) for k, v in record.items() if k != "epoch"})
        if checkpoint is not None:
            _save_checkpoint(checkpoint, model, optimiser, log, epoch + 1, full_cursor, weak_cursor,
                             best_score, best_state, best_epoch, scaler, selected_epoch,
                             extra={key: network.state_dict() for network, key in ((ema, "ema"), (partner, "partner"))
                                    if network is not None})
    last_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        selected_epoch = len(log)
    model.eval()
    return TrainResult(model, config, log, reported_branches(config.method), last_state, selected_epoch, speed)


def mixed_objective(teacher: torch.Tensor, student: torch.Tensor | None, n_s: int, full_labels: torch.Tensor,
                    weak_targets: torch.Tensor | None, config: MixedConfig,
                    confidence_weight: float) -> dict[str, torch.Tensor]:
    """The loss terms of one step, named as in the formula of this module (sum them for ``L``).

    Args:
        teacher: teacher logits ``(N, C, H, W)`` of the step's images: ``[D_s | D_w]``, or
            ``[D_s | D_s | D_w]`` with ``config.duplicate_full_batch`` (the teacher reads the first copy).
        student: student logits of the same images, or None for the bounds (teacher only).
        n_s: number of D_s images in the step.
        full_labels: full masks of D_s ``(n_s, H, W)`` (of D_s and D_w for the upper bound).
        weak_targets: weak masks of D_s then D_w, or None without a student.
        confidence_weight: ``lambda_ent`` after the ramp-up of this epoch.

    Returns:
        ``{"sup": L_s, "weak": lambda_w L_w, "kd": lambda_kd KL, "ent": w H or "pseudo": w CE}``,
        only the terms the method switches on.
    """
    terms = config.terms
    supervised = teacher if terms["all_full"] else teacher[:n_s]
    losses = {"sup": supervised_loss(supervised.float(), full_labels, config.dice_weight, config.class_balance)}
    if student is None or not terms["student"]:
        return losses
    student = student.float()
    # The student's outputs of D_s and D_w; with the duplicated layout its D_s copy is the second.
    # Slices are taken in the order the terms use them: autograd sums the gradient contributions
    # into `student` in creation order, and another order changes results in the last bits.
    first = n_s if config.duplicate_full_batch else 0
    if config.weak_loss == "pooled":
        weak = partial_cross_entropy(student[first:] if first else student, weak_targets)
    else:
        weak = (partial_cross_entropy(student[first:first + n_s], weak_targets[:n_s])
                + partial_cross_entropy(student[first + n_s:], weak_targets[n_s:]))
    losses["weak"] = weak if config.lambda_w == 1.0 else config.lambda_w * weak
    if config.entropy_on == "all":
        unlabelled_part = student[first:] if first else student
    else:
        unlabelled_part = student[first + n_s:]
    if terms["kd"]:
        if config.kd_on == "full":
            pair = (student[first:first + n_s], teacher[:n_s].float())
        elif first:
            pair = (student[first:], torch.cat([teacher[:n_s], teacher[first + n_s:]]).float())
        else:
            pair = (student, teacher.float())
        kd = (kl_distillation(*pair, config.temperature, detach_teacher=config.detach_teacher)
              if config.kd_form == "standard"
              else authors_kl_distillation(*pair, config.temperature, detach_teacher=config.detach_teacher))
        losses["kd"] = config.lambda_kd * kd
    if terms["ent"]:
        if config.entropy_form == "pixel":
            losses["ent"] = confidence_weight * entropy_loss(unlabelled_part)
        else:  # the script: entropy of cat(student's D_s copy, whole student output), mean over B*C*H*W
            parts = [student[first:first + n_s], student] if config.entropy_on == "all" else [unlabelled_part]
            losses["ent"] = confidence_weight * authors_entropy(torch.cat(parts))
    if terms["pseudo"]:
        losses["pseudo"] = confidence_weight * pseudo_mask_loss(unlabelled_part, config.pseudo_threshold)
    return losses


def semi_objective(model: DualBranchUNet, images: torch.Tensor, n_s: int, full_labels: torch.Tensor,
                   config: MixedConfig, epoch: int, ema: DualBranchUNet | None = None,
                   partner: DualBranchUNet | None = None) -> dict[str, torch.Tensor]:
    """The loss terms of one Mean Teacher or CPS step (formulas in the module docstring).

    Args:
        model: the trained network (its teacher decoder is the UNet that is reported).
        images: ``(N, M, H, W)``, the ``n_s`` images of D_s first, then those of D_w.
        full_labels: full masks of D_s ``(n_s, H, W)``.
        epoch: 0-based epoch, for the ramp-up of ``lambda_semi``.
        ema: Mean Teacher's EMA network (no gradient). partner: CPS's second network.

    Returns:
        ``{"sup": L_s, "cons": weighted consistency}`` (Mean Teacher) or
        ``{"sup": L_s(a), "sup_b": L_s(b), "cps": weighted CPS}``.
    """
    logits = model.teacher_logits(images).float()
    sup = supervised_loss(logits[:n_s], full_labels, config.dice_weight, config.class_balance)
    weight = config.semi_weight * sigmoid_rampup(epoch, config.ramp_up_epochs)
    if ema is not None:
        unlabelled = images[n_s:]
        noise = torch.clamp(torch.randn_like(unlabelled) * MT_NOISE_SD, -MT_NOISE_CLIP, MT_NOISE_CLIP)
        with torch.no_grad():
            target = ema.teacher_logits(unlabelled + noise).float()
        return {"sup": sup, "cons": weight * consistency_loss(logits[n_s:], target)}
    logits_b = partner.teacher_logits(images).float()
    sup_b = supervised_loss(logits_b[:n_s], full_labels, config.dice_weight, config.class_balance)
    return {"sup": sup, "sup_b": sup_b, "cps": weight * cross_pseudo_supervision_loss(logits, logits_b)}


def gradient_shares(losses: dict[str, torch.Tensor], wrt: torch.Tensor) -> dict[str, float]:
    """How strongly each loss term pulls on ``wrt`` (e.g. the student logits): the L2 norm of
    ``d term / d wrt`` per term, divided by the sum over terms. A weight only means something
    together with its term's scale (a sum over pixels where a mean is meant multiplies it by the
    pixel count), so compare shares, not weights. Terms that do not reach ``wrt`` get 0.
    """
    norms = {}
    for name, term in losses.items():
        (grad,) = torch.autograd.grad(term, wrt, retain_graph=True, allow_unused=True)
        norms[name] = 0.0 if grad is None else float(grad.norm())
    total = sum(norms.values())
    return {name: (value / total if total > 0 else 0.0) for name, value in norms.items()}


def uses_weak_images(method: str) -> bool:
    """Whether a row draws batches from D_w: the student rows (weak labels), the upper bound (full
    masks) and the semi-supervised rows (images only)."""
    terms = METHODS[method]
    return bool(terms["student"] or terms["all_full"] or terms["semi"])


def _new_network(dataset: SliceDataset, config: MixedConfig, device: torch.device) -> DualBranchUNet:
    model = DualBranchUNet(len(dataset.modalities), dataset.num_classes, config.base_width, config.depth,
                           config.norm)
    if config.init == "xavier":
        model.apply(_authors_init)
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if config.channels_last else model


def make_optimiser(model: torch.nn.Module, config: MixedConfig) -> torch.optim.Optimizer:
    """Adam (the authors') or AdamW (ours) with the config's rate, betas and weight decay."""
    kind = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return kind(model.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)


def _authors_init(module: torch.nn.Module) -> None:
    """The script's ``weights_init``: Xavier-normal convolutions, BatchNorm weight N(1, 0.02), bias 0."""
    if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
        torch.nn.init.xavier_normal_(module.weight)
    elif isinstance(module, torch.nn.BatchNorm2d):
        torch.nn.init.normal_(module.weight, 1.0, 0.02)
        torch.nn.init.zeros_(module.bias)


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
                     best_score, best_state, best_epoch=0, scaler=None, selected_epoch=None, extra=None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "log": log, "epoch": epoch, "full_cursor": full_cursor, "weak_cursor": weak_cursor,
                "best_score": best_score, "best_state": best_state, "best_epoch": best_epoch,
                "selected_epoch": selected_epoch, **(extra or {}),
                # the float16 loss scale on CUDA: without it a resumed run is not the same run
                "scaler": scaler.state_dict() if scaler is not None else {}}, tmp)
    tmp.replace(path)  # atomic: an interrupted save never leaves a half-written checkpoint


def _load_checkpoint(path, device) -> dict:
    try:
        state = torch.load(path, map_location=device, weights_only=True)
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
    return {branch: summarize_per_volume(evaluate_volumes(predictions[branch], volumes))["mean"]["dice"]["mean"]
            for branch in reported_branches(method)}


def evaluate_mixed(result: TrainResult, volumes: list[Volume]) -> list[dict]:
    """Per-branch rows ``{"method", "branch", "dice", "dice_std", "hd95_mm", "hd95_std", "per_class",
    "dice_last", "best_epoch", "share_*"}``.

    Dice and HD95 (mm) are computed per 3-D volume and foreground class, averaged over classes
    per volume, then mean and std over volumes, for the returned model (the best validation
    epoch's weights with ``select_best``). ``dice_last`` is the same Dice for the weights after
    the last epoch (equal when they are the same weights), so a reader sees whether model
    selection mattered. ``share_*`` are the gradient shares of the last epoch's log (student rows).
    """
    predictions = predict_volumes(result.model, volumes)
    last_predictions = predictions
    if result.last_state is not None and result.best_epoch != len(result.log):
        best_state = {k: v.clone() for k, v in result.model.state_dict().items()}
        result.model.load_state_dict(result.last_state)
        last_predictions = predict_volumes(result.model, volumes)
        result.model.load_state_dict(best_state)
    shares = {k: v for k, v in (result.log[-1] if result.log else {}).items() if k.startswith("share_")}
    rows = []
    for branch in result.branches:
        summary = summarize_per_volume(evaluate_volumes(predictions[branch], volumes))
        last = summarize_per_volume(evaluate_volumes(last_predictions[branch], volumes))
        rows.append({"method": result.config.method, "branch": branch,
                     "dice": summary["mean"]["dice"]["mean"], "dice_std": summary["mean"]["dice"]["std"],
                     "hd95_mm": summary["mean"]["hd95_mm"]["mean"], "hd95_std": summary["mean"]["hd95_mm"]["std"],
                     "dice_last": last["mean"]["dice"]["mean"], "best_epoch": result.best_epoch,
                     **(shares if branch == "student" else {}),
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
    # The student rows compile one network between them (choose_compile): count all their steps.
    base = dataclasses.replace(config or MixedConfig(), **overrides)
    per_row = steps_per_epoch(full, weak, base) * base.epochs
    planned = per_row * sum(terms_use_compiled(m) for m in methods)
    for method in methods:
        results[method] = train_mixed(full, weak, val, config, method=method, planned_steps=planned or None,
                                      **overrides)
        rows += evaluate_mixed(results[method], test)
    return rows, results


def recipe_gradient_shares(model: DualBranchUNet, full: list[Volume], weak: list[Volume], recipe: str,
                           method: str = "kl_ent", batch_size: int = 8, seed: int = 0, weak_kind: str = "seeds",
                           batches: int = 4, **overrides) -> dict[str, float]:
    """The gradient shares (:func:`gradient_shares`) that the loss terms of ``recipe`` would carry on
    ``model``'s student logits, at their full weights (no ramp-up), averaged over ``batches`` steps.

    The network and the images stay fixed and only the recipe's loss terms change (their weights,
    the images each term sees, the KL and entropy forms, the batch layout), so two recipes compared
    on one trained network show what their scales alone do. The batches are the first ``batches``
    steps :func:`train_mixed` would draw with this ``seed`` and ``batch_size`` (D_w batches
    ``batch_size * weak_batch_multiple`` slices). The network is run in eval mode (BatchNorm uses its
    running statistics and does not update them; the shares a training log records are measured in
    train mode) and left as it was; its weights and gradients are not touched.

    Args:
        model: a trained (or fresh) :class:`DualBranchUNet`.
        full, weak: the volumes of D_s and D_w.
        recipe: a key of :data:`RECIPES`; ``overrides`` replace its fields (``MixedConfig`` names).
        method: a row that trains the student (``kl_ent``, ``kl``, ``ent``, ``pseudo``, ``weak_only``).

    Returns:
        ``{term: share}`` for the student's terms of ``method`` (``weak``, ``kd``, ``ent`` or
        ``pseudo``); the shares sum to 1.
    """
    config = MixedConfig(method=method, recipe=recipe, batch_size=batch_size, seed=seed, weak_kind=weak_kind,
                         progress=False, **overrides)
    if not config.terms["student"]:
        raise InputError(f"method {method!r} does not train the student: its loss has no student terms to share")
    check_nonempty(len(full), "fully labelled set D_s", "recipe_gradient_shares")
    check_nonempty(len(weak), "weakly labelled set D_w", "recipe_gradient_shares")
    if not isinstance(batches, int) or isinstance(batches, bool) or batches < 1:
        raise InputError(f"batches must be an integer >= 1, got {batches!r}")
    device = next(model.parameters()).device
    full_ds = SliceDataset(full, weak_kind=config.weak_kind, weak_seed=config.seed)
    weak_ds = SliceDataset(weak, weak_kind=config.weak_kind, weak_seed=config.seed + 1)
    full_batches = index_batches(len(full_ds), config.batch_size, _stream_generator(config.seed, 0))
    weak_batches = index_batches(len(weak_ds), config.batch_size * config.weak_batch_multiple,
                                 _stream_generator(config.seed, 1))
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    try:
        with torch.enable_grad():
            for _ in range(batches):
                batch_s, batch_w = full_ds.batch(next(full_batches)), weak_ds.batch(next(weak_batches))
                n_s = len(batch_s["image"])
                parts = [batch_s["image"]] * (2 if config.duplicate_full_batch else 1) + [batch_w["image"]]
                teacher, student = model(torch.cat(parts).to(device))
                weak_targets = torch.cat([batch_s["weak"], batch_w["weak"]]).to(device)
                losses = mixed_objective(teacher, student, n_s, batch_s["label"].to(device), weak_targets, config,
                                         config.lambda_ent)
                shares = gradient_shares({k: v for k, v in losses.items() if k != "sup"}, student)
                for name, value in shares.items():
                    totals[name] = totals.get(name, 0.0) + value / batches
    finally:
        model.train(was_training)
    return totals
