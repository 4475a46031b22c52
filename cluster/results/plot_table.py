"""The plots of a sweep's results table: per-user speed against users or rate, aggregate
throughput against replicas or wafers, TTFT against placement, or any x/y, with analytic
and event points on the same axes. `cluster.results.plots.plot` chooses."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from cluster.results.plots import (
    _DEFAULTS,
    _TITLES,
    CATEGORY_WIDTH,
    FIDELITY_COLOURS,
    FIDELITY_STYLE,
    MAX_CATEGORY_LABELS,
    _colours,
    _figure,
    _find_x,
    _hashable,
    _save,
    _varies,
    axis_label,
    leaf_name,
    parameter_columns,
)
from common.errors import ConfigError

# ---------------------------------------------------------------------------- sweep tables


def plot_table(df: pd.DataFrame, path: Path, out: Path, kind: str, x: str | None, y: str | None) -> dict:
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
