"""A partition: several LPs sharing one SimPy environment (SST's rank, DESIGN.md's
"group by site"). Messages between its own LPs are scheduled straight into the shared
environment (as events in the partition's mail heap, run in one order with SimPy's
queue); messages to other partitions leave through the outbox, and the engine brings
theirs in through `advance`.

Why one environment per group and not per LP: the result is the same (see
`_delivery_priority`) and a message inside a group costs one SimPy event, not one
engine round. The in-process backend runs the whole graph as a single partition.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

import simpy

from cluster.engine.graph import Component, Graph
from cluster.engine.messages import Message, StepResult
from cluster.results.trace import RowEncoder, Tracer, TraceVocab
from common.errors import CausalityError

FLUSH_ROWS = 65_536  # rows buffered per partition before they become record batches
_CHECK_EVERY = 4096  # events between buffer checks
_MESSAGE_PRIORITY_BASE = 2  # above simpy's URGENT (0) and NORMAL (1)
_INF = float("inf")
_NEVER_PS = 1 << 62  # later than any simulated time (about 53 days in ps)


def _delivery_priority(src_index: int, seq: int) -> int:
    """SimPy breaks ties at equal times by (priority, insertion order). Insertion order
    depends on when a message was injected (which round, which process), so every message
    gets a priority of its own, ordered by (sender, seq): the same in any grouping."""
    return _MESSAGE_PRIORITY_BASE + (src_index << 40) + seq


class Partition:
    """Runs `lp_names` of `graph`; `advance` is DESIGN.md's stepping call."""

    def __init__(self, graph: Graph, lp_names: list[str], vocab: TraceVocab,
                 trace_sink: Callable[[str, Any], None] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self.env = env = simpy.Environment(initial_time=0)
        self._progress = progress  # told (now, events) every few thousand events
        self.events = 0
        specs = graph.lp
        self._names = list(lp_names)
        self._index = {name: i for i, name in enumerate(sorted(specs))}  # global, grouping-free
        local = set(lp_names)
        self._outbox: list[Message] = []
        # Messages in flight wait here, not in SimPy's queue: most are far off (a WAN hop
        # takes ms, a layer us), and every Timeout pushed past them into one heap pays
        # their sift. Entries are SimPy's (time, priority, id, event): one total order.
        self._mail: list[tuple] = []
        self._sink = trace_sink
        self._tracers: dict[str, Tracer] = {}
        self._encoders: dict[str, RowEncoder] = {}
        self._components: dict[str, Component] = {}
        self._deliver: dict[str, Callable[[simpy.Event], None]] = {}
        # Pending deliveries per LP, so a horizon also covers what is already on its way in.
        self._incoming: dict[str, list[int]] = {name: [] for name in lp_names}
        self._exports = any(ch.src in local and ch.dst not in local for ch in graph.channels)
        self.messages = 0
        self.delivered = 0
        for name in lp_names:
            spec = specs[name]
            tracer = self._tracers[name] = Tracer(vocab)
            self._encoders[name] = RowEncoder(vocab, name, spec.datacenter, tracer)
            seq = itertools.count()  # one per LP, shared by its ports: (src, seq) stays unique
            ports = {port: self._outlet(name, ch.dst, ch.latency_ps, ch.dst in local, seq)
                     for port, ch in sorted(graph.out_channels(name).items())}
            send = ports.get("out") or _no_output(name)
            if set(ports) - {"out"}:
                self._components[name] = spec.config.build(env, send, tracer, ports=ports)
            else:
                self._components[name] = spec.config.build(env, send, tracer)
        for name, component in self._components.items():
            self._deliver[name] = self._make_delivery(name, component)

    # -- messages ----------------------------------------------------------------------
    def _outlet(self, src: str, dst: str, latency_ps: int, local: bool,
                seq: itertools.count) -> Callable[[Any, int, int], None]:
        env, eid, mail = self.env, self.env._eid, self._mail
        outbox, deliver_to, incoming = self._outbox, self._deliver, self._incoming.get(dst)
        priority = _delivery_priority(self._index[src], 0)
        track, new_message = self._exports, tuple.__new__

        def send(payload: Any, send_ps: int, size_bytes: int) -> None:
            if send_ps < env._now:
                raise CausalityError(f"{src}: send at {send_ps} ps is before now {env._now} ps")
            n = next(seq)
            arrive_ps = send_ps + latency_ps
            # tuple.__new__: a NamedTuple's own __new__ is a Python function, a frame per message
            msg = new_message(Message, (src, dst, send_ps, arrive_ps, n, "pass", payload, size_bytes))
            self.messages += 1
            if not local:
                outbox.append(msg)
                return
            # _schedule, inlined: a message inside the partition never arrives in the past
            if track:
                heapq.heappush(incoming, arrive_ps)
            heapq.heappush(mail, (arrive_ps, priority + n, next(eid), _Delivery(env, msg, deliver_to[dst])))
        return send

    def _make_delivery(self, name: str, component: Component) -> Callable[[simpy.Event], None]:
        incoming, on_message = self._incoming[name], component.on_message
        track = self._exports

        def deliver(event: simpy.Event) -> None:
            heapq.heappop(incoming)
            self.delivered += 1
            on_message(event._value)

        def deliver_untracked(event: simpy.Event) -> None:
            self.delivered += 1
            on_message(event._value)
        return deliver if track else deliver_untracked

    def _schedule(self, msg: Message) -> None:
        env = self.env
        if msg.arrive_ps < env._now:
            raise CausalityError(f"{msg.src} -> {msg.dst}: message arrives at {msg.arrive_ps} ps, "
                                 f"in the past of {msg.dst} (now {env._now} ps)")
        if self._exports:
            heapq.heappush(self._incoming[msg.dst], msg.arrive_ps)
        event = _Delivery(env, msg, self._deliver[msg.dst])
        heapq.heappush(self._mail, (msg.arrive_ps, _delivery_priority(self._index[msg.src], msg.seq),
                                    next(env._eid), event))

    # -- stepping ----------------------------------------------------------------------
    def advance(self, until_ps: float, inbox: list[Message]) -> StepResult:
        """Take `inbox`, run every event strictly before `until_ps` and the timers at it
        (not the deliveries), report."""
        for msg in sorted(inbox, key=Message.order_key):
            self._schedule(msg)
        batches: list[tuple[str, Any]] = []
        events = 0
        while True:
            done = self._run(until_ps, _CHECK_EVERY)  # check the trace buffers every so often
            events += done
            if self._progress is not None:
                self._progress(self.env._now, done)
            if self._buffered_rows() >= FLUSH_ROWS:  # small batches cost more than they save
                batches += self._drain()
            if done < _CHECK_EVERY:
                break
        self.events += events
        outbox, self._outbox[:] = list(self._outbox), []
        result = StepResult(outbox, self._next_event(), self._horizons(), self.env.now, batches,
                            events=events, messages=self.messages, delivered=self.delivered,
                            next_timer_ps=self._next_timer())
        self.messages = self.delivered = 0
        return result

    def _run(self, until_ps: float, limit: int) -> int:
        """Process up to `limit` events strictly before `until_ps`; return how many.

        `Environment.step` inlined (same order, same callbacks, same crash on a failed event
        nobody defused), over SimPy's queue and the mail heap merged: the loop around a
        step() call costs about a tenth of a SimPy event, and the partition owns this
        loop, not SimPy's `run`."""
        env, queue, mail, pop = self.env, self.env._queue, self._mail, heapq.heappop
        if until_ps == _INF:
            until_ps = _NEVER_PS  # int against int: comparing an int with a float is the slow path
        for done in range(limit):
            heap = mail if mail and (not queue or mail[0] < queue[0]) else queue
            # A message may still arrive at `until_ps`, but deliveries (priority >= 2) come
            # after every timer (URGENT, NORMAL) at one instant: the timers at `until_ps` are
            # safe. That is what lets a wafer send at its horizon to an LP that answers at
            # once over a zero-latency channel (a one-stage replica and its frontend).
            if not heap or heap[0][0] > until_ps or (heap[0][0] == until_ps and heap[0][1] >= _MESSAGE_PRIORITY_BASE):
                return done
            env._now, _, _, event = pop(heap)
            callbacks, event.callbacks = event.callbacks, None
            for callback in callbacks:
                callback(event)
            if not event._ok and not hasattr(event, "_defused"):
                exc = type(event._value)(*event._value.args)
                exc.__cause__ = event._value
                raise exc
        return limit

    def finish(self, end_ps: int) -> StepResult:
        """Let every LP trace what it held to the end; collect the requests table."""
        requests, tokens = [], []
        for component in self._components.values():
            component.finish(end_ps)
            for tables, method in ((requests, "requests_batch"), (tokens, "tokens_batch")):
                table = getattr(component, method, lambda: None)()
                if table is not None:
                    tables.append(table)
        problems = [f"{name}: {p}" for name, c in self._components.items() for p in getattr(c, "conservation", list)()]
        activity = {name: c.activity() for name, c in self._components.items() if hasattr(c, "activity")}
        return StepResult([], self._next_event(), {}, self.env.now, self._drain(final=True), requests, tokens,
                          messages=self.messages, delivered=self.delivered, problems=problems, activity=activity)

    def _next_timer(self) -> int | None:
        """The next event that may run at a window's edge: a timer, not a delivery (nor an
        event a model put after deliveries, priority >= 2)."""
        queue = self.env._queue
        return queue[0][0] if queue and queue[0][1] < _MESSAGE_PRIORITY_BASE else None

    def _next_event(self) -> int | None:
        heads = [heap[0][0] for heap in (self.env._queue, self._mail) if heap]
        return min(heads) if heads else None

    def _horizons(self) -> dict[str, int | None]:
        if not self._exports:
            return {}
        out = {}
        for name, component in self._components.items():
            h = component.horizon_ps()
            incoming = self._incoming[name]
            if incoming:
                h2 = incoming[0] + component.transit_ps
                h = h2 if h is None or h2 < h else h
            out[name] = h
        return out

    def _buffered_rows(self) -> int:
        """At most this many spans wait: a pass record holds many (an op-detail pass, hundreds)."""
        return sum(len(t.rows) * t.spans_per_row for t in self._tracers.values())

    def _drain(self, final: bool = False) -> list[tuple[str, Any]]:
        """Encode buffered rows as record batches; hand them to the sink or return them."""
        out = []
        for name, tracer in self._tracers.items():
            encoder = self._encoders[name]
            batches = encoder.encode() if tracer.rows else []
            if final:
                batches += encoder.flush()
            for batch in batches:
                if self._sink is not None:
                    self._sink(name, batch)
                else:
                    out.append((name, batch))
        return out


class _Delivery(simpy.Event):
    """A message on its way in: an event already triggered, processed at its arrival time.
    Built without Event.__init__'s generality: one per message adds up."""

    _ok = True  # class-level: what every delivery shares costs no per-instance store
    _defused = False

    def __init__(self, env: simpy.Environment, msg: Message, deliver: Callable[[simpy.Event], None]) -> None:
        self.env = env
        self.callbacks = [deliver]
        self._value = msg


def _no_output(name: str) -> Callable[[Any, int, int], None]:
    def send(payload: Any, send_ps: int, size_bytes: int) -> None:
        raise CausalityError(f"{name}: has no output channel")
    return send
