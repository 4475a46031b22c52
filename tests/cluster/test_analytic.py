"""The analytic tier: close to the event model where that has a steady state, moved by the
physics the way the event model is, and reachable from the command line."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from cluster.analytic import estimate
from cluster.analytic.grid import THRESHOLD_PCT, GridPoint
from cluster.commands.scenario import RunOptions, ScenarioConfig, run_cluster
from cluster.fleet.build import network_latency_ps
from cluster.fleet.spec import ClusterSpec, PipelineSpec, ReplicaSpec, RouterSpec, UserSpec
from common.errors import ConfigError
from common.units import PS_PER_MS
from tests.conftest import run_cli, run_json
from wafer import WSE3

L8, L70 = "llama3.1-8b", "llama3.1-70b"


def ring(**kw) -> ScenarioConfig:
    """A pipeline scenario (the ring: users beside one replica) at stage detail."""
    base = dict(scenario="ring", model=L8, wafers=1, sites=("santa-clara",), users=8, prompt_tokens=128,
                output_tokens=64, detail="stage")
    return ScenarioConfig(**{**base, **kw})


def ring_estimate(cfg: ScenarioConfig) -> dict:
    return estimate(cfg.to_cluster(), {cfg.device: cfg.device_spec()})


def simulate(spec: ClusterSpec, tmp_path: Path, devices: dict | None = None) -> dict:
    return run_cluster(spec, RunOptions(trace=str(tmp_path / f"{spec.name}.arrow")), devices)


def within(analytic: float, event: float, pct: float = THRESHOLD_PCT) -> bool:
    return abs(analytic - event) <= pct / 100 * event


@pytest.mark.parametrize("spec", [
    GridPoint("closed loop, 8 users thinking", L8, 1, (), 1, 8, 32, 0.1).spec(),
    GridPoint("closed loop, 2 replicas", L8, 1, (), 2, 16, 16, 0.1).spec(),
    GridPoint("waves: users who never think", L8, 1, (), 1, 32, 4, 0.0).spec(),
    ring(users=16, requests=48).to_cluster(),  # a burst, let in 16 at a time
    ring(users=16, requests=400, rate_per_s=30.0).to_cluster(),  # Poisson
    ring(device="h100", gpus=8, model=L70, users=8, prompt_tokens=512, output_tokens=32).to_cluster(),
], ids=["closed", "replicas", "waves", "burst", "poisson", "h100"])
def test_close_to_the_event_model_in_steady_state(spec, tmp_path):
    event, analytic = simulate(spec, tmp_path), estimate(spec)
    assert analytic["fidelity"] == "analytic" and analytic["bound"]
    assert within(analytic["tokens_per_s_per_user"], event["tokens_per_s_per_user"])
    assert within(analytic["aggregate_tokens_per_s"], event["aggregate_tokens_per_s"])
    assert within(analytic["ttft_ms_p50"], event["ttft_ms_p50"], 15)
    assert analytic["requests_completed"] == event["requests_completed"]


def test_more_users_past_saturation_do_not_raise_throughput():
    """The busiest region serves one step at a time: past the knee, twice the users share
    the same throughput, each at about half the speed; before it, speed holds."""
    def at(users: int) -> dict:
        return estimate(GridPoint("waves", L8, 1, (), 1, users, 4, 0.0).spec())

    few, knee, many, more = at(4), at(16), at(128), at(256)
    assert few["tokens_per_s_per_user"] == pytest.approx(knee["tokens_per_s_per_user"], rel=0.05)
    assert more["steady_tokens_per_s"] <= 1.02 * many["steady_tokens_per_s"]
    assert more["tokens_per_s_per_user"] == pytest.approx(many["tokens_per_s_per_user"] / 2, rel=0.05)
    assert many["bound"].startswith("bottleneck region")


def test_a_slower_clock_lowers_per_user_speed():
    base = ring_estimate(ring(users=1))
    slow = ring_estimate(ring(users=1, spec_overrides=(("clock_hz", WSE3.clock_hz / 2),)))
    assert slow["tokens_per_s_per_user"] < 0.9 * base["tokens_per_s_per_user"]
    assert slow["ttft_ms_p50"] > base["ttft_ms_p50"]


def test_wan_distance_adds_its_round_trip_to_ttft_not_to_tpot():
    """A user in Dallas reaching a replica in Santa Clara through a Dallas router waits the
    WAN both ways for the first token; time per token is the replica's."""
    def at(site: str) -> tuple[ClusterSpec, dict]:
        spec = ClusterSpec("wan", (PipelineSpec("p", (L8,), 1),), (ReplicaSpec("p", 1, ("santa-clara",)),),
                           (UserSpec("u", site, L8, "closed", users=4, think_time_s=0.1, requests=64,
                                     prompt_tokens=128, output_tokens=32),),
                           (RouterSpec("r", site, "round-robin"),))
        return spec, estimate(spec)

    near_spec, near = at("santa-clara")
    far_spec, far = at("dallas")
    hop = network_latency_ps(far_spec, "dallas", "santa-clara") - network_latency_ps(near_spec, "santa-clara",
                                                                                       "santa-clara")
    assert far["ttft_ms_p50"] - near["ttft_ms_p50"] == pytest.approx(2 * hop / PS_PER_MS, rel=0.01)
    assert far["tpot_ms_p50"] == pytest.approx(near["tpot_ms_p50"], rel=0.02)


def test_nearest_site_keeps_users_home_round_robin_sends_them_away():
    sites = ("santa-clara", "stockton", "dallas")

    def with_policy(policy: str) -> dict:
        spec = ClusterSpec("spread", (PipelineSpec("p", (L8,), 1),), (ReplicaSpec("p", 3, sites),),
                           (UserSpec("u", "dallas", L8, "poisson", rate_per_s=20.0, requests=200,
                                     prompt_tokens=128, output_tokens=32),),
                           (RouterSpec("r", "dallas", policy),))
        return estimate(spec)

    home, spread = with_policy("nearest-site"), with_policy("round-robin")
    assert spread["ttft_ms_mean"] > home["ttft_ms_mean"] + 10  # two of three go to California and back


def test_kv_admission_bounds_and_queues():
    """More requests than the KV cache reservation holds wait their turn: the estimate says
    so and counts the wait."""
    out = ring_estimate(ring(users=8, requests=64))
    assert out["bound"].startswith("KV admission") and out["queue_ms_mean"] > 0


def test_refuses_what_the_builder_refuses():
    spec = GridPoint("closed", L8, 1, (), 1, 4, 4, 0.1).spec()
    with pytest.raises(ConfigError, match="closed-loop users need a router"):
        estimate(replace(spec, routers=()))
    with pytest.raises(ConfigError, match="--wafers"):
        estimate(replace(spec, pipelines=(PipelineSpec("p", ("llama3.1-405b",), 1),),
                         users=(replace(spec.users[0], model="llama3.1-405b"),)))


def test_two_hundred_points_of_a_small_space():
    """A sweep's worth of estimates: every one complete and finite (how fast is the
    benchmark's business: `python -m scenarios.bench_analytic`)."""
    keys = ("tokens_per_s_per_user", "aggregate_tokens_per_s", "ttft_ms_p50", "tpot_ms_p50", "sim_time_s")
    n = 0
    for model, wafers in ((L8, 1), (L8, 2), (L70, 4), (L8, 4), (L70, 8)):
        for users in (1, 4, 16, 64, 256):
            for think in (0.0, 0.1):
                for replicas in (1, 2, 3, 4):
                    out = estimate(GridPoint("p", model, wafers, (), replicas, users, 4, think).spec())
                    assert all(math.isfinite(out[k]) and out[k] > 0 for k in keys), out
                    n += 1
    assert n == 200


def test_fleet_command_analytic_writes_no_trace(tmp_path):
    trace = tmp_path / "fleet.arrow"
    out = run_json("run", "fleet", "--fidelity", "analytic", "--replicas", "4", "--trace", str(trace))
    assert out["fidelity"] == "analytic" and out["requests_completed"] > 0 and out["bound"]
    assert not trace.exists()


def test_pipeline_command_analytic_prints_the_summary_and_its_bound():
    text = run_cli("run", "llama70b_four_wafers", "--fidelity", "analytic", "--users", "8").stdout
    assert "tokens_per_s_per_user" in text and "fidelity                 analytic" in text
    assert "bound                    token loop" in text  # the WAN dominates a token's loop
    slow = run_json("run", "llama8b_one_wafer", "--fidelity", "analytic", "--users", "1",
                    "--spec", f"clock_hz={WSE3.clock_hz / 2}")
    fast = run_json("run", "llama8b_one_wafer", "--fidelity", "analytic", "--users", "1")
    assert slow["tokens_per_s_per_user"] < fast["tokens_per_s_per_user"]


def test_validate_analytic_prints_every_row_with_its_error_and_reason():
    proc = run_cli("validate", "--analytic", "--json")
    rows = json.loads(proc.stdout.strip().splitlines()[-1])["rows"]
    assert len(rows) >= 12
    assert {r["users"] for r in rows} >= {1, 8, 32, 96} and {r["replicas"] for r in rows} >= {1, 2, 4}
    for r in rows:
        over = max(abs(r["speed_error_pct"]), abs(r["aggregate_error_pct"])) > THRESHOLD_PCT
        assert (r["reason"] is not None) == over, r
        assert r["event_tokens_per_s_per_user"] > 0 and r["analytic_tokens_per_s_per_user"] > 0
        assert r["point"] in proc.stdout
