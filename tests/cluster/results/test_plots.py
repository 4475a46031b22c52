"""Plots render headless, as PNG and SVG, from a sweep table with both fidelities and from
a trace; bad input is one line, exit 2, and no file."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from cluster.commands.cli import main as cli
from cluster.results.plots import TABLE_KINDS, axis_label, parameter_columns, plot
from tests.conftest import ROOT

PNG = b"\x89PNG\r\n\x1a\n"


def sweep_table(path) -> str:
    """A sweep's results as the runner lays them out: point_id, parameters by field path,
    fidelity, status, error, summary figures; event points at two seeds, analytic at one,
    and one failed point."""
    rows = []
    for fidelity in ("event", "analytic"):
        for count in (1, 2, 4):
            for users in (1, 4, 16, 64):
                for policy in ("round-robin", "least-outstanding"):
                    for seed in ((0, 1) if fidelity == "event" else (0,)):
                        speed = 1800 / (1 + 0.05 * users) * (1.02 if fidelity == "analytic" else 1) - seed
                        rows.append({"point_id": f"p{len(rows):03d}", "replicas[0].count": count,
                                     "users[0].users": users, "routers[*].policy": policy, "seed": seed,
                                     "fidelity": fidelity, "status": "ok", "error": None,
                                     "tokens_per_s_per_user": speed,
                                     "aggregate_tokens_per_s": speed * users * count,
                                     "ttft_ms_p50": 30.0 + users / count + 5 * (policy == "round-robin"),
                                     "ttft_ms_p99": 60.0 + users, "tpot_ms_p50": 1000 / speed,
                                     "e2e_ms_p50": 300.0, "requests_completed": 100})
    rows.append({"point_id": "bad", "replicas[0].count": 8, "users[0].users": 64, "routers[*].policy": "round-robin",
                 "seed": 0, "fidelity": "event", "status": "failed", "error": "users[0].users: too many"})
    pd.DataFrame(rows).to_parquet(path)
    return str(path)


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> str:
    return sweep_table(tmp_path_factory.mktemp("sweep") / "results.parquet")


@pytest.fixture(scope="module")
def trace(headline_small) -> str:
    return headline_small["trace"]


def rendered(path, fmt: str) -> None:
    data = path.read_bytes()
    if fmt == "png":
        assert data.startswith(PNG) and len(data) > 20_000
    else:
        assert data.lstrip().startswith(b"<?xml") and b"<svg" in data[:2000] and len(data) > 20_000
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("fmt", ["png", "svg"])
@pytest.mark.parametrize("kind", [k for k in TABLE_KINDS if k != "xy"])
def test_every_table_kind_renders(table, tmp_path, kind, fmt):
    out = tmp_path / f"{kind}.{fmt}"
    drawn = plot(table, out, kind=kind)
    rendered(out, fmt)
    assert drawn["points"] == 72 and drawn["failed"] == 1  # 48 event, 24 analytic; the failed one left out
    expected_x = {"speed-vs-users": "users[0].users", "throughput-vs-replicas": "replicas[0].count",
                  "ttft-vs-placement": "routers[*].policy"}[kind]
    assert drawn["x"] == expected_x


def test_fidelities_share_the_axes_and_other_parameters_get_colours(table, tmp_path):
    out = tmp_path / "speed.svg"
    drawn = plot(table, out, kind="speed-vs-users")
    svg = out.read_text()
    for label in ("event", "analytic", "fidelity", "policy", "users[0].users (users)",
                  "tokens_per_s_per_user (tokens/s per user)", "1 failed"):
        assert label in svg, label
    # replicas and policy vary independently of users: a colour per combination
    assert len(drawn["series"]) == 6


@pytest.mark.parametrize("fmt", ["png", "svg"])
def test_any_columns_with_x_and_y(table, tmp_path, fmt):
    out = tmp_path / f"xy.{fmt}"
    drawn = plot(table, out, x="replicas[0].count", y="tpot_ms_p50")
    rendered(out, fmt)
    assert drawn["kind"] == "xy" and drawn["y"] == "tpot_ms_p50"


def test_a_table_plots_by_default_and_reads_csv(table, tmp_path):
    csv = tmp_path / "results.csv"
    pd.read_parquet(table).to_csv(csv, index=False)
    assert plot(csv, tmp_path / "d.png")["kind"] == "speed-vs-users"
    assert parameter_columns(pd.read_parquet(table)) == ["replicas[0].count", "users[0].users",
                                                          "routers[*].policy", "seed"]


@pytest.mark.parametrize("fmt", ["png", "svg"])
@pytest.mark.parametrize("kind", ["timeline", "latency"])
def test_trace_kinds_render(trace, tmp_path, kind, fmt):
    out = tmp_path / f"{kind}.{fmt}"
    drawn = plot(trace, out, kind=kind)
    rendered(out, fmt)
    if kind == "timeline":
        spans = pd.read_feather(trace)
        devices = spans[spans["kind"].isin(["compute", "link", "flight", "fabric", "queue"])]
        assert drawn["rows"] == devices["lp"].nunique()  # every wafer and link, busy or not
        assert drawn["to_ms"] - drawn["from_ms"] == pytest.approx(5.0)


def test_timeline_window_and_rows(trace, tmp_path):
    spans = pd.read_feather(trace)
    end_ms = spans["end_ps"].max() / 1e9
    drawn = plot(trace, tmp_path / "w.png", from_ms=0, to_ms=end_ms, max_rows=2)
    assert drawn["rows"] == 2 and any("first 2 of" in n for n in drawn["notes"])
    assert drawn["spans"] == len(spans[spans["kind"].isin(["compute", "link", "flight", "fabric", "queue"])])
    assert plot(trace, tmp_path / "lp.svg", lp="wafer*", from_ms=1)["rows"] == 4


def test_latency_from_the_requests_table(trace, tmp_path):
    requests = trace.replace(".arrow", ".requests.arrow")
    assert plot(requests, tmp_path / "l.png")["requests"] == len(pd.read_feather(requests))
    assert plot(trace, tmp_path / "d.png")["kind"] == "timeline"


def test_units_on_axes():
    assert axis_label("tokens_per_s_per_user") == "tokens_per_s_per_user (tokens/s per user)"
    assert axis_label("ttft_ms_p99") == "ttft_ms_p99 (ms)"
    assert axis_label("users[*].rate_per_s") == "users[*].rate_per_s (requests/s)"
    assert axis_label("replicas[0].count") == "replicas[0].count (replicas)"
    assert axis_label("links.wan.lane_bits_per_s") == "links.wan.lane_bits_per_s (bit/s)"


def test_renders_without_a_display(trace, tmp_path):
    """No pyplot, so no GUI backend: an interactive MPLBACKEND and no DISPLAY change nothing."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["MPLBACKEND"] = "tkagg"
    code = ("import sys; from cluster.results.plots import plot; "
            f"plot({trace!r}, {str(tmp_path / 'h.png')!r}, kind='latency'); "
            "assert 'matplotlib.pyplot' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rendered(tmp_path / "h.png", "png")


BAD = [
    (lambda t, s, o: ["plot", t, "-o", o("x.jpg")], "must end in .png or .svg"),
    (lambda t, s, o: ["plot", t, "-o", o("x.png"), "--kind", "speed-vs-users"], "needs a sweep table"),
    (lambda t, s, o: ["plot", s, "-o", o("x.png"), "--kind", "timeline"], "needs a trace"),
    (lambda t, s, o: ["plot", s, "-o", o("x.png"), "--x", "nope", "--y", "ttft_ms_p50"], "--x nope: no such column"),
    (lambda t, s, o: ["plot", s, "-o", o("x.png"), "--x", "seed", "--y", "routers[*].policy"], "not a numeric"),
    (lambda t, s, o: ["plot", s, "-o", o("x.png"), "--from-ms", "1"], "apply to a trace"),
    (lambda t, s, o: ["plot", t, "-o", o("x.png"), "--x", "seed"], "apply to a sweep table"),
    (lambda t, s, o: ["plot", t, "-o", o("x.png"), "--from-ms", "1e6", "--to-ms", "2e6"], "no wafer or link spans"),
    (lambda t, s, o: ["plot", t, "-o", o("x.png"), "--from-ms", "3", "--to-ms", "2"], "must be after"),
    (lambda t, s, o: ["plot", t, "-o", o("x.png"), "--lp", "nothing*"], "matches no wafer or link"),
    (lambda t, s, o: ["plot", t, "-o", o("x.png"), "--kind", "bogus"], "invalid choice"),
    (lambda t, s, o: ["plot", o("missing.parquet"), "-o", o("x.png")], "no such file"),
    (lambda t, s, o: ["plot", t, "-o", o("no/x.png")], "no such directory"),
    (lambda t, s, o: ["plot", t], "required"),
]


@pytest.mark.parametrize("argv, message", BAD)
def test_bad_input_is_one_line_exit_2_and_no_file(trace, table, tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    out.mkdir()
    assert cli(argv(trace, table, lambda name: str(out / name))) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not list(out.iterdir())


def test_a_table_with_nothing_to_plot(tmp_path, capsys):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"point_id": ["a"], "fidelity": ["event"], "status": ["failed"], "error": ["x"],
                  "tokens_per_s_per_user": [np.nan]}).to_parquet(path)
    assert cli(["plot", str(path), "-o", str(tmp_path / "x.png")]) == 2
    assert "cannot tell what to plot" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_the_command_says_what_it_wrote(table, tmp_path, capsys):
    out = tmp_path / "t.svg"
    assert cli(["plot", table, "-o", str(out), "--kind", "ttft-vs-placement"]) == 0
    assert capsys.readouterr().out.startswith(f"wrote ttft-vs-placement (ttft_ms_p50 vs routers[*].policy, 72 points) "
                                              f"to {out}")
