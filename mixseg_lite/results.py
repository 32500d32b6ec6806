"""Writing a notebook's results: ``metrics.json`` for the command line, a rounded table for people."""

from __future__ import annotations

import json
import math
from pathlib import Path


def write_metrics(output_dir: str | Path, rows: list[dict], params: dict) -> Path:
    """Write ``{"rows": rows, "params": params}`` to ``output_dir/metrics.json`` and return its path.

    Only JSON-friendly scalars belong in rows; nested dicts are kept as they are.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "metrics.json"
    path.write_text(json.dumps({"rows": rows, "params": params}, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


def format_table(rows: list[dict], columns: list[str], digits: int = 3) -> str:
    """A fixed-width text table of ``columns`` with numbers rounded to ``digits`` decimals.

    Rounded output is what nbval compares, so tiny floating-point differences do not fail it.
    """
    def cell(value) -> str:
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.{digits}f}"
        return str(value)

    table = [columns] + [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
