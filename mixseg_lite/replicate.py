"""Replication on fresh seeds: rerun the rows a sweep's claims need on seeds the committed results
never used, and set each claim's committed verdict beside the fresh one.

A committed verdict is one draw of seeds. Rerunning the same sweep on other seeds (new simulated
volumes, split and initial weights) and settling the same claims again says whether the verdict
was a property of the method or of the seeds. ``mixseg-lite replicate`` does it::

    mixseg-lite replicate experiments/mixed_ablation_cardiac.yaml --seeds 100-104 \\
        --only recipe=ours --verdicts holds "no effect" --workers 2

Only the rows the selected claims compare are trained (the ``methods`` parameter of each run is
cut to them); the runs are an ordinary resumable sweep under ``runs/replicate/<sweep name>``.
Their rows, committed as ``results/replicate_<sweep name>.csv`` (``mixseg-lite report
runs/replicate/<sweep name> --csv ...``), appear in the reproduction report beside the committed
verdicts (``mixseg_lite.reproduction.REPLICATIONS``). A fresh verdict that does not resolve what the
committed one did is "undecided" (fewer seeds, no contradiction); one that resolves differently
"contradicts" it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from mixseg_lite.errors import InputError
from mixseg_lite.notebooks import notebook_parameters
from mixseg_lite.report import ROW_SELECTOR_PARAMETERS, collect_metrics
from mixseg_lite.stats import Claim, PairedDifference, read_results, settle
from mixseg_lite.sweep import SweepSummary, project_root, run_sweep

NOT_SPLIT_BY = ROW_SELECTOR_PARAMETERS | {"seed"}


def parse_seeds(text: str) -> list[int]:
    """``"100-104"`` or ``"100,101,105"`` (or both, comma-separated) -> sorted unique seeds."""
    seeds: set[int] = set()
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise InputError(f"seeds {text!r}: expected e.g. 100-104 or 100,101,102")
        low, high = int(match[1]), int(match[2] or match[1])
        if high < low:
            raise InputError(f"seeds {text!r}: range {low}-{high} runs backwards")
        seeds.update(range(low, high + 1))
    return sorted(seeds)


def verdict_kind(verdict: str) -> str:
    """A verdict without its seed count: "not resolved at 5 seeds" and "... at 10 seeds" agree."""
    return "not resolved" if verdict.startswith("not resolved") else verdict


@dataclass(frozen=True)
class Replication:
    """One claim in one condition (e.g. recipe=ours), settled on the committed and the fresh seeds."""

    condition: str
    claim: str
    metric: str
    committed: PairedDifference
    fresh: PairedDifference | None

    @property
    def agrees(self) -> bool | None:
        if self.fresh is None:
            return None
        return verdict_kind(self.committed.verdict) == verdict_kind(self.fresh.verdict)

    @property
    def outcome(self) -> str:
        """"same"; "undecided" (the fresh seeds do not resolve what the committed ones did: fewer
        seeds, less power, no contradiction); "contradicts" (both resolved, to different verdicts);
        "-" (no fresh rows)."""
        if self.agrees is None:
            return "-"
        if self.agrees:
            return "same"
        return "undecided" if verdict_kind(self.fresh.verdict) == "not resolved" else "contradicts"

    def as_row(self) -> dict[str, str]:
        def cell(d: PairedDifference | None) -> str:
            return "-" if d is None else f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}] (n={d.n})"

        return {"condition": self.condition, "claim": self.claim, "metric": self.metric,
                "committed": cell(self.committed), "committed verdict": self.committed.verdict,
                "fresh seeds": cell(self.fresh), "fresh verdict": "-" if self.fresh is None else self.fresh.verdict,
                "same verdict": {"same": "yes", "undecided": "not resolved on the fresh seeds",
                                 "contradicts": "NO: contradicts", "-": "-"}[self.outcome]}


def _value(value: Any) -> str:
    return "" if value is None else str(value)


def _condition(row: Mapping[str, Any], keys: list[str]) -> tuple[str, ...]:
    return tuple(_value(row.get(key)) for key in keys)


def _condition_text(keys: list[str], values: tuple[str, ...]) -> str:
    return ", ".join(f"{key}={value}" for key, value in zip(keys, values) if value != "") or "all"


def condition_keys(spec: Mapping[str, Any]) -> list[str]:
    """The parameters a sweep varies within a seed (its ``runs`` or ``grid`` keys), except those
    that only select rows: the claims are settled separately for each of their values."""
    sets = spec.get("runs") or ([spec["grid"]] if spec.get("grid") else [])
    return [key for key in dict.fromkeys(k for s in sets for k in s) if key not in NOT_SPLIT_BY]


def _methods(claims: Iterable[Claim]) -> set[str]:
    return {str(side["method"]) for claim in claims for side in (claim.better, claim.worse) if "method" in side}


def replicate(sweep_file: str | Path, seeds: list[int], claims: list[Claim], *, workers: int = 1,
              out: str | Path | None = None, only: Mapping[str, str] | None = None,
              verdicts: Iterable[str] | None = None, committed: str | Path | None = None,
              progress: bool = True) -> tuple[SweepSummary | None, list[Replication]]:
    """Rerun the rows ``claims`` need on ``seeds`` and settle them beside the committed results.

    ``committed``: the committed results (default ``results/<sweep name>.csv`` of the sweep's
    project); ``only``: run and compare only the conditions whose parameters match (e.g.
    ``{"recipe": "ours"}``); ``verdicts``: keep the claims whose committed verdict starts with one
    of these (e.g. ``["holds", "no effect"]``). Seeds already in the committed file are refused:
    a replication needs seeds the committed verdicts never saw.
    """
    sweep_file = Path(sweep_file)
    spec = yaml.safe_load(sweep_file.read_text(encoding="utf-8")) if sweep_file.is_file() else None
    if not isinstance(spec, dict):
        raise InputError(f"{sweep_file}: no such sweep file")
    name = str(spec.get("name") or sweep_file.stem)
    root = project_root(sweep_file)
    committed_path = Path(committed) if committed else root / "results" / f"{name}.csv"
    committed_rows = read_results(committed_path)
    used = sorted({int(row["seed"]) for row in committed_rows} & set(seeds))
    if used:
        raise InputError(f"{committed_path}: seeds {used} are already in the committed results; "
                         "choose seeds it never used (e.g. 100-104)")
    only = {key: str(value) for key, value in (only or {}).items()}
    keys = condition_keys(spec)
    selected = select_claims(committed_rows, claims, keys, only, verdicts, str(committed_path))
    claim_by_name = {(claim.name, claim.metric): claim for claim in claims}
    needed = {condition: _methods(claim_by_name[(d.claim, d.metric)] for d in differences)
              for condition, differences in selected.items()}
    # The notebook's own defaults count too: a sweep that never sets `methods` trains the default rows.
    notebooks = spec.get("notebooks") or [spec.get("notebook")]
    defaults = {key: value for notebook in notebooks
                for key, value in notebook_parameters(root / str(notebook)).items() if key in ROW_SELECTOR_PARAMETERS}

    def keep(fixed: dict[str, Any], parameter_set: dict[str, Any]) -> dict[str, Any] | None:
        params = {**defaults, **fixed, **parameter_set}
        condition = _condition(params, keys)
        if condition not in needed or not needed[condition]:
            return None
        if any(_value(params.get(key)) != value for key, value in only.items()):
            return None
        methods = params.get("methods")
        if isinstance(methods, list):
            kept = [method for method in methods if method in needed[condition]]
            if not kept:
                return None
            if kept != methods:
                parameter_set = {**parameter_set, "methods": kept}
        return parameter_set

    summary = None
    if any(selected.values()):
        out = Path(out) if out is not None else root / "runs" / "replicate" / name
        summary = run_sweep(sweep_file, workers=workers, out=out, seeds=seeds, keep=keep, progress=progress)
        fresh_rows = collect_metrics(out)
    else:
        fresh_rows = []
    return summary, compare(selected, fresh_rows, claims, keys)


def select_claims(committed_rows: list[Mapping[str, Any]], claims: list[Claim], keys: list[str],
                  only: Mapping[str, str] | None = None, verdicts: Iterable[str] | None = None,
                  source: str = "results") -> dict[tuple[str, ...], list[PairedDifference]]:
    """The committed claims to replicate, per condition (the values of ``keys``, e.g. the recipe):
    those of the conditions matching ``only`` whose committed verdict starts with one of
    ``verdicts`` (all when none is given)."""
    only = {key: str(value) for key, value in (only or {}).items()}
    conditions = [c for c in dict.fromkeys(_condition(row, keys) for row in committed_rows)
                  if all(_value(dict(zip(keys, c)).get(k, "")) == v for k, v in only.items() if k in keys)]
    if not conditions:
        raise InputError(f"{source}: no rows match {dict(only)}")
    wanted = tuple(verdicts or ())
    selected = {}
    for condition in conditions:
        rows = [row for row in committed_rows if _condition(row, keys) == condition]
        selected[condition] = [d for d in settle(rows, claims, source) if not wanted or d.verdict.startswith(wanted)]
    return selected


def compare(selected: Mapping[tuple[str, ...], list[PairedDifference]], fresh_rows: list[Mapping[str, Any]],
            claims: list[Claim], keys: list[str]) -> list[Replication]:
    """Each selected claim settled again on ``fresh_rows``, beside its committed verdict."""
    claim_by_name = {(claim.name, claim.metric): claim for claim in claims}
    replications = []
    for condition, differences in selected.items():
        rows = [row for row in fresh_rows if _condition(row, keys) == condition]
        fresh = {(d.claim, d.metric): d for d in settle(rows, [claim_by_name[(d.claim, d.metric)]
                                                              for d in differences], "fresh seeds")}
        replications += [Replication(_condition_text(keys, condition), d.claim, d.metric, d,
                                     fresh.get((d.claim, d.metric))) for d in differences]
    return replications
