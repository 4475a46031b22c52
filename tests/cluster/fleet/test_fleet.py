"""Fleets from first principles: routing, admission by bytes, queueing, rejection."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from cluster.commands.scenario import RunOptions, run_cluster
from cluster.fleet.build import build_cluster, network_latency_ps
from cluster.fleet.spec import ClusterSpec, PipelineSpec, ReplicaSpec, RouterSpec, UserSpec
from common.errors import ConfigError
from common.units import PS_PER_MS

SITES = ("santa-clara", "stockton", "dallas")
L8, L70 = "llama3.1-8b", "llama3.1-70b"


def three_sites(policy: str, per_site: int = 30, rate: float = 2.0) -> ClusterSpec:
    """One 8B replica and one router per site, users at every site, light load."""
    return ClusterSpec(
        name="three-sites",
        pipelines=(PipelineSpec("p8", (L8,), wafers=1),),
        replicas=(ReplicaSpec("p8", 3, SITES),),
        routers=tuple(RouterSpec(s, s, policy) for s in SITES),
        users=tuple(UserSpec(f"u-{s}", s, L8, rate_per_s=rate, requests=per_site, prompt_tokens=64,
                             output_tokens=4) for s in SITES),
        detail="stage")


def run(spec: ClusterSpec, tmp_path, name: str = "run", **opts) -> tuple[dict, pd.DataFrame]:
    path = tmp_path / f"{name}.arrow"
    summary = run_cluster(spec, RunOptions(trace=str(path), **opts))
    return summary, pd.read_feather(tmp_path / f"{name}.requests.arrow")


def test_nearest_site_saves_the_wan_round_trips_round_robin_pays(tmp_path):
    """Each router sends round-robin over the three sites' replicas, so a third of its
    requests stay home and two thirds cross the WAN there and back (the request out, the
    first token home); nearest-site keeps them all home. At light load nothing else differs."""
    spec = three_sites("round-robin")
    rr, rr_requests = run(spec, tmp_path, "rr")
    near, near_requests = run(replace(spec, routers=tuple(RouterSpec(s, s, "nearest-site") for s in SITES)),
                              tmp_path, "near")
    assert (near_requests["replica_site"] == near_requests["user_site"]).all()
    home = network_latency_ps(spec, "stockton", "stockton")
    extra_ps = [2 * (network_latency_ps(spec, router, replica) - home) for router in SITES for replica in SITES]
    expected_ms = sum(extra_ps) / len(extra_ps) / PS_PER_MS
    assert expected_ms > 10  # Dallas is far: the round trips are tens of milliseconds
    saved_ms = rr["ttft_ms_mean"] - near["ttft_ms_mean"]
    assert saved_ms == pytest.approx(expected_ms, rel=0.01)
    assert (rr_requests["queue_ps"] == 0).all() and (near_requests["queue_ps"] == 0).all()


def test_a_second_replica_cuts_the_queue(tmp_path):
    """A burst of requests on one replica that serves two at a time queues; a second
    replica serves twice as many at once, and the mean wait falls to about half."""
    spec = ClusterSpec(
        name="queue", pipelines=(PipelineSpec("p8", (L8,), wafers=1),),
        replicas=(ReplicaSpec("p8", 1, ("dallas",)),), routers=(RouterSpec("r", "dallas", "least-outstanding"),),
        users=(UserSpec("u", "dallas", L8, arrivals="burst", requests=16, prompt_tokens=64, output_tokens=16),),
        detail="stage", max_active=2)
    one, one_requests = run(spec, tmp_path, "one")
    two, _ = run(replace(spec, replicas=(ReplicaSpec("p8", 2, ("dallas",)),)), tmp_path, "two")
    assert one["queue_ms_mean"] > 0
    assert two["queue_ms_mean"] < 0.6 * one["queue_ms_mean"]
    assert two["queue_ms_mean"] > 0.3 * one["queue_ms_mean"]
    assert set(one_requests["replica"]) == {"p8-0"}


def test_admission_by_bytes_waits_at_the_router_and_rejects_what_never_fits(tmp_path):
    """A replica takes requests while their KV cache fits its free SRAM: 70B requests of
    a context so long that only a few fit at once wait at the router; one longer than any
    replica can hold is rejected with its reason, and the rest complete."""
    spec = ClusterSpec(
        name="bytes", pipelines=(PipelineSpec("p70", (L70,), wafers=4),),
        replicas=(ReplicaSpec("p70", 1, ("santa-clara",)),),
        routers=(RouterSpec("r", "santa-clara", "most-free-kv"),),
        users=(UserSpec("long", "santa-clara", L70, arrivals="burst", requests=6, prompt_tokens=30_000,
                        output_tokens=2),
               UserSpec("huge", "santa-clara", L70, arrivals="burst", requests=1, prompt_tokens=2_000_000,
                        output_tokens=2)),
        detail="stage", prefill_chunk_tokens=4096)
    built = build_cluster(spec)
    kv = built.graph.lp["p70-0"].config.kv
    fits = min(c // (b * 30_002) for c, b in zip(kv.capacity_bytes, kv.bytes_per_token[0]))
    assert 1 <= fits < 6  # some must wait
    summary, requests = run(spec, tmp_path)
    done = requests[requests["status"] == "completed"]
    rejected = requests[requests["status"] == "rejected"]
    assert len(done) == 6 and len(rejected) == 1
    assert "2000002 tokens exceeds" in rejected["reason"].iloc[0]
    assert (done["queue_ps"] > 0).sum() == 6 - fits
    # while they were in service together, never more than `fits` at once
    events = sorted([(t, 1) for t in done["admitted_ps"]] + [(t, -1) for t in done["finish_ps"]])
    in_service = max(pd.Series([d for _, d in events]).cumsum())
    assert in_service <= fits
    assert summary["requests_rejected"] == 1 and summary["rejected_by_reason"]


def test_closed_loop_users_think_between_requests(tmp_path):
    spec = ClusterSpec(
        name="closed", pipelines=(PipelineSpec("p8", (L8,), wafers=1),),
        replicas=(ReplicaSpec("p8", 1, ("stockton",)),), routers=(RouterSpec("r", "stockton"),),
        users=(UserSpec("u", "stockton", L8, arrivals="closed", users=2, think_time_s=0.05, requests=8,
                        prompt_tokens=32, output_tokens=4),), detail="stage")
    _, requests = run(spec, tmp_path)
    assert len(requests) == 8 and (requests["status"] == "completed").all()
    assert sorted(requests["session"].unique()) == [0, 1]  # each user is a session
    for _, mine in requests.groupby("session"):
        mine = mine.sort_values("arrival_ps")
        # a user sends its next request only after its last one finished
        assert (mine["arrival_ps"].iloc[1:].to_numpy() >= mine["finish_ps"].iloc[:-1].to_numpy()).all()


def test_session_affinity_keeps_a_session_on_one_replica(tmp_path):
    spec = replace(three_sites("session-affinity", per_site=12),
                   users=tuple(UserSpec(f"u-{s}", s, L8, rate_per_s=20.0, requests=12, prompt_tokens=32,
                                        output_tokens=2, sessions=3) for s in SITES))
    _, requests = run(spec, tmp_path)
    assert requests.groupby("session")["replica"].nunique().max() == 1


def test_bad_cluster_refused_before_anything_runs(tmp_path):
    spec = three_sites("round-robin")
    with pytest.raises(ConfigError, match="routers: 3 replicas need a router"):
        build_cluster(replace(spec, routers=(), users=spec.users[:1]))
    with pytest.raises(ConfigError, match=r"users\[0\].model"):
        build_cluster(replace(spec, users=(replace(spec.users[0], model=L70),)))
    assert not list(tmp_path.iterdir())


def test_session_affinity_never_strands_a_request(tmp_path):
    """A session's first request goes where it fits; a later one waits for its replica only
    if it could ever fit there. Sessions of two models never share a binding."""
    shared = PipelineSpec("shared", (L70, L8), wafers=4)
    spec = ClusterSpec(
        "affinity", (shared, PipelineSpec("small", (L8,), wafers=1)),
        (ReplicaSpec("shared", 1, ("dallas",)), ReplicaSpec("small", 1, ("dallas",))),
        (UserSpec("long8", "dallas", L8, arrivals="burst", requests=2, prompt_tokens=150_000, output_tokens=2,
                  sessions=1),
         UserSpec("big", "dallas", L70, arrivals="burst", requests=2, prompt_tokens=64, output_tokens=2, sessions=1)),
        (RouterSpec("r", "dallas", "session-affinity"),), detail="stage", prefill_chunk_tokens=16_384)
    summary, requests = run(spec, tmp_path)
    assert summary["requests_completed"] == 4
    assert set(requests[requests["model"] == L8]["replica"]) == {"small-0"}  # 150k tokens never fit "shared"


@pytest.mark.parametrize("change,message", [
    ({"time_scale": 1e12}, "is beyond the"),
    ({"users": (UserSpec("u-dallas", "dallas", L8, arrivals="closed", think_time_s=1e9, requests=2),)},
     "users[0].think_time_s"),
])
def test_times_past_the_clock_are_refused(change, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build_cluster(replace(three_sites("round-robin"), **change))


def test_a_zero_latency_cycle_is_a_config_error():
    from cluster.fleet.spec import LinksSpec
    from interconnect import LinkSpec
    spec = replace(three_sites("round-robin"), links=LinksSpec(intra_site=LinkSpec(12, 100e9, 0)))
    with pytest.raises(ConfigError, match="zero-lookahead cycle"):
        build_cluster(spec)


def test_a_gpu_pipeline_sizes_itself():
    spec = replace(three_sites("round-robin"), pipelines=(PipelineSpec("p8", (L8,), wafers=2, device="h100"),))
    with pytest.raises(ConfigError, match=r"pipelines\[0\].wafers: a GPU pipeline sizes itself"):
        build_cluster(spec)


def test_a_burst_arrives_at_t0_and_a_ring_keeps_its_requests():
    spec = ClusterSpec("burst", (PipelineSpec("p8", (L8,), wafers=1),), (ReplicaSpec("p8", 1, ("dallas",)),),
                       (UserSpec("u", "dallas", L8, arrivals="burst", requests=3, prompt_tokens=16, output_tokens=8),))
    requests = build_cluster(spec).graph.lp["frontend"].config.requests
    assert [r.arrival_ps for r in requests] == [0, 0, 0]
    assert [(r.request_id, r.prompt_tokens, r.output_tokens) for r in requests] == [(i, 16, 8) for i in range(3)]
