"""Tiny logical processes for engine tests: a timed source, an echo and a stuck LP, each
a few lines of the Component protocol (cluster/engine/graph.py), and a harness that runs
a hand-built graph through the real Engine, Partition and in-process backend."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import simpy

from cluster.engine.backends.inprocess import InProcessBackend
from cluster.engine.graph import Graph, LPSpec
from cluster.engine.messages import Channel, Message
from cluster.engine.rounds import Engine, RunStats
from cluster.results.trace import TraceVocab

NEVER_REACTS_PS = 10**15  # transit of an LP that never sends because of an input


class Source:
    """Sends one message at each of `times_ps` (a timer each). `horizon_lie_ps` makes it
    report its next send that much later than it is (a broken promise), until its clock
    reaches `lie_until_ps` (None: always); `ticks_ps` are timers that send nothing."""

    def __init__(self, env: simpy.Environment, send, times_ps: tuple[int, ...], transit_ps: int,
                 horizon_lie_ps: int, lie_until_ps: int | None, ticks_ps: tuple[int, ...]) -> None:
        self.env, self._send, self._times = env, send, deque(times_ps)
        self.transit_ps, self._lie_ps, self._lie_until_ps = transit_ps, horizon_lie_ps, lie_until_ps
        self.received: list[tuple[int, Message]] = []
        env.process(self._run())
        for tick in ticks_ps:
            env.timeout(tick)

    def _run(self):
        while self._times:
            if self._times[0] > self.env.now:
                yield self.env.timeout(self._times[0] - self.env.now)
            self._send(("emit", self._times.popleft()), self.env.now, 1)

    def on_message(self, msg: Message) -> None:
        self.received.append((self.env.now, msg))

    def horizon_ps(self) -> int | None:
        if not self._times:
            return None
        lying = self._lie_until_ps is None or self.env.now < self._lie_until_ps
        return self._times[0] + (self._lie_ps if lying else 0)

    def finish(self, end_ps: int) -> None:
        pass


class Echo:
    """Answers every message `delay_ps` after it arrives, sent at entry (the send carries
    the future time), up to `limit` answers; declares `transit_ps`, honestly or not."""

    def __init__(self, env: simpy.Environment, send, delay_ps: int, transit_ps: int, limit: int) -> None:
        self.env, self._send, self._delay_ps, self.transit_ps = env, send, delay_ps, transit_ps
        self._left = limit
        self.received: list[tuple[int, Message]] = []

    def on_message(self, msg: Message) -> None:
        self.received.append((self.env.now, msg))
        if self._left:
            self._left -= 1
            self._send(("echo", msg.payload), self.env.now + self._delay_ps, 1)

    def horizon_ps(self) -> int | None:
        return None  # it sends only because of an input

    def finish(self, end_ps: int) -> None:
        pass


class Stuck:
    """Never sends, but reports a horizon frozen at `horizon_ps`: a stale promise."""

    def __init__(self, horizon_ps: int) -> None:
        self.transit_ps, self._horizon_ps = 0, horizon_ps
        self.received: list[tuple[int, Message]] = []

    def on_message(self, msg: Message) -> None:
        self.received.append((0, msg))

    def horizon_ps(self) -> int | None:
        return self._horizon_ps

    def finish(self, end_ps: int) -> None:
        pass


@dataclass(frozen=True)
class SourceConfig:
    times_ps: tuple[int, ...]
    transit_ps: int = NEVER_REACTS_PS
    horizon_lie_ps: int = 0
    lie_until_ps: int | None = None
    ticks_ps: tuple[int, ...] = ()

    def build(self, env, send, tracer) -> Source:
        return Source(env, send, self.times_ps, self.transit_ps, self.horizon_lie_ps, self.lie_until_ps,
                      self.ticks_ps)


@dataclass(frozen=True)
class EchoConfig:
    delay_ps: int
    transit_ps: int
    limit: int = 1 << 30

    def build(self, env, send, tracer) -> Echo:
        return Echo(env, send, self.delay_ps, self.transit_ps, self.limit)


@dataclass(frozen=True)
class StuckConfig:
    horizon_ps: int

    def build(self, env, send, tracer) -> Stuck:
        return Stuck(self.horizon_ps)


def lp(name: str, config, transit_ps: int | None = None) -> LPSpec:
    """An LPSpec whose declared transit is the component's own unless given."""
    return LPSpec(name, "site", config, getattr(config, "transit_ps", 0) if transit_ps is None else transit_ps)


class _Sink:
    """Stands in for the trace writer: these LPs trace nothing."""

    def add(self, lp: str, batch) -> None:
        pass

    def add_requests(self, batch) -> None:
        pass

    def add_tokens(self, batch) -> None:
        pass


def run(lps: list[LPSpec], channels: list[Channel], groups: list[list[str]],
        max_window_ps: int | None = None) -> tuple[RunStats, dict]:
    """Run the graph in process; return the stats and each LP's component (what it received)."""
    graph = Graph(tuple(lps), tuple(channels))
    vocab = TraceVocab(tuple(sorted(x.name for x in lps)), ("site",), ())
    sink = _Sink()
    backend = InProcessBackend(graph, groups, vocab, sink)
    stats = Engine(graph, groups, backend, sink, max_window_ps).run()
    components = {name: c for part in backend.partitions for name, c in part._components.items()}
    return stats, components
