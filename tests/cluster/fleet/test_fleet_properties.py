"""Random small clusters and workloads: conservation holds, the same seed gives the same
bytes, and how the LPs are grouped changes nothing."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.commands.scenario import RunOptions, run_cluster
from cluster.fleet.spec import ROUTER_POLICIES, ClusterSpec, PipelineSpec, ReplicaSpec, RouterSpec, UserSpec

SITES = ("santa-clara", "stockton", "dallas")
L8 = "llama3.1-8b"


@st.composite
def clusters(draw) -> ClusterSpec:
    sites = draw(st.lists(st.sampled_from(SITES), min_size=1, max_size=3, unique=True))
    pipelines = (PipelineSpec("one", (L8,), wafers=1), PipelineSpec("two", (L8,), wafers=2))
    replicas = tuple(ReplicaSpec(p.name, draw(st.integers(1, 2)), tuple(draw(st.permutations(sites))))
                     for p in pipelines if draw(st.booleans()) or p.name == "one")
    routers = tuple(RouterSpec(f"r{i}", site, draw(st.sampled_from(ROUTER_POLICIES)))
                    for i, site in enumerate(draw(st.lists(st.sampled_from(sites), min_size=1, max_size=2))))
    # With a cap on requests in service the planner reserves their KV up front and refuses a
    # context that cannot fit; without one, such a request is rejected at the router.
    max_active = draw(st.integers(0, 2))
    prompts = st.integers(1, 40) if max_active else st.one_of(st.integers(1, 40), st.just(5_000_000))
    users = []
    for i in range(draw(st.integers(1, 3))):
        arrivals = draw(st.sampled_from(("poisson", "gamma", "closed", "burst")))
        users.append(UserSpec(
            f"u{i}", draw(st.sampled_from(sites)), L8, arrivals=arrivals,
            rate_per_s=draw(st.floats(50.0, 2000.0)), burstiness_cv=draw(st.floats(0.5, 4.0)),
            users=draw(st.integers(1, 3)), think_time_s=draw(st.sampled_from((0.0, 0.0005))),
            requests=draw(st.integers(1, 5)),
            prompt_tokens=draw(prompts),
            output_tokens=draw(st.integers(1, 5)), sessions=draw(st.integers(0, 3))))
    return ClusterSpec("random", pipelines, replicas, tuple(users), routers,
                       seed=draw(st.integers(0, 2**32)), detail=draw(st.sampled_from(("stage", "layer"))),
                       prefill_chunk_tokens=draw(st.integers(8, 64)), max_active=max_active)


def run_files(spec: ClusterSpec, folder: Path, **opts) -> tuple[dict, list[bytes]]:
    path = folder / "t.arrow"
    summary = run_cluster(spec, RunOptions(trace=str(path), **opts))
    files = [path, folder / "t.requests.arrow", folder / "t.tokens.arrow"]
    return summary, [f.read_bytes() for f in files]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=clusters(), lps_per_partition=st.integers(1, 4))
def test_random_clusters_conserve_and_repeat(spec: ClusterSpec, lps_per_partition: int):
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        # The run itself checks conservation and fails if it breaks; these are the user's view.
        summary, first = run_files(spec, Path(a))
        total = sum(u.requests for u in spec.users)
        assert summary["requests_completed"] + summary["requests_rejected"] == total
        requests = pd.read_feather(Path(a) / "t.requests.arrow")
        done = requests[requests["status"] == "completed"]
        assert (done["tokens"] == done["output_tokens"]).all()
        tokens = pd.read_feather(Path(a) / "t.tokens.arrow")
        assert len(tokens) == done["output_tokens"].sum()
        _, again = run_files(spec, Path(b), lps_per_partition=lps_per_partition)
        assert again == first
