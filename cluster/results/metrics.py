"""Serving metrics as the serving benchmarks define them (vLLM's benchmark_serving,
GenAI-Perf), so a wafersim figure can be set next to a published one.

TTFT = first token - arrival; TPOT = (finish - first token) / (output tokens - 1), for
requests with more than one output token; ITL = every gap between consecutive tokens of a
request, all requests pooled; E2E = finish - arrival; queueing = `queue_ps`. Percentiles
are numpy's linear interpolation, as vLLM computes them. Latencies are over completed
requests only: a rejected request has no first token, and its fast "no" would flatter
the figures. A request retried after its replica was lost (device faults) counts from its
first arrival to the last attempt's tokens: the loss's cost is in its latencies.

Numpy only: a run calls this, and pandas or pyarrow.compute would cost it a fifth of a
second to import.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from cluster.results.trace import int_values
from common.units import NULL, PS_PER_MS, PS_PER_S

STATS = ("mean", "p50", "p90", "p99")
LATENCIES = ("ttft", "tpot", "e2e", "queue")


def _ints(batches: list[pa.RecordBatch], name: str) -> np.ndarray:
    """An int column of every batch as int64, NULL for nulls and for a column an older
    trace does not have."""
    parts = [int_values(b.column(name)).astype(np.int64) if name in b.schema.names
             else np.full(b.num_rows, NULL, np.int64) for b in batches]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _strings(batches: list[pa.RecordBatch], name: str) -> np.ndarray:
    """A dictionary column as objects (str, or None for null or a missing column). Decoded
    batch by batch: each batch may carry its own dictionary."""
    parts = []
    for b in batches:
        if name not in b.schema.names:
            parts.append(np.full(b.num_rows, None, object))
            continue
        column = b.column(name)
        words = np.array(column.dictionary.to_pylist() + [None], object)
        parts.append(words[int_values(column.indices)])  # NULL (-1) picks the None at the end
    return np.concatenate(parts) if parts else np.zeros(0, object)


@dataclass(frozen=True)
class Requests:
    """The requests table as numpy: times in ps (NULL where something never happened),
    string columns as objects (None for null)."""

    request_id: np.ndarray
    arrival: np.ndarray
    admitted: np.ndarray
    first: np.ndarray
    finish: np.ndarray
    output_tokens: np.ndarray
    queue: np.ndarray
    completed: np.ndarray  # bool
    rejected: np.ndarray  # bool
    failed: np.ndarray  # bool: its replica lost, no other took it
    attempts: np.ndarray  # replicas it was sent to (1 for a trace from before faults)
    tokens_lost: np.ndarray  # tokens streamed by attempts a loss cut short
    model: np.ndarray
    user_site: np.ndarray
    replica: np.ndarray
    reason: np.ndarray

    @classmethod
    def from_batches(cls, batches: list[pa.RecordBatch]) -> Requests:
        status = _strings(batches, "status")
        has_status = any("status" in b.schema.names for b in batches)
        return cls(
            request_id=_ints(batches, "request_id"), arrival=_ints(batches, "arrival_ps"),
            admitted=_ints(batches, "admitted_ps"), first=_ints(batches, "first_token_ps"),
            finish=_ints(batches, "finish_ps"), output_tokens=_ints(batches, "output_tokens"),
            queue=_ints(batches, "queue_ps"),
            # A trace from before the status column held completed requests only.
            completed=status == "completed" if has_status else np.ones(len(status), bool),
            rejected=status == "rejected", failed=status == "failed",
            attempts=np.where((a := _ints(batches, "attempts")) == NULL, 1, a),
            tokens_lost=np.where((lost := _ints(batches, "tokens_lost")) == NULL, 0, lost),
            model=_strings(batches, "model"), user_site=_strings(batches, "user_site"),
            replica=_strings(batches, "replica"), reason=_strings(batches, "reason"))


def run_span_ps(req: Requests) -> int:
    """First arrival to last finish, over every request: rejected ones are part of the run
    (the benchmark's duration, in vLLM's terms)."""
    arrivals, finishes = req.arrival[req.arrival != NULL], req.finish[req.finish != NULL]
    if not len(arrivals) or not len(finishes):
        return 0
    return max(int(finishes.max() - arrivals.min()), 0)


def _between(req: Requests, start: np.ndarray, end: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray:
    """end - start in ms for completed requests where both are known, NaN elsewhere."""
    ok = req.completed & (start != NULL) & (end != NULL)
    if extra is not None:
        ok &= extra
    return np.where(ok, (end - start) / PS_PER_MS, np.nan)


def latencies_ms(req: Requests) -> dict[str, np.ndarray]:
    """Per request, in ms (NaN where there is nothing to measure): ttft, tpot, e2e, queue."""
    multi = req.output_tokens > 1
    decode = _between(req, req.first, req.finish, multi)
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN rows divide by 0 or less
        tpot = np.where(multi, decode / (req.output_tokens - 1), np.nan)
    queue_ok = req.completed & (req.queue != NULL)
    return {
        "ttft": _between(req, req.arrival, req.first),
        "tpot": tpot,
        "e2e": _between(req, req.arrival, req.finish),
        "queue": np.where(queue_ok, req.queue / PS_PER_MS, np.nan),
    }


def itl_ms(request_id: np.ndarray, token: np.ndarray, time_ps: np.ndarray,
           keep: np.ndarray | None = None) -> np.ndarray:
    """Every gap between consecutive tokens of a request, in ms, all requests pooled;
    `keep`: the request ids to count (completed ones), None for all."""
    request_id, token, time_ps = (np.asarray(a, np.int64) for a in (request_id, token, time_ps))
    if keep is not None:
        mine = np.isin(request_id, keep)
        request_id, token, time_ps = request_id[mine], token[mine], time_ps[mine]
    order = np.lexsort((token, request_id))  # the writer sorts so already; a hand-made table may not
    request_id, time_ps = request_id[order], time_ps[order]
    same = request_id[1:] == request_id[:-1]
    return (np.diff(time_ps)[same]) / PS_PER_MS


def stats(values: np.ndarray) -> dict[str, float | None]:
    """mean, p50, p90, p99 of the non-NaN values; None for each when there are none."""
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    if not len(values):
        return dict.fromkeys(STATS)
    p50, p90, p99 = np.percentile(values, [50, 90, 99])  # linear interpolation, like vLLM
    return {"mean": float(values.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}


def goodput(req: Requests, lat: dict[str, np.ndarray], span_ps: int,
            slo_ttft_ms: float = 0.0, slo_tpot_ms: float = 0.0) -> dict[str, float | None]:
    """DistServe's goodput, as vLLM measures it: completed requests meeting every SLO
    given (0 means none), per second of run span, and as a share of completed requests.
    With no SLO at all every completed request is good: goodput is then throughput."""
    good = req.completed.copy()
    if slo_ttft_ms > 0:
        good &= lat["ttft"] <= slo_ttft_ms  # NaN compares False: no first token is not good
    if slo_tpot_ms > 0:
        # A one-token request has no TPOT; vLLM counts it as 0, so the SLO cannot fail it.
        good &= np.isnan(lat["tpot"]) | (lat["tpot"] <= slo_tpot_ms)
    n_good, n_done = int(good.sum()), int(req.completed.sum())
    return {
        "goodput_requests_per_s": n_good / (span_ps / PS_PER_S) if span_ps else None,
        "goodput_fraction": n_good / n_done if n_done else None,
    }


def tokens_per_s(req: Requests, mask: np.ndarray, span_ps: int) -> float | None:
    """Output tokens of the completed requests in `mask` per second of run span."""
    return float(req.output_tokens[mask & req.completed].sum() / (span_ps / PS_PER_S)) if span_ps else None


def by_group(req: Requests, keys: np.ndarray, lat: dict[str, np.ndarray], span_ps: int) -> dict[str, dict]:
    """Per value of `keys` (model, user site, replica; null keys skipped): counts, the
    headline latencies and output tokens per second of run span (so groups add up to the
    run's aggregate)."""
    out = {}
    for group in sorted(set(keys[keys != None].tolist())):  # noqa: E711 (element-wise)
        mine = keys == group
        out[group] = {
            "requests": int((mine & req.completed).sum()),
            "rejected": int((mine & req.rejected).sum()),
            "ttft_ms_p50": stats(lat["ttft"][mine])["p50"],
            "ttft_ms_p99": stats(lat["ttft"][mine])["p99"],
            "tpot_ms_p50": stats(lat["tpot"][mine])["p50"],
            "e2e_ms_p50": stats(lat["e2e"][mine])["p50"],
            "queue_ms_p50": stats(lat["queue"][mine])["p50"],
            "tokens_per_s": tokens_per_s(req, mine, span_ps),
        }
    return out


def union_length(starts: np.ndarray, ends: np.ndarray) -> int:
    """Total length covered by the intervals [start, end), overlaps counted once."""
    if not len(starts):
        return 0
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    reach = np.maximum.accumulate(ends)
    # A new busy stretch starts where an interval begins after everything before has ended.
    new = np.concatenate([[True], starts[1:] > reach[:-1]])
    at = np.flatnonzero(new)
    return int((np.maximum.reduceat(ends, at) - starts[at]).sum())


def replica_utilisation(req: Requests, span_ps: int) -> dict[str, dict[str, float]]:
    """Per replica: the share of the run span with at least one request admitted and not
    finished, and the mean number of requests in service (admitted to finish)."""
    ok = req.completed & (req.admitted != NULL) & (req.finish != NULL) & (req.replica != None)  # noqa: E711
    out = {}
    for replica in sorted(set(req.replica[ok].tolist())):
        mine = ok & (req.replica == replica)
        starts, ends = req.admitted[mine], req.finish[mine]
        out[replica] = {
            "busy_fraction": union_length(starts, ends) / span_ps if span_ps else 0.0,
            "mean_in_service": float((ends - starts).sum() / span_ps) if span_ps else 0.0,
        }
    return out


def rejections(req: Requests) -> dict[str, int]:
    """Rejected requests by reason ("unknown" where none was recorded)."""
    reasons = [r or "unknown" for r in req.reason[req.rejected].tolist()]
    return {r: reasons.count(r) for r in sorted(set(reasons))}


def failures(req: Requests, lat: dict[str, np.ndarray]) -> dict:
    """What device losses cost: requests failed (by reason) and retried, tokens lost (and of
    those, the ones streamed again by a retry that completed), and how much longer a retried
    request took end to end than one served at the first attempt (means; None without both)."""
    retried = req.attempts > 1
    first_try, again = lat["e2e"][req.completed & ~retried], lat["e2e"][req.completed & retried]
    reasons = [r or "unknown" for r in req.reason[req.failed].tolist()]
    return {
        "requests_failed": int(req.failed.sum()),
        "requests_retried": int(retried.sum()),
        "retries": int((req.attempts - 1).sum()),
        "tokens_lost": int(req.tokens_lost.sum()),
        "tokens_recomputed": int(req.tokens_lost[req.completed].sum()),
        "retry_extra_e2e_ms": float(np.nanmean(again) - np.nanmean(first_try))
        if len(again) and len(first_try) else None,
        "failed_by_reason": {r: reasons.count(r) for r in sorted(set(reasons))},
    }
