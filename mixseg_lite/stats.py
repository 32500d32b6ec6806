"""Settling a claim over seeds: paired differences, their 95% confidence interval, a verdict.

A claim such as "the KL+Ent student beats the KL student" compares two rows of one sweep. Every
seed of a sweep draws the data, the split and the initial weights once, and trains every row on
them, so the rows of one seed are *paired*: the per-seed difference removes the variance the
rows share (an easy split lifts both). For ``n`` seeds with differences ``d_1..d_n``::

    mean d  +/-  t_{0.975, n-1} * sd(d) / sqrt(n)          (Student's t interval, ddof = 1)

Four verdicts:

- ``"holds"``: the whole interval lies on the claimed side of 0;
- ``"opposite"``: it lies on the other side;
- ``"no effect within ±delta"``: it contains 0 and lies inside ``[-delta, +delta]``, where
  ``delta`` is the smallest difference that would matter to a user, fixed per metric before the
  runs (:data:`DELTAS`: 0.02 Dice);
- ``"not resolved at n seeds"``: anything else (the interval reaches past ``delta`` on one side
  and past 0 on the other): more seeds are needed, :func:`seeds_to_decide` estimates how many.

The interval assumes the differences are roughly normal; with 5 seeds it is wide, which is the
honest answer.
"""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from scipy import stats as scipy_stats

from mixseg_lite.errors import InputError

CONFIDENCE = 0.95
MIN_SEEDS = 2  # a t interval needs at least two differences

# The smallest difference that matters, per metric, fixed before any run (docs/reproduction.md
# says why): a Dice difference under 0.02 is below what a user would choose a method for, and
# well below the disagreement between two expert raters on cardiac or tumour contours. The
# foreground fraction is a share of the image's pixels: 0.01 is one pixel in a hundred.
DELTAS = {"dice": 0.02, "dice_last": 0.02, "dice_3d": 0.02, "dice_pos": 0.02, "dice_slice_avg": 0.02,
          "foreground_fraction": 0.01}
MAX_SEEDS_ESTIMATE = 1000  # beyond this a power estimate only says "more than"


@dataclass(frozen=True)
class Claim:
    """``better`` beats ``worse`` on ``metric`` (higher is better unless ``lower_is_better``).

    ``better`` and ``worse`` select one row per seed from a results table, e.g.
    ``{"method": "kl_ent", "branch": "student"}``.
    """

    name: str
    better: Mapping[str, Any]
    worse: Mapping[str, Any]
    metric: str = "dice"
    lower_is_better: bool = False
    delta: float | None = None  # the smallest difference that matters; None: DELTAS[metric]

    @property
    def margin(self) -> float | None:
        """``delta`` if given, else the metric's entry of :data:`DELTAS` (None: no such verdict)."""
        return self.delta if self.delta is not None else DELTAS.get(self.metric)


@dataclass(frozen=True)
class PairedDifference:
    """Mean paired difference (better - worse, sign flipped when lower is better) over seeds."""

    claim: str
    metric: str
    n: int
    better_mean: float
    worse_mean: float
    mean: float
    low: float
    high: float
    wins: int  # seeds on which the claimed direction held
    sd: float = math.nan  # sample sd of the per-seed differences
    delta: float | None = None  # the margin of "no effect within ±delta"

    @property
    def verdict(self) -> str:
        return verdict(self.low, self.high, self.n, self.delta)

    @property
    def resolved(self) -> bool:
        return not self.verdict.startswith("not resolved")

    def seeds_to_decide(self) -> int | None:
        """Estimated seeds for a verdict other than "not resolved" (None when already resolved);
        see :func:`seeds_to_decide`."""
        return None if self.resolved else seeds_to_decide(self.mean, self.sd, self.delta)

    def as_row(self, digits: int = 3, power: bool = False) -> dict[str, Any]:
        """A flat, rounded row for tables (rounded so that it reads the same everywhere).

        ``power`` adds the claim's ``delta`` and, for an unresolved claim, the estimated seeds
        it would need (:func:`seeds_to_decide`)."""
        row = {"claim": self.claim, "metric": self.metric, "n": self.n,
               "better": f"{self.better_mean:.{digits}f}", "worse": f"{self.worse_mean:.{digits}f}",
               "difference": f"{self.mean:+.{digits}f}",
               "95% CI": f"[{self.low:+.{digits}f}, {self.high:+.{digits}f}]",
               "wins": f"{self.wins}/{self.n}", "verdict": self.verdict}
        if power:
            needed = self.seeds_to_decide()
            row["delta"] = "-" if self.delta is None else f"±{self.delta:g}"
            row["seeds to decide (estimate)"] = ("" if self.resolved else "-" if needed is None
                                                 else f">{MAX_SEEDS_ESTIMATE}" if needed > MAX_SEEDS_ESTIMATE
                                                 else str(needed))
        return row


def verdict(low: float, high: float, n: int, delta: float | None = None) -> str:
    """``holds`` (interval > 0), ``opposite`` (interval < 0), ``no effect within ±delta``
    (0 <= interval's reach <= delta on both sides), else ``not resolved at n seeds``.

    A direction is reported first: an interval above 0 and inside ±delta is a small effect that
    holds, not "no effect".
    """
    if low > 0:
        return "holds"
    if high < 0:
        return "opposite"
    if delta is not None and -delta <= low and high <= delta:
        return f"no effect within ±{delta:g}"
    return f"not resolved at {n} seeds"


def half_width(sd: float, n: int, confidence: float = CONFIDENCE) -> float:
    """Half-width of the t interval of a mean of ``n`` differences with sample sd ``sd``."""
    return float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)


def seeds_to_decide(mean: float, sd: float, delta: float | None = None) -> int | None:
    """An estimate of the seeds a claim needs for a verdict, if its mean difference and the
    spread of its differences stayed as observed: the smallest ``n`` whose interval half-width
    is below ``|mean|`` (the interval then excludes 0) or below ``delta - |mean|`` (it then lies
    inside ±delta). Larger than :data:`MAX_SEEDS_ESTIMATE` -> that bound + 1; no spread -> None.

    It is a plug-in estimate, not a guarantee: the next seeds move the mean and sd too.
    """
    if not (math.isfinite(mean) and math.isfinite(sd)) or sd <= 0:
        return None
    target = max(abs(mean), (delta - abs(mean)) if delta is not None else 0.0)
    if target <= 0:
        return MAX_SEEDS_ESTIMATE + 1
    for n in range(MIN_SEEDS, MAX_SEEDS_ESTIMATE + 1):
        if half_width(sd, n) < target:
            return n
    return MAX_SEEDS_ESTIMATE + 1


def t_interval(differences: Iterable[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """``(mean, low, high)``: Student's t confidence interval of the mean of ``differences``."""
    values = [float(d) for d in differences]
    if len(values) < MIN_SEEDS:
        raise InputError(f"a confidence interval needs at least {MIN_SEEDS} paired values, got {len(values)}")
    mean = statistics.fmean(values)
    half = half_width(statistics.stdev(values), len(values), confidence)
    return mean, mean - half, mean + half


def _matches(row: Mapping[str, Any], selector: Mapping[str, Any]) -> bool:
    return all(str(row.get(key)) == str(value) for key, value in selector.items())


def _per_seed(rows: list[Mapping[str, Any]], selector: Mapping[str, Any], metric: str,
              source: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for row in rows:
        if not _matches(row, selector):
            continue
        seed = str(row.get("seed"))
        if seed in values:
            raise InputError(f"{source}: two rows for {dict(selector)} with seed {seed}; "
                             "select one row per seed (add the parameter that differs)")
        try:
            values[seed] = float(row[metric])
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{source}: row {dict(selector)} seed {seed} has no number in "
                             f"column {metric!r}") from None
    return values


def paired_difference(rows: list[Mapping[str, Any]], claim: Claim, source: str = "results") -> PairedDifference:
    """The claim's paired difference over the seeds both of its rows have (NaN values skipped)."""
    better = _per_seed(rows, claim.better, claim.metric, source)
    worse = _per_seed(rows, claim.worse, claim.metric, source)
    seeds = [s for s in better if s in worse and math.isfinite(better[s]) and math.isfinite(worse[s])]
    if len(seeds) < MIN_SEEDS:
        raise InputError(f"{source}: claim {claim.name!r} needs rows {dict(claim.better)} and "
                         f"{dict(claim.worse)} for at least {MIN_SEEDS} common seeds, found {len(seeds)}")
    sign = -1.0 if claim.lower_is_better else 1.0
    differences = [sign * (better[s] - worse[s]) for s in seeds]
    mean, low, high = t_interval(differences)
    return PairedDifference(claim.name, claim.metric, len(seeds),
                            statistics.fmean(better[s] for s in seeds), statistics.fmean(worse[s] for s in seeds),
                            mean, low, high, sum(d > 0 for d in differences),
                            statistics.stdev(differences), claim.margin)


def settle(rows: list[Mapping[str, Any]], claims: Iterable[Claim], source: str = "results") -> list[PairedDifference]:
    """:func:`paired_difference` for every claim whose rows are present; others are left out."""
    settled = []
    for claim in claims:
        if any(_matches(r, claim.better) for r in rows) and any(_matches(r, claim.worse) for r in rows):
            settled.append(paired_difference(rows, claim, source))
    return settled


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a results CSV (as written by ``mixseg-lite report``); numbers stay strings."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such results file (regenerate it with the command in results/README.md)")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "seed" not in rows[0]:
        raise InputError(f"{path}: expected a results table with a 'seed' column")
    return rows
