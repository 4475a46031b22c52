"""Conservative synchronization: how far each partition may safely run (DESIGN.md).

EOT[u], the earliest time LP u can still put a message on its output channel, is
min(horizon[u], arrival of a message in flight to u + transit[u],
EIT[u] + transit[u]), where EIT[w] = min over channels v->w of EOT[v] + latency(v->w).
That is a shortest-path fixpoint, solved with Dijkstra from the horizons and the
in-flight messages. A partition may run to the earliest EIT over the channels that
enter it from another partition.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from cluster.engine.graph import Graph

INF = float("inf")


@dataclass(frozen=True)
class SyncGraph:
    """The parts of the graph the window computation needs, indexed once."""

    transit_ps: dict[str, int]
    edges: dict[str, list[tuple[str, int]]]  # src -> [(dst, latency)]
    inputs: list[list[tuple[str, int]]]  # per partition: cross channels (src, latency) into it

    @classmethod
    def build(cls, graph: Graph, partition_of: dict[str, int], n_partitions: int) -> SyncGraph:
        edges: dict[str, list[tuple[str, int]]] = {lp.name: [] for lp in graph.lps}
        inputs: list[list[tuple[str, int]]] = [[] for _ in range(n_partitions)]
        for ch in graph.channels:
            edges[ch.src].append((ch.dst, ch.latency_ps))
            if partition_of[ch.src] != partition_of[ch.dst]:
                inputs[partition_of[ch.dst]].append((ch.src, ch.latency_ps))
        return cls({lp.name: lp.transit_ps for lp in graph.lps}, edges, inputs)


def earliest_output_times(sync: SyncGraph, horizons_ps: dict[str, int | None],
                          in_flight_ps: dict[str, int]) -> dict[str, float]:
    """EOT per LP: Dijkstra over edges weighted latency(u->w) + transit[w]."""
    eot: dict[str, float] = {}
    heap: list[tuple[float, str]] = []
    for name, transit in sync.transit_ps.items():
        t = horizons_ps.get(name)
        best = INF if t is None else t
        arrival = in_flight_ps.get(name)
        if arrival is not None and arrival + transit < best:
            best = arrival + transit
        eot[name] = best
        if best < INF:
            heap.append((best, name))
    heapq.heapify(heap)
    done = set()
    while heap:
        t, name = heapq.heappop(heap)
        if name in done:
            continue
        done.add(name)
        for dst, latency in sync.edges[name]:
            candidate = t + latency + sync.transit_ps[dst]
            if candidate < eot[dst]:
                eot[dst] = candidate
                heapq.heappush(heap, (candidate, dst))
    return eot


def safe_until_ps(sync: SyncGraph, eot: dict[str, float]) -> list[float]:
    """Per partition: no message from another partition can arrive before this time."""
    return [min((eot[src] + latency for src, latency in inputs), default=INF) for inputs in sync.inputs]


def bounding_input(sync: SyncGraph, eot: dict[str, float], partition: int) -> str | None:
    """The LP whose promise sets `partition`'s window (None: nothing bounds it). For error
    messages: what a stalled run is waiting on."""
    best, name = INF, None
    for src, latency in sync.inputs[partition]:
        if eot[src] + latency < best:
            best, name = eot[src] + latency, src
    return name
