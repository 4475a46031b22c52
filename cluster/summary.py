"""The figures a run is judged by, computed from its trace files (so `wafersim summary`
on a file gives the same numbers as the run that wrote it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cluster.trace import requests_path

PS_PER_S = 1e12
PS_PER_MS = 1e9


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


def summarize(spans_path: str | Path) -> dict:
    """Request latencies, throughput, link share and SRAM peaks from a trace."""
    spans_path = Path(spans_path)
    with pa.memory_map(str(requests_path(spans_path))) as src:
        requests = pa.ipc.open_file(src).read_all()
    arrival = requests["arrival_ps"].to_numpy()
    first = requests["first_token_ps"].to_numpy()
    finish = requests["finish_ps"].to_numpy()
    out_tokens = requests["output_tokens"].to_numpy().astype(np.int64)
    ttft_ms = (first - arrival) / PS_PER_MS
    multi = out_tokens > 1
    decode_s = (finish[multi] - first[multi]) / PS_PER_S
    tpot_ms = decode_s * 1e3 / (out_tokens[multi] - 1)
    speeds = (out_tokens[multi] - 1) / decode_s
    span_s = (finish.max() - arrival.min()) / PS_PER_S if len(finish) else 0.0

    link_ps_by_lp: dict[str, int] = {}
    sram_rows: list[pa.RecordBatch] = []
    end_ps = 0
    with pa.memory_map(str(spans_path)) as src:
        reader = pa.ipc.open_file(src)
        meta = json.loads((reader.schema.metadata or {}).get(b"wafersim", b"{}"))
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            end_ps = max(end_ps, pc.max(batch["end_ps"]).as_py() or 0)
            kind = batch["kind"].cast(pa.string())
            links = batch.filter(pc.and_(pc.equal(kind, "link"),
                                         pc.equal(batch["phase"].cast(pa.string()), "decode")))
            if links.num_rows:
                lp = links["lp"].cast(pa.string())[0].as_py()  # a batch holds one LP's rows
                dur = pc.sum(pc.subtract(links["end_ps"], links["start_ps"])).as_py()
                link_ps_by_lp[lp] = link_ps_by_lp.get(lp, 0) + dur
            sram = batch.filter(pc.equal(kind, "sram"))
            if sram.num_rows:
                sram_rows.append(sram)
    decode_tokens = int((out_tokens[multi] - 1).sum())
    link_ms_per_token = {lp: ps / decode_tokens / PS_PER_MS for lp, ps in sorted(link_ps_by_lp.items())} \
        if decode_tokens else {}
    link_total = sum(link_ms_per_token.values())
    tpot_mean_ms = float(tpot_ms.mean()) if len(tpot_ms) else None

    sram_peak_gb: dict[str, float] = {}
    if sram_rows:
        sram = pa.Table.from_batches(sram_rows)
        lps = sram["lp"].cast(pa.string()).to_numpy(zero_copy_only=False)
        for lp in sorted(set(lps)):
            mask = lps == lp
            sram_peak_gb[lp] = _peak_concurrent(sram["start_ps"].to_numpy()[mask],
                                                sram["end_ps"].to_numpy()[mask],
                                                sram["bytes"].to_numpy()[mask]) / 1e9
    return {
        "scenario": meta.get("scenario"),
        "requests_completed": int(len(requests)),
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
