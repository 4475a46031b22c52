"""Lost devices from first principles: a lost wafer's replica fails what it serves, a router
retries it on the replica left (its streamed tokens lost), a site loss takes out exactly the
replicas with a device there, and the trace does not depend on how the LPs are grouped."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import tomllib

from cluster.commands.cli import SITE_GROUPS
from cluster.commands.scenario import RunOptions, run_cluster
from cluster.fleet.build import build_cluster, network_latency_ps
from cluster.fleet.spec import ClusterSpec, FaultSpec, PipelineSpec, ReplicaSpec, RouterSpec, UserSpec
from cluster.fleet.toml import cluster_from_dict, cluster_to_toml
from common.errors import ConfigError
from common.units import ps_from_ms

L8 = "llama3.1-8b"
SC = "santa-clara"
LOSS_MS = 3.0

# Two replicas in one hall, every request sent at t=0: round-robin puts half on each.
TWO = ClusterSpec(
    name="two-replicas", pipelines=(PipelineSpec("p", (L8,), wafers=2),), replicas=(ReplicaSpec("p", 2, (SC,)),),
    routers=(RouterSpec("r", SC, "round-robin"),),
    users=(UserSpec("u", SC, L8, arrivals="burst", requests=8, prompt_tokens=32, output_tokens=20),),
    detail="layer", prefill_chunk_tokens=16)
LOST = dataclasses.replace(TWO, faults=(FaultSpec("wafer-lost", "p-0.wafer1", LOSS_MS),))

FILES = ("x.arrow", "x.requests.arrow", "x.tokens.arrow")


def run(tmp_path, spec: ClusterSpec, name: str, **opts) -> tuple[dict, dict[str, pd.DataFrame]]:
    folder = tmp_path / name
    summary = run_cluster(spec, RunOptions(trace=str(folder / "x.arrow"), **opts))
    return summary, {f: pd.read_feather(folder / f) for f in FILES}


@pytest.fixture(scope="module")
def clean_and_lost(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lost")
    return run(tmp, TWO, "clean"), run(tmp, LOST, "lost")


def test_a_lost_wafer_moves_its_requests_to_the_other_replica(clean_and_lost):
    """Up to the loss both runs are the same. Every request still in service on p-0 at the
    loss (its last token not back at the user by then plus the trip frontend -> router ->
    users) is retried once on p-1 and completes there; the tokens it had are the ones that
    reached the user before the loss's news could; nothing fails."""
    (_, clean), (summary, lost) = clean_and_lost
    hop = network_latency_ps(TWO, SC, SC)
    news_ps = ps_from_ms(LOSS_MS) + 2 * hop  # a token sent at the loss or later never reaches the user
    req = clean["x.requests.arrow"]
    cut = req[(req.replica == "p-0") & (req.finish_ps >= news_ps)].request_id.tolist()
    assert 0 < len(cut) < len(req)
    tokens = clean["x.tokens.arrow"]
    streamed = {rid: int(((tokens.request_id == rid) & (tokens.time_ps < news_ps)).sum()) for rid in cut}
    assert sum(streamed.values()) > 0

    after = lost["x.requests.arrow"].set_index("request_id")
    assert (after.status == "completed").all() and (after.tokens == after.output_tokens).all()
    assert sorted(after.index[after.attempts == 2]) == sorted(cut) and set(after.attempts) <= {1, 2}
    assert (after.loc[cut, "replica"] == "p-1").all()
    assert after.loc[cut, "tokens_lost"].to_dict() == streamed
    assert summary["requests_failed"] == 0 and summary["requests_retried"] == len(cut)
    assert summary["tokens_lost"] == summary["tokens_recomputed"] == sum(streamed.values())
    assert summary["retry_extra_e2e_ms"] > 0
    # The tokens table holds the last attempt's tokens only: each request's, once, in order.
    for rid, group in lost["x.tokens.arrow"].groupby("request_id"):
        assert group.token.tolist() == list(range(after.output_tokens[rid]))


def test_the_loss_is_traced_where_it_happened(clean_and_lost):
    """A `wafer-lost` span on the lost wafer only, from the loss; dropped passes only on
    the lost replica's LPs, none after the loss was known; no KV cache held past it."""
    _, (summary, lost) = clean_and_lost
    spans = lost["x.arrow"]
    fault = spans[spans.kind == "fault"]
    wafer_lost = fault[fault.name == "wafer-lost"]
    assert wafer_lost.lp.tolist() == ["p-0.wafer1"] and wafer_lost.start_ps.tolist() == [ps_from_ms(LOSS_MS)]
    dropped = fault[fault.name == "dropped"]
    assert len(dropped) == summary["messages_dropped"] > 0 and all(str(lp).startswith("p-0") for lp in dropped.lp)
    kv = spans[(spans.name == "kv_cache") & spans.lp.astype(str).str.startswith("p-0")]
    assert (kv.end_ps <= ps_from_ms(LOSS_MS)).all()


def test_without_another_replica_the_requests_fail_with_the_reason(tmp_path):
    """One replica: what it serves at the loss fails, and so does what comes later."""
    one = dataclasses.replace(LOST, replicas=(ReplicaSpec("p", 1, (SC,)),),
                              users=(UserSpec("u", SC, L8, rate_per_s=1000.0, requests=8, prompt_tokens=32,
                                              output_tokens=20),))
    summary, tables = run(tmp_path, one, "one")
    req = tables["x.requests.arrow"]
    failed = req[req.status == "failed"]
    assert len(failed) == summary["requests_failed"] > 0
    assert all(f"wafer p-0.wafer1 lost at {LOSS_MS:g} ms" in r for r in failed.reason)  # the router's words
    assert (req[req.status == "completed"].finish_ps < ps_from_ms(LOSS_MS) + 2 * network_latency_ps(one, SC, SC)).all()
    assert (failed.attempts == 1).all() and summary["requests_retried"] == 0


def test_a_site_loss_takes_out_exactly_the_replicas_with_a_device_there(tmp_path):
    """Dallas holds p-1 and the second stage of q-0: those two fail over, the rest serve on."""
    spec = ClusterSpec(
        name="sites", pipelines=(PipelineSpec("p", (L8,), wafers=1),
                                 PipelineSpec("q", (L8,), wafers=2, stage_sites=(SC, "dallas"))),
        replicas=(ReplicaSpec("p", 3, (SC, "dallas", "stockton")), ReplicaSpec("q", 1, (SC,))),
        routers=(RouterSpec("r", SC, "round-robin"),),
        users=(UserSpec("u", SC, L8, arrivals="burst", requests=12, prompt_tokens=32, output_tokens=10),),
        detail="stage", faults=(FaultSpec("site-lost", "dallas", 5.0),))
    summary, tables = run(tmp_path, spec, "site")
    spans = tables["x.arrow"]
    fault = spans[spans.name == "site-lost"]
    assert sorted(fault.lp) == ["p-1.wafer0", "q-0.wafer1"] and set(fault.datacenter) == {"dallas"}
    dropped_on = {str(lp).split(".")[0] for lp in spans[spans.name == "dropped"].lp}
    assert dropped_on <= {"p-1", "q-0"}
    req = tables["x.requests.arrow"]
    assert (req.status == "completed").all() and summary["requests_failed"] == 0
    retried = req[req.attempts > 1]
    assert len(retried) == summary["requests_retried"] > 0
    assert set(retried.replica) <= {"p-0", "p-2"}


def test_same_bytes_in_any_grouping_with_a_lost_wafer(tmp_path):
    """The loss is a declared schedule: windows and groupings cannot move it."""
    spec = dataclasses.replace(LOST, replicas=(ReplicaSpec("p", 2, (SC, "stockton")),))
    base = tmp_path / "base"
    summary = run_cluster(spec, RunOptions(trace=str(base / "x.arrow")))
    assert summary["requests_retried"] > 0
    want = [(base / f).read_bytes() for f in FILES]
    for i, grouping in enumerate([{"lps_per_partition": 1}, {"lps_per_partition": 3, "max_window_ps": 2_000_000},
                                  {"lps_per_partition": SITE_GROUPS}]):
        folder = tmp_path / f"g{i}"
        summary = run_cluster(spec, RunOptions(trace=str(folder / "x.arrow"), **grouping))
        assert summary["rounds"] > 1
        assert [(folder / f).read_bytes() for f in FILES] == want, grouping


def test_same_bytes_on_ray_with_a_lost_wafer(ray_cluster, tmp_path):
    """Across two Ray nodes, one actor per site: the retries and drops of the in-process run."""
    spec = dataclasses.replace(LOST, replicas=(ReplicaSpec("p", 2, (SC, "stockton")),))
    run_cluster(spec, RunOptions(trace=str(tmp_path / "base" / "x.arrow")))
    summary = run_cluster(spec, RunOptions(trace=str(tmp_path / "ray" / "x.arrow"), backend="ray",
                                           lps_per_partition=SITE_GROUPS, backend_options={"placement": "by-site"}))
    assert summary["ray_nodes"] == 2 and summary["requests_retried"] > 0
    assert [(tmp_path / "ray" / f).read_bytes() for f in FILES] == [(tmp_path / "base" / f).read_bytes() for f in FILES]


def test_faults_in_a_toml_description():
    text = {"faults": [{"kind": "wafer-lost", "target": "p-0.wafer1", "at_ms": 3},
                       {"kind": "link-flap", "target": "link:p-1.wafer0->p-1.wafer1", "at_ms": 1, "for_ms": 4,
                        "period_ms": 0.5}]}
    spec = cluster_from_dict({**_as_dict(TWO), **text}, "x.toml")
    assert spec.faults == (FaultSpec("wafer-lost", "p-0.wafer1", 3), FaultSpec(
        "link-flap", "link:p-1.wafer0->p-1.wafer1", 1, 4, period_ms=0.5))


@pytest.mark.parametrize("fault,message", [
    (FaultSpec("wafer-lost", "p-0.wafer1", 3, for_ms=2), "faults[0].for_ms: wafer-lost is for good"),
    (FaultSpec("wafer-lost", "p-0.wafer7", 3), "faults[0].target: no device 'p-0.wafer7'"),
    (FaultSpec("site-lost", "dallas", 3), "faults[0].target: no device at site 'dallas'"),
    (FaultSpec("link-flap", "link:p-0.wafer0->p-0.wafer1", 1, 2), "faults[0].period_ms"),
    (FaultSpec("link-down", "link:p-0.wafer0->p-0.wafer1", 1, 2, period_ms=1), "only link-flap has a period"),
])
def test_bad_device_faults_are_one_line(fault, message):
    with pytest.raises(ConfigError) as err:
        build_cluster(dataclasses.replace(TWO, faults=(fault,)))
    assert message in str(err.value) and "\n" not in str(err.value)


def _as_dict(spec: ClusterSpec) -> dict:
    return tomllib.loads(cluster_to_toml(spec))


@pytest.mark.parametrize("policy", ["round-robin", "least-outstanding", "nearest-site", "most-free-kv",
                                    "session-affinity"])
def test_every_policy_routes_around_a_lost_replica(tmp_path, policy):
    """Closed-loop users keep coming after the loss: every request completes, those cut
    retried once, and nothing is admitted on the lost replica after the loss."""
    spec = dataclasses.replace(LOST, routers=(RouterSpec("r", SC, policy),), users=(
        UserSpec("c", SC, L8, arrivals="closed", users=4, think_time_s=0.001, requests=16, prompt_tokens=32,
                 output_tokens=20),))
    summary, tables = run(tmp_path, spec, policy)
    req = tables["x.requests.arrow"]
    assert (req.status == "completed").all() and summary["requests_retried"] > 0
    assert not ((req.replica == "p-0") & (req.admitted_ps >= ps_from_ms(LOSS_MS))).any()
