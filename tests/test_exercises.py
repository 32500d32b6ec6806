"""Each exercise check accepts the solution, says "not done" for a student copy, and names the
common mistakes (mixseg_lite.exercises; CONTRIBUTING.md, "Exercises").

SOLUTIONS are what a student should write (the same code as the notebooks' solution blocks);
WRONG holds, per exercise, one realistic wrong answer for every mistake its check names.
"""

from __future__ import annotations

import math
import statistics
import time

import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from mixseg_lite import UNLABELLED
from mixseg_lite.exercises import EXERCISES, ExerciseMistake, ExerciseNotDone, exercise_of_check, todo
from mixseg_lite.stats import verdict  # the right answer to 2.4 (the package's own)


# --- the solutions ---------------------------------------------------------------------------------

def entropy_gradient(logits):
    log_p = logits.log_softmax(dim=1)
    p = log_p.exp()
    entropy = -(p * log_p).sum(dim=1, keepdim=True)
    return -p * (log_p + entropy)


def pseudo_mask_gradient(logits):
    p = logits.softmax(dim=1)
    onehot = F.one_hot(p.argmax(dim=1), logits.shape[1]).permute(0, 3, 1, 2).to(p.dtype)
    return p - onehot


def partial_ce(logits, weak_mask):
    labelled = weak_mask != UNLABELLED
    if not labelled.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, weak_mask, ignore_index=UNLABELLED)


def kl_distillation(student_logits, teacher_logits, temperature):
    log_p_t = (teacher_logits.detach() / temperature).log_softmax(dim=1)
    log_p_s = (student_logits / temperature).log_softmax(dim=1)
    return temperature**2 * (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()


def gradient_shares(terms, logits):
    norms = {name: float(torch.autograd.grad(term, logits, retain_graph=True)[0].norm())
             for name, term in terms.items()}
    return {name: norm / sum(norms.values()) for name, norm in norms.items()}


def paired_interval(better, worse):
    d = [b - w for b, w in zip(better, worse)]
    half = stats.t.ppf(0.975, len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
    return statistics.fmean(d), statistics.fmean(d) - half, statistics.fmean(d) + half


def equivariance(transformed_maps, maps_of_transformed, positive):
    squared = (transformed_maps - maps_of_transformed) ** 2
    return (squared * positive[:, None, None, None]).mean()


def normalize(maps):
    maps = torch.relu(maps)
    low, high = maps.amin(dim=(2, 3), keepdim=True), maps.amax(dim=(2, 3), keepdim=True)
    return (maps - low) / (high - low + 1e-5)


def _dice_3d(split, threshold):
    from mixseg_lite.cam import cam_to_mask
    from mixseg_lite.evaluation import evaluate_tag_segmentation

    mask = cam_to_mask(split["maps"], split["positive"], threshold)
    return evaluate_tag_segmentation(mask, split["labels"], split["volume"], split["positive"])["dice_3d"]


def threshold_choice(val, test, thresholds):
    best = max(thresholds, key=lambda t: (_dice_3d(val, t), -t))
    return best, _dice_3d(test, best)


SOLUTIONS = {"1.1": entropy_gradient, "1.2": pseudo_mask_gradient, "1.3": partial_ce, "2.1": kl_distillation,
             "2.2": gradient_shares, "2.3": paired_interval, "2.4": verdict, "3.1": equivariance,
             "3.2": normalize, "3.3": threshold_choice}


# --- wrong answers, one per named mistake -----------------------------------------------------------

def _onehot(index, classes):
    return F.one_hot(index, classes).permute(0, 3, 1, 2).to(torch.float64)


def _kl(student, teacher, t_teacher=2.0, t_student=2.0, detach=True, reverse=False):
    log_p_t = ((teacher.detach() if detach else teacher) / t_teacher).log_softmax(dim=1)
    log_p_s = (student / t_student).log_softmax(dim=1)
    if reverse:
        log_p_t, log_p_s = log_p_s, log_p_t
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)


def _shares(norms):
    return {name: value / sum(norms.values()) for name, value in norms.items()}


def _accumulating_shares(terms, logits):
    norms = {}
    for name, term in terms.items():
        term.backward(retain_graph=True)
        norms[name] = float(logits.grad.norm())
    return _shares(norms)


def _unpaired(better, worse):
    n = len(better)
    se = math.sqrt((statistics.variance(better) + statistics.variance(worse)) / n)
    mean = statistics.fmean(better) - statistics.fmean(worse)
    q = stats.t.ppf(0.975, 2 * n - 2)
    return mean, mean - q * se, mean + q * se


def _interval(better, worse, quantile=None, sd=statistics.stdev, root=True):
    d = [b - w for b, w in zip(better, worse)]
    n = len(d)
    q = stats.t.ppf(0.975, n - 1) if quantile is None else quantile(n)
    half = q * sd(d) / (math.sqrt(n) if root else n)
    return statistics.fmean(d), statistics.fmean(d) - half, statistics.fmean(d) + half


def _flipped(function):
    def wrong(better, worse):
        return function(worse, better)
    return wrong


def _verdict_zero_inside(low, high, n, delta):
    if low <= 0 <= high and delta is not None:
        return f"no effect within ±{delta:g}"
    return verdict(low, high, n, delta)


def _verdict_effect_first(low, high, n, delta):
    if delta is not None and -delta <= low and high <= delta:
        return f"no effect within ±{delta:g}"
    return verdict(low, high, n, delta)


def _verdict_midpoint(low, high, n, delta):
    mid = (low + high) / 2
    return "holds" if mid > 0 else "opposite" if mid < 0 else verdict(low, high, n, delta)


def _scaled(maps, dims, eps=1e-5):
    low, high = maps.amin(dim=dims, keepdim=True), maps.amax(dim=dims, keepdim=True)
    return (maps - low) / (high - low + eps)


def _choice_on(split_name, report="test", tie="low", best=max):
    def wrong(val, test, thresholds):
        split = val if split_name == "val" else test
        key = (lambda t: (_dice_3d(split, t), -t)) if tie == "low" else (lambda t: (_dice_3d(split, t), t))
        chosen = best(thresholds, key=key) if best is max else min(thresholds, key=lambda t: (_dice_3d(split, t), t))
        return chosen, _dice_3d(val if report == "val" else test, chosen)
    return wrong


WRONG = {
    "1.1": {
        "wrong sign": lambda z: -entropy_gradient(z),
        "missing the H term": lambda z: -z.softmax(1) * z.log_softmax(1),
        "missing the factor p": lambda z: -(z.log_softmax(1) - (z.softmax(1) * z.log_softmax(1)).sum(1, keepdim=True)),
        "gradient with respect to p, not z": lambda z: -(z.log_softmax(1) + 1),
        "gradient of the mean over pixels": lambda z: entropy_gradient(z) / (z.shape[0] * z.shape[2] * z.shape[3]),
    },
    "1.2": {
        "wrong sign": lambda z: -pseudo_mask_gradient(z),
        "softmax missing": lambda z: z - _onehot(z.argmax(1), z.shape[1]),
        "gradient of the mean over pixels": lambda z: pseudo_mask_gradient(z) / (z.shape[0] * z.shape[2] * z.shape[3]),
        "one-hot of the wrong class": lambda z: z.softmax(1) - _onehot(z.argmin(1), z.shape[1]),
    },
    "1.3": {
        "averaged over all pixels": lambda z, w: F.cross_entropy(z, w, ignore_index=UNLABELLED, reduction="sum") / w.numel(),
        "summed, not averaged": lambda z, w: F.cross_entropy(z, w, ignore_index=UNLABELLED, reduction="sum"),
        "wrong sign": lambda z, w: -partial_ce(z, w),
        "unlabelled pixels counted as background": lambda z, w: F.cross_entropy(z, torch.where(w == UNLABELLED, 0, w)),
        "NaN when no pixel is labelled": lambda z, w: F.cross_entropy(z, w, ignore_index=UNLABELLED),
        "detached 0 when no pixel is labelled":
            lambda z, w: partial_ce(z, w) if (w != UNLABELLED).any() else torch.tensor(0.0),
    },
    "2.1": {
        "reversed KL": lambda s, t, T: T**2 * _kl(s, t, T, T, reverse=True).mean(),
        "missing T^2": lambda s, t, T: _kl(s, t, T, T).mean(),
        "T instead of T^2": lambda s, t, T: T * _kl(s, t, T, T).mean(),
        "summed over pixels, not averaged": lambda s, t, T: T**2 * _kl(s, t, T, T).sum(),
        "averaged over classes too": lambda s, t, T: T**2 * ((t.detach() / T).softmax(1) * (
            (t.detach() / T).log_softmax(1) - (s / T).log_softmax(1))).mean(),
        "temperature not applied": lambda s, t, T: T**2 * _kl(s, t, 1.0, 1.0).mean(),
        "temperature on one side only": lambda s, t, T: T**2 * _kl(s, t, 1.0, T).mean(),
        "teacher not detached": lambda s, t, T: T**2 * _kl(s, t, T, T, detach=False).mean(),
    },
    "2.2": {
        "shares of the loss values": lambda terms, z: _shares({n: v.item() for n, v in terms.items()}),
        "not normalised": lambda terms, z: {n: float(torch.autograd.grad(v, z, retain_graph=True)[0].norm())
                                            for n, v in terms.items()},
        "squared norms": lambda terms, z: _shares({n: float(torch.autograd.grad(v, z, retain_graph=True)[0].norm()) ** 2
                                                   for n, v in terms.items()}),
        "L1 norm": lambda terms, z: _shares({n: float(torch.autograd.grad(v, z, retain_graph=True)[0].abs().sum())
                                             for n, v in terms.items()}),
        "gradients accumulated across terms": _accumulating_shares,
    },
    "2.3": {
        "unpaired interval": _unpaired,
        "normal quantile 1.96 instead of t": lambda b, w: _interval(b, w, quantile=lambda n: 1.96),
        "90% interval": lambda b, w: _interval(b, w, quantile=lambda n: stats.t.ppf(0.95, n - 1)),
        "t with n degrees of freedom": lambda b, w: _interval(b, w, quantile=lambda n: stats.t.ppf(0.975, n)),
        "population sd (ddof = 0)": lambda b, w: _interval(b, w, sd=statistics.pstdev),
        "divided by n, not sqrt(n)": lambda b, w: _interval(b, w, root=False),
        "wrong sign": _flipped(paired_interval),
    },
    "2.4": {
        "'no effect' whenever 0 is inside": _verdict_zero_inside,
        "'no effect' tested before the direction": _verdict_effect_first,
        "the midpoint decides": _verdict_midpoint,
        "verdict text": lambda low, high, n, delta: verdict(low, high, n, delta).replace("±", "+/-"),
    },
    "3.1": {
        "averaged over the positive slices only": lambda a, b, p: ((a - b) ** 2)[p].mean(),
        "negative slices included": lambda a, b, p: ((a - b) ** 2).mean(),
        "summed, not averaged": lambda a, b, p: ((a - b) ** 2)[p].sum(),
        "absolute difference (L1)": lambda a, b, p: ((a - b).abs() * p[:, None, None, None]).mean(),
        "gradient through one view only": lambda a, b, p: equivariance(a, b.detach(), p),
    },
    "3.2": {
        "no eps: NaN on a flat map": lambda m: _scaled(torch.relu(m), (2, 3), eps=0.0),
        "no ReLU": lambda m: _scaled(m, (2, 3)),
        "min and max over the whole batch": lambda m: _scaled(torch.relu(m), (0, 1, 2, 3)),
        "min and max over all channels of a sample": lambda m: _scaled(torch.relu(m), (1, 2, 3)),
        "min not subtracted": lambda m: torch.relu(m) / (torch.relu(m).amax(dim=(2, 3), keepdim=True) + 1e-5),
    },
    "3.3": {
        "chose the threshold on test data": _choice_on("test"),
        "reported the validation Dice": _choice_on("val", report="val"),
        "ties broken towards the higher threshold": _choice_on("val", tie="high"),
        "lowest Dice chosen": _choice_on("val", best=min),
    },
}

IDS = list(EXERCISES)


def test_there_are_eight_to_ten_exercises_numbered_by_notebook():
    assert 8 <= len(EXERCISES) <= 10
    for exercise_id, exercise in EXERCISES.items():
        assert exercise.notebook.startswith(f"0{exercise_id.split('.')[0]}_")
        assert exercise.difficulty in {"easy", "medium", "hard"}
        assert exercise_of_check(exercise.check.__name__) == exercise_id
        assert len(exercise.mistakes) >= 2


@pytest.mark.parametrize("exercise_id", IDS)
def test_the_solution_is_accepted_with_one_stable_line(exercise_id, capsys):
    EXERCISES[exercise_id].check(SOLUTIONS[exercise_id])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"exercise {exercise_id}: correct. ")
    started = time.perf_counter()  # the second call: imports done, as in a notebook
    EXERCISES[exercise_id].check(SOLUTIONS[exercise_id])
    elapsed = time.perf_counter() - started
    assert capsys.readouterr().out.splitlines() == lines, "the line must not change between calls"
    # About 0.2 s at most on a quiet 2-core CPU; the bound leaves room for a loaded CI machine.
    assert elapsed < 2.0, f"check {exercise_id} took {elapsed:.2f} s"


def _not_done(exercise_id):
    def student(*args):
        todo(exercise_id)
    return student


def _returns_none(*args):
    pass


def _returns_ellipsis(*args):
    return ...


def _raises_not_implemented(*args):
    raise NotImplementedError


@pytest.mark.parametrize("exercise_id", IDS)
@pytest.mark.parametrize("student", ["todo", "none", "ellipsis", "not_implemented", "nothing_passed"])
def test_an_unfinished_answer_is_not_done_for_its_own_exercise(exercise_id, student):
    function = {"todo": _not_done(exercise_id), "none": _returns_none, "ellipsis": _returns_ellipsis,
                "not_implemented": _raises_not_implemented, "nothing_passed": None}[student]
    with pytest.raises(ExerciseNotDone, match=rf"^exercise {exercise_id} is not done yet: ") as error:
        EXERCISES[exercise_id].check(function)
    assert error.value.exercise_id == exercise_id


def test_todo_raises_not_done_naming_the_exercise():
    with pytest.raises(ExerciseNotDone, match=r'exercise 2\.3 is not done yet: replace todo\("2\.3"\)'):
        todo("2.3")


def test_every_named_mistake_has_a_wrong_answer_here():
    for exercise_id, exercise in EXERCISES.items():
        assert set(exercise.mistakes) == set(WRONG[exercise_id]), exercise_id


@pytest.mark.parametrize("exercise_id, mistake", [(e, m) for e in WRONG for m in WRONG[e]],
                         ids=[f"{e}-{m}" for e in WRONG for m in WRONG[e]])
def test_a_wrong_answer_names_its_mistake(exercise_id, mistake, capsys):
    with pytest.raises(ExerciseMistake) as error:
        EXERCISES[exercise_id].check(WRONG[exercise_id][mistake])
    assert error.value.exercise_id == exercise_id
    assert error.value.mistake == mistake, str(error.value)
    assert str(error.value).startswith(f"exercise {exercise_id}: likely mistake: {mistake}. ")
    assert capsys.readouterr().out == "", "a wrong answer prints nothing"


def test_a_mistake_is_an_assertion_error_and_an_unknown_one_says_so():
    with pytest.raises(AssertionError, match=r"exercise 3\.2: likely mistake: a value none of the common"):
        EXERCISES["3.2"].check(lambda maps: normalize(maps) * 0.5)
    with pytest.raises(ExerciseMistake, match="wrong shape"):
        EXERCISES["1.1"].check(lambda z: entropy_gradient(z).sum(dim=1))
    with pytest.raises(ExerciseMistake, match="right to 3 digits"):
        EXERCISES["3.2"].check(lambda maps: _scaled(torch.relu(maps), (2, 3), eps=1e-4))
    with pytest.raises(ExerciseMistake, match="wrong type"):
        EXERCISES["3.2"].check(lambda maps: "a string")
    with pytest.raises(ExerciseMistake, match="no gradient"):
        EXERCISES["2.1"].check(lambda s, t, T: kl_distillation(s, t, T).item())


def test_an_error_inside_the_students_function_reaches_the_student():
    with pytest.raises(ZeroDivisionError):
        EXERCISES["2.4"].check(lambda low, high, n, delta: 1 / 0)
