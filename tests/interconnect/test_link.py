"""Links serialize, propagate and queue FIFO; WAN latency follows the fibre."""

import pytest
import simpy

from cluster.results.trace import KINDS, Tracer
from interconnect import CS3_LINK, SITES, Link, LinkSpec, fibre_latency_ps, great_circle_km


def test_great_circle_distances_match_facts():
    """FACTS: Santa Clara-Stockton about 89 km, Santa Clara-Dallas about 2,338 km."""
    assert great_circle_km(SITES["santa-clara"], SITES["stockton"]) == pytest.approx(89, rel=0.02)
    assert great_circle_km(SITES["santa-clara"], SITES["dallas"]) == pytest.approx(2338, rel=0.01)


def test_fibre_latency_is_distance_times_route_times_speed():
    km = great_circle_km(SITES["santa-clara"], SITES["dallas"])
    assert fibre_latency_ps(SITES["santa-clara"], SITES["dallas"]) == pytest.approx(km * 1.3 * 4.9e6, rel=1e-6)
    assert fibre_latency_ps(SITES["dallas"], SITES["dallas"]) == 0


def test_transfer_is_serialization_plus_latency_and_queues_fifo():
    env = simpy.Environment()
    spec = LinkSpec(lanes=1, lane_bits_per_s=8e9, latency_ps=1_000_000)  # 1 byte per ns
    out, tracer = [], Tracer()
    link = Link(env, spec, lambda p, t, size: out.append((p, t)), tracer)
    link.receive("a", 1000)
    link.receive("b", 1000)
    assert out == [("a", 1_000_000 + 1_000_000), ("b", 2_000_000 + 1_000_000)]
    kinds = [KINDS[tracer.templates[row[2]][0]] for row in tracer.rows]
    assert kinds == ["link", "queue", "link"]


def test_doubling_bandwidth_never_slows_a_transfer():
    slow = CS3_LINK.serialization_ps(16384)
    fast = LinkSpec(CS3_LINK.lanes * 2, CS3_LINK.lane_bits_per_s, CS3_LINK.latency_ps).serialization_ps(16384)
    assert fast <= slow / 2 + 1


def test_cs3_link_is_1_2_tbps():
    assert CS3_LINK.bits_per_s == pytest.approx(1.2e12)
