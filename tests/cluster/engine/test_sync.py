"""The windows of conservative synchronization (cluster/engine/sync.py), on hand-built
graphs, against hand arithmetic: EOT[u] = min(horizon[u], in-flight arrival at u +
transit[u], EOT[v] + latency(v->u) + transit[u]), and a partition's window is the
least EOT[src] + latency over the channels entering it from another partition."""

from __future__ import annotations

import pytest

from cluster.engine.graph import Graph, LPSpec
from cluster.engine.messages import Channel
from cluster.engine.sync import INF, SyncGraph, bounding_input, earliest_output_times, safe_until_ps


def graph(transits: dict[str, int], channels: list[tuple[str, str, int]]) -> Graph:
    return Graph(tuple(LPSpec(name, "site", None, t) for name, t in transits.items()),
                 tuple(Channel(src, dst, lat, port=f"to-{dst}") for src, dst, lat in channels))


def windows(g: Graph, partition_of: dict[str, int], horizons: dict, in_flight: dict) -> tuple[dict, list]:
    sync = SyncGraph.build(g, partition_of, max(partition_of.values()) + 1)
    eot = earliest_output_times(sync, horizons, in_flight)
    return eot, safe_until_ps(sync, eot)


def test_fan_out_adds_each_channel_latency_and_each_receiver_transit():
    """S fans out to X, Y (one partition) and Z (another): each EOT is S's horizon plus
    the channel and the receiver's transit; X's own, earlier horizon wins over that."""
    g = graph({"S": 4, "X": 3, "Y": 0, "Z": 2}, [("S", "X", 5), ("S", "Y", 7), ("S", "Z", 11)])
    parts = {"S": 0, "X": 1, "Y": 1, "Z": 2}
    eot, until = windows(g, parts, {"S": 100}, {})
    assert eot == {"S": 100, "X": 108, "Y": 107, "Z": 113}
    assert until == [INF, 105, 111]  # S has no input: nothing bounds partition 0
    eot, until = windows(g, parts, {"S": 100, "X": 90}, {})
    assert eot["X"] == 90
    assert until == [INF, 105, 111]  # X sends to no one: its horizon bounds no window


def test_a_cycle_takes_the_least_of_horizon_in_flight_and_the_way_round():
    """A -> B -> C -> A (latencies 10, 20, 30; transits 1, 2, 3), one LP per partition."""
    g = graph({"A": 1, "B": 2, "C": 3}, [("A", "B", 10), ("B", "C", 20), ("C", "A", 30)])
    parts = {"A": 0, "B": 1, "C": 2}
    # A's horizon 50 reaches B at 50+10+2 = 62; C has a message landing at 40: 40+3 = 43,
    # sooner than 62+20+3 = 85; back at A, 43+30+1 = 74 loses to A's own 50.
    eot, until = windows(g, parts, {"A": 50}, {"C": 40})
    assert eot == {"A": 50, "B": 62, "C": 43}
    assert until == [43 + 30, 50 + 10, 62 + 20]
    # A message landing at A at 5 makes A's promise 5+1 = 6, and everything after it moves:
    # B 6+10+2 = 18, C min(43, 18+20+3 = 41) = 41.
    eot, until = windows(g, parts, {"A": 50}, {"C": 40, "A": 5})
    assert eot == {"A": 6, "B": 18, "C": 41}
    assert until == [41 + 30, 6 + 10, 18 + 20]


def test_the_shorter_way_round_wins():
    """A reaches C directly (latency 100) or through B (10 + transit 5 + 10): Dijkstra
    takes 25, not 100."""
    g = graph({"A": 0, "B": 5, "C": 1}, [("A", "C", 100), ("A", "B", 10), ("B", "C", 10)])
    eot, until = windows(g, {"A": 0, "B": 0, "C": 1}, {"A": 1000}, {})
    assert eot == {"A": 1000, "B": 1015, "C": 1026}
    assert until == [INF, 1015 + 10]  # both channels into C's partition count; B's is sooner


def test_channels_inside_a_partition_bound_no_window():
    """A -> B inside partition 0 (latency 1): only C -> A, from partition 1, bounds it."""
    g = graph({"A": 0, "B": 0, "C": 0}, [("A", "B", 1), ("B", "C", 1), ("C", "A", 7)])
    eot, until = windows(g, {"A": 0, "B": 0, "C": 1}, {"A": 10}, {})
    assert eot == {"A": 10, "B": 11, "C": 12}
    assert until == [12 + 7, 11 + 1]


def test_nothing_pending_means_no_bound():
    g = graph({"A": 3, "B": 3}, [("A", "B", 10), ("B", "A", 10)])
    eot, until = windows(g, {"A": 0, "B": 1}, {"A": None, "B": None}, {})
    assert eot == {"A": INF, "B": INF}
    assert until == [INF, INF]


def test_a_message_in_flight_alone_bounds_the_cycle():
    """No horizon anywhere, one message landing at B at 7: B 7+3 = 10, A 10+10+3 = 23."""
    g = graph({"A": 3, "B": 3}, [("A", "B", 10), ("B", "A", 10)])
    eot, until = windows(g, {"A": 0, "B": 1}, {}, {"B": 7})
    assert eot == {"A": 23, "B": 10}
    assert until == [20, 33]


def test_bounding_input_names_the_promise_a_window_waits_on():
    g = graph({"A": 1, "B": 2, "C": 3}, [("A", "C", 10), ("B", "C", 1)])
    parts = {"A": 0, "B": 0, "C": 1}
    sync = SyncGraph.build(g, parts, 2)
    eot = earliest_output_times(sync, {"A": 5, "B": 20}, {})
    assert bounding_input(sync, eot, 1) == "A"  # 5 + 10 = 15 < 20 + 1 = 21
    assert bounding_input(sync, eot, 0) is None


@pytest.mark.parametrize("channels", [
    [("A", "B", 0), ("B", "A", 0)],
    [("A", "A", 0)],
    [("A", "B", 0), ("B", "C", 0), ("C", "A", 0), ("A", "D", 5)],
])
def test_a_cycle_of_zero_lookahead_is_refused_when_the_graph_is_built(channels):
    """Zero latency and zero transit all the way round: no window could ever open, so the
    graph refuses it, naming the cycle."""
    with pytest.raises(ValueError, match=r"zero-lookahead cycle A -> .*A"):
        graph({"A": 0, "B": 0, "C": 0, "D": 0}, channels)


def test_zero_latency_is_fine_where_a_transit_carries_the_cycle():
    """The same zero-latency ring, but B needs 1 ps to answer: accepted, and the window
    arithmetic carries that 1 ps round."""
    g = graph({"A": 0, "B": 1}, [("A", "B", 0), ("B", "A", 0)])
    eot, until = windows(g, {"A": 0, "B": 1}, {"A": 40}, {})
    assert eot == {"A": 40, "B": 41}
    assert until == [41, 40]
