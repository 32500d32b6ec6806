"""Writing a notebook's results: ``metrics.json`` for the command line, a rounded table for people."""

from __future__ import annotations

import json
import math
from pathlib import Path


def write_metrics(output_dir: str | Path, rows: list[dict], params: dict, speed: dict | None = None) -> Path:
    """Write ``{"rows": rows, "params": params, "machine": ...}`` to ``output_dir/metrics.json``
    and return its path. ``machine`` records the CPU features, thread count and versions the
    numbers came from (:func:`mixseg_lite.hardware.machine_info`); ``speed``, when given, what each
    run's hardware choices resolved to and why (``TrainResult.speed``: memory format, autocast,
    torch.compile), kept beside the rows so that the results table does not change shape.

    Only JSON-friendly scalars belong in rows; nested dicts are kept as they are.
    """
    from mixseg_lite.hardware import machine_info

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "metrics.json"
    record = {"rows": rows, "params": params, "machine": machine_info(), **({"speed": speed} if speed else {})}
    path.write_text(json.dumps(record, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


def format_table(rows: list[dict], columns: list[str], digits: int = 3, cell=None) -> str:
    """A fixed-width text table of ``columns``: the one table layout of notebooks, CLI and benchmarks.

    Floats are rounded to ``digits`` decimals (rounded output is what nbval compares, so tiny
    floating-point differences do not fail it); ``cell(value) -> str`` replaces that formatting
    (the benchmarks print 4 significant digits).
    """
    def rounded(value) -> str:
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.{digits}f}"
        return str(value)

    cell = cell or rounded
    table = [columns] + [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


RESULTS_DIR = "results"


def committed_results(name: str) -> Path | None:
    """The committed sweep table ``results/<name>.csv`` (see ``results/README.md``), or None.

    Looked up beside the notebooks (``../results`` from ``notebooks/``), in the current folder,
    and in the checkout the package was installed from, so the notebooks find it locally, on
    Binder and in a Colab clone.
    """
    import mixseg_lite

    filename = f"{name}.csv"
    candidates = [Path.cwd().parent / RESULTS_DIR, Path.cwd() / RESULTS_DIR,
                  Path(mixseg_lite.__file__).resolve().parents[1] / RESULTS_DIR]
    return next((folder / filename for folder in candidates if (folder / filename).is_file()), None)
