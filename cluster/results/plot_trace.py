"""The plots of a trace: a timeline of a time window (a row per wafer and link LP, split
into lanes where spans overlap, spans coloured by kind) and the TTFT/TPOT distributions.
`cluster.results.plots.plot` chooses; the figure helpers are shared with it."""

from __future__ import annotations

import fnmatch
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from cluster.results.plots import (
    DEFAULT_WINDOW_MS,
    KIND_COLOURS,
    MAX_LANES_PER_ROW,
    MAX_TIMELINE_SPANS,
    TIMELINE_KINDS,
    _colours,
    _figure,
    _save,
)
from cluster.results.spans import OPEN_END, assign_lanes, ms_window, read_spans, region_lanes, run_name
from cluster.results.trace import int_values
from common.errors import ConfigError
from common.units import PS_PER_MS

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


def plot_timeline(path: Path, out: Path, from_ms: float | None, to_ms: float | None, lp_glob: str | None,
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


def plot_latency(path: Path, out: Path) -> dict:
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
