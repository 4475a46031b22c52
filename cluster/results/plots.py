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

import fnmatch
import math
import os
import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from cluster.results.spans import OPEN_END, assign_lanes, ms_window, read_spans, region_lanes, run_name
from cluster.results.trace import int_values, requests_path
from common.errors import ConfigError
from common.units import PS_PER_MS

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
        return _plot_table(df, Path(path), out, kind, x, y)
    if x is not None or y is not None:
        raise ConfigError("--x and --y apply to a sweep table, not to a trace")
    if what == "requests":
        if kind not in (None, "latency"):
            raise ConfigError(f"--kind {kind}: {path} is a requests table, which plots as latency only")
        return _plot_latency(Path(path), out)
    kind = kind or "timeline"
    if kind in TABLE_KINDS:
        raise ConfigError(f"--kind {kind}: needs a sweep table (.parquet), got a trace")
    if kind == "latency":
        if window or lp is not None:
            raise ConfigError("--from-ms, --to-ms and --lp apply to the timeline, not to latency")
        return _plot_latency(requests_path(path), out)
    return _plot_timeline(Path(path), out, from_ms, to_ms, lp, max_rows)


# ---------------------------------------------------------------------------- sweep tables


def _plot_table(df: pd.DataFrame, path: Path, out: Path, kind: str, x: str | None, y: str | None) -> dict:
    params = parameter_columns(df)
    if kind != "xy":
        default_y, leaves = _DEFAULTS[kind]
        y = y or default_y
        if x is None:
            x = _find_x(df, params, leaves)
            if x is None:
                raise ConfigError(f"--kind {kind}: no column in {path.name} to put on x (looked for parameters "
                                  f"ending in {', '.join(leaves)}); give --x")
    elif x is None or y is None:
        raise ConfigError("--kind xy: give --x and --y")
    for flag, col in (("--x", x), ("--y", y)):
        if col not in df.columns:
            raise ConfigError(f"{flag} {col}: no such column in {path.name} "
                              f"(it has: {', '.join(map(str, df.columns))})")
    yv = pd.to_numeric(df[y], errors="coerce")
    if yv.isna().all() and len(df):
        raise ConfigError(f"--y {y}: not a numeric column (or no point has a value)")
    failed = pd.Series(False, index=df.index)
    if "error" in df.columns:
        failed |= df["error"].map(lambda e: isinstance(e, str) and e != "")
    if "status" in df.columns:
        failed |= df["status"].astype(str).isin(["failed", "error"])
    good = df[~failed & yv.notna() & np.isfinite(yv.astype(float))].copy()
    if good.empty:
        raise ConfigError(f"{path.name}: no point has a value of {y} to plot")
    good["_y"] = yv[good.index].astype(float)
    good["_fidelity"] = good["fidelity"].fillna("event").astype(str) if "fidelity" in good.columns else "event"
    good["_xkey"] = good[x].map(_hashable)
    # another parameter that varies gets a colour per value, unless x decides it (zipped axes)
    others = [c for c in params if c not in (x, y, "seed") and _varies(good[c])
              and good.groupby("_xkey", dropna=False)[c].agg(lambda v: v.map(_hashable).nunique()).max() > 1]
    good["_series"] = [tuple(_hashable(v) for v in row) for row in good[others].itertuples(index=False)] \
        if others else [()] * len(good)
    xnum = pd.to_numeric(good[x], errors="coerce")
    numeric = bool(xnum.notna().all()) and leaf_name(x) not in ("policy", "sites", "site", "placement")

    series = sorted(set(good["_series"]), key=lambda t: tuple(_sort_key(v) for v in t))
    fidelities = [f for f in ("event", "analytic") if f in set(good["_fidelity"])] + \
        sorted(set(good["_fidelity"]) - {"event", "analytic"})
    colours = _colours(len(series))
    whisker = y.endswith("_p50") and y[:-4] + "_p99" in good.columns and not numeric
    log_x = False
    n_cats = 0 if numeric else good["_xkey"].astype(str).nunique()
    width = min(16.0, max(7.5, 0.3 * n_cats + 3.0)) + (1.0 if others else 0.0)  # room for every category
    fig = _figure(width, 4.8 if n_cats <= 8 else 5.6)
    ax = fig.add_subplot()
    parts = [(si, f, good[(good["_series"].map(lambda t, s=s: t == s)) & (good["_fidelity"] == f)])
             for si, s in enumerate(series) for f in fidelities]
    parts = [(si, f, part) for si, f, part in parts if not part.empty]
    if numeric:
        good["_x"] = xnum.astype(float)
        for si, f, part in parts:
            style, colour = _style(f), _colour(colours, si, f, others)
            px = xnum[part.index].astype(float)
            mean = part["_y"].groupby(px).mean()
            ax.plot(mean.index, mean.values, color=colour, linewidth=1.5, markersize=7, **style)
            if (px.value_counts() > 1).any():  # several seeds at one x: each point, small
                ax.plot(px, part["_y"], **{**style, "linestyle": "none"},
                        color=colour, markersize=4, alpha=0.5)
        xs = np.sort(good["_x"].unique())
        if xs.min() > 0 and xs.max() / xs.min() >= 16:
            ax.set_xscale("log", base=2)
            log_x = True
        if len(xs) <= 12:
            ax.set_xticks(xs)
            ax.set_xticklabels([_num(v) for v in xs])
            ax.minorticks_off()
    else:
        cats = list(dict.fromkeys(good["_xkey"].astype(str)))
        pos = {c: i for i, c in enumerate(cats)}
        width = 0.7 / max(1, len(parts))
        for gi, (si, f, part) in enumerate(parts):
            style, colour = _style(f), _colour(colours, si, f, others)
            px = part["_xkey"].astype(str).map(pos).astype(float) + (gi - (len(parts) - 1) / 2) * width
            if whisker:
                up = pd.to_numeric(part[y[:-4] + "_p99"], errors="coerce").astype(float) - part["_y"]
                ax.errorbar(px, part["_y"], yerr=[np.zeros(len(part)), np.where(up.notna() & (up > 0), up, 0.0)],
                            fmt="none", ecolor=colour, elinewidth=1, capsize=3, alpha=0.7)
            ax.plot(px, part["_y"], **{**style, "linestyle": "none"}, zorder=3,
                    color=colour, markersize=7)
        ax.set_xticks(range(len(cats)))
        ax.set_xticklabels([_short(c, CATEGORY_WIDTH) for c in cats])
        _fit_categories(ax, cats)
        ax.set_xlim(-0.6, len(cats) - 0.4)
    ax.set_xlabel(axis_label(x) + (", log scale" if log_x else ""))
    ax.set_ylabel(axis_label(y))
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    n_failed = int(failed.sum())
    sub = f"{len(good)} points from {path.name}"
    if n_failed:
        sub += f"; {n_failed} failed, not shown"
    if whisker:
        sub += "; whiskers up to p99"
    ax.set_title(f"{_TITLES.get(kind, y)} vs {x}\n{sub}", fontsize=10)
    _legends(ax, fidelities, series, others, colours)
    _save(fig, out)
    return {"kind": kind, "x": x, "y": y, "points": len(good), "failed": n_failed,
            "series": [", ".join(f"{leaf_name(c)}={v}" for c, v in zip(others, s)) for s in series], "notes": []}


def _colour(colours: list, si: int, fidelity: str, others: list[str]):
    """A colour per series when another parameter varies; else a colour per fidelity."""
    if others:
        return colours[si]
    return FIDELITY_COLOURS.get(fidelity, "#2ca02c")


def _style(fidelity: str) -> dict:
    return FIDELITY_STYLE.get(fidelity, dict(marker="^", linestyle=":"))


def _sort_key(v) -> tuple:
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


def _legends(ax, fidelities: list[str], series: list[tuple], others: list[str], colours: list) -> None:
    """One legend: the fidelities' markers and, when another parameter varies, its colours
    under a heading of its name, outside the axes on the right."""
    from matplotlib.lines import Line2D

    marks = [Line2D([], [], color="black" if others else _colour(colours, 0, f, others), label=f, markersize=7,
                    linewidth=1.5, **_style(f)) for f in fidelities]
    if not others:
        ax.legend(handles=marks, title="fidelity", fontsize=8, title_fontsize=8, loc="best")
        return
    heading = Line2D([], [], linestyle="none", label=_short(", ".join(leaf_name(c) for c in others), 32) + ":")
    lines = [Line2D([], [], color=colours[i], linewidth=2.5, label=_short(", ".join(map(str, s)), 32))
             for i, s in enumerate(series)]
    ax.legend(handles=[*marks, heading, *lines], title="fidelity", fontsize=8, title_fontsize=8, loc="upper left",
              bbox_to_anchor=(1.02, 1.0), borderaxespad=0, ncol=1 if len(lines) <= 18 else 2)


def _num(v: float) -> str:
    return f"{int(v)}" if float(v).is_integer() else f"{v:g}"


def _short(label: str, width: int = 28) -> str:
    """At most `width` characters, the middle elided: both ends tell categories apart."""
    if len(label) <= width:
        return label
    head = (width - 1) // 2
    return label[:head] + "…" + label[len(label) - (width - 1 - head):]


def _fit_categories(ax, cats: list[str]) -> None:
    """Rotate long or many category labels (the figure is widened for them); past
    MAX_CATEGORY_LABELS show every k-th."""
    longest = max((len(_short(c, CATEGORY_WIDTH)) for c in cats), default=0)
    if len(cats) > MAX_CATEGORY_LABELS:
        step = math.ceil(len(cats) / MAX_CATEGORY_LABELS)
        for i, label in enumerate(ax.get_xticklabels()):
            label.set_visible(i % step == 0)
    if longest * len(cats) > 60 or len(cats) > 8:
        for label in ax.get_xticklabels():
            label.set_rotation(45 if len(cats) <= 24 else 90)
            label.set_horizontalalignment("right" if len(cats) <= 24 else "center")
            label.set_rotation_mode("anchor" if len(cats) <= 24 else "default")
            label.set_fontsize(8 if len(cats) <= 24 else 7)


def _colours(n: int) -> list:
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(max(n, 1))]
    return [colormaps["viridis"](i / (n - 1)) for i in range(n)]


# ---------------------------------------------------------------------------- traces


def _extent(path: Path) -> tuple[int, int]:
    """First start and last end of the trace's spans, reading only those two columns."""
    reader = pa.ipc.open_file(pa.memory_map(str(path)))
    lo, hi = OPEN_END, 0
    for i in range(reader.num_record_batches):
        b = reader.get_batch(i)
        if b.num_rows:
            lo = min(lo, int(int_values(b.column("start_ps")).min()))
            hi = max(hi, int(int_values(b.column("end_ps")).max()))
    return (lo if lo != OPEN_END else 0), hi


def _plot_timeline(path: Path, out: Path, from_ms: float | None, to_ms: float | None, lp_glob: str | None,
                   max_rows: int) -> dict:
    from matplotlib.patches import Patch

    notes = []
    if from_ms is None and to_ms is None:
        first, last = _extent(path)
        mid = (first + last) // 2
        half = int(DEFAULT_WINDOW_MS * PS_PER_MS / 2)
        lo, hi = max(first, mid - half), max(first, mid - half) + 2 * half
        notes.append(f"{DEFAULT_WINDOW_MS:g} ms mid-run (--from-ms, --to-ms)")
    else:
        lo, hi = ms_window(from_ms, to_ms)
        if from_ms is None:
            lo = max(0, hi - int(DEFAULT_WINDOW_MS * PS_PER_MS))
        if to_ms is None:
            hi = lo + int(DEFAULT_WINDOW_MS * PS_PER_MS)
    spans = read_spans(path, lo, hi, kinds=TIMELINE_KINDS, max_spans=MAX_TIMELINE_SPANS)
    if spans.cut_ps is not None:
        hi = spans.cut_ps
        notes.append(f"more than {MAX_TIMELINE_SPANS:,} spans: cut at {hi / PS_PER_MS:.6g} ms")
    c, vocab = spans.cols, spans.vocab
    lps = [vocab["lp"][i] for i in spans.lps]  # every wafer and link, busy in the window or not
    if lp_glob is not None:
        lps = [name for name in lps if fnmatch.fnmatchcase(name, lp_glob)]
        if not lps:
            raise ConfigError(f"--lp {lp_glob!r}: matches no wafer or link LP of {path.name}")
    if not lps or not len(spans):
        raise ConfigError(f"{path}: no wafer or link spans between {lo / PS_PER_MS:.6g} and "
                          f"{hi / PS_PER_MS:.6g} ms (the trace runs from {spans.first_ps / PS_PER_MS:.6g} to "
                          f"{spans.last_ps / PS_PER_MS:.6g} ms)")
    if len(lps) > max_rows:
        notes.append(f"first {max_rows} of {len(lps)} LPs (--lp GLOB, --max-rows)")
        lps = lps[:max_rows]
    start = np.clip(c["start_ps"], lo, hi)
    end = np.clip(c["end_ps"], lo, hi)
    kinds_present = []
    min_w = (hi - lo) / PS_PER_MS / 1500
    fig = _figure(10, max(2.8, 0.42 * len(lps) + 1.6))
    ax = fig.add_subplot()
    for row, name in enumerate(lps):
        code = vocab["lp"].index(name)
        idx = np.flatnonzero(c["lp"] == code)
        if not len(idx):
            continue
        regions = region_lanes(c["region"][idx], start[idx], end[idx])
        if regions is not None and (c["region"][idx] >= 0).all():
            lane = np.searchsorted(np.array(regions), c["region"][idx])
        else:
            lane = assign_lanes(start[idx], end[idx], MAX_LANES_PER_ROW)
            lane[lane < 0] = MAX_LANES_PER_ROW - 1
        n_lanes = int(lane.max()) + 1
        h = 0.8 / n_lanes
        for kind_code in sorted(set(c["kind"][idx].tolist())):
            kind = vocab["kind"][kind_code]
            mine = c["kind"][idx] == kind_code
            if kind not in kinds_present:
                kinds_present.append(kind)
            x0 = start[idx][mine] / PS_PER_MS
            w = np.maximum((end[idx][mine] - start[idx][mine]) / PS_PER_MS, min_w)  # at least a pixel
            y0 = row - 0.4 + lane[mine] * h
            _bars(ax, x0, w, y0, h * 0.9, KIND_COLOURS.get(kind, "#d62728"), 1 if kind == "flight" else 2)
    ax.set_yticks(range(len(lps)))
    ax.set_yticklabels(lps, fontsize=8 if len(lps) <= 16 else 6)
    ax.set_ylim(len(lps) - 0.5, -0.5)
    ax.set_xlim(lo / PS_PER_MS, hi / PS_PER_MS)
    ax.set_xlabel("simulated time (ms)")
    ax.set_ylabel("LP")
    ax.grid(True, axis="x", alpha=0.3)
    order = [k for k in TIMELINE_KINDS if k in kinds_present] + [k for k in kinds_present if k not in TIMELINE_KINDS]
    ax.legend(handles=[Patch(color=KIND_COLOURS.get(k, "#d62728"), label=k) for k in order], title="span kind",
              fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    name = run_name(spans.meta) or path.name
    sub = "; ".join([f"{len(lps)} rows, each split into lanes for spans at once", *notes])
    ax.set_title(f"Timeline of {name}, {lo / PS_PER_MS:.6g}–{hi / PS_PER_MS:.6g} ms\n" +
                 "\n".join(textwrap.wrap(sub, 110)), fontsize=10)
    _save(fig, out)
    return {"kind": "timeline", "rows": len(lps), "from_ms": lo / PS_PER_MS, "to_ms": hi / PS_PER_MS,
            "spans": len(spans), "notes": notes}


def _bars(ax, x0: np.ndarray, w: np.ndarray, y0: np.ndarray, h: float, colour: str, zorder: int) -> None:
    """Rectangles as one PolyCollection (fast for many spans)."""
    from matplotlib.collections import PolyCollection

    verts = np.stack([np.stack([x0, y0], 1), np.stack([x0 + w, y0], 1), np.stack([x0 + w, y0 + h], 1),
                      np.stack([x0, y0 + h], 1)], 1)
    ax.add_collection(PolyCollection(verts, facecolors=colour, edgecolors="none", zorder=zorder))


def _plot_latency(path: Path, out: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: no requests table beside the trace")
    try:
        req = pd.read_feather(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise ConfigError(f"{path}: cannot read the requests table ({exc})") from None
    missing = {"ttft_ps", "tpot_ps", "status"} - set(req.columns)
    if missing:
        raise ConfigError(f"{path}: not a requests table (no {', '.join(sorted(missing))})")
    done = req[req["status"].astype(str) == "completed"]
    if done.empty:
        raise ConfigError(f"{path}: no completed request to plot")
    models = list(dict.fromkeys(done["model"].astype(str))) if "model" in done.columns else []
    groups = [(m, done[done["model"].astype(str) == m]) for m in models] if len(models) > 1 else [("all", done)]
    fig = _figure(10, 4.4)
    axes = fig.subplots(1, 2)
    colours = _colours(len(groups))
    notes = []
    for ax, col, title in ((axes[0], "ttft_ps", "TTFT"), (axes[1], "tpot_ps", "TPOT")):
        drawn = []
        for gi, (g, part) in enumerate(groups):
            v = np.sort(pd.to_numeric(part[col], errors="coerce").dropna().to_numpy(float)) / PS_PER_MS
            if not len(v):
                continue
            frac = np.arange(1, len(v) + 1) / len(v)
            p50, p99 = (float(np.percentile(v, q)) for q in (50, 99))
            who = f"{g}, " if len(groups) > 1 else ""
            ax.step(np.concatenate([[v[0]], v]), np.concatenate([[0.0], frac]), where="post", color=colours[gi],
                    linewidth=1.6, label=f"{who}{len(v)} requests: p50 {p50:.3g}, p99 {p99:.3g} ms")
            ax.plot([p50], [0.5], "o", color=colours[gi], markersize=6)
            ax.plot([p99], [0.99], "^", color=colours[gi], markersize=6)
            drawn.append(v)
        if not drawn:
            ax.text(0.5, 0.5, "no request with more than one output token" if col == "tpot_ps" else "no data",
                    ha="center", va="center", transform=ax.transAxes, fontsize=9)
            notes.append(f"no {title}")
        else:
            lo, hi = min(v[0] for v in drawn), max(v[-1] for v in drawn)
            if lo > 0 and hi / lo > 50:
                ax.set_xscale("log")
            pad = (hi - lo) * 0.05 or max(hi * 0.05, 1e-6)
            if ax.get_xscale() == "linear":
                ax.set_xlim(max(0.0, lo - pad), hi + pad)
            from matplotlib.lines import Line2D

            handles, _ = ax.get_legend_handles_labels()
            handles += [Line2D([], [], linestyle="none", marker="o", color="black", label="p50"),
                        Line2D([], [], linestyle="none", marker="^", color="black", label="p99")]
            ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1,
                      frameon=False)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(f"{title} (ms)" + (", log scale" if ax.get_xscale() == "log" else ""))
        ax.set_ylabel("fraction of requests")
        ax.set_title(f"{title}, cumulative", fontsize=10)
        ax.grid(True, alpha=0.3)
    name = path.name.replace(".requests", "")
    fig.suptitle(f"Latency of {len(done)} completed requests, {name}", fontsize=11)
    _save(fig, out)
    return {"kind": "latency", "requests": len(done), "notes": notes}
