"""Links serialize, propagate and queue FIFO; WAN latency follows the fibre."""

import random

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
    spans = [(KINDS[tracer.templates[t][0]], s, e) for s, e, t, _, _ in tracer.spans()]
    assert spans == [("link", 0, 1_000_000), ("flight", 1_000_000, 2_000_000),
                     ("queue", 0, 1_000_000), ("link", 1_000_000, 2_000_000), ("flight", 2_000_000, 3_000_000)]


def transfers(spec: LinkSpec, sizes_and_times: list[tuple[int, int]]) -> tuple[Tracer, list[int]]:
    """A link fed transfers of (size, send time); its tracer and each transfer's arrival."""
    env, tracer, arrivals = simpy.Environment(), Tracer(), []
    link = Link(env, spec, lambda p, t, size: arrivals.append(t), tracer)

    def feed():
        for i, (size, at) in enumerate(sizes_and_times):
            yield env.timeout(at - env.now)
            link.receive(i, size, request_id=i, token=0, phase="decode")

    env.process(feed())
    env.run()
    return tracer, arrivals


def test_busy_and_flight_tile_each_transfer_and_busy_is_serialization():
    """Per transfer: "link" is [start, start + serialization), "flight" follows it up to
    the arrival; a queue span, if any, ends where the wire starts on it."""
    spec = LinkSpec(lanes=2, lane_bits_per_s=100e9, latency_ps=7_000_000)
    rng = random.Random(5)
    sends, t = [], 0
    for _ in range(200):
        t += rng.choice([0, 10, 1_000, 50_000, 2_000_000])
        sends.append((rng.choice([1, 64, 8192, 16384, 1 << 20]), t))
    tracer, arrivals = transfers(spec, sends)
    by_transfer: dict[int, dict[str, tuple[int, int]]] = {}
    for s, e, tid, rid, _ in tracer.spans():
        kind = KINDS[tracer.templates[tid][0]]
        assert kind not in by_transfer.setdefault(rid, {})
        by_transfer[rid][kind] = (s, e)
    wire = []
    for i, (size, sent) in enumerate(sends):
        spans = by_transfer[i]
        (b0, b1), (f0, f1) = spans["link"], spans["flight"]
        assert b1 - b0 == spec.serialization_ps(size)
        assert (b1, f1) == (f0, arrivals[i]) and f1 - f0 == spec.latency_ps
        assert spans.get("queue", (sent, b0)) == (sent, b0) and b0 >= sent
        wire.append((b0, b1))
    assert all(a1 <= b0 for (_, a1), (b0, _) in zip(wire, wire[1:]))  # the wire serves one at a time


def test_zero_latency_link_traces_no_flight():
    tracer, arrivals = transfers(LinkSpec(1, 8e9, 0), [(1000, 0)])
    assert [(KINDS[tracer.templates[t][0]], s, e) for s, e, t, _, _ in tracer.spans()] == [("link", 0, 1_000_000)]
    assert arrivals == [1_000_000]


def test_doubling_bandwidth_never_slows_a_transfer():
    slow = CS3_LINK.serialization_ps(16384)
    fast = LinkSpec(CS3_LINK.lanes * 2, CS3_LINK.lane_bits_per_s, CS3_LINK.latency_ps).serialization_ps(16384)
    assert fast <= slow / 2 + 1


def test_cs3_link_is_1_2_tbps():
    assert CS3_LINK.bits_per_s == pytest.approx(1.2e12)
