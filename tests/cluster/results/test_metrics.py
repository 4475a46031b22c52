"""Serving metrics against values worked out by hand, and the summary of a real run."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from cluster.results import metrics
from cluster.results.summary import format_summary, summarize
from cluster.results.trace import REQUEST_SCHEMA, SPAN_SCHEMA, TOKEN_SCHEMA, requests_path, tokens_path
from tests.conftest import SMALL, run_cli, run_json

MS = 1_000_000_000  # ps

# Three completed requests and one rejected, times in ms (the table stores ps):
#   0: arrives 0, admitted 1, first token 10, last 40, 4 tokens (10, 20, 30, 40): TTFT 10, TPOT 10, E2E 40
#   1: arrives 5, admitted 5, first 25, last 85, 3 tokens (25, 35, 85): TTFT 20, TPOT 30, E2E 80
#   2: arrives 10, admitted 60, first = last 70, 1 token: TTFT 60, no TPOT, E2E 60, queued 50
#   3: arrives 20, rejected ("overloaded"), told at 100: the run spans 0 to 100 ms
ROWS = [  # id, arrival, admitted, first, finish, out, queue, model, site, replica, status, reason
    (0, 0, 1, 10, 40, 4, 1, "a", "x", "r1", "completed", None),
    (1, 5, 5, 25, 85, 3, 0, "a", "y", "r1", "completed", None),
    (2, 10, 60, 70, 70, 1, 50, "b", "x", "r2", "completed", None),
    (3, 20, None, None, 100, 8, None, "b", "y", None, "rejected", "overloaded"),
]
TOKENS = [(0, 0, 10), (0, 1, 20), (0, 2, 30), (0, 3, 40), (1, 0, 25), (1, 1, 35), (1, 2, 85), (2, 0, 70)]


def flat(nested: dict, prefix: str = "") -> dict:
    """A nested dict as one level, for pytest.approx (which compares only flat ones)."""
    out = {}
    for k, v in nested.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _ps(v: int | None) -> int | None:
    return None if v is None else v * MS


def request_batch(rows: list[tuple] = ROWS) -> pa.RecordBatch:
    cols = {name: [] for name in REQUEST_SCHEMA.names}
    for rid, arrival, admitted, first, finish, out, queue, model, site, replica, status, reason in rows:
        row = {"request_id": rid, "arrival_ps": _ps(arrival), "admitted_ps": _ps(admitted),
               "first_token_ps": _ps(first), "finish_ps": _ps(finish), "prompt_tokens": 16, "output_tokens": out,
               "ttft_ps": None, "tpot_ps": None, "model": model, "user_site": site, "replica": replica,
               "replica_site": None, "session": None, "queue_ps": _ps(queue),
               "e2e_ps": None, "tokens": None, "status": status, "reason": reason, "energy_j": None}
        for name in cols:
            cols[name].append(row.get(name))  # a column added since (attempts, ...): null
    arrays = [pa.array(cols[f.name], pa.string()).dictionary_encode() if pa.types.is_dictionary(f.type)
              else pa.array(cols[f.name], f.type) for f in REQUEST_SCHEMA]
    return pa.record_batch(arrays, schema=REQUEST_SCHEMA)


@pytest.fixture
def req() -> metrics.Requests:
    return metrics.Requests.from_batches([request_batch()])


def test_latencies_are_over_completed_requests(req):
    lat = metrics.latencies_ms(req)
    assert metrics.stats(lat["ttft"]) == pytest.approx({"mean": 30, "p50": 20, "p90": 52, "p99": 59.2})
    assert metrics.stats(lat["tpot"]) == pytest.approx({"mean": 20, "p50": 20, "p90": 28, "p99": 29.8})
    assert metrics.stats(lat["e2e"]) == pytest.approx({"mean": 60, "p50": 60, "p90": 76, "p99": 79.6})
    assert metrics.stats(lat["queue"]) == pytest.approx({"mean": 17, "p50": 1, "p90": 40.2, "p99": 49.02})
    assert all(np.isnan(lat[k][3]) for k in metrics.LATENCIES)  # the rejected request is in none
    assert np.isnan(lat["tpot"][2])  # one token: no time per output token
    assert metrics.stats(np.zeros(0)) == dict.fromkeys(metrics.STATS)


def test_inter_token_gaps_pool_all_requests(req):
    rid, token, time = (np.array(c) for c in zip(*reversed(TOKENS)))  # out of order on purpose
    gaps = metrics.itl_ms(rid, token, time * MS)
    assert sorted(gaps.tolist()) == [10, 10, 10, 10, 50]
    assert metrics.stats(gaps) == pytest.approx({"mean": 18, "p50": 10, "p90": 34, "p99": 48.4})
    # Per request, the mean gap is its TPOT: request 1's gaps 10 and 50 average 30.
    assert metrics.itl_ms(rid, token, time * MS, keep=np.array([1])).mean() == 30
    assert len(metrics.itl_ms(np.zeros(0), np.zeros(0), np.zeros(0))) == 0


def test_goodput_with_and_without_slos(req):
    lat, span = metrics.latencies_ms(req), metrics.run_span_ps(req)
    assert span == 100 * MS  # first arrival to the rejected request's answer
    # No SLO: every completed request is good, so goodput is request throughput.
    assert metrics.goodput(req, lat, span) == pytest.approx({"goodput_requests_per_s": 30, "goodput_fraction": 1})
    assert metrics.goodput(req, lat, span, slo_ttft_ms=15) == pytest.approx(
        {"goodput_requests_per_s": 10, "goodput_fraction": 1 / 3})
    # TPOT 20: request 1 (30) fails; request 2 has one token, so no TPOT to fail.
    assert metrics.goodput(req, lat, span, slo_tpot_ms=20)["goodput_fraction"] == pytest.approx(2 / 3)
    both = metrics.goodput(req, lat, span, slo_ttft_ms=25, slo_tpot_ms=20)
    assert both["goodput_fraction"] == pytest.approx(1 / 3)  # 1 fails TPOT, 2 fails TTFT
    assert metrics.goodput(req, lat, span, slo_ttft_ms=10)["goodput_fraction"] == pytest.approx(1 / 3)  # <= holds


def test_union_of_overlapping_intervals():
    starts, ends = np.array([20, 0, 2, 25, 50]), np.array([30, 10, 5, 40, 50])
    assert metrics.union_length(starts, ends) == 10 + 20  # nested and overlapping counted once
    assert metrics.union_length(np.zeros(0, np.int64), np.zeros(0, np.int64)) == 0


def test_replica_utilisation(req):
    util = metrics.replica_utilisation(req, metrics.run_span_ps(req))
    # r1 serves [1, 40] and [5, 85]: busy 84 of 100 ms, 39 + 80 ms of service.
    assert flat(util) == pytest.approx(flat({"r1": {"busy_fraction": 0.84, "mean_in_service": 1.19},
                                             "r2": {"busy_fraction": 0.10, "mean_in_service": 0.10}}))


def test_groups_and_rejections(req):
    lat, span = metrics.latencies_ms(req), metrics.run_span_ps(req)
    by_model = metrics.by_group(req, req.model, lat, span)
    assert flat(by_model) == pytest.approx(flat({
        "a": {"requests": 2, "rejected": 0, "ttft_ms_p50": 15, "ttft_ms_p99": 19.9, "tpot_ms_p50": 20,
              "e2e_ms_p50": 60, "queue_ms_p50": 0.5, "tokens_per_s": 70},
        "b": {"requests": 1, "rejected": 1, "ttft_ms_p50": 60, "ttft_ms_p99": 60, "tpot_ms_p50": None,
              "e2e_ms_p50": 60, "queue_ms_p50": 50, "tokens_per_s": 10},
    }))
    by_site = metrics.by_group(req, req.user_site, lat, span)
    assert {s: (g["requests"], g["rejected"]) for s, g in by_site.items()} == {"x": (2, 0), "y": (1, 1)}
    by_replica = metrics.by_group(req, req.replica, lat, span)
    assert list(by_replica) == ["r1", "r2"]  # the rejected request has no replica: no group
    assert sum(g["tokens_per_s"] for g in by_replica.values()) == pytest.approx(80)  # groups add up
    assert metrics.rejections(req) == {"overloaded": 1}


def write_trace(path, slo: dict | None = None, tokens: bool = True) -> None:
    """A trace of the hand-made requests, no spans; the SLO, if any, in the metadata."""
    meta = {b"wafersim": json.dumps({"scenario": "hand", **({"slo": slo} if slo else {})}).encode()}
    with pa.ipc.new_file(str(path), SPAN_SCHEMA.with_metadata(meta)):
        pass
    batch = request_batch()
    with pa.ipc.new_file(str(requests_path(path)), batch.schema.with_metadata(meta)) as w:
        w.write_batch(batch)
    if tokens:
        cols = [pa.array([_ps(t) if f.name == "time_ps" else t for t in c], f.type)
                for c, f in zip(zip(*TOKENS), TOKEN_SCHEMA)]
        with pa.ipc.new_file(str(tokens_path(path)), TOKEN_SCHEMA.with_metadata(meta)) as w:
            w.write_batch(pa.record_batch(cols, schema=TOKEN_SCHEMA))


def test_summarize_hand_made_trace(tmp_path):
    path = tmp_path / "t.arrow"
    write_trace(path, slo={"ttft_ms": 15, "tpot_ms": 0})
    s = summarize(path)
    assert (s["requests_completed"], s["requests_rejected"]) == (3, 1)
    assert (s["slo_ttft_ms"], s["slo_tpot_ms"]) == (15, 0)  # from the metadata
    assert s["goodput_fraction"] == pytest.approx(1 / 3)
    assert summarize(path, slo_ttft_ms=0)["goodput_fraction"] == 1  # asked for: overrides the metadata
    assert s["ttft_ms_p50"] == 20 and s["ttft_ms_p90"] == pytest.approx(52)
    assert s["itl_ms_p50"] == 10 and s["itl_ms_p99"] == pytest.approx(48.4)
    assert s["aggregate_tokens_per_s"] == pytest.approx(80)  # 8 tokens delivered in 0.1 s
    assert s["tokens_per_s_per_user"] == pytest.approx((100 + 1000 / 30) / 2)  # p50 of 100 and 33.3 tokens/s
    assert s["rejected_by_reason"] == {"overloaded": 1}
    assert set(s["by_model"]) == {"a", "b"} and set(s["by_site"]) == {"x", "y"}
    assert s["replica_utilisation"]["r1"]["busy_fraction"] == pytest.approx(0.84)
    text = format_summary(s)
    assert "goodput_fraction" in text and "rejected: overloaded 1" in text and "busy 0.840" in text
    tokens_path(path).unlink()  # a trace from before token times: no ITL, the rest as before
    old = summarize(path)
    assert old["itl_ms_p50"] is None and old["ttft_ms_p50"] == 20
    assert "itl_ms_p50" not in format_summary(old)


def test_many_replicas_print_as_a_spread():
    util = {f"r{i}": {"busy_fraction": i / 29, "mean_in_service": 1.0} for i in range(30)}
    lines = format_summary({"replica_utilisation": util}).splitlines()
    assert lines[-1].strip() == "replica busy fraction (30 replicas): min 0.000, mean 0.500, max 1.000"
    few = format_summary({"replica_utilisation": dict(list(util.items())[:24])})
    assert few.count(", in service 1.00") == 24  # a line each


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("metrics") / "run.arrow"
    return run_json("run", "llama70b_four_wafers", *SMALL, "--trace", str(path))


NEW_KEYS = ["requests_rejected", "ttft_ms_mean", "ttft_ms_p90", "tpot_ms_p90", "tpot_ms_p99", "itl_ms_p50",
            "itl_ms_p90", "itl_ms_p99", "e2e_ms_p50", "e2e_ms_p90", "e2e_ms_p99", "queue_ms_mean", "queue_ms_p50",
            "queue_ms_p90", "queue_ms_p99", "goodput_requests_per_s", "goodput_fraction", "slo_ttft_ms",
            "slo_tpot_ms", "by_model", "by_site", "by_replica", "replica_utilisation", "rejected_by_reason"]


def test_a_run_summary_has_the_serving_metrics(small_run):
    s = summarize(small_run["trace"])
    assert not set(NEW_KEYS) - set(s) and not set(NEW_KEYS) - set(small_run)
    assert s["requests_completed"] == 4 and s["requests_rejected"] == 0
    assert s["goodput_fraction"] == 1  # no SLO recorded: every completed request is good
    assert s["e2e_ms_p50"] > s["ttft_ms_p50"] > 0
    # Equal output lengths: pooled ITL averages to the mean TPOT.
    assert s["itl_ms_mean"] == pytest.approx(s["tpot_ms_mean"], rel=1e-9)
    # And for one request, its own gaps average to its own TPOT.
    tokens = pa.ipc.open_file(str(tokens_path(small_run["trace"]))).read_all()
    reqs = pa.ipc.open_file(str(requests_path(small_run["trace"]))).read_all()
    rid, token, time = (tokens.column(c).to_numpy() for c in ("request_id", "token", "time_ps"))
    first, finish, out = (reqs.column(c).to_numpy()[0] for c in ("first_token_ps", "finish_ps", "output_tokens"))
    tpot_ms = (finish - first) / (out - 1) / MS
    assert metrics.itl_ms(rid, token, time, keep=np.array([0])).mean() == pytest.approx(tpot_ms, rel=1e-9)
    for util in s["replica_utilisation"].values():
        assert 0 < util["busy_fraction"] <= 1 and util["mean_in_service"] >= util["busy_fraction"]


def test_summary_command_takes_slos(small_run):
    trace = small_run["trace"]
    tight = json.loads(run_cli("summary", trace, "--slo-ttft-ms", "1", "--json").stdout.splitlines()[-1])
    assert tight["goodput_fraction"] == 0 and tight["goodput_requests_per_s"] == 0
    assert tight["slo_ttft_ms"] == 1
    loose = json.loads(run_cli("summary", trace, "--slo-ttft-ms", "1e9", "--slo-tpot-ms", "1e9",
                               "--json").stdout.splitlines()[-1])
    assert loose["goodput_fraction"] == 1.0
    for bad in (["--slo-ttf-ms", "1"], ["--slo-ttft-ms", "fast"], ["--slo-tpot-ms", "-1"], []):
        proc = run_cli("summary", *([trace] if bad else []), *bad, check=False)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith("error: summary:")
