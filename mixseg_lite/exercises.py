"""Exercises of the course: a placeholder for the student's code, and one check per exercise.

An exercise in a notebook source is two code cells (CONTRIBUTING.md, "Exercises"): the exercise
cell, whose first line is ``# EXERCISE N.M`` and whose solution sits between ``# BEGIN SOLUTION``
and ``# END SOLUTION`` inside a function, and the check cell after it, which starts with
``# NBVAL_CHECK_OUTPUT`` and calls this module's check for that exercise. The student copy
(:mod:`mixseg_lite.student`) replaces each solution by ``todo("N.M")``.

A check calls the student's function on fixed float64 inputs (or on a committed results table),
compares the answer with the package's own implementation and

- prints one line, the same on every machine (rounded), when the answer is right;
- raises :class:`ExerciseNotDone` naming the exercise when the function calls :func:`todo`,
  raises ``NotImplementedError`` (nbgrader's placeholder) or returns ``None`` / ``...``;
- raises :class:`ExerciseMistake` naming the exercise and the likely mistake otherwise, found by
  comparing the answer with the common wrong variants (reversed KL, a missing ``T^2``, a sum where
  a mean is meant, ...). Each check's variants are listed in :data:`EXERCISES`.

Exercise ``N.M`` belongs to notebook ``0N``. Later cells of a notebook never use the student's
function, so an unfinished exercise stops nothing but its own check.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Callable, NoReturn

import torch
import torch.nn.functional as F

from mixseg_lite import UNLABELLED
from mixseg_lite.losses.mixed import (entropy_loss, kl_distillation, partial_cross_entropy, pixel_entropy,
                                      pseudo_mask_loss)

RTOL, ATOL = 1e-6, 1e-9
"""How close an answer must be to the package's (float64 inputs: any correct formula is far closer)."""
NEARLY_RTOL = 1e-3
"""Closer than this but not within :data:`RTOL`: right idea, wrong precision or constant."""


class ExerciseNotDone(Exception):
    """The student's code for an exercise is still missing (``todo(...)`` or nothing returned)."""

    def __init__(self, exercise_id: str, detail: str | None = None):
        self.exercise_id = exercise_id
        detail = detail or (f'replace todo("{exercise_id}") in the exercise cell by your code, run that cell, '
                            f"then run this check again")
        super().__init__(f"exercise {exercise_id} is not done yet: {detail}")


class ExerciseMistake(AssertionError):
    """The student's answer is wrong; ``mistake`` names the likely cause."""

    def __init__(self, exercise_id: str, mistake: str, explanation: str):
        self.exercise_id, self.mistake, self.explanation = exercise_id, mistake, explanation
        super().__init__(f"exercise {exercise_id}: likely mistake: {mistake}. {explanation}")


def todo(exercise_id: str) -> NoReturn:
    """The placeholder of a solution in a student copy: raises :class:`ExerciseNotDone`."""
    raise ExerciseNotDone(str(exercise_id))


@dataclass(frozen=True)
class Mistake:
    """A common wrong answer: its short name and what to do about it."""

    name: str
    explanation: str


@dataclass(frozen=True)
class Exercise:
    """One exercise: where it lives, what it teaches, and the mistakes its check names."""

    id: str
    title: str
    notebook: str
    goal: str
    difficulty: str  # "easy", "medium" or "hard"
    check: Callable[[Any], None]
    mistakes: tuple[str, ...]


EXERCISES: dict[str, Exercise] = {}
"""Every exercise by id (``"1.1"``, ...), in notebook order."""

NOTEBOOKS = {"1": "01_entropy_vs_pseudomask", "2": "02_kl_distillation", "3": "03_cam_equivariance"}


def _exercise(exercise_id: str, title: str, goal: str, difficulty: str, mistakes: list[Mistake]):
    def register(check):
        check.exercise_id = exercise_id
        EXERCISES[exercise_id] = Exercise(exercise_id, title, NOTEBOOKS[exercise_id.split(".")[0]], goal,
                                          difficulty, check, tuple(m.name for m in mistakes))
        return check
    return register


def exercise_of_check(name: str) -> str | None:
    """The id of the exercise whose check function is called ``name`` (None: not a check)."""
    return next((e.id for e in EXERCISES.values() if e.check.__name__ == name), None)


# --- calling the student's function and comparing its answer -------------------------------------

def _call(exercise_id: str, function, *args, **kwargs):
    """``function(*args)``; ExerciseNotDone when it is missing, calls todo or returns nothing."""
    if function is None or function is Ellipsis:
        raise ExerciseNotDone(exercise_id, "pass your function to the check (run the exercise cell first)")
    if not callable(function):
        raise ExerciseNotDone(exercise_id, f"the check needs your function, got a {type(function).__name__}")
    try:
        result = function(*args, **kwargs)
    except ExerciseNotDone:
        raise ExerciseNotDone(exercise_id) from None
    except NotImplementedError:  # nbgrader's and otter's placeholder
        raise ExerciseNotDone(exercise_id) from None
    if result is None or result is Ellipsis:
        raise ExerciseNotDone(exercise_id, f"{getattr(function, '__name__', 'your function')} returns "
                                           f"{'None' if result is None else '...'} (did you forget `return`?)")
    return result


def _tensor(value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float64)
    return torch.as_tensor(value, dtype=torch.float64)


def _close(got, want, rtol: float = RTOL) -> bool:
    got, want = _tensor(got), _tensor(want)
    return got.shape == want.shape and bool(torch.allclose(got, want, rtol=rtol, atol=ATOL, equal_nan=True))


def _summary(value) -> str:
    t = _tensor(value)
    if t.numel() == 1:
        return f"{float(t):.6g}"
    return f"a {tuple(t.shape)} tensor with values {float(t.min()):.4g}..{float(t.max()):.4g}"


WRONG_VALUE = "a value none of the common mistakes gives"
NEARLY = "right to 3 digits, not to 6"


def _verdict(exercise_id: str, got, want, variants: list[tuple[Mistake, Callable[[], Any]]],
             what: str) -> None:
    """Return when ``got`` matches ``want``; else raise the first variant ``got`` matches."""
    want_t = _tensor(want)
    try:
        got_t = _tensor(got)
    except (TypeError, ValueError, RuntimeError):
        raise ExerciseMistake(exercise_id, "wrong type", f"{what} should be a tensor or numbers, got a "
                                                         f"{type(got).__name__}") from None
    if got_t.shape != want_t.shape:
        raise ExerciseMistake(exercise_id, "wrong shape",
                              f"{what} should have shape {tuple(want_t.shape)}, got {tuple(got_t.shape)}")
    if _close(got_t, want_t):
        return
    for mistake, variant in variants:
        if _close(got_t, variant()):
            raise ExerciseMistake(exercise_id, mistake.name, mistake.explanation)
    if not torch.isfinite(got_t).all():
        raise ExerciseMistake(exercise_id, "NaN or infinity",
                              f"{what} holds NaN or inf: take logs of probabilities with log_softmax, "
                              f"never log(softmax)")
    if _close(got_t, want_t, NEARLY_RTOL):
        raise ExerciseMistake(exercise_id, NEARLY, f"{what} is nearly right: compute in float64 (do not create "
                                                   f"float32 tensors) and use exactly the constants the task gives")
    raise ExerciseMistake(exercise_id, WRONG_VALUE,
                          f"{what}: expected {_summary(want_t)}, got {_summary(got_t)}; compare your formula "
                          f"with the equation in the text, term by term")


def _fixed(shape: tuple[int, ...], offset: int = 0, scale: float = 8.0) -> torch.Tensor:
    """Fixed float64 inputs, exact on every machine: integers ``(37 i + 11 offset) mod 41 - 20``,
    divided by ``scale`` (values in ``[-20, 20] / scale``), no random generator involved."""
    n = math.prod(shape)
    values = (torch.arange(n, dtype=torch.int64) * 37 + 11 * offset) % 41 - 20
    return (values.to(torch.float64) / scale).reshape(shape)


def _leaf(shape, offset=0, scale=8.0) -> torch.Tensor:
    return _fixed(shape, offset, scale).requires_grad_(True)


def _needs_graph(exercise_id: str, value, what: str) -> torch.Tensor:
    """A loss the training loop can call ``backward()`` on: a tensor attached to the graph."""
    if not isinstance(value, torch.Tensor) or not value.requires_grad:
        raise ExerciseMistake(exercise_id, "no gradient",
                              f"{what} must be a tensor attached to the graph (no .item(), float() or .detach()): "
                              f"training calls backward() on it")
    if value.numel() != 1:
        raise ExerciseMistake(exercise_id, "not a scalar", f"{what} must be one number (a scalar tensor), "
                                                           f"got shape {tuple(value.shape)}")
    return value


def _grad(value: torch.Tensor, wrt: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad(value, wrt, allow_unused=True)
    return torch.zeros_like(wrt) if grad is None else grad


def _say(exercise_id: str, text: str) -> None:
    print(f"exercise {exercise_id}: correct. {text}")


def _mistakes(*pairs: tuple[str, str]) -> list[Mistake]:
    return [Mistake(name, explanation) for name, explanation in pairs]


# --- notebook 01: entropy minimisation and pseudo-masks -------------------------------------------

ENTROPY_GRADIENT_MISTAKES = _mistakes(
    ("wrong sign", "dH/dz_k = -p_k (log p_k + H): you returned its opposite"),
    ("missing the H term", "the softmax couples the classes: dH/dz_k = -p_k (log p_k + H), "
                           "not -p_k log p_k"),
    ("missing the factor p", "dH/dz_k = -p_k (log p_k + H): multiply by p_k"),
    ("gradient with respect to p, not z", "-(log p_k + 1) is dH/dp_k; the task asks for the gradient "
                                          "with respect to the logits z (chain rule through the softmax)"),
    ("gradient of the mean over pixels", "you divided by the number of pixels: return the gradient of "
                                         "each pixel's own entropy H(p_i)"),
)


@_exercise("1.1", "The entropy gradient, and where it peaks",
           "derive dH/dz = -p (log p + H) and see that entropy pushes hardest at |z| = 1.54, not at p = 0.5",
           "medium", ENTROPY_GRADIENT_MISTAKES)
def check_entropy_gradient(my_entropy_gradient) -> None:
    """Exercise 1.1: ``my_entropy_gradient(logits (B, C, H, W)) -> dH/dz (B, C, H, W)`` per pixel."""
    ex = "1.1"
    z = _leaf((2, 3, 4, 4))
    want = _grad(pixel_entropy(z).sum(), z)
    got = _call(ex, my_entropy_gradient, z.detach().clone())
    zd = z.detach()
    p, log_p = zd.softmax(1), zd.log_softmax(1)
    h = -(p * log_p).sum(1, keepdim=True)
    m = {mistake.name: mistake for mistake in ENTROPY_GRADIENT_MISTAKES}
    _verdict(ex, got, want, [
        (m["wrong sign"], lambda: -want),
        (m["missing the H term"], lambda: -p * log_p),
        (m["missing the factor p"], lambda: -(log_p + h)),
        (m["gradient with respect to p, not z"], lambda: -(log_p + 1)),
        (m["gradient of the mean over pixels"], lambda: want / (2 * 4 * 4)),
    ], "the entropy gradient")
    # The binary case: logits (z, 0), so p = sigmoid(z) and dH/dz = -z p (1 - p).
    grid = torch.arange(0, 5001, dtype=torch.float64) / 1000
    binary = torch.stack([grid, torch.zeros_like(grid)])[None, :, None, :].requires_grad_(True)
    slope = _grad(pixel_entropy(binary).sum(), binary)[0, 0, 0].abs()
    _say(ex, f"in the binary case |dH/dz| peaks at |z| = {float(grid[slope.argmax()]):.2f} "
             f"(p = {float(torch.sigmoid(grid[slope.argmax()])):.2f}), and is 0 at p = 0.5")


PSEUDO_MASK_GRADIENT_MISTAKES = _mistakes(
    ("wrong sign", "the gradient of -log p_y is p - onehot(y): you returned onehot - p"),
    ("softmax missing", "the gradient is p - onehot with p = softmax(z), not z - onehot"),
    ("gradient of the mean over pixels", "you divided by the number of pixels: return each pixel's own "
                                         "gradient p_i - onehot(argmax p_i)"),
    ("one-hot of the wrong class", "the pseudo-mask is the most likely class, argmax_k p_k (argmax over dim 1)"),
)


@_exercise("1.2", "The pseudo-mask gradient",
           "show that CE against the argmax pushes with p - onehot, hardest (0.5) on the most uncertain pixels",
           "easy", PSEUDO_MASK_GRADIENT_MISTAKES)
def check_pseudo_mask_gradient(my_pseudo_mask_gradient) -> None:
    """Exercise 1.2: ``my_pseudo_mask_gradient(logits (B, C, H, W)) -> (B, C, H, W)``, the gradient
    of each pixel's cross-entropy against its own (detached) argmax."""
    ex = "1.2"
    z = _leaf((2, 3, 4, 4), offset=3)
    pixels = 2 * 4 * 4
    want = _grad(pseudo_mask_loss(z) * pixels, z)
    got = _call(ex, my_pseudo_mask_gradient, z.detach().clone())
    zd = z.detach()
    p = zd.softmax(1)
    onehot = F.one_hot(p.argmax(1), 3).permute(0, 3, 1, 2).to(p.dtype)
    argmin = F.one_hot(p.argmin(1), 3).permute(0, 3, 1, 2).to(p.dtype)
    m = {mistake.name: mistake for mistake in PSEUDO_MASK_GRADIENT_MISTAKES}
    _verdict(ex, got, want, [
        (m["wrong sign"], lambda: -want),
        (m["softmax missing"], lambda: zd - onehot),
        (m["gradient of the mean over pixels"], lambda: want / pixels),
        (m["one-hot of the wrong class"], lambda: p - argmin),
    ], "the pseudo-mask gradient")
    uncertain = torch.zeros(1, 2, 1, 1, dtype=torch.float64, requires_grad=True)  # p = (0.5, 0.5)
    pm = _grad(pseudo_mask_loss(uncertain), uncertain).abs().max()
    ent = _grad(entropy_loss(uncertain), uncertain).abs().max()
    _say(ex, f"at p = 0.5 the pseudo-mask gradient is {float(pm):.2f} and the entropy gradient {float(ent):.2f}")


PARTIAL_CE_MISTAKES = _mistakes(
    ("averaged over all pixels", "divide by the number of labelled pixels |Omega_L|, not by all pixels: "
                                 "the loss must not shrink when the labels are sparse"),
    ("summed, not averaged", "average over the labelled pixels; a sum grows with the number of seeds "
                             "and makes the weight of L_w meaningless"),
    ("wrong sign", "cross-entropy is -log p_y, a positive number to minimise"),
    ("unlabelled pixels counted as background", f"pixels labelled {UNLABELLED} (UNLABELLED) carry no label: "
                                                "ignore them (ignore_index), do not read them as class 0"),
    ("NaN when no pixel is labelled", "with no labelled pixel, mean over nothing is 0/0: return an exact 0 "
                                      "that is still attached to the graph, e.g. logits.sum() * 0.0"),
    ("detached 0 when no pixel is labelled", "the training loop calls backward() on the loss even when a batch "
                                             "has no labelled pixel: return logits.sum() * 0.0, not 0 or "
                                             "torch.tensor(0.0)"),
)


@_exercise("1.3", "Partial cross-entropy",
           "learn from labelled pixels only, with a loss that stays defined (an attached 0) when none is labelled",
           "easy", PARTIAL_CE_MISTAKES)
def check_partial_cross_entropy(my_partial_cross_entropy) -> None:
    """Exercise 1.3: ``my_partial_cross_entropy(logits (B, C, H, W), weak_mask (B, H, W)) -> scalar``,
    cross-entropy averaged over the pixels whose label is not ``UNLABELLED``."""
    ex = "1.3"
    z = _leaf((2, 3, 4, 4), offset=5)
    index = torch.arange(2 * 4 * 4).reshape(2, 4, 4)
    weak = torch.where(index % 4 == 1, index % 3, torch.full_like(index, UNLABELLED))
    labelled = int((weak != UNLABELLED).sum())
    want = partial_cross_entropy(z, weak).detach()
    got = _needs_graph(ex, _call(ex, my_partial_cross_entropy, z, weak.clone()), "the loss")
    zd = z.detach()
    summed = F.cross_entropy(zd, weak, ignore_index=UNLABELLED, reduction="sum")
    m = {mistake.name: mistake for mistake in PARTIAL_CE_MISTAKES}
    _verdict(ex, got, want, [
        (m["averaged over all pixels"], lambda: summed / weak.numel()),
        (m["summed, not averaged"], lambda: summed),
        (m["wrong sign"], lambda: -want),
        (m["unlabelled pixels counted as background"],
         lambda: F.cross_entropy(zd, torch.where(weak == UNLABELLED, 0, weak))),
    ], "the loss")
    empty = torch.full_like(weak, UNLABELLED)
    z0 = _leaf((2, 3, 4, 4), offset=5)
    got0 = _call(ex, my_partial_cross_entropy, z0, empty)
    if not torch.isfinite(_tensor(got0)).all():
        mistake = m["NaN when no pixel is labelled"]
        raise ExerciseMistake(ex, mistake.name, mistake.explanation)
    if not isinstance(got0, torch.Tensor) or not got0.requires_grad:
        mistake = m["detached 0 when no pixel is labelled"]
        raise ExerciseMistake(ex, mistake.name, mistake.explanation)
    _verdict(ex, got0, torch.zeros(()), [], "the loss of a batch without labelled pixels")
    if _grad(got0, z0).abs().max() != 0:
        raise ExerciseMistake(ex, WRONG_VALUE, "a batch without labelled pixels must give a zero gradient")
    _say(ex, f"{labelled} of {weak.numel()} pixels labelled: L_w = {float(want):.3f}; "
             f"none labelled: L_w = 0, attached to the graph")


# --- notebook 02: KL distillation, gradient shares, settling a claim ------------------------------

KL_MISTAKES = _mistakes(
    ("reversed KL", "you computed KL(p_student || p_teacher); distillation pulls the student towards the teacher: "
                    "KL(p_teacher || p_student) = sum_k p_t,k (log p_t,k - log p_s,k)"),
    ("missing T^2", "multiply by T^2: the softened gradient is 1/T^2 as large, the factor restores its scale"),
    ("T instead of T^2", "the factor is T^2 (T squared), not T"),
    ("summed over pixels, not averaged", "sum the KL over classes, then average over pixels (and the batch); "
                                         "a sum over pixels scales the term with the image size"),
    ("averaged over classes too", "sum the KL over the class dimension (it is a divergence between two "
                                  "distributions over classes); only pixels are averaged"),
    ("temperature not applied", "soften both distributions: softmax(z / T), for the teacher and the student"),
    ("temperature on one side only", "divide both the teacher's and the student's logits by T"),
    ("teacher not detached", "the gradient reaches the teacher's logits: use teacher_logits.detach(), so that "
                             "distillation moves the student only"),
)


@_exercise("2.1", "KL distillation with a temperature",
           "write T^2 mean_i KL(p_t || p_s) with softened distributions and no gradient into the teacher",
           "medium", KL_MISTAKES)
def check_kl_distillation(my_kl_distillation) -> None:
    """Exercise 2.1: ``my_kl_distillation(student_logits, teacher_logits, temperature) -> scalar``."""
    ex = "2.1"
    temperature = 2.0
    s, t = _leaf((2, 3, 4, 4), offset=1, scale=4.0), _leaf((2, 3, 4, 4), offset=7, scale=4.0)
    want = kl_distillation(s, t, temperature).detach()
    got = _needs_graph(ex, _call(ex, my_kl_distillation, s, t, temperature), "the loss")
    sd, td = s.detach(), t.detach()

    def kl(target_logits, logits, t_target=temperature, t_logits=temperature):
        log_p, log_q = (target_logits / t_target).log_softmax(1), (logits / t_logits).log_softmax(1)
        return (log_p.exp() * (log_p - log_q)).sum(1)

    per_pixel = kl(td, sd)
    m = {mistake.name: mistake for mistake in KL_MISTAKES}
    _verdict(ex, got, want, [
        (m["reversed KL"], lambda: temperature**2 * kl(sd, td).mean()),
        (m["missing T^2"], lambda: per_pixel.mean()),
        (m["T instead of T^2"], lambda: temperature * per_pixel.mean()),
        (m["summed over pixels, not averaged"], lambda: temperature**2 * per_pixel.sum()),
        (m["averaged over classes too"], lambda: temperature**2 * per_pixel.mean() / 3),
        (m["temperature not applied"], lambda: temperature**2 * kl(td, sd, 1.0, 1.0).mean()),
        (m["temperature on one side only"], lambda: temperature**2 * kl(td, sd, 1.0, temperature).mean()),
        (m["temperature on one side only"], lambda: temperature**2 * kl(td, sd, temperature, 1.0).mean()),
    ], "the loss")
    grad_s, grad_t = torch.autograd.grad(got, (s, t), allow_unused=True)
    if grad_t is not None and grad_t.abs().max() > 0:
        raise ExerciseMistake(ex, m["teacher not detached"].name, m["teacher not detached"].explanation)
    if grad_s is None or grad_s.abs().max() == 0:
        raise ExerciseMistake(ex, "no gradient", "the loss must reach the student's logits: do not detach them")
    with_t2, without = [], []
    for temp in (1.0, 2.0, 4.0, 8.0):
        s_t = s.detach().clone().requires_grad_(True)
        norm = float(_grad(kl_distillation(s_t, t.detach(), temp), s_t).norm())
        with_t2.append(f"{norm:.3f}")
        without.append(f"{norm / temp**2:.3f}")
    _say(ex, f"KL at T = 2: {float(want):.4f}, no gradient into the teacher; the student's gradient norm at "
             f"T = 1, 2, 4, 8 is {', '.join(with_t2)} with T^2, {', '.join(without)} without")


GRADIENT_SHARE_MISTAKES = _mistakes(
    ("shares of the loss values", "a share compares how hard each term pulls on the logits: use the norm of "
                                  "d term / d logits, not the term's value"),
    ("not normalised", "divide each gradient norm by the sum of the norms, so that the shares add up to 1"),
    ("squared norms", "use the L2 norm ||g|| of each gradient, not ||g||^2"),
    ("L1 norm", "use the L2 norm (g.norm()), not the sum of absolute values"),
    ("gradients accumulated across terms", "calling backward() term after term adds every gradient into "
                                           "logits.grad; use torch.autograd.grad(term, logits, retain_graph=True) "
                                           "(or zero logits.grad between terms)"),
)

SHARE_WEIGHTS = {"lambda_kd": 1.0, "lambda_ent": 0.1}
DROWNED_SHARE = 0.1
"""A term whose gradient share is below this is said to be drowned by the others."""


def _share_terms() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The three student terms of one fixed batch at :data:`SHARE_WEIGHTS`, and the student logits."""
    student = _leaf((2, 3, 4, 4), offset=2, scale=4.0)
    teacher = _fixed((2, 3, 4, 4), offset=9, scale=4.0)
    index = torch.arange(2 * 4 * 4).reshape(2, 4, 4)
    weak = torch.where(index % 5 == 0, index % 3, torch.full_like(index, UNLABELLED))
    terms = {"weak": partial_cross_entropy(student, weak),
             "kd": SHARE_WEIGHTS["lambda_kd"] * kl_distillation(student, teacher),
             "ent": SHARE_WEIGHTS["lambda_ent"] * entropy_loss(student)}
    return terms, student


@_exercise("2.2", "Gradient shares of the loss terms",
           "measure how hard each weighted term pulls on the logits and find the drowned one",
           "medium", GRADIENT_SHARE_MISTAKES)
def check_gradient_shares(my_gradient_shares) -> None:
    """Exercise 2.2: ``my_gradient_shares(terms: {name: scalar}, logits) -> {name: share}``."""
    from mixseg_lite.train.mixed import gradient_shares

    ex = "2.2"
    got = _call(ex, my_gradient_shares, *_share_terms())
    want = gradient_shares(*_share_terms())
    if not isinstance(got, dict) or set(got) != set(want):
        raise ExerciseMistake(ex, "wrong keys", f"return a dict with one share per term, keys {sorted(want)}; "
                                                f"got {sorted(got) if isinstance(got, dict) else type(got).__name__}")
    names = list(want)
    got_v = [float(_tensor(got[n])) for n in names]
    terms, logits = _share_terms()
    values = {n: float(terms[n].detach()) for n in names}
    grads = {n: torch.autograd.grad(terms[n], logits, retain_graph=True)[0] for n in names}
    l2 = {n: float(grads[n].norm()) for n in names}

    def normalised(d):
        return [d[n] / sum(d.values()) for n in names]

    cumulative, running = {}, torch.zeros_like(logits)
    for n in names:
        running = running + grads[n]
        cumulative[n] = float(running.norm())
    m = {mistake.name: mistake for mistake in GRADIENT_SHARE_MISTAKES}
    _verdict(ex, got_v, [want[n] for n in names], [
        (m["shares of the loss values"], lambda: normalised({n: abs(v) for n, v in values.items()})),
        (m["not normalised"], lambda: [l2[n] for n in names]),
        (m["squared norms"], lambda: normalised({n: v**2 for n, v in l2.items()})),
        (m["L1 norm"], lambda: normalised({n: float(grads[n].abs().sum()) for n in names})),
        (m["gradients accumulated across terms"], lambda: normalised(cumulative)),
        (m["gradients accumulated across terms"], lambda: [cumulative[n] for n in names]),
    ], "the shares (in the order " + ", ".join(names) + ")")
    drowned = [n for n in names if want[n] < DROWNED_SHARE]
    shares = ", ".join(f"{n} {want[n]:.2f}" for n in names)
    _say(ex, f"at lambda_kd = {SHARE_WEIGHTS['lambda_kd']:g}, lambda_ent = {SHARE_WEIGHTS['lambda_ent']:g} the "
             f"shares are {shares}: " + (f"the {' and '.join(drowned)} term is drowned (share < {DROWNED_SHARE:g})"
                                         if drowned else "no term is drowned"))


INTERVAL_MISTAKES = _mistakes(
    ("unpaired interval", "the two rows share each seed's data and split: take the per-seed differences "
                          "d_s = better_s - worse_s first, then the interval of their mean"),
    ("normal quantile 1.96 instead of t", "with n seeds use Student's t quantile t_{0.975, n-1} "
                                          "(scipy.stats.t.ppf(0.975, n - 1)), not 1.96"),
    ("90% interval", "a 95% two-sided interval uses the 0.975 quantile, not 0.95"),
    ("t with n degrees of freedom", "the t quantile has n - 1 degrees of freedom"),
    ("population sd (ddof = 0)", "use the sample standard deviation (ddof = 1, statistics.stdev)"),
    ("divided by n, not sqrt(n)", "the standard error of a mean is sd / sqrt(n)"),
    ("wrong sign", "the difference is better - worse, so that a positive interval means the claim holds"),
)
INTERVAL_CLAIM = "student > teacher (KL+Ent)"
INTERVAL_SWEEP, INTERVAL_RECIPE = "mixed_ablation_cardiac", "ours"
# The sweep's first five seeds, where this claim was first settled: their interval crosses 0 although
# the student won on all five; the file's ten seeds decide it (the check prints both).
INTERVAL_SEEDS = (0, 1, 2, 3, 4)


def _claim_data(seeds: tuple[int, ...] | None = INTERVAL_SEEDS):
    """Per-seed ``(better, worse)`` values of :data:`INTERVAL_CLAIM` in the committed sweep on
    ``seeds`` (None: every committed seed), with the rows and the claim."""
    from mixseg_lite.claims import MIXED_CLAIMS
    from mixseg_lite.errors import InputError
    from mixseg_lite.results import committed_results
    from mixseg_lite.stats import read_results

    path = committed_results(INTERVAL_SWEEP)
    if path is None:
        raise InputError(f"results/{INTERVAL_SWEEP}.csv not found: run the notebook from the repository "
                         f"(notebooks/ or course/student/)")
    rows = [r for r in read_results(path) if r.get("recipe") == INTERVAL_RECIPE
            and (seeds is None or int(r["seed"]) in seeds)]
    claim = next(c for c in MIXED_CLAIMS if c.name == INTERVAL_CLAIM)

    def per_seed(selector):
        return {int(r["seed"]): float(r[claim.metric]) for r in rows
                if all(str(r.get(k)) == str(v) for k, v in selector.items())}

    better, worse = per_seed(claim.better), per_seed(claim.worse)
    seeds = sorted(set(better) & set(worse))
    return rows, claim, [better[s] for s in seeds], [worse[s] for s in seeds]


def _interval(mean, standard_error, quantile):
    return mean, mean - quantile * standard_error, mean + quantile * standard_error


def unpaired_interval(better: list[float], worse: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)`` of ``mean(better) - mean(worse)`` treating the rows as independent
    samples (Welch's t interval): what forgetting the pairing gives. For teaching only; claims use
    :func:`mixseg_lite.stats.paired_difference`."""
    from scipy import stats as scipy_stats

    n1, n2 = len(better), len(worse)
    v1, v2 = statistics.variance(better) / n1, statistics.variance(worse) / n2
    df = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))
    mean = statistics.fmean(better) - statistics.fmean(worse)
    return _interval(mean, math.sqrt(v1 + v2), float(scipy_stats.t.ppf(0.5 + confidence / 2, df)))


def _as_triple(exercise_id: str, value, what: str) -> list[float]:
    try:
        triple = [float(_tensor(v)) for v in value]
    except (TypeError, ValueError, RuntimeError):
        triple = []
    if len(triple) != 3:
        raise ExerciseMistake(exercise_id, "wrong return value", f"return {what}, three numbers")
    return triple


@_exercise("2.3", "A paired 95% interval by hand",
           "compute the paired t interval of a claim from a committed CSV, and see why the unpaired one is wider",
           "medium", INTERVAL_MISTAKES)
def check_paired_interval(my_paired_interval) -> None:
    """Exercise 2.3: ``my_paired_interval(better, worse) -> (mean, low, high)``, lists of per-seed
    values in the same seed order."""
    from scipy import stats as scipy_stats

    from mixseg_lite.stats import paired_difference

    ex = "2.3"
    rows, claim, better, worse = _claim_data()
    got = _as_triple(ex, _call(ex, my_paired_interval, list(better), list(worse)), "(mean, low, high)")
    settled = paired_difference(rows, claim, f"results/{INTERVAL_SWEEP}.csv")
    want = [settled.mean, settled.low, settled.high]
    n = len(better)
    d = [b - w for b, w in zip(better, worse)]
    mean, sd = statistics.fmean(d), statistics.stdev(d)
    t975 = float(scipy_stats.t.ppf(0.975, n - 1))
    pooled_sd = math.sqrt((statistics.variance(better) + statistics.variance(worse)) / n)
    m = {mistake.name: mistake for mistake in INTERVAL_MISTAKES}
    _verdict(ex, got, want, [
        (m["unpaired interval"], lambda: list(unpaired_interval(better, worse))),
        (m["unpaired interval"], lambda: list(_interval(mean, pooled_sd, float(scipy_stats.t.ppf(0.975, 2 * n - 2))))),
        (m["unpaired interval"], lambda: list(_interval(mean, pooled_sd, t975))),
        (m["normal quantile 1.96 instead of t"], lambda: list(_interval(mean, sd / math.sqrt(n), 1.959964))),
        (m["normal quantile 1.96 instead of t"], lambda: list(_interval(mean, sd / math.sqrt(n), 1.96))),
        (m["90% interval"], lambda: list(_interval(mean, sd / math.sqrt(n), float(scipy_stats.t.ppf(0.95, n - 1))))),
        (m["t with n degrees of freedom"], lambda: list(_interval(mean, sd / math.sqrt(n),
                                                                  float(scipy_stats.t.ppf(0.975, n))))),
        (m["population sd (ddof = 0)"], lambda: list(_interval(mean, statistics.pstdev(d) / math.sqrt(n), t975))),
        (m["divided by n, not sqrt(n)"], lambda: list(_interval(mean, sd / n, t975))),
        (m["wrong sign"], lambda: [-mean, -mean - t975 * sd / math.sqrt(n), -mean + t975 * sd / math.sqrt(n)]),
    ], "(mean, low, high)")
    _, u_low, u_high = unpaired_interval(better, worse)
    all_rows, _, all_better, _ = _claim_data(None)
    everything = paired_difference(all_rows, claim, f"results/{INTERVAL_SWEEP}.csv")
    _say(ex, f"{claim.name}, seeds {INTERVAL_SEEDS[0]}-{INTERVAL_SEEDS[-1]}: {settled.mean:+.3f} "
             f"[{settled.low:+.3f}, {settled.high:+.3f}] paired; unpaired [{u_low:+.3f}, {u_high:+.3f}], "
             f"{(u_high - u_low) / (settled.high - settled.low):.1f} times as wide; all {len(all_better)} committed "
             f"seeds: {everything.mean:+.3f} [{everything.low:+.3f}, {everything.high:+.3f}] paired")


VERDICT_MISTAKES = _mistakes(
    ("'no effect' whenever 0 is inside", "an interval that contains 0 says 'no effect within ±delta' only when it "
                                         "also lies inside [-delta, +delta]; otherwise more seeds are needed "
                                         "('not resolved at n seeds')"),
    ("'no effect' tested before the direction", "test the direction first: an interval above 0 (or below) is "
                                                "'holds' ('opposite') even when it lies inside ±delta"),
    ("the midpoint decides", "the whole interval must lie on one side of 0 for 'holds' or 'opposite', not its "
                             "midpoint"),
    ("verdict text", "write the verdicts exactly as mixseg_lite.stats.verdict does: 'holds', 'opposite', "
                     "f'no effect within ±{delta:g}', f'not resolved at {n} seeds'"),
)
VERDICT_CASES = [(0.01, 0.05, 5, 0.02), (-0.05, -0.01, 5, 0.02), (-0.01, 0.015, 5, 0.02), (-0.03, 0.01, 5, 0.02),
                 (0.005, 0.015, 5, 0.02), (-0.015, -0.002, 8, 0.02), (-0.01, 0.03, 10, 0.02),
                 (-0.005, 0.005, 5, None), (-0.004, 0.006, 5, 0.01)]
"""``(low, high, n, delta)`` intervals covering every verdict and the boundaries between them."""


def _normal_text(text: str) -> str:
    return " ".join(str(text).lower().replace("+/-", "±").replace("+-", "±").replace(".", "").split())


@_exercise("2.4", "The verdict of an interval",
           "turn a 95% interval into one of four verdicts: holds / opposite / no effect within ±delta / not resolved",
           "easy", VERDICT_MISTAKES)
def check_verdict(my_verdict) -> None:
    """Exercise 2.4: ``my_verdict(low, high, n, delta) -> str`` (``delta`` may be None)."""
    from mixseg_lite.stats import paired_difference, verdict

    ex = "2.4"
    want = [verdict(*case) for case in VERDICT_CASES]
    got = [_call(ex, my_verdict, *case) for case in VERDICT_CASES]
    if got == want:
        rows, claim, _, _ = _claim_data()
        settled = paired_difference(rows, claim, f"results/{INTERVAL_SWEEP}.csv")
        everything = paired_difference(_claim_data(None)[0], claim, f"results/{INTERVAL_SWEEP}.csv")
        _say(ex, f"{len(VERDICT_CASES)} intervals judged right; {claim.name}, seeds {INTERVAL_SEEDS[0]}-"
                 f"{INTERVAL_SEEDS[-1]}: [{settled.low:+.3f}, {settled.high:+.3f}] with delta {settled.delta:g}: "
                 f"{settled.verdict}; all {everything.n} seeds: {everything.verdict}")
        return

    def contains_zero(low, high, n, delta):
        if low <= 0 <= high and delta is not None:
            return f"no effect within ±{delta:g}"
        return verdict(low, high, n, delta)

    def effect_first(low, high, n, delta):
        if delta is not None and -delta <= low and high <= delta:
            return f"no effect within ±{delta:g}"
        return verdict(low, high, n, delta)

    def midpoint(low, high, n, delta):
        mid = (low + high) / 2
        return "holds" if mid > 0 else "opposite" if mid < 0 else verdict(low, high, n, delta)

    m = {mistake.name: mistake for mistake in VERDICT_MISTAKES}
    for mistake, variant in [(m["'no effect' whenever 0 is inside"], contains_zero),
                             (m["'no effect' tested before the direction"], effect_first),
                             (m["the midpoint decides"], midpoint)]:
        if [_normal_text(g) for g in got] == [_normal_text(variant(*case)) for case in VERDICT_CASES]:
            raise ExerciseMistake(ex, mistake.name, mistake.explanation)
    if [_normal_text(g) for g in got] == [_normal_text(w) for w in want]:
        raise ExerciseMistake(ex, m["verdict text"].name, m["verdict text"].explanation)
    wrong = next(i for i, (g, w) in enumerate(zip(got, want)) if g != w)
    low, high, n, delta = VERDICT_CASES[wrong]
    raise ExerciseMistake(ex, WRONG_VALUE, f"for the interval [{low:+g}, {high:+g}] at {n} seeds with delta {delta}: "
                                           f"expected {want[wrong]!r}, got {got[wrong]!r}")


# --- notebook 03: CAMs, equivariance, thresholds --------------------------------------------------

ER_MISTAKES = _mistakes(
    ("averaged over the positive slices only", "the reference reduction is torch.mean over batch x channels x pixels, "
                                               "negative slices counting 0: divide by B C H W, not by |P| C H W"),
    ("negative slices included", "only slices whose tag is positive have a CAM worth constraining: multiply the "
                                 "squared differences by positive[:, None, None, None]"),
    ("summed, not averaged", "average (torch.mean) over batch x channels x pixels; a sum scales the term with "
                             "the image size and the batch"),
    ("absolute difference (L1)", "ER is the mean *squared* difference (SEAM used L1; Patel & Dolz square it)"),
    ("gradient through one view only", "the gradient must flow through both views, pi(M(x)) and M(pi(x)): "
                                       "do not detach either"),
)


@_exercise("3.1", "The equivariance loss at the reference reduction",
           "write ER as the reference code reduces it and see how much a per-slice mean would strengthen it",
           "easy", ER_MISTAKES)
def check_equivariance_loss(my_equivariance_loss) -> None:
    """Exercise 3.1: ``my_equivariance_loss(transformed_maps, maps_of_transformed, positive) -> scalar``."""
    from mixseg_lite.losses.cam import equivariance_loss

    ex = "3.1"
    a, b = _leaf((4, 2, 5, 5), offset=4, scale=10.0), _leaf((4, 2, 5, 5), offset=8, scale=10.0)
    positive = torch.tensor([True, False, True, False])
    want = equivariance_loss(a, b, positive).detach()
    got = _needs_graph(ex, _call(ex, my_equivariance_loss, a, b, positive.clone()), "the loss")
    ad, bd = a.detach(), b.detach()
    squared = (ad - bd) ** 2
    mask = positive.to(squared.dtype)[:, None, None, None]
    m = {mistake.name: mistake for mistake in ER_MISTAKES}
    _verdict(ex, got, want, [
        (m["averaged over the positive slices only"],
         lambda: equivariance_loss(ad, bd, positive, reduction="per_selected_slice")),
        (m["negative slices included"], lambda: squared.mean()),
        (m["summed, not averaged"], lambda: (squared * mask).sum()),
        (m["summed, not averaged"], lambda: (squared * mask).sum() / int(positive.sum())),
        (m["absolute difference (L1)"], lambda: ((ad - bd).abs() * mask).mean()),
    ], "the loss")
    grad_a, grad_b = torch.autograd.grad(got, (a, b), allow_unused=True)
    if any(g is None or g[positive].abs().max() == 0 for g in (grad_a, grad_b)):
        mistake = m["gradient through one view only"]
        raise ExerciseMistake(ex, mistake.name, mistake.explanation)
    stronger = float(equivariance_loss(ad, bd, positive, reduction="per_selected_slice") / want)
    _say(ex, f"ER = {float(want):.4f} with 2 of 4 slices positive; averaged over the positive slices only it "
             f"would be {stronger:.1f} times stronger (B / |P| = 4 / 2)")


CAM_NORMALISATION_MISTAKES = _mistakes(
    ("no eps: NaN on a flat map", "a flat map has max - min = 0: divide by (max - min + eps) with eps = 1e-5"),
    ("no ReLU", "apply torch.relu first: negative evidence is no evidence for the class"),
    ("min and max over the whole batch", "normalise each sample and channel on its own: amin/amax over "
                                         "dims (2, 3) with keepdim=True"),
    ("min and max over all channels of a sample", "normalise each channel on its own: amin/amax over dims (2, 3)"),
    ("min not subtracted", "(M - min) / (max - min + eps): subtract the minimum first"),
)


@_exercise("3.2", "CAM normalisation, safe on a flat map",
           "normalise CAMs per sample and channel to [0, 1) without NaN on flat or all-negative maps",
           "easy", CAM_NORMALISATION_MISTAKES)
def check_normalize_cam(my_normalize_cam) -> None:
    """Exercise 3.2: ``my_normalize_cam(maps (B, C, H, W)) -> (B, C, H, W)`` in ``[0, 1)``, eps = 1e-5."""
    from mixseg_lite.cam import normalize_cam

    ex = "3.2"
    maps = _fixed((2, 3, 4, 4), offset=6, scale=5.0) + 1.0
    maps[0, 1] = 0.7     # flat
    maps[1, 2] = -0.3    # negative everywhere: 0 after the ReLU
    maps[1, 0] *= 3.0    # a larger range than the other maps
    want = normalize_cam(maps)
    got = _call(ex, my_normalize_cam, maps.clone())
    eps = 1e-5
    m = {mistake.name: mistake for mistake in CAM_NORMALISATION_MISTAKES}
    if isinstance(got, torch.Tensor) and got.shape == want.shape and torch.isnan(_tensor(got)).any():
        raise ExerciseMistake(ex, m["no eps: NaN on a flat map"].name, m["no eps: NaN on a flat map"].explanation)
    relu = torch.relu(maps)

    def scaled(x, dims):
        low, high = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
        return (x - low) / (high - low + eps)

    _verdict(ex, got, want, [
        (m["no ReLU"], lambda: scaled(maps, (2, 3))),
        (m["min and max over the whole batch"], lambda: scaled(relu, (0, 1, 2, 3))),
        (m["min and max over all channels of a sample"], lambda: scaled(relu, (1, 2, 3))),
        (m["min not subtracted"], lambda: relu / (relu.amax(dim=(2, 3), keepdim=True) + eps)),
    ], "the normalised maps")
    _say(ex, "values in [0, 1); a flat map and an all-negative map normalise to 0 everywhere, never NaN")


THRESHOLD_MISTAKES = _mistakes(
    ("chose the threshold on test data", "choose on validation data only and report test data at that choice; a "
                                         "threshold picked on the test set makes its score optimistic"),
    ("reported the validation Dice", "return the test set's 3-D Dice at the chosen threshold, not the "
                                     "validation Dice it was chosen with"),
    ("ties broken towards the higher threshold", "several thresholds give the same validation Dice: keep the "
                                                 "lowest (mixseg_lite.cam.choose_threshold's rule)"),
    ("lowest Dice chosen", "keep the threshold with the highest mean 3-D Dice"),
)
THRESHOLD_GRID = tuple(round(0.1 * k, 1) for k in range(1, 10))


def _cam_split(true_radius: tuple[int, ...], volumes: int = 2, size: int = 9) -> dict[str, torch.Tensor]:
    """A fixed validation or test split: per volume three slices, a square CAM blob ``4 - d`` (d the
    Chebyshev distance from a centre), true squares of the given radii (one per slice; -1 = no
    tumour, predicted negative)."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    maps, labels, positive, volume = [], [], [], []
    for v in range(volumes):
        for s, radius in enumerate(true_radius):
            cy, cx = 4 + (v + s) % 2, 4 - (v * s) % 2
            d = torch.maximum((yy - cy).abs(), (xx - cx).abs())
            maps.append((4.0 - d).clamp(min=0).to(torch.float64) * (1 + s))
            labels.append(((d <= radius) & (radius >= 0)).long())
            positive.append(radius >= 0)
            volume.append(v)
    return {"maps": torch.stack(maps)[:, None], "labels": torch.stack(labels),
            "positive": torch.tensor(positive), "volume": torch.tensor(volume)}


def _threshold_splits():
    return _cam_split((2, 2, 1, -1)), _cam_split((1, 1, 2, -1))


def _test_dice(split, threshold: float) -> float:
    from mixseg_lite.cam import cam_to_mask
    from mixseg_lite.evaluation import evaluate_tag_segmentation

    mask = cam_to_mask(split["maps"], split["positive"], threshold)
    return evaluate_tag_segmentation(mask, split["labels"], split["volume"], split["positive"])["dice_3d"]


@_exercise("3.3", "Choosing the CAM threshold on validation data",
           "choose a threshold on validation data, report it on test data, and see the optimism of choosing on test",
           "medium", THRESHOLD_MISTAKES)
def check_threshold_choice(my_threshold_choice) -> None:
    """Exercise 3.3: ``my_threshold_choice(val, test, thresholds) -> (threshold, test_dice)``; ``val`` and
    ``test`` are dicts of ``maps (N, 1, H, W)``, ``positive (N,)``, ``labels (N, H, W)``, ``volume (N,)``."""
    from mixseg_lite.cam import choose_threshold

    ex = "3.3"
    answer = _call(ex, my_threshold_choice, *_threshold_splits(), THRESHOLD_GRID)
    val, test = _threshold_splits()
    chosen, val_scores = choose_threshold(val["maps"], val["positive"], val["labels"], val["volume"], THRESHOLD_GRID)
    on_test, test_scores = choose_threshold(test["maps"], test["positive"], test["labels"], test["volume"],
                                            THRESHOLD_GRID)
    want = [chosen, test_scores[chosen]]
    try:
        got = [float(_tensor(v)) for v in answer]
    except (TypeError, ValueError, RuntimeError):
        got = []
    if len(got) != 2:
        raise ExerciseMistake(ex, "wrong return value", "return (threshold, test_dice), two numbers")
    best = max(val_scores.values())
    highest_tie = max(t for t, s in val_scores.items() if s == best)
    worst = min(THRESHOLD_GRID, key=lambda t: (val_scores[t], t))
    m = {mistake.name: mistake for mistake in THRESHOLD_MISTAKES}
    _verdict(ex, got, want, [
        (m["chose the threshold on test data"], lambda: [on_test, test_scores[on_test]]),
        (m["reported the validation Dice"], lambda: [chosen, val_scores[chosen]]),
        (m["ties broken towards the higher threshold"], lambda: [highest_tie, test_scores[highest_tie]]),
        (m["lowest Dice chosen"], lambda: [worst, test_scores[worst]]),
    ], "(threshold, test_dice)")
    _say(ex, f"chosen on validation: {chosen:.2f}, test 3-D Dice {test_scores[chosen]:.3f}; choosing on test would "
             f"pick {on_test:.2f} and report {test_scores[on_test]:.3f}, an optimistic score")
