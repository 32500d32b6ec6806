"""Result tables and charts from the ``metrics.json`` files that notebooks write.

Every notebook writes ``{"rows": [{"method": ..., <numbers>...}], "params": {...}}`` to its
``output_dir``. :func:`collect_metrics` flattens every such file below a folder (a sweep, a demo,
a single run) into one row per metrics row, tagged with the notebook and the run's parameters;
:func:`write_report` turns them into ``results.csv``, a Markdown table of mean ± std over seeds,
and a bar chart.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from mixseg_lite.errors import InputError

METRICS_FILE = "metrics.json"
STATUS_FILE = "status.json"
SEED_PARAMETER = "seed"
# Parameters that say where or how fast a run went, not what it computed.
UNINFORMATIVE_PARAMETERS = {"output_dir", "num_threads"}
# What notebook 04 records beside its parameters: results of the run, not settings.
OUTCOME_PARAMETERS = {"best_epoch", "best_val_dice", "epochs_done", "checkpoint", "config"}
# Parameters that choose which rows a run trains (its rows then say which one they are): a sweep
# that splits its rows over several runs per seed is still one table, paired per seed.
ROW_SELECTOR_PARAMETERS = {"methods"}
# Row keys that name what a row is about even when their values are numbers (class 1, 2, ...).
IDENTIFIER_KEYS = ("method", "branch", "modality", "class", "label", "structure", "region")


@dataclass
class RunMetrics:
    """One ``metrics.json``: the notebook that wrote it, the run's parameters and its rows."""

    path: Path
    notebook: str
    params: dict[str, Any]
    rows: list[dict[str, Any]]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise InputError(f"{path}: not valid JSON ({error})") from None


def _notebook_name(metrics_path: Path, status: dict[str, Any], rundir: Path | None) -> str:
    """The notebook that wrote a metrics file: from status.json, else the executed notebook
    beside it, else (last resort) the first folder below ``rundir`` (``<stem>/<run>/``)."""
    if status.get("notebook"):
        return str(status["notebook"])
    executed = sorted(metrics_path.parent.glob("*.ipynb"))
    if executed:
        return executed[0].stem
    if rundir is not None and len(metrics_path.relative_to(rundir).parts) > 2:
        return metrics_path.relative_to(rundir).parts[0]
    return metrics_path.parent.name


def read_run(metrics_path: str | Path, rundir: str | Path | None = None) -> RunMetrics:
    """Read one ``metrics.json`` with the ``status.json`` a sweep may have left beside it.

    ``rundir``, the folder being reported on, helps name the notebook when nothing else does.
    """
    metrics_path = Path(metrics_path)
    metrics = _read_json(metrics_path)
    if not isinstance(metrics, dict) or not isinstance(metrics.get("rows"), list):
        raise InputError(f"{metrics_path}: expected {{\"rows\": [...], \"params\": {{...}}}}")
    status_path = metrics_path.parent / STATUS_FILE
    status = _read_json(status_path) if status_path.is_file() else {}
    status = status if isinstance(status, dict) else {}
    params = {**(metrics.get("params") or {}), **(status.get("params") or {})}
    params = {key: value for key, value in params.items() if key not in UNINFORMATIVE_PARAMETERS}
    rows = [row for row in metrics["rows"] if isinstance(row, dict)]
    name = _notebook_name(metrics_path, status, Path(rundir) if rundir is not None else None)
    return RunMetrics(metrics_path, name, params, rows)


def read_runs(rundir: str | Path) -> list[RunMetrics]:
    """Every ``metrics.json`` below ``rundir`` (sorted by path); none -> :class:`InputError`."""
    rundir = Path(rundir)
    if not rundir.is_dir():
        raise InputError(f"{rundir}: no such run folder")
    paths = sorted(rundir.rglob(METRICS_FILE))
    if not paths:
        raise InputError(f"{rundir}: no {METRICS_FILE} below this folder")
    return [read_run(path, rundir) for path in paths]


def collect_metrics(rundir: str | Path) -> list[dict[str, Any]]:
    """One flat dict per metrics row below ``rundir``: notebook, run parameters (incl. seed), row.

    A row's own values win over a parameter of the same name (a notebook comparing several
    methods reports each row's ``method``).
    """
    return [{"notebook": run.notebook, **run.params, **row}
            for run in read_runs(rundir) for row in run.rows]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _ordered_keys(rows: Iterable[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def _columns(runs: list[RunMetrics]) -> tuple[list[str], list[str]]:
    """``(group columns, value columns)``: what identifies a row, and the numbers to average.

    Group columns: notebook, the row's identifiers (method, branch or modality, any text value),
    then the parameters that differ between runs other than the seed. Value columns: the rows'
    other numbers, except ``*_std`` (a run's own spread, kept in ``results.csv``).
    """
    # Nested values (a run's settings, per-class dicts) stay in results.csv; a table cannot group by them.
    row_keys = [key for key in _ordered_keys(row for run in runs for row in run.rows)
                if not any(isinstance(row.get(key), (dict, list)) for run in runs for row in run.rows)]
    identifiers = [key for key in row_keys
                   if key in IDENTIFIER_KEYS
                   or any(not _is_number(row.get(key)) and row.get(key) is not None
                          for run in runs for row in run.rows)]
    identifiers.sort(key=lambda key: IDENTIFIER_KEYS.index(key) if key in IDENTIFIER_KEYS
                     else len(IDENTIFIER_KEYS))
    # A run's own spread over its test volumes (dice_std, hd95_std) stays in results.csv; the
    # tables show the spread over seeds of the means instead.
    values = [key for key in row_keys if key not in identifiers and not key.endswith("_std")]
    # A parameter splits the table only when it differs between runs of the same seed: what
    # differs only across seeds (a run's best epoch, its resolved config) follows from the seed.
    by_seed: dict[str, list[RunMetrics]] = {}
    for run in runs:
        by_seed.setdefault(json.dumps(run.params.get(SEED_PARAMETER), default=str), []).append(run)
    varying = [key for key in _ordered_keys(run.params for run in runs)
               if key != SEED_PARAMETER and key not in row_keys and key not in OUTCOME_PARAMETERS
               and key not in ROW_SELECTOR_PARAMETERS
               and not any(isinstance(run.params.get(key), dict) for run in runs)
               and any(len({json.dumps(run.params.get(key), sort_keys=True, default=str) for run in group}) > 1
                       for group in by_seed.values())]
    return ["notebook", *identifiers, *varying], values


def _finite_numbers(values: Iterable[Any]) -> list[float]:
    """Numbers to average; missing values and NaN (e.g. an undefined HD95) are left out."""
    return [float(value) for value in values if _is_number(value) and not math.isnan(value)]


def mean_std_by_group(rows: list[dict[str, Any]], group_columns: list[str],
              value_columns: list[str]) -> list[dict[str, Any]]:
    """Mean, sample std (ddof=1) and count per group, in first-seen group order.

    Each result holds the group columns, ``n`` (rows in the group) and, per value column,
    ``(mean, std, count)`` where std is None for fewer than 2 values.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        key = tuple(json.dumps(row.get(column), default=str) for column in group_columns)
        groups.setdefault(key, []).append(row)
    summary = []
    for members in groups.values():
        entry: dict[str, Any] = {column: members[0].get(column) for column in group_columns}
        entry["n"] = len(members)
        for column in value_columns:
            numbers = _finite_numbers(member.get(column) for member in members)
            mean = statistics.fmean(numbers) if numbers else math.nan
            std = statistics.stdev(numbers) if len(numbers) > 1 else None
            entry[column] = (mean, std, len(numbers))
        summary.append(entry)
    return summary


def _number(value: float) -> str:
    return f"{value:.3f}"


def _mean_std_cell(statistic: tuple[float, float | None, int], n: int) -> str:
    mean, std, count = statistic
    if count == 0:
        return "-"
    cell = f"{_number(mean)} ± {'-' if std is None else _number(std)}"
    return cell if count == n else f"{cell} (n={count})"


def _markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def _text(value: Any) -> str:
    """A reported number rounded for reading; anything else as is."""
    if value is None:
        return ""
    return _number(value) if isinstance(value, float) else str(value)


def _label(value: Any) -> str:
    """A group value exactly as given: lr 0.001 and 0.0001 must stay apart."""
    return "" if value is None else str(value)


def summary_markdown(summary: list[dict[str, Any]], group_columns: list[str],
                     value_columns: list[str]) -> str:
    """Markdown table: group columns, ``n``, then ``mean ± std`` per value column."""
    header = [*group_columns, "n", *(f"{column} (mean ± std)" for column in value_columns)]
    body = [[*(_label(entry[column]) for column in group_columns), str(entry["n"]),
             *(_mean_std_cell(entry[column], entry["n"]) for column in value_columns)]
            for entry in summary]
    return _markdown(header, body)


def rows_markdown(runs: list[RunMetrics]) -> str:
    """Markdown table of the rows as reported (no averaging): notebook, identifiers, numbers."""
    group_columns, value_columns = _columns(runs)
    identifiers = [column for column in group_columns if column != "notebook"
                   and any(column in row for run in runs for row in run.rows)]
    header = ["notebook", *identifiers, *value_columns]
    body = [[run.notebook, *(_text(row.get(column)) for column in [*identifiers, *value_columns])]
            for run in runs for row in run.rows]
    return _markdown(header, body)


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=_ordered_keys(rows), restval="")
        writer.writeheader()
        writer.writerows({key: json.dumps(value) if isinstance(value, (list, dict)) else value
                          for key, value in row.items()} for row in rows)


def _finite_or_nan(value: float) -> float:
    return value if math.isfinite(value) else math.nan


def _write_chart(summary: list[dict[str, Any]], group_columns: list[str],
                 value_columns: list[str], path: Path) -> None:
    """One bar panel per value column (stacked), one bar per group, std as error bars."""
    # Figure + Agg canvas directly: pyplot would switch the backend of a notebook calling us.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = [column for column in group_columns
             if len({json.dumps(entry[column], default=str) for entry in summary}) > 1]
    labels = [" / ".join(_label(entry[column]) for column in shown) or "all" for entry in summary]
    panels = max(len(value_columns), 1)
    width = min(max(6.0, 0.5 * len(labels) + 2.0), 24.0)
    figure = Figure(figsize=(width, 3.5 * panels), layout="constrained")
    FigureCanvasAgg(figure)
    for index, column in enumerate(value_columns):
        axes = figure.add_subplot(panels, 1, index + 1)
        # An infinite HD95 (empty prediction) cannot be drawn: leave that bar out.
        means = [_finite_or_nan(entry[column][0]) for entry in summary]
        errors = [_finite_or_nan(entry[column][1] or 0.0) for entry in summary]
        axes.bar(range(len(labels)), means, yerr=errors, capsize=4, color="tab:blue", alpha=0.8)
        axes.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        axes.set_title(f"{column} (mean ± std)")
    figure.savefig(path, dpi=100)


def claims_markdown(rows: list[dict[str, Any]], split_by: Iterable[str] = ()) -> str:
    """Markdown table of the paper's claims for the notebooks in ``rows``, settled over seeds.

    One line per claim: means of both rows, the mean paired difference with its 95% t interval,
    the seeds on which the claimed direction held, and the verdict (:mod:`mixseg_lite.stats`).
    ``split_by`` names parameters that vary within a seed (e.g. ``recipe``): the claims are then
    settled separately for each of their values, under a heading naming them. Empty when no
    notebook in ``rows`` has a claim set or fewer than two seeds were run.
    """
    from mixseg_lite.claims import CLAIMS_BY_NOTEBOOK
    from mixseg_lite.stats import settle

    split_by = list(split_by)
    tables = []
    for notebook in dict.fromkeys(str(row.get("notebook")) for row in rows):
        claims = CLAIMS_BY_NOTEBOOK.get(notebook)
        members = [row for row in rows if str(row.get("notebook")) == notebook]
        if not claims or len({str(row.get(SEED_PARAMETER)) for row in members}) < 2:
            continue
        parts: dict[str, list[dict[str, Any]]] = {}
        for row in members:
            key = ", ".join(f"{column}={_text(row.get(column))}" for column in split_by
                            if row.get(column) not in (None, ""))  # unset: the notebook's default
            parts.setdefault(key, []).append(row)
        for key, part in parts.items():
            settled = [difference.as_row() for difference in settle(part, claims, notebook)]
            if settled:
                header = list(settled[0])
                tables.append((f"\n{key}:\n\n" if key else "")
                              + _markdown(header, [[str(row[column]) for column in header] for row in settled]))
    return "\n".join(tables)


def write_report(rundir: str | Path, csv_copy: str | Path | None = None) -> dict[str, Path]:
    """Write ``results.csv``, ``results.md`` and ``results.png`` into ``rundir``; return their paths.

    ``results.md`` holds mean ± std (sample std, ddof=1; "-" for a single seed) over seeds per
    notebook / method / branch or modality / varying parameter, with the count ``n``, then the
    claims of the notebook settled by paired differences over seeds (:func:`claims_markdown`).
    ``csv_copy`` also writes the CSV there (how ``results/`` is regenerated).
    """
    rundir = Path(rundir)
    runs = read_runs(rundir)
    rows = [{"notebook": run.notebook, **run.params, **row} for run in runs for row in run.rows]
    paths = {"csv": rundir / "results.csv", "markdown": rundir / "results.md",
             "png": rundir / "results.png"}
    _write_csv(rows, paths["csv"])
    # One table per notebook: a sweep over several notebooks would otherwise list every
    # notebook's parameters as "varying" in every row.
    tables, summary, group_columns, value_columns, split_by = [], [], [], [], []
    for notebook in dict.fromkeys(run.notebook for run in runs):
        members = [run for run in runs if run.notebook == notebook]
        groups, values = _columns(members)
        row_keys = {key for run in members for row in run.rows for key in row}
        split_by += [c for c in groups if c != "notebook" and c not in row_keys and c not in split_by]
        part = mean_std_by_group([row for row in rows if row["notebook"] == notebook], groups, values)
        tables.append(summary_markdown(part, groups, values))
        summary += part
        group_columns += [c for c in groups if c not in group_columns]
        value_columns += [c for c in values if c not in value_columns]
    for entry in summary:  # the chart needs every column in every entry
        entry.update({c: entry.get(c) for c in group_columns})
        entry.update({c: entry.get(c, (math.nan, None, 0)) for c in value_columns})
    claims = claims_markdown(rows, split_by)
    paths["markdown"].write_text("\n".join(tables)
                                 + (f"\nClaims, paired over seeds (95% t interval of the difference):\n\n{claims}"
                                    if claims else ""), encoding="utf-8")
    _write_chart(summary, group_columns, value_columns, paths["png"])
    if csv_copy is not None:
        Path(csv_copy).parent.mkdir(parents=True, exist_ok=True)
        paths["csv_copy"] = Path(shutil.copyfile(paths["csv"], csv_copy))
    return paths


def seed_summary_rows(rows: list[dict[str, Any]], group_columns: list[str],
                      value_columns: list[str]) -> list[dict[str, Any]]:
    """Flat rows for :func:`mixseg_lite.results.format_table`: group values, ``n``, and per value
    column its mean and sample std over seeds (``<column>`` and ``<column>_sd``)."""
    flat = []
    for entry in mean_std_by_group(rows, group_columns, value_columns):
        row = {column: entry[column] for column in group_columns}
        row["n"] = entry["n"]
        for column in value_columns:
            mean, std, _ = entry[column]
            row[column], row[f"{column}_sd"] = mean, (math.nan if std is None else std)
        flat.append(row)
    return flat


def committed_tables(name: str, claims: list, group_columns: list[str], value_columns: list[str],
                     where: dict[str, Any] | None = None, order: list[str] | None = None,
                     compare_with: tuple[str, dict[str, Any]] | None = None, rows_table: bool = True) -> str:
    """Text of a committed sweep (``results/<name>.csv``): mean ± sd over seeds per row, then
    each claim's paired difference, 95% interval and verdict. Reads a file, so it prints the same
    on every machine (notebooks check it with nbval). ``where`` keeps only matching rows; ``order``
    lists values of the first group column in the order the rows should appear (others last);
    ``compare_with = (other_name, where)`` adds the matching rows of ``results/<other_name>.csv``
    for the claims only (a baseline row another sweep holds, on the same seeds and data)."""
    from mixseg_lite.results import committed_results, format_table
    from mixseg_lite.stats import read_results, settle

    path = committed_results(name)
    if path is None:
        return f"results/{name}.csv not found: regenerate it with the command in results/README.md"
    rows = [row for row in read_results(path)
            if all(str(row.get(k)) == str(v) for k, v in (where or {}).items())]
    for row in rows:
        for column in value_columns:
            try:
                row[column] = float(row[column])
            except (KeyError, TypeError, ValueError):
                row[column] = math.nan
    seeds = sorted({int(row["seed"]) for row in rows})
    summary = seed_summary_rows(rows, group_columns, value_columns)
    if order:
        rank = {value: i for i, value in enumerate(order)}
        summary.sort(key=lambda row: rank.get(str(row[group_columns[0]]), len(rank)))  # stable: ties keep file order
    columns = [*group_columns, "n", *(c for column in value_columns for c in (column, f"{column}_sd"))]
    claim_rows = list(rows)
    if compare_with is not None:
        other = committed_results(compare_with[0])
        if other is None:
            return f"results/{compare_with[0]}.csv not found: regenerate it with the command in results/README.md"
        claim_rows += [row for row in read_results(other)
                       if all(str(row.get(k)) == str(v) for k, v in compare_with[1].items())]
    settled = [difference.as_row() for difference in settle(claim_rows, claims, str(path))]
    text = [f"results/{name}.csv: {len(seeds)} seeds ({', '.join(map(str, seeds))})"
            + ("; mean and sd over seeds" if rows_table else "")]
    if rows_table:
        text.append(format_table(summary, columns))
    if settled:
        if rows_table:
            text.append("")
        text += ["claims: paired difference over seeds (better - worse), 95% t interval, verdict",
                 format_table(settled, list(settled[0]))]
    return "\n".join(text)
