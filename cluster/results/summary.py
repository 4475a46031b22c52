"""The figures a run is judged by, computed from its trace files (so `wafersim summary`
on a file gives the same numbers as the run that wrote it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from cluster.results.trace import int_values, requests_path
from common.units import PS_PER_MS, PS_PER_S


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


def summarize(spans_path: str | Path) -> dict:
    """Request latencies, throughput, link share and SRAM peaks from a trace."""
    spans_path = Path(spans_path)
    _, requests = _read(requests_path(spans_path))
    arrival = _column(requests, "arrival_ps")
    first = _column(requests, "first_token_ps")
    finish = _column(requests, "finish_ps")
    out_tokens = _column(requests, "output_tokens").astype(np.int64)
    ttft_ms = (first - arrival) / PS_PER_MS
    multi = out_tokens > 1
    decode_s = (finish[multi] - first[multi]) / PS_PER_S
    tpot_ms = decode_s * 1e3 / (out_tokens[multi] - 1)
    speeds = (out_tokens[multi] - 1) / decode_s
    span_s = (finish.max() - arrival.min()) / PS_PER_S if len(finish) else 0.0

    link_ps_by_lp: dict[str, int] = {}
    sram_by_lp: dict[str, list[tuple[np.ndarray, ...]]] = {}
    end_ps = 0
    meta, batches = _read(spans_path)
    for batch in batches:
        if not batch.num_rows:
            continue
        starts, ends = int_values(batch.column("start_ps")), int_values(batch.column("end_ps"))
        end_ps = max(end_ps, int(ends.max()))
        (kind, kinds), (phase, phases), (lp, lps) = (_codes(batch, c) for c in ("kind", "phase", "lp"))
        links = (kind == _code(kinds, "link")) & (phase == _code(phases, "decode"))
        for code in np.unique(lp[links]):
            mine = links & (lp == code)
            link_ps_by_lp[lps[code]] = link_ps_by_lp.get(lps[code], 0) + int((ends[mine] - starts[mine]).sum())
        sram = kind == _code(kinds, "sram")
        if sram.any():
            nbytes = int_values(batch.column("bytes"))
            for code in np.unique(lp[sram]):
                mine = sram & (lp == code)
                sram_by_lp.setdefault(lps[code], []).append((starts[mine], ends[mine], nbytes[mine]))
    decode_tokens = int((out_tokens[multi] - 1).sum())
    link_ms_per_token = {lp: ps / decode_tokens / PS_PER_MS for lp, ps in sorted(link_ps_by_lp.items())} \
        if decode_tokens else {}
    link_total = sum(link_ms_per_token.values())
    tpot_mean_ms = float(tpot_ms.mean()) if len(tpot_ms) else None

    sram_peak_gb = {lp: _peak_concurrent(*map(np.concatenate, zip(*parts))) / 1e9
                    for lp, parts in sorted(sram_by_lp.items())}
    return {
        "scenario": meta.get("scenario"),
        "requests_completed": int(len(arrival)),
        "tokens_per_s_per_user": _p50(speeds),
        "aggregate_tokens_per_s": float(out_tokens.sum() / span_s) if span_s else None,
        "ttft_ms_p50": _p50(ttft_ms),
        "ttft_ms_p99": float(np.percentile(ttft_ms, 99)) if len(ttft_ms) else None,
        "tpot_ms_p50": _p50(tpot_ms),
        "tpot_ms_mean": tpot_mean_ms,
        "link_ms_per_token": link_total if decode_tokens else None,
        "link_share_of_tpot": link_total / tpot_mean_ms if tpot_mean_ms else None,
        "link_ms_per_token_by_link": link_ms_per_token,
        "sram_peak_gb": sram_peak_gb,
        "sim_time_s": end_ps / PS_PER_S,
        "trace": str(spans_path),
    }


def format_summary(summary: dict) -> str:
    """A short table for people."""
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 1000 else f"{v:,.0f}"
        return "-" if v is None else str(v)

    lines = [f"wafersim: {summary.get('scenario') or ''}".rstrip()]
    keys = ["requests_completed", "tokens_per_s_per_user", "aggregate_tokens_per_s", "ttft_ms_p50",
            "ttft_ms_p99", "tpot_ms_p50", "link_ms_per_token", "link_share_of_tpot", "sim_time_s",
            "backend", "events", "rounds", "messages", "wall_s", "trace"]
    for key in keys:
        if key in summary:
            lines.append(f"  {key:<24} {fmt(summary[key])}")
    if summary.get("link_ms_per_token_by_link"):
        lines.append("  link time per decode token (ms):")
        for lp, ms in summary["link_ms_per_token_by_link"].items():
            lines.append(f"    {lp:<28} {ms:10.4f}")
    if summary.get("sram_peak_gb"):
        lines.append("  SRAM peak (GB):")
        for lp, gb in summary["sram_peak_gb"].items():
            lines.append(f"    {lp:<28} {gb:10.3f}")
    return "\n".join(lines)
