"""An 8B co-located on the 70B's wafers: the regions they share serve one pass at a time,
so the 70B's tokens slow by the load the 8B puts on the shared regions (the bottleneck
law: a region's throughput times its service per token never exceeds one)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cluster.commands.scenario import RunOptions, run_cluster
from cluster.fleet.build import build_cluster
from cluster.fleet.spec import ClusterSpec, PipelineSpec, ReplicaSpec, RouterSpec, UserSpec
from common.errors import ConfigError
from common.units import PS_PER_S
from wafer.tenants import spread

L70, L8, L405 = "llama3.1-70b", "llama3.1-8b", "llama3.1-405b"


def shared(users_70b: int, users_8b: int) -> ClusterSpec:
    users = [UserSpec("big", "dallas", L70, arrivals="closed", users=users_70b, requests=users_70b,
                      prompt_tokens=16, output_tokens=48)]
    if users_8b:
        users.append(UserSpec("small", "dallas", L8, arrivals="closed", users=users_8b, requests=3 * users_8b,
                              prompt_tokens=8, output_tokens=48))
    return ClusterSpec("colocated", (PipelineSpec("shared", (L70, L8), wafers=4),),
                       (ReplicaSpec("shared", 1, ("dallas",)),), tuple(users),
                       (RouterSpec("r", "dallas", "least-outstanding"),), detail="layer")


def region_of(spec: ClusterSpec) -> dict[tuple[str, str], tuple[str, int]]:
    """(wafer LP, trace name) -> (wafer LP, region): the 70B's unit j is region j; the 8B's
    units are spread over the same regions, as the wafer model places them."""
    out = {}
    for lp in build_cluster(spec).graph.lps:
        config = lp.config
        if not getattr(config, "co_tenants", None):
            continue
        out.update({(lp.name, u.name): (lp.name, j) for j, u in enumerate(config.units)})
        for tenant in config.co_tenants:
            for unit, region in zip(tenant.units, spread(len(tenant.units), len(config.units))):
                out[(lp.name, f"{tenant.name}:{unit.name}")] = (lp.name, region)
    return out


def measure(spec: ClusterSpec, tmp_path, name: str) -> tuple[float, pd.DataFrame]:
    """The 70B's tokens per second over the middle half of its run, and each region's busy
    fraction there, split by model."""
    run_cluster(spec, RunOptions(trace=str(tmp_path / f"{name}.arrow")))
    tokens = pd.read_feather(tmp_path / f"{name}.tokens.arrow")
    requests = pd.read_feather(tmp_path / f"{name}.requests.arrow")
    times = tokens.merge(requests[["request_id", "model"]], on="request_id").query("model == @L70")["time_ps"]
    lo, hi = times.quantile(0.25), times.quantile(0.75)
    tokens_per_s = ((times >= lo) & (times < hi)).sum() / ((hi - lo) / PS_PER_S)
    spans = pd.read_feather(tmp_path / f"{name}.arrow")
    compute = spans[(spans["kind"] == "compute") & (spans["end_ps"] > lo) & (spans["start_ps"] < hi)].copy()
    compute["busy"] = np.minimum(compute["end_ps"], hi) - np.maximum(compute["start_ps"], lo)
    regions = region_of(spec)
    compute["region"] = [regions[key] for key in zip(compute["lp"].astype(str), compute["name"].astype(str))]
    compute["model"] = np.where(compute["name"].astype(str).str.startswith(f"{L8}:"), L8, L70)
    busy = compute.groupby(["region", "model"])["busy"].sum().unstack(fill_value=0) / (hi - lo)
    return tokens_per_s, busy


def test_the_8b_slows_the_70b_by_its_load_on_the_shared_regions(tmp_path):
    alone_tps, alone = measure(shared(96, 0), tmp_path, "alone")
    with_tps, both = measure(shared(96, 64), tmp_path, "with")
    assert alone[L70].max() > 0.99  # 96 users saturate the 70B's bottleneck region
    per_token_ps = alone[L70] / alone_tps  # each region's service per 70B token (in seconds)
    load_8b = both[L8].reindex(per_token_ps.index, fill_value=0)
    assert load_8b.max() > 0.2  # the 8B keeps some shared regions busy
    predicted = ((1 - load_8b) / per_token_ps).min()  # what the busiest shared region leaves the 70B
    assert with_tps < 0.9 * alone_tps
    assert with_tps == pytest.approx(predicted, rel=0.03)
    assert (both[L70] + both[L8]).max() > 0.99  # still a saturated region, now shared


def test_the_planner_places_both_or_refuses():
    fits = build_cluster(shared(1, 1))
    wafer = fits.graph.lp["shared-0.wafer1"].config
    assert [t.name for t in wafer.co_tenants] == [L8]
    too_big = ClusterSpec("too-big", (PipelineSpec("p", (L405, L70), wafers=22),), (ReplicaSpec("p", 1, ("dallas",)),),
                          (UserSpec("u", "dallas", L70, requests=1),), (RouterSpec("r", "dallas"),))
    with pytest.raises(ConfigError, match=r"wafer\d+ would hold .* GB of weights of llama3.1-405b \+ llama3.1-70b"):
        build_cluster(too_big)
