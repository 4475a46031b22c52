"""The SimPy model of one directed link: FIFO queueing, serialization, propagation.

A transfer waits for the wire (FIFO), serializes at the link's bandwidth, then
propagates for `latency_ps`. Service is fixed and order is FIFO, so the link knows a
transfer's arrival when it enters and sends it then (DESIGN.md: send at entry); a fault
model that can drop a transfer in flight would have to send at exit instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import simpy

from interconnect.spec import LinkSpec


class Link:
    def __init__(self, env: simpy.Environment, spec: LinkSpec,
                 send: Callable[[Any, int, int], None], rows: list[tuple]) -> None:
        self.env, self.spec = env, spec
        self._send, self._rows = send, rows
        self._wire_free_ps = 0
        self.transit_ps = spec.latency_ps  # nothing crosses faster than the light does
        self.bytes_sent = 0

    def horizon_ps(self) -> int | None:
        return None  # every transfer is sent the moment it enters

    def receive(self, payload: Any, size_bytes: int, request_id: int | None = None,
                token: int | None = None, phase: str | None = None) -> None:
        now = self.env.now
        start = now if now >= self._wire_free_ps else self._wire_free_ps
        end = start + self.spec.serialization_ps(size_bytes)
        self._wire_free_ps = end
        arrive = end + self.spec.latency_ps
        if start > now:
            self._rows.append((now, start, "queue", "wait", request_id, token, None, size_bytes, None, phase))
        self._rows.append((start, arrive, "link", "transfer", request_id, token, None, size_bytes, None, phase))
        self.bytes_sent += size_bytes
        self._send(payload, arrive, size_bytes)

    def finish(self, end_ps: int) -> None:
        pass

    def trace_names(self) -> list[str]:
        return ["wait", "transfer"]
