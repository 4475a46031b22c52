"""What logical processes exchange with each other and with the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pyarrow as pa


class Message(NamedTuple):
    """One transfer on a channel. `send_ps` is when it leaves the sender (which may be in
    the sender's future: send at entry); `arrive_ps` adds the channel's latency.
    A NamedTuple: immutable, picklable, and several times cheaper to make than a frozen
    dataclass, which matters at a million messages a run."""

    src: str
    dst: str
    send_ps: int
    arrive_ps: int
    seq: int  # per sender, from 0: with `src` the tie-breaking key at equal times
    kind: str
    payload: Any
    size_bytes: int

    def order_key(self) -> tuple[int, str, int]:
        return (self.arrive_ps, self.src, self.seq)


@dataclass(frozen=True)
class Channel:
    """Joins `(src, port) -> dst` with its wire latency. An LP sends on named ports (a
    router has one per replica it can reach); most have just "out"."""

    src: str
    dst: str
    latency_ps: int
    port: str = "out"

    def __post_init__(self) -> None:
        if self.latency_ps < 0:
            raise ValueError(f"channel {self.src}->{self.dst}: latency_ps must be >= 0, got {self.latency_ps}")


@dataclass
class StepResult:
    """What a partition reports after `advance`: DESIGN.md's (outbox, next_event_ps,
    horizon_ps, trace_batch), with the horizon and the trace given per LP."""

    outbox: list[Message]
    next_event_ps: int | None
    horizons_ps: dict[str, int | None]
    now_ps: int
    trace: list[tuple[str, pa.RecordBatch]] = field(default_factory=list)
    requests: list[pa.RecordBatch] = field(default_factory=list)
    tokens: list[pa.RecordBatch] = field(default_factory=list)
    events: int = 0
    messages: int = 0  # sent since the last report
    delivered: int = 0  # received since the last report
    problems: list[str] = field(default_factory=list)  # broken conservation laws, at finish
    next_timer_ps: int | None = None  # the next event that is not a message delivery
    activity: dict[str, dict] = field(default_factory=dict)  # at finish: what each device did (energy)
