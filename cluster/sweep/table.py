"""The results table of a sweep (`OUT/results.parquet`) and the choice of points to refine.

One row per point and fidelity: `point_id`, one column per parameter (named as its path),
`fidelity`, `status` ("ok" or "failed"), `error`, `wall_s` (the point's own wall time),
`refine_reason` (an event row re-run from an analytic sweep: "best" or "surprise"),
`trace` (kept traces only), then the summary's scalar figures. The schema's metadata
holds the base description's fingerprint and the parameter names, so a rerun resumes
only a sweep of the same base. Written whole, to a temporary file renamed over the last.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from common.errors import ConfigError

__all__ = ["RESULTS", "choose_refine", "read_rows", "summary_scalars", "write_rows"]

RESULTS = "results.parquet"
META_KEY = b"wafersim_sweep"
FIRST = ("point_id",)
AFTER_PARAMS = ("fidelity", "status", "error", "wall_s", "refine_reason", "trace")
# Figures of the host, not of the simulation: a rerun would not give them again.
_WALL_CLOCK = {"wall_s", "setup_wall_s", "sync_wall_s", "round_wall_ms_p50", "events_per_s", "trace",
               "ray_startup_s", "fidelity"}


def summary_scalars(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary's scalar figures (nested tables and lists left out, and the host's
    wall-clock figures: the row's `wall_s` is the point's)."""
    return {k: v for k, v in summary.items()
            if k not in _WALL_CLOCK and (v is None or isinstance(v, (bool, int, float, str)))}


def read_rows(path: Path, fingerprint: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of an existing table and its parameter names; ([], []) when there is none.
    A table of another base is refused: its points are not this sweep's."""
    if not path.exists():
        return [], []
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise ConfigError(f"{path}: cannot read the results table ({exc}); remove it to start over") from None
    meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
    if meta.get("fingerprint") != fingerprint:
        raise ConfigError(f"{path}: holds the results of a sweep over another base description; "
                          f"give another -o or remove it")
    return table.to_pylist(), list(meta.get("params", []))


def _column(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        # Mixed types in one column (a zip of numbers and strings): as JSON text.
        return pa.array([None if v is None else json.dumps(v, sort_keys=True) for v in values], pa.string())


def write_rows(path: Path, rows: list[dict[str, Any]], params: list[str], fingerprint: str) -> None:
    """Write every row, atomically: a stopped sweep leaves the last whole table."""
    names: dict[str, None] = dict.fromkeys([*FIRST, *params, *AFTER_PARAMS])
    for row in rows:
        names.update(dict.fromkeys(row))
    table = pa.table({name: _column([row.get(name) for row in rows]) for name in names})
    meta = {"fingerprint": fingerprint, "params": params}
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _finite_positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _design(rows: list[dict[str, Any]], params: list[str]) -> np.ndarray:
    """Columns for a log-log fit: an intercept; log of a positive numeric parameter (the
    value itself when not all positive); one indicator per further level of any other."""
    cols = [np.ones(len(rows))]
    for p in params:
        values = [r.get(p) for r in rows]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            arr = np.asarray(values, dtype=float)
            arr = np.log(arr) if np.all(arr > 0) else arr
            if np.ptp(arr) > 0:
                cols.append(arr)
        else:
            keys = [json.dumps(v, sort_keys=True) for v in values]
            cols += [np.asarray([k == level for k in keys], dtype=float) for level in sorted(set(keys))[1:]]
    return np.column_stack(cols)


def choose_refine(rows: list[dict[str, Any]], params: list[str], n: int) -> list[tuple[str, str]]:
    """(point_id, reason) of the points an analytic sweep re-runs in full, from its ok rows
    in sweep order: the `n` best by `tokens_per_s_per_user` ("best"), then the `n` most
    surprising of the rest ("surprise"): the largest residuals of log aggregate throughput
    against a least-squares fit linear in the parameters (log of a positive number, an
    indicator per level of anything else), i.e. where the analytic model departs most from
    the smooth trend of the whole space. Ties go to the point listed first."""
    if n <= 0:
        return []
    ok = [r for r in rows if r.get("status") == "ok"]
    speed = [r for r in ok if _finite_positive(r.get("tokens_per_s_per_user"))]
    order = sorted(range(len(speed)), key=lambda i: (-speed[i]["tokens_per_s_per_user"], i))
    picked = [(speed[i]["point_id"], "best") for i in order[:n]]
    chosen = {pid for pid, _ in picked}
    fit = [r for r in ok if _finite_positive(r.get("aggregate_tokens_per_s"))]
    if len(fit) >= 2:
        y = np.log([r["aggregate_tokens_per_s"] for r in fit])
        x = _design(fit, params)
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        resid = np.abs(y - x @ coef)
        rest = [i for i in sorted(range(len(fit)), key=lambda i: (-resid[i], i)) if fit[i]["point_id"] not in chosen]
        picked += [(fit[i]["point_id"], "surprise") for i in rest[:n]]
    return picked
