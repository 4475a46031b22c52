"""One fleet description, one trace: whatever the grouping of LPs, the window cap or the backend."""

from __future__ import annotations

import pytest

from cluster.commands.cli import SITE_GROUPS
from cluster.commands.scenario import RunOptions, run_cluster
from cluster.fleet.spec import ClusterSpec, PipelineSpec, ReplicaSpec, RouterSpec, UserSpec

L8 = "llama3.1-8b"
TWO_SITES = ("santa-clara", "stockton")

SMALL_FLEET = ClusterSpec(
    name="small-fleet",
    pipelines=(PipelineSpec("p8x2", (L8,), wafers=2), PipelineSpec("p8", (L8,), wafers=1)),
    replicas=(ReplicaSpec("p8x2", 2, TWO_SITES), ReplicaSpec("p8", 1, ("stockton",))),
    routers=(RouterSpec("west", "santa-clara", "least-outstanding"), RouterSpec("east", "stockton", "round-robin")),
    users=(UserSpec("open", "santa-clara", L8, rate_per_s=200.0, requests=10, prompt_tokens=48, output_tokens=5),
           UserSpec("closed", "stockton", L8, arrivals="closed", users=2, think_time_s=0.001, requests=6,
                    prompt_tokens=40, output_tokens=4),
           UserSpec("bursty", "stockton", L8, arrivals="gamma", rate_per_s=300.0, burstiness_cv=3.0, requests=6,
                    prompt_tokens=24, output_tokens=3, router="west")),
    detail="layer", prefill_chunk_tokens=16)

FILES = ("x.arrow", "x.requests.arrow", "x.tokens.arrow")


def traced(tmp_path, name: str, **opts) -> tuple[dict, list[bytes]]:
    folder = tmp_path / name
    summary = run_cluster(SMALL_FLEET, RunOptions(trace=str(folder / "x.arrow"), **opts))
    return summary, [(folder / f).read_bytes() for f in FILES]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[dict, list[bytes]]:
    return traced(tmp_path_factory.mktemp("fleet"), "reference")


@pytest.mark.parametrize("grouping", [
    {"lps_per_partition": 1},
    {"lps_per_partition": 3, "max_window_ps": 2_000_000},
    {"lps_per_partition": SITE_GROUPS},
])
def test_any_grouping_in_process_gives_the_same_bytes(reference, tmp_path, grouping):
    summary, files = traced(tmp_path, "grouped", **grouping)
    assert reference[0]["rounds"] == 1  # one partition
    assert summary["rounds"] > 1  # the grouping took: several partitions
    assert files == reference[1]
    assert reference[0]["requests_completed"] == 22
    if "max_window_ps" in grouping:  # the cap took too: the same grouping uncapped runs fewer rounds
        uncapped, files = traced(tmp_path, "uncapped", lps_per_partition=grouping["lps_per_partition"])
        assert files == reference[1]
        assert summary["rounds"] > uncapped["rounds"]


@pytest.mark.parametrize("grouping", [{"lps_per_partition": SITE_GROUPS}, {"lps_per_partition": 2}])
def test_ray_gives_the_same_bytes(ray_cluster, reference, tmp_path, grouping):
    summary, files = traced(tmp_path, "ray", backend="ray", backend_options={"placement": "by-site"}, **grouping)
    assert summary["ray_nodes"] == 2
    assert files == reference[1]
