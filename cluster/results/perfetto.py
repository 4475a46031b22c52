"""A span trace as Chrome trace-event JSON, for ui.perfetto.dev and chrome://tracing.

`export_perfetto(TRACE, OUT)` writes the object format (`displayTimeUnit`, `otherData`,
`traceEvents`): a process per datacenter, threads per LP, an "X" complete event per span
(name: the span's name, cat: its kind, args: request, token, layer, region, phase, bytes)
and flow arrows ("s"/"f") that follow a few requests from LP to LP.

What Perfetto's JSON importer needs, and how it is met here:
- Times are microseconds; the importer keeps whole nanoseconds, truncating `ts * 1000`.
  A decimal such as 1234.567 reads back as 1234.566999..., which truncates to one
  nanosecond early: adjacent spans would then overlap by 1 ns and the later one be
  dropped. So times are cut to whole nanoseconds here (floor, which keeps order) and
  every `ts` is written with 0.2 ns more (`1234.5672`): any reader lands on the intended
  nanosecond. `dur` is written exact; a reader that truncates it one nanosecond short
  only leaves a gap.
- X events on one thread must nest; spans on one LP overlap (a wafer's regions compute
  at once, KV reservations span the run, a link carries several transfers). Each LP's
  spans of one kind are spread over lanes, each lane its own thread, so that no two
  spans on one thread overlap at all, in nanoseconds as Perfetto sees them.
- An unknown top-level key makes the importer skip the rest of the file; only
  `displayTimeUnit` (first: it is honoured only at the start), `otherData` and
  `traceEvents` are written, and `ts` comes second in every event (the tokenizer scans
  keys in order for it). Strings are written as UTF-8, not `\\u` escapes.
- Flow events bind to the slice open on their thread at their time, so each sits
  strictly inside its span (at the span's middle); spans under 4 ns carry no flow.

Memory stays bounded for big traces: the file is read a record batch at a time, only
spans in the window are kept, and past `max_events` only the earliest ones (the window
is then cut where they end, and the result says so). The file appears by rename.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from cluster.results.spans import (
    OPEN_END,
    Spans,
    assign_lanes,
    ms_window,
    read_spans,
    region_lanes,
    run_name,
)
from common.errors import ConfigError
from common.units import PS_PER_MS, PS_PER_NS

DEFAULT_MAX_EVENTS = 250_000
DEFAULT_FLOW_REQUESTS = 16
FLOW_MIN_NS = 4  # shorter spans have no room for a flow event strictly inside them
KIND_ORDER = ("compute", "fabric", "queue", "link", "flight", "sram", "request")
HELD_KINDS = ("sram", "request")  # spans that last long: their threads come after the busy ones


def _us(ns: np.ndarray | int, bias: bool) -> list[str]:
    """Nanoseconds as microsecond decimals; with `bias`, 0.2 ns more (see the module doc)."""
    ns = np.atleast_1d(np.asarray(ns, np.int64))
    tail = "2" if bias else ""
    return [f"{q}.{r:03d}{tail}" for q, r in zip((ns // 1000).tolist(), (ns % 1000).tolist())]


def _kind_rank(kind: str) -> tuple[int, str]:
    return (KIND_ORDER.index(kind), "") if kind in KIND_ORDER else (len(KIND_ORDER), kind)


def export_perfetto(trace_path: str | Path, out_path: str | Path, from_ms: float | None = None,
                    to_ms: float | None = None, max_events: int = DEFAULT_MAX_EVENTS,
                    flow_requests: int = DEFAULT_FLOW_REQUESTS, kinds: tuple[str, ...] | None = None) -> dict:
    """Write the trace-event JSON of the spans in [from_ms, to_ms) (clipped to it), of
    `kinds` only if given, to `out_path`; return what was written. `ConfigError` for a bad
    path, window or limit, or a window with no spans; nothing is written then."""
    if max_events < 1:
        raise ConfigError(f"--max-events: must be at least 1, got {max_events}")
    if flow_requests < 0:
        raise ConfigError(f"--flow-requests: must be 0 or more, got {flow_requests}")
    out_path = Path(out_path)
    lo, hi = ms_window(from_ms, to_ms)
    spans = read_spans(trace_path, lo, hi, kinds=kinds, max_spans=max_events)
    if kinds is not None and not set(kinds) & set(spans.vocab["kind"]):
        raise ConfigError(f"--kinds: {trace_path} has no spans of kind {', '.join(kinds)} "
                          f"(its kinds: {', '.join(spans.vocab['kind'])})")
    if not len(spans):
        which = "" if kinds is None else "/".join(kinds) + " "
        raise ConfigError(f"{trace_path}: no {which}spans between {_ms_text(lo)} and "
                          f"{'the end' if hi == OPEN_END else _ms_text(hi)} ms (the trace runs from "
                          f"{_ms_text(spans.first_ps)} to {_ms_text(spans.last_ps)} ms)")
    c = spans.cols
    win_lo = lo if from_ms is not None else int(c["start_ps"].min())
    win_hi = min(hi, spans.cut_ps if spans.cut_ps is not None else OPEN_END)
    if win_hi == OPEN_END:
        win_hi = int(c["end_ps"].max())
    start = np.clip(c["start_ps"], win_lo, win_hi) // PS_PER_NS
    end = np.clip(c["end_ps"], win_lo, win_hi) // PS_PER_NS
    events, stats = _events(spans, start, end, flow_requests)
    meta = {"source": "wafersim", "trace": str(trace_path), "run": run_name(spans.meta),
            "from_ms": win_lo / PS_PER_MS, "to_ms": win_hi / PS_PER_MS, "spans": stats["spans"],
            "flows": stats["flows"], "cut_at_ms": None if spans.cut_ps is None else spans.cut_ps / PS_PER_MS,
            "left_out_spans": stats["left_out"]}
    first_ts = _us(int(start.min()), True)[0]
    _write(out_path, meta, events, first_ts, stats["processes"], stats["threads"])
    stats.update(from_ms=win_lo / PS_PER_MS, to_ms=win_hi / PS_PER_MS,
                 cut_at_ms=meta["cut_at_ms"], path=str(out_path))
    return stats


def _ms_text(ps: int) -> str:
    return f"{ps / PS_PER_MS:.6g}"


def _events(spans: Spans, start: np.ndarray, end: np.ndarray, flow_requests: int) -> tuple[list[str], dict]:
    """X events, one lane per thread, and the flows; with the processes and threads."""
    c, vocab = spans.cols, spans.vocab
    lp, kind, dc = c["lp"], c["kind"], c["datacenter"]
    kinds = vocab["kind"]
    # threads: per site, first what LPs do (compute, transfers), LP by LP in file (graph)
    # order, then what they hold for long (SRAM reservations, requests); an LP's kinds in
    # KIND_ORDER; its spans without a region in lanes, then a thread per region
    tid = np.full(len(start), -1, np.int64)
    dcs = vocab["datacenter"]
    pid_of_dc = {d: i + 1 for i, d in enumerate(dcs)}
    tid_base = max(1000, len(dcs) + 2)
    by_lp: dict[int, list[int]] = {}
    pairs = np.unique(np.stack([lp, kind]), axis=1).T if len(lp) else np.zeros((0, 2), np.int64)
    for lp_code, kind_code in pairs.tolist():
        by_lp.setdefault(lp_code, []).append(kind_code)
    left_out = 0
    specs: list[tuple[tuple, str, np.ndarray]] = []  # (sort key, thread name, its spans)
    for lp_code, lp_kinds in by_lp.items():
        name = vocab["lp"][lp_code] if lp_code >= 0 else "unknown"
        dc_code = int(dc[np.argmax(lp == lp_code)])
        pid = pid_of_dc[dcs[dc_code]] if dc_code >= 0 else len(dcs) + 1  # no site: a process of its own
        lp_kinds.sort(key=lambda k: _kind_rank(kinds[k] if k >= 0 else ""))
        for kind_code in lp_kinds:
            kind_name = kinds[kind_code] if kind_code >= 0 else "span"
            key = (pid, kind_name in HELD_KINDS, lp_code, _kind_rank(kind_name))
            idx = np.flatnonzero((lp == lp_code) & (kind == kind_code))
            base = name if len(lp_kinds) == 1 else f"{name} {kind_name}"
            region = c["region"][idx]
            by_region = region_lanes(region, start[idx], end[idx])
            rest = idx if by_region is None else idx[region < 0]
            lanes = assign_lanes(start[rest], end[rest])
            left_out += int((lanes < 0).sum())
            for lane in range(int(lanes.max()) + 1 if len(lanes) else 0):
                specs.append(((*key, 0, lane), base if lane == 0 else f"{base} #{lane + 1}", rest[lanes == lane]))
            if by_region is not None:
                width = len(str(int(region.max())))
                for r in by_region:
                    specs.append(((*key, 1, r), f"{base} r{r:0{width}d}", idx[region == r]))
    threads: list[tuple[int, int, str]] = []  # (pid, tid, name)
    for key, name, idx in sorted(specs, key=lambda t: t[0]):
        t = tid_base + len(threads)
        threads.append((key[0], t, name))
        tid[idx] = t
    kept = np.flatnonzero(tid >= 0)
    pid = np.array([len(dcs) + 1] + [pid_of_dc[d] for d in dcs], np.int64)[dc + 1]

    text = {col: [json.dumps(s, ensure_ascii=False) for s in vocab[col]] for col in ("name", "kind", "phase")}
    order = kept[np.lexsort((end[kept], tid[kept], start[kept]))]
    ts = _us(start[order], True)
    dur = _us(end[order] - start[order], False)
    rid, tok, layer, region, nbytes, phase = (c[k][order].tolist() for k in
                                              ("request_id", "token", "layer", "region", "bytes", "phase"))
    names, cats = c["name"][order].tolist(), c["kind"][order].tolist()
    pids, tids = pid[order].tolist(), tid[order].tolist()
    # each span's args: the columns it has (null: < 0), in this order; phase by its word
    fields = (("request", rid, None), ("token", tok, None), ("layer", layer, None), ("region", region, None),
              ("phase", phase, text["phase"]), ("bytes", nbytes, None))
    events = []
    for i in range(len(order)):
        args = [f'"{key}":{v if words is None else words[v]}' for key, values, words in fields if (v := values[i]) >= 0]
        name = text["name"][names[i]] if names[i] >= 0 else '"span"'
        cat = text["kind"][cats[i]] if cats[i] >= 0 else '"span"'
        events.append(f'{{"ph":"X","ts":{ts[i]},"dur":{dur[i]},"pid":{pids[i]},"tid":{tids[i]},'
                      f'"name":{name},"cat":{cat},"args":{{{",".join(args)}}}}}')
    flows = _flows(c, start, end, tid, pid, kept, flow_requests, kinds)
    events += flows
    processes = sorted({(p, dcs[d] if d >= 0 else "unknown") for p, d in zip(pid[kept].tolist(),
                                                                              dc[kept].tolist())})
    return events, {"spans": len(order), "flows": len(flows) // 2, "left_out": left_out,
                    "processes": processes, "threads": threads}


def _flows(c: dict[str, np.ndarray], start: np.ndarray, end: np.ndarray, tid: np.ndarray, pid: np.ndarray,
           kept: np.ndarray, flow_requests: int, kinds: list[str]) -> list[str]:
    """Arrows along the first `flow_requests` requests (by first span in the export): from
    the span a request last finished before a span on another LP began, to that span."""
    if not flow_requests:
        return []
    carriers = np.array([k not in ("sram", "request") for k in kinds] + [False], bool)[c["kind"]]
    ok = kept[(c["request_id"][kept] >= 0) & carriers[kept] & (end[kept] - start[kept] >= FLOW_MIN_NS)]
    if not len(ok):
        return []
    rid = c["request_id"][ok]
    first: dict[int, int] = {}
    for r, s in zip(rid.tolist(), start[ok].tolist()):
        if r not in first or s < first[r]:
            first[r] = s
    chosen = sorted(first, key=lambda r: (first[r], r))[:flow_requests]
    mid = start + (end - start) // 2
    out: list[str] = []
    flow_id = 0
    for r in chosen:
        mine = ok[rid == r]
        by_end = mine[np.lexsort((start[mine], end[mine]))]
        ends = end[by_end]
        for b in mine[np.lexsort((end[mine], start[mine]))].tolist():
            k = int(np.searchsorted(ends, start[b], side="right")) - 1
            if k < 0:
                continue
            a = int(by_end[k])
            if c["lp"][a] == c["lp"][b] or mid[a] > mid[b]:
                continue
            flow_id += 1
            name = json.dumps(f"request {r}")
            ta, tb = _us(np.array([mid[a], mid[b]]), True)
            out.append(f'{{"ph":"s","ts":{ta},"pid":{pid[a]},"tid":{tid[a]},"id":{flow_id},'
                       f'"name":{name},"cat":"request-flow"}}')
            out.append(f'{{"ph":"f","ts":{tb},"pid":{pid[b]},"tid":{tid[b]},"id":{flow_id},'
                       f'"name":{name},"cat":"request-flow","bp":"e"}}')
    return out


def _write(out_path: Path, meta: dict, events: list[str], first_ts: str,
           processes: list[tuple[int, str]], threads: list[tuple[int, int, str]]) -> None:
    head = []
    for p, name in processes:
        head.append(f'{{"ph":"M","ts":{first_ts},"pid":{p},"tid":{p},"name":"process_name",'
                    f'"args":{{"name":{json.dumps(name, ensure_ascii=False)}}}}}')
        head.append(f'{{"ph":"M","ts":{first_ts},"pid":{p},"tid":{p},"name":"process_sort_index",'
                    f'"args":{{"sort_index":{p}}}}}')
    for i, (p, t, name) in enumerate(threads):
        head.append(f'{{"ph":"M","ts":{first_ts},"pid":{p},"tid":{t},"name":"thread_name",'
                    f'"args":{{"name":{json.dumps(name, ensure_ascii=False)}}}}}')
        head.append(f'{{"ph":"M","ts":{first_ts},"pid":{p},"tid":{t},"name":"thread_sort_index",'
                    f'"args":{{"sort_index":{i}}}}}')
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write('{"displayTimeUnit":"ns",\n"otherData":')
            f.write(json.dumps(meta, ensure_ascii=False))
            f.write(',\n"traceEvents":[\n')
            rows = head + events
            for k in range(0, len(rows), 4096):
                f.write(",\n".join(rows[k:k + 4096]))
                if k + 4096 < len(rows):
                    f.write(",\n")
            f.write("\n]}\n")
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
