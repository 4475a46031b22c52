"""The Perfetto export: valid trace-event JSON by the rules of Perfetto's JSON importer
(every event has ph, ts, pid, tid; durations >= 0; processes and threads named; X events
on one thread never partly overlap, in the importer's whole nanoseconds as in floats;
flows pair up inside their spans), windows keep only what is inside, bad input is one line."""

from __future__ import annotations

import collections
import json
import random

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from cluster.commands.cli import main as cli
from cluster.results.perfetto import _us, assign_lanes, export_perfetto
from cluster.results.trace import SPAN_SCHEMA, table_batch
from common.units import PS_PER_MS

TOP_KEYS = {"displayTimeUnit", "otherData", "traceEvents"}  # any other key stops Perfetto's importer


def perfetto_ns(value) -> int:
    """What Perfetto's importer makes of a time in microseconds: static_cast<int64_t>(us * 1000.0)."""
    return int(value * 1000.0) if isinstance(value, float) else value * 1000


def perfetto_parse(text: str) -> float:
    """Perfetto's own decimal reader: integer part plus digits / 10**k, in doubles."""
    whole, _, frac = text.partition(".")
    return float(int(whole)) + (float(int(frac)) / 10.0 ** len(frac) if frac else 0.0)


def check_trace_events(path) -> dict:
    """Assert the importer's rules; return the events by phase."""
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    assert list(doc)[0] == "displayTimeUnit" and set(doc) <= TOP_KEYS
    assert doc["displayTimeUnit"] in ("ms", "ns")
    events = doc["traceEvents"]
    by_ph = collections.defaultdict(list)
    for e in events:
        for key in ("ph", "ts", "pid", "tid"):
            assert key in e, (key, e)
        assert list(e)[:2] == ["ph", "ts"]  # the tokenizer looks for ts among the first keys
        assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int) and e["pid"] > 0 and e["tid"] > 0
        assert e["ph"] in ("X", "M", "s", "f"), e
        by_ph[e["ph"]].append(e)
    processes = {e["pid"]: e["args"]["name"] for e in by_ph["M"] if e["name"] == "process_name"}
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in by_ph["M"] if e["name"] == "thread_name"}
    assert all(isinstance(n, str) and n for n in [*processes.values(), *threads.values()])
    tracks = collections.defaultdict(list)
    for e in by_ph["X"]:
        assert isinstance(e["dur"], (int, float)) and e["dur"] >= 0
        assert isinstance(e["name"], str) and isinstance(e["cat"], str) and isinstance(e["args"], dict)
        assert e["pid"] in processes and (e["pid"], e["tid"]) in threads
        tracks[(e["pid"], e["tid"])].append(e)
    for xs in tracks.values():
        for to_ns, tol in ((perfetto_ns, 0), (lambda v: v, 1e-6)):
            spans = sorted((to_ns(e["ts"]), to_ns(e["ts"]) + to_ns(e["dur"])) for e in xs)
            for (_, end0), (start1, _) in zip(spans, spans[1:]):
                assert start1 >= end0 - tol, (xs[0]["tid"], end0, start1)  # one after another: never partly
    flows = collections.defaultdict(list)
    for e in by_ph["s"] + by_ph["f"]:
        flows[e["id"]].append(e)
        at = perfetto_ns(e["ts"])
        inside = [x for x in tracks[(e["pid"], e["tid"])]
                  if perfetto_ns(x["ts"]) < at < perfetto_ns(x["ts"]) + perfetto_ns(x["dur"])]
        assert len(inside) == 1, e  # bound to exactly the span it is in
    for pair in flows.values():
        s, f = sorted(pair, key=lambda e: e["ph"] != "s")
        assert [s["ph"], f["ph"]] == ["s", "f"] and f["bp"] == "e"
        assert s["name"] == f["name"] and s["cat"] == f["cat"] and s["ts"] <= f["ts"]
    return {"doc": doc, **by_ph}


@pytest.fixture(scope="module")
def headline(headline_small) -> tuple[str, pd.DataFrame]:
    path = headline_small["trace"]
    return path, pd.read_feather(path)


def test_export_of_a_headline_trace_is_valid_trace_event_json(headline, tmp_path):
    path, spans = headline
    out = tmp_path / "trace.json"
    stats = export_perfetto(path, out)
    ev = check_trace_events(out)
    assert len(ev["X"]) == len(spans) == stats["spans"] and stats["left_out"] == 0 and stats["cut_at_ms"] is None
    assert {e["cat"] for e in ev["X"]} == set(spans["kind"].astype(str))
    assert {e["name"] for e in ev["X"]} == set(spans["name"].astype(str))
    # a process per site, every LP's spans on threads of its site, named after it
    sites = {e["args"]["name"] for e in ev["M"] if e["name"] == "process_name"}
    assert sites == set(spans["datacenter"].astype(str))
    thread_names = [e["args"]["name"] for e in ev["M"] if e["name"] == "thread_name"]
    assert {n.split(" ")[0] for n in thread_names} == set(spans["lp"].astype(str))
    # times: microseconds, to the nanosecond
    starts = sorted(perfetto_ns(e["ts"]) for e in ev["X"])
    assert starts[0] == spans["start_ps"].min() // 1000
    assert max(perfetto_ns(e["ts"]) + perfetto_ns(e["dur"]) for e in ev["X"]) == spans["end_ps"].max() // 1000
    # flows follow requests from LP to LP
    assert ev["s"] and len(ev["s"]) == len(ev["f"]) == stats["flows"]
    assert all(e["args"].get("request") is not None for e in ev["X"] if e["cat"] == "compute")


def test_a_window_keeps_only_what_is_inside_it(headline, tmp_path):
    path, spans = headline
    lo, hi = spans["start_ps"].min(), spans["end_ps"].max()
    a, b = (lo + (hi - lo) * 0.4) / PS_PER_MS, (lo + (hi - lo) * 0.5) / PS_PER_MS
    out = tmp_path / "w.json"
    stats = export_perfetto(path, out, from_ms=a, to_ms=b)
    ev = check_trace_events(out)
    a_ps, b_ps = round(a * PS_PER_MS), round(b * PS_PER_MS)
    inside = spans[(spans["start_ps"] < b_ps) & ((spans["end_ps"] > a_ps) | (spans["start_ps"] >= a_ps))]
    assert 0 < len(ev["X"]) == len(inside) == stats["spans"] < len(spans)
    for e in ev["X"] + ev["s"] + ev["f"]:
        assert a_ps // 1000 <= perfetto_ns(e["ts"]) <= b_ps // 1000
        assert perfetto_ns(e["ts"]) + perfetto_ns(e.get("dur", 0)) <= b_ps // 1000
    assert ev["doc"]["otherData"]["from_ms"] == pytest.approx(a) and stats["to_ms"] == pytest.approx(b)


def test_past_max_events_the_window_is_cut_and_says_where(headline, tmp_path):
    path, _ = headline
    out = tmp_path / "cut.json"
    stats = export_perfetto(path, out, max_events=300, flow_requests=2)
    ev = check_trace_events(out)
    assert 0 < len(ev["X"]) <= 300 and stats["cut_at_ms"] is not None
    cut_ns = round(stats["cut_at_ms"] * PS_PER_MS) // 1000
    assert max(perfetto_ns(e["ts"]) + perfetto_ns(e["dur"]) for e in ev["X"]) <= cut_ns
    assert ev["doc"]["otherData"]["cut_at_ms"] == stats["cut_at_ms"]
    assert len({e["name"] for e in ev["s"]}) <= 2


def write_spans(path, rows: list[dict]) -> None:
    """A span file by hand: each row a dict of SPAN_SCHEMA columns (others null)."""
    cols = [[row.get(f.name) for row in rows] for f in SPAN_SCHEMA]
    with pa.ipc.new_file(str(path), SPAN_SCHEMA) as writer:
        writer.write_batch(table_batch(SPAN_SCHEMA, cols))


def test_overlapping_spans_on_one_lp_go_to_separate_threads(tmp_path):
    """Spans that partly overlap, nest, touch, last no time, or end on a microsecond (where a
    decimal reads back a nanosecond short) never share a thread unless one follows the other."""
    rng = random.Random(7)
    rows = []
    t = 1_234_567_000  # ps: ends on whole nanoseconds and microseconds are the risky ones
    for i in range(300):
        start = t + rng.choice([0, 1000, 999_000, 1_000_000]) * rng.randint(0, 3)
        end = start + rng.choice([0, 1, 999, 1000, 1_000_000, 2_500_000])
        rows.append(dict(start_ps=start, end_ps=end, lp="wafer0", datacenter="dallas", kind="compute",
                         name=f"layer{i % 4}", request_id=i % 5, token=i // 5, bytes=64))
        t = end if rng.random() < 0.5 else start
    rows.append(dict(start_ps=0, end_ps=t + 10**9, lp="wafer0", datacenter="dallas", kind="sram", name="weights"))
    trace = tmp_path / "hand.arrow"
    write_spans(trace, rows)
    out = tmp_path / "hand.json"
    stats = export_perfetto(trace, out)
    ev = check_trace_events(out)
    assert len(ev["X"]) == len(rows) and stats["left_out"] == 0
    by_thread = collections.Counter(e["tid"] for e in ev["X"])
    assert len(by_thread) > 2  # the overlaps took lanes
    sram = [e for e in ev["X"] if e["cat"] == "sram"]
    assert len({e["tid"] for e in sram}) == 1 and by_thread[sram[0]["tid"]] == 1
    assert {e["args"]["bytes"] for e in ev["X"] if e["cat"] == "compute"} == {64}


def test_lanes_are_as_few_as_spans_at_once():
    rng = np.random.default_rng(3)
    start = rng.integers(0, 1000, 500)
    end = start + rng.integers(0, 60, 500)
    lanes = assign_lanes(start, end)
    for lane in np.unique(lanes):
        mine = np.flatnonzero(lanes == lane)
        order = mine[np.lexsort((end[mine], start[mine]))]
        assert (start[order][1:] >= end[order][:-1]).all()
    events = sorted([(int(s), 1) for s in start] + [(int(e), -1) for e in end], key=lambda p: (p[0], p[1]))
    assert lanes.max() + 1 == max(np.cumsum([d for _, d in events]))
    assert (assign_lanes(start, end, max_lanes=3) >= -1).all() and (assign_lanes(start, end, 3) < 3).all()


def test_times_read_back_to_the_nanosecond():
    ns = np.concatenate([np.arange(0, 5000), np.random.default_rng(1).integers(0, 10**13, 20000)])
    for text, n in zip(_us(ns, True), ns.tolist()):
        assert perfetto_ns(float(text)) == n and int(perfetto_parse(text) * 1000.0) == n


@pytest.mark.parametrize("args, message", [
    (["--from-ms", "1e6", "--to-ms", "2e6"], "no spans between"),
    (["--from-ms", "5", "--to-ms", "1"], "must be after"),
    (["--max-events", "0"], "--max-events"),
    (["--kinds", "nope"], "no spans of kind nope"),
])
def test_bad_input_is_one_line_and_writes_nothing(headline, tmp_path, capsys, args, message):
    out = tmp_path / "x.json"
    assert cli(["perfetto", headline[0], "-o", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: perfetto: ") and message in err and err.count("\n") == 1
    assert not out.exists() and not list(tmp_path.iterdir())


def test_bad_paths(headline, tmp_path, capsys):
    table = tmp_path / "t.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(table)
    for argv in (["perfetto", str(tmp_path / "missing.arrow"), "-o", str(tmp_path / "x.json")],
                 ["perfetto", headline[0], "-o", str(tmp_path / "x.txt")],
                 ["perfetto", headline[0], "-o", str(tmp_path / "no" / "x.json")],
                 ["perfetto", str(table), "-o", str(tmp_path / "x.json")],
                 ["perfetto", headline[0]]):
        assert cli(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def test_the_command_writes_and_reports(headline, tmp_path, capsys):
    out = tmp_path / "ok.json"
    assert cli(["perfetto", headline[0], "-o", str(out), "--kinds", "compute,link", "--flow-requests", "1"]) == 0
    assert "spans on" in capsys.readouterr().out
    ev = check_trace_events(out)
    assert {e["cat"] for e in ev["X"]} <= {"compute", "link"} and len({e["name"] for e in ev["s"]}) == 1
