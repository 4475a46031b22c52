"""The engine: rounds of conservative synchronization over partitions, on any backend.

Each round: compute every partition's safe time (cluster.engine.sync), advance the partitions
that have something to do before it (in parallel, on Ray), route their outboxes. Only
the engine owns time; partitions only ever see `advance(until, inbox)`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from cluster.engine.graph import Graph
from cluster.engine.messages import Message, StepResult
from cluster.engine.sync import INF, SyncGraph, bounding_input, earliest_output_times, safe_until_ps
from common.errors import CausalityError, ConservationError, SimError


class Backend(Protocol):
    """Runs partitions somewhere: in this process, or in Ray actors."""

    def advance(self, calls: dict[int, tuple[float, list[Message]]]) -> dict[int, StepResult]: ...
    def finish(self, end_ps: int) -> dict[int, StepResult]: ...


@dataclass
class RunStats:
    rounds: int = 0
    events: int = 0
    messages: int = 0
    delivered: int = 0
    end_ps: int = 0
    sync_wall_s: float = 0.0  # computing windows and routing
    round_wall_ms: list[float] = field(default_factory=list)


class Engine:
    def __init__(self, graph: Graph, groups: list[list[str]], backend: Backend,
                 trace_sink, max_window_ps: int | None = None) -> None:
        if max_window_ps is not None and max_window_ps <= 0:
            raise ValueError(f"max_window_ps: must be > 0, got {max_window_ps}")
        self.groups = groups
        self.partition_of = {name: i for i, group in enumerate(groups) for name in group}
        self.sync = SyncGraph.build(graph, self.partition_of, len(groups))
        self.backend, self.sink, self.max_window_ps = backend, trace_sink, max_window_ps
        self.stats = RunStats()
        self.problems: list[str] = []
        self.activity: dict[str, dict] = {}  # per LP, at the end: what its device did (energy)

    def _absorb(self, results: dict[int, StepResult], state: dict) -> list[Message]:
        outbox: list[Message] = []
        for p, result in sorted(results.items()):
            if result.now_ps < state["now"][p]:  # simulated time only runs forward
                raise CausalityError(f"{self._label(p)}: simulated time went back from {state['now'][p]} ps "
                                     f"to {result.now_ps} ps")
            state["next"][p] = result.next_event_ps
            state["timer"][p] = result.next_timer_ps
            state["horizons"].update(result.horizons_ps)
            state["now"][p] = result.now_ps
            for lp, batch in result.trace:
                self.sink.add(lp, batch)
            for batch in result.requests:
                self.sink.add_requests(batch)
            for batch in result.tokens:
                self.sink.add_tokens(batch)
            self.stats.events += result.events
            self.stats.messages += result.messages
            self.stats.delivered += result.delivered
            self.problems += result.problems
            self.activity.update(result.activity)
            outbox += result.outbox
        return outbox

    def run(self, progress: Callable[[int, int], None] | None = None) -> RunStats:
        """Rounds until nothing is left to do; `progress` is told (simulated now, events)
        after each round."""
        n = len(self.groups)
        state = {"next": [None] * n, "timer": [None] * n, "horizons": {}, "now": [0] * n}
        reached = [0.0] * n  # every partition has run all events strictly before this
        pending: dict[int, list[Message]] = defaultdict(list)
        # The first call runs what is due at t=0 (timers): what it sends is routed like any round's.
        for msg in self._absorb(self.backend.advance({p: (0, []) for p in range(n)}), state):
            pending[self.partition_of[msg.dst]].append(msg)
        while True:
            t0 = time.perf_counter()
            in_flight: dict[str, int] = {}
            for msgs in pending.values():
                for m in msgs:
                    if m.dst not in in_flight or m.arrive_ps < in_flight[m.dst]:
                        in_flight[m.dst] = m.arrive_ps
            earliest = min([t for t in state["next"] if t is not None]
                           + [m.arrive_ps for msgs in pending.values() for m in msgs], default=None)
            if earliest is None:
                break
            # EOT at the round's start is each LP's promise: nothing it sends this round leaves earlier.
            eot = earliest_output_times(self.sync, state["horizons"], in_flight) if n > 1 else {}
            until = safe_until_ps(self.sync, eot) if n > 1 else [INF]
            if self.max_window_ps is not None:
                until = [min(u, earliest + self.max_window_ps) for u in until]
            calls = {}
            for p in range(n):
                nxt, timer = state["next"][p], state["timer"][p]
                first_msg = min((m.arrive_ps for m in pending.get(p, ())), default=INF)
                if (nxt is not None and nxt < until[p]) or first_msg < until[p] or \
                        (timer is not None and timer <= until[p]):
                    calls[p] = (until[p], pending.pop(p, []))
            if not calls:
                raise SimError(f"engine: no partition can advance at {earliest} ps (windows {until}; "
                               f"{self._bounds(eot)})")
            self.stats.sync_wall_s += time.perf_counter() - t0
            results = self.backend.advance(calls)
            if not any(r.events for r in results.values()):
                raise SimError(f"engine: no progress at {earliest} ps: partitions {sorted(calls)} were due but ran "
                               f"nothing (an event beyond the simulated clock's end?)")
            t1 = time.perf_counter()
            for p, (u, _) in calls.items():
                if results[p].now_ps > u:
                    raise CausalityError(f"{self._label(p)}: ran to {results[p].now_ps} ps, past its window "
                                         f"{u} ps")
                reached[p] = max(reached[p], u)  # a window may shrink; what has run stays run
            for msg in self._absorb(results, state):
                if msg.send_ps < eot[msg.src]:  # only cross-partition messages come through here
                    raise CausalityError(f"{msg.src}: sent to {msg.dst} at {msg.send_ps} ps, before its promise "
                                         f"of {_ps(eot[msg.src])} (its horizon_ps or transit_ps is wrong)")
                dst = self.partition_of[msg.dst]
                if msg.arrive_ps < reached[dst]:
                    raise CausalityError(f"{msg.src} -> {msg.dst}: message arrives at {msg.arrive_ps} ps, but "
                                         f"{msg.dst} has already run to {reached[dst]} ps (lookahead broken)")
                pending[dst].append(msg)
            self.stats.rounds += 1
            if progress is not None:
                progress(max(state["now"]), sum(r.events for r in results.values()))
            self.stats.sync_wall_s += time.perf_counter() - t1
            self.stats.round_wall_ms.append((time.perf_counter() - t0) * 1e3)
        self.stats.end_ps = max(state["now"])
        self._absorb(self.backend.finish(self.stats.end_ps), state)
        self._check_conservation()
        return self.stats

    def _label(self, p: int) -> str:
        """A partition named by its LPs (the first few)."""
        group = self.groups[p]
        return f"partition {p} ({'+'.join(group[:4])}{'+...' if len(group) > 4 else ''})"

    def _bounds(self, eot: dict[str, float]) -> str:
        """Which LP's promise sets each finite window: what a stalled run waits on."""
        out = []
        for p in range(len(self.groups)):
            src = bounding_input(self.sync, eot, p) if eot else None
            if src is not None:
                out.append(f"{self._label(p)} waits on {src} (promise {_ps(eot[src])})")
        return "; ".join(out) or "no promise bounds them"

    def _check_conservation(self) -> None:
        """Every message sent was received, and every LP's own books balance (a request
        answered with exactly its tokens, no KV cache left reserved): else the run fails."""
        problems = list(self.problems)
        if self.stats.messages != self.stats.delivered:
            problems.insert(0, f"{self.stats.messages} messages sent, {self.stats.delivered} received")
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise ConservationError(f"conservation: {'; '.join(problems[:3])}{more}")


def _ps(t: float) -> str:
    """A time for an error message: "never" for a promise of no send at all."""
    return "never" if t == INF else f"{int(t)} ps"
