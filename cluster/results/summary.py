"""The figures a run is judged by, computed from its trace files (so `wafersim summary`
on a file gives the same numbers as the run that wrote it). Latencies are over completed
requests; cluster/results/metrics.py says how each is defined."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from cluster.results import metrics
from cluster.results.energy import Prices, energy_summary
from cluster.results.trace import energy_path, int_values, requests_path, tokens_path
from common.units import PS_PER_MS, PS_PER_S

MAX_LISTED = 24  # more replicas or LPs than this: a summary line, not a list


def _code(dictionary: list[str], value: str) -> int:
    """The index of `value`, or one that matches nothing."""
    return dictionary.index(value) if value in dictionary else -2


def _p50(values: np.ndarray) -> float | None:
    return float(np.median(values)) if len(values) else None


def _peak_concurrent(starts: np.ndarray, ends: np.ndarray, sizes: np.ndarray) -> int:
    """Largest sum of `sizes` over spans [start, end) alive at one time."""
    if not len(starts):
        return 0
    times = np.concatenate([starts, ends])
    deltas = np.concatenate([sizes, -sizes])
    order = np.lexsort((deltas, times))  # at equal times, releases before reservations
    return int(np.cumsum(deltas[order]).max())


def _codes(batch: pa.RecordBatch, name: str) -> tuple[np.ndarray, list[str]]:
    """A dictionary column's indices (NULL for nulls) and its dictionary as strings."""
    column = batch.column(name)
    return int_values(column.indices), column.dictionary.to_pylist()


def _read(path: Path) -> tuple[dict, list[pa.RecordBatch]]:
    with pa.memory_map(str(path)) as src:
        reader = pa.ipc.open_file(src)
        meta = json.loads((reader.schema.metadata or {}).get(b"wafersim", b"{}"))
        return meta, [reader.get_batch(i) for i in range(reader.num_record_batches)]


def _column(batches: list[pa.RecordBatch], name: str) -> np.ndarray:
    return np.concatenate([int_values(b.column(name)) for b in batches]) if batches else np.zeros(0, np.int64)


def _slo(given: float | None, meta: dict, key: str) -> float:
    """The SLO asked for; else the one the run recorded (a fleet run does); else 0, none."""
    if given is not None:
        return float(given)
    return float((meta.get("slo") or {}).get(key) or 0.0)


def _spans(spans_path: Path, decode_tokens: int) -> dict:
    """Link time per decode token (on the wire and in flight), each link's busy share of
    the run (its wire serialising), SRAM peaks and simulated time, from the span file."""
    link_ps_by_lp: dict[str, int] = {}
    busy_ps_by_lp: dict[str, int] = {}
    sram_by_lp: dict[str, list[tuple[np.ndarray, ...]]] = {}
    end_ps = dropped = 0
    meta, batches = _read(spans_path)
    for batch in batches:
        if not batch.num_rows:
            continue
        starts, ends = int_values(batch.column("start_ps")), int_values(batch.column("end_ps"))
        end_ps = max(end_ps, int(ends.max()))
        (kind, kinds), (phase, phases), (lp, lps) = (_codes(batch, c) for c in ("kind", "phase", "lp"))
        if "fault" in kinds:  # passes and tokens a lost device or its frontend received and dropped
            name, names = _codes(batch, "name")
            dropped += int(((kind == _code(kinds, "fault")) & (name == _code(names, "dropped"))).sum())
        on_wire = kind == _code(kinds, "link")
        links = (on_wire | (kind == _code(kinds, "flight"))) & (phase == _code(phases, "decode"))
        # A trace from before "flight" existed has whole transfers as "link": no busy time in it.
        busy = on_wire if "flight" in kinds else np.zeros(len(kind), bool)
        for code in np.unique(lp[busy]):
            mine = busy & (lp == code)
            busy_ps_by_lp[lps[code]] = busy_ps_by_lp.get(lps[code], 0) + int((ends[mine] - starts[mine]).sum())
        for code in np.unique(lp[links]):
            mine = links & (lp == code)
            link_ps_by_lp[lps[code]] = link_ps_by_lp.get(lps[code], 0) + int((ends[mine] - starts[mine]).sum())
        sram = kind == _code(kinds, "sram")
        if sram.any():
            nbytes = int_values(batch.column("bytes"))
            for code in np.unique(lp[sram]):
                mine = sram & (lp == code)
                sram_by_lp.setdefault(lps[code], []).append((starts[mine], ends[mine], nbytes[mine]))
    link_ms_per_token = {lp: ps / decode_tokens / PS_PER_MS for lp, ps in sorted(link_ps_by_lp.items())} \
        if decode_tokens else {}
    busy_share = {lp: ps / end_ps for lp, ps in sorted(busy_ps_by_lp.items())} if end_ps else {}
    return {
        "scenario": meta.get("scenario"),
        "link_ms_per_token_by_link": link_ms_per_token,
        "link_busy_share": max(busy_share.values()) if busy_share else None,
        "link_busy_share_by_link": busy_share,
        "sram_peak_gb": {lp: _peak_concurrent(*map(np.concatenate, zip(*parts))) / 1e9
                         for lp, parts in sorted(sram_by_lp.items())},
        "sim_time_s": end_ps / PS_PER_S,
        "messages_dropped": dropped,
    }


def _itl(spans_path: Path, req: metrics.Requests) -> np.ndarray | None:
    """Inter-token gaps of completed requests; None for a trace written before token times."""
    path = tokens_path(spans_path)
    if not path.exists():
        return None
    _, tokens = _read(path)
    return metrics.itl_ms(_column(tokens, "request_id"), _column(tokens, "token"), _column(tokens, "time_ps"),
                          keep=req.request_id[req.completed])


def summarize(spans_path: str | Path, slo_ttft_ms: float | None = None, slo_tpot_ms: float | None = None,
              prices: Prices | None = None) -> dict:
    """Request latencies, goodput, per-group and per-replica figures, throughput, link
    share, SRAM peaks, energy and cost from a trace. An SLO or a price left None comes from
    the trace's metadata."""
    spans_path = Path(spans_path)
    meta, batches = _read(requests_path(spans_path))
    req = metrics.Requests.from_batches(batches)
    lat = metrics.latencies_ms(req)
    span_ps = metrics.run_span_ps(req)
    multi = ~np.isnan(lat["tpot"])  # completed, with more than one output token
    tpot_ms = lat["tpot"][multi]
    decode_tokens = int((req.output_tokens[multi] - 1).sum())
    slo_ttft, slo_tpot = _slo(slo_ttft_ms, meta, "ttft_ms"), _slo(slo_tpot_ms, meta, "tpot_ms")

    out = {"requests_completed": int(req.completed.sum()), "requests_rejected": int(req.rejected.sum()),
           "tokens_per_s_per_user": _p50(1e3 / tpot_ms),
           "aggregate_tokens_per_s": metrics.tokens_per_s(req, req.completed, span_ps)}
    itl = _itl(spans_path, req)
    for name, values in (*lat.items(), ("itl", np.zeros(0) if itl is None else itl)):
        for stat, v in metrics.stats(values).items():
            out[f"{name}_ms_{stat}"] = v
    spans = _spans(spans_path, decode_tokens)
    link_total = sum(spans["link_ms_per_token_by_link"].values())
    tpot_mean_ms = out["tpot_ms_mean"]
    out.update({
        "link_ms_per_token": link_total if decode_tokens else None,
        "link_share_of_tpot": link_total / tpot_mean_ms if tpot_mean_ms else None,
        **metrics.goodput(req, lat, span_ps, slo_ttft, slo_tpot),
        "slo_ttft_ms": slo_ttft,
        "slo_tpot_ms": slo_tpot,
        "by_model": metrics.by_group(req, req.model, lat, span_ps),
        "by_site": metrics.by_group(req, req.user_site, lat, span_ps),
        "by_replica": metrics.by_group(req, req.replica, lat, span_ps),
        "replica_utilisation": metrics.replica_utilisation(req, span_ps),
        "rejected_by_reason": metrics.rejections(req),
        **metrics.failures(req, lat),
        **spans,
        "trace": str(spans_path),
    })
    tokens = int(req.output_tokens[req.completed].sum())
    out.update(energy_summary(energy_path(spans_path), tokens, out["sim_time_s"], meta, prices))
    return out


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 1000 else f"{v:,.0f}"
    return "-" if v is None else str(v)


def _group_line(name: str, g: dict) -> str:
    """One compact line of a group's figures (by model, site or replica)."""
    return (f"    {name:<24} {g['requests']} done, {g['rejected']} rejected; ttft p50/p99 "
            f"{_fmt(g['ttft_ms_p50'])}/{_fmt(g['ttft_ms_p99'])} ms, tpot p50 {_fmt(g['tpot_ms_p50'])} ms, "
            f"e2e p50 {_fmt(g['e2e_ms_p50'])} ms, queue p50 {_fmt(g['queue_ms_p50'])} ms, "
            f"{_fmt(g['tokens_per_s'])} tok/s")


def _utilisation_lines(summary: dict) -> list[str]:
    util = summary.get("replica_utilisation") or {}
    if not util:
        return []
    if len(util) > MAX_LISTED:  # a big fleet: the spread says more than a page of lines
        busy = np.array([u["busy_fraction"] for u in util.values()])
        return [f"  replica busy fraction ({len(util)} replicas): min {busy.min():.3f}, "
                f"mean {busy.mean():.3f}, max {busy.max():.3f}"]
    groups = summary.get("by_replica") or {}
    lines = ["  replicas (busy fraction, mean in service):"]
    for name, u in util.items():
        g = groups.get(name)
        lines.append(f"    {name:<24} busy {u['busy_fraction']:.3f}, in service {u['mean_in_service']:.2f}"
                     + (f"; {g['requests']} done, {_fmt(g['tokens_per_s'])} tok/s" if g else ""))
    return lines


def _latency_keys(name: str) -> list[str]:
    return [f"{name}_ms_{stat}" for stat in metrics.STATS]


# In print order. The keys of _ALWAYS print as "-" when None (they always did); the other
# figures are skipped when None, and an SLO of 0 (none) is not printed.
_KEYS = ["requests_completed", "requests_rejected", "requests_failed", "requests_retried", "tokens_lost",
         "tokens_recomputed", "retry_extra_e2e_ms", "tokens_per_s_per_user", "aggregate_tokens_per_s",
         *(key for name in ("ttft", "tpot", "itl", "e2e", "queue") for key in _latency_keys(name)),
         "slo_ttft_ms", "slo_tpot_ms", "goodput_requests_per_s", "goodput_fraction",
         "link_ms_per_token", "link_share_of_tpot", "link_busy_share", "sim_time_s",
         "energy_j", "joules_per_token", "avg_power_kw", "usd_per_million_tokens",
         "backend", "events", "rounds", "round_wall_ms_p50", "messages", "messages_dropped", "wall_s", "trace"]
_ALWAYS = {"requests_completed", "tokens_per_s_per_user", "aggregate_tokens_per_s", "ttft_ms_p50",
           "ttft_ms_p99", "tpot_ms_p50", "link_ms_per_token", "link_share_of_tpot", "sim_time_s",
           "backend", "events", "rounds", "messages", "wall_s", "trace"}
# Device-fault figures: printed only when a run had some (a run without faults reads as before).
_IF_ANY = {"requests_failed", "requests_retried", "tokens_lost", "tokens_recomputed", "messages_dropped"}


def format_summary(summary: dict) -> str:
    """A short table for people."""
    scenario = summary.get("scenario")
    if isinstance(scenario, dict):  # read back from a trace: the run's whole description
        scenario = scenario.get("scenario")
    lines = [f"wafersim: {scenario or ''}".rstrip()]
    for key in _KEYS:
        value = summary.get(key)
        shown = key in summary if key in _ALWAYS else value is not None and not (key.startswith("slo_") and not value)
        shown = shown and (bool(value) or key not in _IF_ANY)
        shown = shown and (key != "round_wall_ms_p50" or summary.get("backend") == "ray")  # a cost of rounds
        if shown:
            lines.append(f"  {key:<24} {_fmt(value)}")
    for key, title in (("by_model", "by model"), ("by_site", "by user site")):
        if summary.get(key):
            lines.append(f"  {title}:")
            lines += [_group_line(name, g) for name, g in summary[key].items()]
    lines += _utilisation_lines(summary)
    for key, title in (("rejected_by_reason", "rejected"), ("failed_by_reason", "failed")):
        if summary.get(key):
            lines.append(f"  {title}: " + ", ".join(f"{r} {n}" for r, n in summary[key].items()))
    for key, title, digits in (("link_ms_per_token_by_link", "link time per decode token (ms)", 4),
                               ("link_busy_share_by_link", "link busy share (wire serialising, of the run)", 4),
                               ("sram_peak_gb", "SRAM peak (GB)", 3)):
        lines += _per_lp_lines(summary.get(key) or {}, title, digits)
    return "\n".join(lines)


def _per_lp_lines(values: dict[str, float], title: str, digits: int) -> list[str]:
    """One line per LP for a small cluster; a fleet's hundreds: the range and who is at each end."""
    if not values:
        return []
    if len(values) <= MAX_LISTED:
        width = max(28, *map(len, values))
        return [f"  {title}:"] + [f"    {lp:<{width}} {v:10.{digits}f}" for lp, v in values.items()]
    low, high = min(values, key=values.get), max(values, key=values.get)
    mean = sum(values.values()) / len(values)
    return [f"  {title}, {len(values)} LPs: min {values[low]:.{digits}f} ({low}), mean {mean:.{digits}f}, "
            f"max {values[high]:.{digits}f} ({high})"]
