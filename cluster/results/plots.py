"""Figures from a sweep's results table or from a trace, as PNG or SVG.

From a sweep table (one row per point: the swept parameters by field path, `fidelity`,
`status`, `error`, the summary's figures):
- `speed-vs-users`: tokens_per_s_per_user against a users or arrival-rate column;
- `throughput-vs-replicas`: aggregate_tokens_per_s against a replica-count or wafers column;
- `ttft-vs-placement`: ttft_ms_p50 (a whisker up to p99) by a categorical column such as a
  router policy or the sites;
- `xy`: any `--y` against any `--x`.
Analytic and event points share the axes, told apart by marker and line style; another
parameter that varies gets a colour per value; several seeds at one x are all drawn, with
the line through their mean. Failed points are left out and counted in the subtitle.

From a trace:
- `timeline`: one row per wafer and link LP (at most `max_rows`), spans coloured by kind,
  each row split into as many thin lanes as it had spans at once (a wafer's regions
  compute together); a window of `DEFAULT_WINDOW_MS` in the middle of the run unless one
  is given;
- `latency`: TTFT and TPOT distributions (histograms in ms, p50 and p99 marked), per
  model when there are several.

Matplotlib draws without a display: figures are made with `matplotlib.figure.Figure` and
saved through its own Agg and SVG canvases, never through pyplot, so no GUI backend is
ever chosen. The file appears by rename.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from cluster.results.trace import requests_path
from common.errors import ConfigError

TABLE_KINDS = ("speed-vs-users", "throughput-vs-replicas", "ttft-vs-placement", "xy")
TRACE_KINDS = ("timeline", "latency")
KINDS = TABLE_KINDS + TRACE_KINDS
DEFAULT_WINDOW_MS = 5.0
MAX_ROWS = 32
MAX_LANES_PER_ROW = 24
MAX_TIMELINE_SPANS = 200_000
MAX_CATEGORY_LABELS = 48
CATEGORY_WIDTH = 40  # characters of a category label
FORMATS = {".png": "png", ".svg": "svg"}
META_COLUMNS = ("point_id", "fidelity", "status", "error")
FIDELITY_STYLE = {"event": dict(marker="o", linestyle="-"),  # analytic: hollow squares, dashed
                  "analytic": dict(marker="s", linestyle="--", markerfacecolor="white")}
FIDELITY_COLOURS = {"event": "#1f77b4", "analytic": "#ff7f0e"}
KIND_COLOURS = {"compute": "#1f77b4", "fabric": "#9467bd", "queue": "#7f7f7f", "link": "#ff7f0e",
                "flight": "#2ca02c", "sram": "#bcbd22", "request": "#17becf"}
TIMELINE_KINDS = ("compute", "fabric", "queue", "link", "flight")  # SRAM and request spans last the run

# what each kind plots by default: y, and the parameter leaves that can be its x
_DEFAULTS = {
    "speed-vs-users": ("tokens_per_s_per_user", ("users", "rate_per_s", "rate", "requests", "think_time_s")),
    "throughput-vs-replicas": ("aggregate_tokens_per_s", ("count", "replicas", "wafers")),
    "ttft-vs-placement": ("ttft_ms_p50", ("policy", "router", "sites", "site", "placement", "pipeline")),
}
_TITLES = {"speed-vs-users": "Per-user decode speed", "throughput-vs-replicas": "Aggregate throughput",
           "ttft-vs-placement": "Time to first token"}
_UNITS = {"tokens_per_s_per_user": "tokens/s per user", "aggregate_tokens_per_s": "tokens/s",
          "requests_completed": "requests", "requests_rejected": "requests", "joules_per_token": "J/token",
          "usd_per_million_tokens": "USD per 1M tokens", "avg_power_kw": "kW", "link_share_of_tpot": "fraction",
          "goodput_fraction": "fraction",
          # parameter leaves
          "users": "users", "rate_per_s": "requests/s", "rate": "requests/s", "requests": "requests",
          "count": "replicas", "replicas": "replicas", "wafers": "wafers", "prompt_tokens": "tokens",
          "output_tokens": "tokens", "prefill_chunk_tokens": "tokens", "max_active": "requests",
          "think_time_s": "s", "burstiness_cv": "CV", "time_scale": "factor", "lanes": "lanes",
          "gpus": "GPUs"}
_SUFFIX_UNITS = ((r"_ms(_[a-z0-9]+)?$", "ms"), (r"_bits_per_s$", "bit/s"), (r"_per_s$", "/s"), (r"_ps$", "ps"),
                 (r"_s$", "s"), (r"_j$", "J"), (r"_w$", "W"), (r"_kw$", "kW"), (r"_gb$", "GB"), (r"_hz$", "Hz"),
                 (r"_usd$", "USD"), (r"_fraction$", "fraction"))


def unit(column: str) -> str | None:
    """The unit of a table column, by its name or its last path segment."""
    leaf = leaf_name(column)
    for name in (column, leaf):
        if name in _UNITS:
            return _UNITS[name]
    for pattern, u in _SUFFIX_UNITS:
        if re.search(pattern, leaf):
            return u
    return None


def leaf_name(column: str) -> str:
    """`users[*].rate_per_s` -> `rate_per_s`."""
    return re.sub(r"\[[^\]]*\]", "", column).rsplit(".", 1)[-1]


def axis_label(column: str) -> str:
    u = unit(column)
    return f"{column} ({u})" if u else column


# ---------------------------------------------------------------------------- input


def input_kind(path: str | Path) -> str:
    """'table' (a sweep's results), 'trace' (spans) or 'requests' (a trace's requests
    table), from the file's suffix and, for Arrow files, its columns."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".csv"):
        return "table"
    if suffix in (".arrow", ".feather", ".ipc"):
        try:
            names = pa.ipc.open_file(pa.memory_map(str(path))).schema.names
        except (pa.ArrowInvalid, OSError) as exc:
            raise ConfigError(f"{path}: not an Arrow file ({exc})") from None
        if "start_ps" in names:
            return "trace"
        if "ttft_ps" in names:
            return "requests"
        return "table"
    raise ConfigError(f"{path}: expected a sweep table (.parquet, .csv) or a trace (.arrow)")


def read_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
        return pd.read_feather(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise ConfigError(f"{path}: cannot read the table ({exc})") from None


def parameter_columns(df: pd.DataFrame) -> list[str]:
    """The swept parameters: the columns between `point_id` and `fidelity` when the table
    is laid out so; else those named like field paths (`a.b`, `a[0]`) and `seed`."""
    cols = list(df.columns)
    if "point_id" in cols and "fidelity" in cols and cols.index("point_id") < cols.index("fidelity"):
        between = cols[cols.index("point_id") + 1:cols.index("fidelity")]
        if between:
            return between
    return [c for c in cols if c not in META_COLUMNS and ("." in c or "[" in c or c == "seed")]


def _varies(series: pd.Series) -> bool:
    return series.map(_hashable).nunique(dropna=False) > 1


def _hashable(v):
    if isinstance(v, (list, tuple, np.ndarray)):
        return ",".join(str(x) for x in v)
    if isinstance(v, dict):
        return ",".join(f"{k}={x}" for k, x in v.items())
    return v


def _find_x(df: pd.DataFrame, params: list[str], leaves: tuple[str, ...]) -> str | None:
    """The first parameter whose last segment is one of `leaves` (in their order),
    preferring one that varies."""
    found = [c for leaf in leaves for c in params if leaf_name(c) == leaf]
    varying = [c for c in found if _varies(df[c])]
    return (varying or found or [None])[0]


def default_table_kind(df: pd.DataFrame) -> str:
    params = parameter_columns(df)
    for kind, (y, leaves) in _DEFAULTS.items():
        x = _find_x(df, params, leaves)
        if x is not None and y in df.columns and _varies(df[x]):
            return kind
    varying = [c for c in params if c != "seed" and _varies(df[c])]
    if varying and "tokens_per_s_per_user" in df.columns:
        return "xy"
    raise ConfigError("cannot tell what to plot from this table: give --kind, or --x and --y")


# ---------------------------------------------------------------------------- output


def _format(out: Path) -> str:
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise ConfigError(f"-o {out}: the output must end in .png or .svg")
    if not out.parent.is_dir():
        raise ConfigError(f"-o {out}: no such directory {out.parent}")
    return fmt


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(fig, out: Path) -> None:
    import matplotlib

    fmt = _format(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with matplotlib.rc_context({"svg.hashsalt": "wafersim", "svg.fonttype": "path"}):
            fig.savefig(tmp, format=fmt, dpi=150, metadata={"Date": None} if fmt == "svg" else {"Software": None})
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------- entry


def plot(path: str | Path, out: str | Path, kind: str | None = None, x: str | None = None, y: str | None = None,
         from_ms: float | None = None, to_ms: float | None = None, lp: str | None = None,
         max_rows: int = MAX_ROWS) -> dict:
    """Draw `kind` (default: by the input) from PATH into OUT (.png or .svg); return what
    was drawn (`kind`, `notes`). `ConfigError` for bad input; nothing is written then."""
    out = Path(out)
    _format(out)
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"--kind: one of {', '.join(KINDS)}, got {kind!r}")
    if max_rows < 1:
        raise ConfigError(f"--max-rows: must be at least 1, got {max_rows}")
    what = input_kind(path)
    window = from_ms is not None or to_ms is not None
    if what == "table":
        if kind in TRACE_KINDS:
            raise ConfigError(f"--kind {kind}: needs a trace (.arrow), got a sweep table")
        if window or lp is not None:
            raise ConfigError("--from-ms, --to-ms and --lp apply to a trace's timeline, not to a sweep table")
        df = read_table(path)
        if kind is None:
            kind = "xy" if x is not None and y is not None else default_table_kind(df)
        from cluster.results.plot_table import plot_table
        return plot_table(df, Path(path), out, kind, x, y)
    if x is not None or y is not None:
        raise ConfigError("--x and --y apply to a sweep table, not to a trace")
    if what == "requests":
        if kind not in (None, "latency"):
            raise ConfigError(f"--kind {kind}: {path} is a requests table, which plots as latency only")
        from cluster.results.plot_trace import plot_latency
        return plot_latency(Path(path), out)
    kind = kind or "timeline"
    if kind in TABLE_KINDS:
        raise ConfigError(f"--kind {kind}: needs a sweep table (.parquet), got a trace")
    if kind == "latency":
        if window or lp is not None:
            raise ConfigError("--from-ms, --to-ms and --lp apply to the timeline, not to latency")
        from cluster.results.plot_trace import plot_latency
        return plot_latency(requests_path(path), out)
    from cluster.results.plot_trace import plot_timeline
    return plot_timeline(Path(path), out, from_ms, to_ms, lp, max_rows)


def _colours(n: int) -> list:
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(max(n, 1))]
    return [colormaps["viridis"](i / (n - 1)) for i in range(n)]
