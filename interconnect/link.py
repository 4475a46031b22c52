"""The SimPy model of one directed link: FIFO queueing, serialization, propagation.

A transfer waits for the wire (FIFO), serializes at the link's bandwidth, then
propagates for `latency_ps`. Service is fixed and order is FIFO, so the link knows a
transfer's arrival when it enters and sends it then (DESIGN.md: send at entry); a fault
model that can drop a transfer in flight would have to send at exit instead.

A transfer traces up to three spans: "queue" while it waits for the wire, "link" while
the wire is busy serialising it, "flight" while it propagates (none on a link of zero
latency). Link and flight tile [start, arrival): summed, "link" spans are the wire's busy
time, which a link's transfers never overlap.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import simpy

from common.units import NULL
from interconnect.faults import KINDS as FAULT_KINDS
from interconnect.faults import LinkFault, bandwidth_share, wire_start_ps
from interconnect.spec import LinkSpec


class Link:
    def __init__(self, env: simpy.Environment, spec: LinkSpec,
                 send: Callable[[Any, int, int], None], tracer, faults: tuple[LinkFault, ...] = ()) -> None:
        self.env, self.spec, self.faults = env, spec, tuple(faults)
        self._send, self._tracer, self._rows = send, tracer, tracer.rows
        self._names = (tracer.name("wait"), tracer.name("transfer"), tracer.name("propagation"))
        self._fault_names = {k: tracer.name(k) for k in FAULT_KINDS}
        self._wire_free_ps = 0
        # By (size, phase, bandwidth share): a run sends few distinct sizes.
        self._by_size: dict[tuple[int, str | None, float], tuple[int, int, int]] = {}
        self.transit_ps = spec.latency_ps  # nothing crosses faster than the light does
        self.bytes_by_request: dict[int, int] = {}  # carried for each request (energy); NULL: none

    def horizon_ps(self) -> int | None:
        return None  # every transfer is sent the moment it enters

    def _shape(self, size_bytes: int, phase: str | None, share: float) -> tuple[int, int, int]:
        """(serialization time, queue template, record shape) for a transfer size at a share
        of the bandwidth (1 but on a degraded link): the shape lays out its busy and flight
        spans from the time it starts on the wire, so a transfer traces as one record
        (`Tracer.pass_shape`), not two rows."""
        tracer, (wait, transfer, propagation) = self._tracer, self._names
        serialization = math.ceil(self.spec.serialization_ps(size_bytes) / share)
        latency = self.spec.latency_ps
        spans = ((0, 0, serialization, tracer.template("link", transfer, None, size_bytes, None, phase)),)
        if latency:
            spans += ((0, serialization, serialization + latency,
                       tracer.template("flight", propagation, None, size_bytes, None, phase)),)
        shape = (serialization, tracer.template("queue", wait, None, size_bytes, None, phase),
                 tracer.pass_shape(1, spans))
        self._by_size[(size_bytes, phase, share)] = shape
        return shape

    def receive(self, payload: Any, size_bytes: int, request_id: int | None = None,
                token: int | None = None, phase: str | None = None) -> None:
        now = self.env._now  # the hot path skips the property
        start = now if now >= self._wire_free_ps else self._wire_free_ps
        share = 1.0
        if self.faults:  # a declared schedule: the arrival is still known now
            start = wire_start_ps(self.faults, start)
            share = bandwidth_share(self.faults, start)
        serialization, queue_template, record = (
            self._by_size.get((size_bytes, phase, share)) or self._shape(size_bytes, phase, share))
        end = start + serialization
        self._wire_free_ps = end
        arrive = end + self.spec.latency_ps
        rid = NULL if request_id is None else request_id
        tok = NULL if token is None else token
        self.bytes_by_request[rid] = self.bytes_by_request.get(rid, 0) + size_bytes
        if start > now:
            self._rows.append((now, start, queue_template, rid, tok))
        self._rows.append((record, rid, tok, start))
        self._send(payload, arrive, size_bytes)

    def finish(self, end_ps: int) -> None:
        """Trace each declared fault as a span of kind "fault"."""
        for f in self.faults:
            template = self._tracer.template("fault", self._fault_names[f.kind])
            self._rows.append((f.start_ps, f.end_ps, template, NULL, NULL))
