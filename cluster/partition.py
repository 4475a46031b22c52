"""A partition: several LPs sharing one SimPy environment (SST's rank, DESIGN.md's
"group by site"). Messages between its own LPs are scheduled straight into the shared
environment; messages to other partitions leave through the outbox, and the engine
brings theirs in through `advance`.

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

from cluster.errors import CausalityError
from cluster.graph import Component, Graph
from cluster.messages import Message, StepResult
from cluster.trace import RowEncoder, Tracer, TraceVocab

FLUSH_ROWS = 65_536  # rows buffered per partition before they become record batches
_CHECK_EVERY = 4096  # events between buffer checks
_MESSAGE_PRIORITY_BASE = 2  # above simpy's URGENT (0) and NORMAL (1)


def _delivery_priority(src_index: int, seq: int) -> int:
    """SimPy breaks ties at equal times by (priority, insertion order). Insertion order
    depends on when a message was injected (which round, which process), so every message
    gets a priority of its own, ordered by (sender, seq): the same in any grouping."""
    return _MESSAGE_PRIORITY_BASE + (src_index << 40) + seq


class Partition:
    """Runs `lp_names` of `graph`; `advance` is DESIGN.md's stepping call."""

    def __init__(self, graph: Graph, lp_names: list[str], vocab: TraceVocab,
                 trace_sink: Callable[[str, Any], None] | None = None) -> None:
        self.env = env = simpy.Environment(initial_time=0)
        self.events = 0
        specs = graph.lp
        self._names = list(lp_names)
        self._index = {name: i for i, name in enumerate(sorted(specs))}  # global, grouping-free
        local = set(lp_names)
        self._outbox: list[Message] = []
        self._sink = trace_sink
        self._tracers: dict[str, Tracer] = {}
        self._encoders: dict[str, RowEncoder] = {}
        self._components: dict[str, Component] = {}
        self._deliver: dict[str, Callable[[simpy.Event], None]] = {}
        # Pending deliveries per LP, so a horizon also covers what is already on its way in.
        self._incoming: dict[str, list[int]] = {name: [] for name in lp_names}
        self._exports = any(ch.src in local and ch.dst not in local for ch in graph.channels)
        self.messages = 0
        for name in lp_names:
            spec = specs[name]
            tracer = self._tracers[name] = Tracer(vocab)
            self._encoders[name] = RowEncoder(vocab, name, spec.datacenter, tracer)
            channel = graph.out_channel(name)
            if channel is None:
                send = _no_output(name)
            else:
                send = self._outlet(name, channel.dst, channel.latency_ps, channel.dst in local)
            self._components[name] = spec.config.build(env, send, tracer)
        for name, component in self._components.items():
            self._deliver[name] = self._make_delivery(name, component)

    # -- messages ----------------------------------------------------------------------
    def _outlet(self, src: str, dst: str, latency_ps: int, local: bool) -> Callable[[Any, int, int], None]:
        env, seq = self.env, itertools.count()
        outbox = self._outbox

        schedule = self._schedule

        def send(payload: Any, send_ps: int, size_bytes: int) -> None:
            if send_ps < env._now:
                raise CausalityError(f"{src}: send at {send_ps} ps is before now {env._now} ps")
            msg = Message(src, dst, send_ps, send_ps + latency_ps, next(seq), "pass", payload, size_bytes)
            self.messages += 1
            if local:
                schedule(msg)
            else:
                outbox.append(msg)
        return send

    def _make_delivery(self, name: str, component: Component) -> Callable[[simpy.Event], None]:
        incoming, on_message = self._incoming[name], component.on_message
        track = self._exports

        def deliver(event: simpy.Event) -> None:
            if track:
                heapq.heappop(incoming)
            on_message(event._value)
        return deliver

    def _schedule(self, msg: Message) -> None:
        env = self.env
        if msg.arrive_ps < env._now:
            raise CausalityError(f"{msg.src} -> {msg.dst}: message arrives at {msg.arrive_ps} ps, "
                                 f"in the past of {msg.dst} (now {env._now} ps)")
        if self._exports:
            heapq.heappush(self._incoming[msg.dst], msg.arrive_ps)
        event = _Delivery(env, msg, self._deliver[msg.dst])
        heapq.heappush(env._queue, (msg.arrive_ps, _delivery_priority(self._index[msg.src], msg.seq),
                                    next(env._eid), event))

    # -- stepping ----------------------------------------------------------------------
    def advance(self, until_ps: float, inbox: list[Message]) -> StepResult:
        """Take `inbox`, run every event strictly before `until_ps`, report."""
        for msg in sorted(inbox, key=Message.order_key):
            self._schedule(msg)
        env, step, queue = self.env, self.env.step, self.env._queue  # the heap: peek() costs a call
        batches: list[tuple[str, Any]] = []
        events = 0
        while queue and queue[0][0] < until_ps:
            for _ in range(_CHECK_EVERY):  # check the trace buffers every so often, not every event
                if not queue or queue[0][0] >= until_ps:
                    break
                step()
                events += 1
            if self._buffered_rows() >= FLUSH_ROWS:
                batches += self._drain()
        if self._buffered_rows() >= FLUSH_ROWS:  # small batches cost more than they save
            batches += self._drain()
        self.events += events
        outbox, self._outbox[:] = list(self._outbox), []
        result = StepResult(outbox, self._next_event(), self._horizons(), env.now, batches,
                            events=events, messages=self.messages)
        self.messages = 0
        return result

    def finish(self, end_ps: int) -> StepResult:
        """Let every LP trace what it held to the end; collect the requests table."""
        requests = []
        for component in self._components.values():
            component.finish(end_ps)
            table = getattr(component, "requests_batch", None)
            if table is not None:
                requests.append(table())
        return StepResult([], self._next_event(), {}, self.env.now, self._drain(), requests)

    def _next_event(self) -> int | None:
        t = self.env.peek()
        return None if t == float("inf") else t

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
        return sum(len(t.rows) for t in self._tracers.values())

    def _drain(self) -> list[tuple[str, Any]]:
        """Encode buffered rows as record batches; hand them to the sink or return them."""
        out = []
        for name, tracer in self._tracers.items():
            rows = tracer.rows
            if rows:
                batch = self._encoders[name].encode(rows)
                rows.clear()
                if self._sink is not None:
                    self._sink(name, batch)
                else:
                    out.append((name, batch))
        return out


class _Delivery(simpy.Event):
    """A message on its way in: an event already triggered, processed at its arrival time.
    Built without Event.__init__'s generality: one per message adds up."""

    def __init__(self, env: simpy.Environment, msg: Message, deliver: Callable[[simpy.Event], None]) -> None:
        self.env = env
        self.callbacks = [deliver]
        self._ok = True
        self._value = msg
        self._defused = False


def _no_output(name: str) -> Callable[[Any, int, int], None]:
    def send(payload: Any, send_ps: int, size_bytes: int) -> None:
        raise CausalityError(f"{name}: has no output channel")
    return send
