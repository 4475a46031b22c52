"""The simulation graph: logical processes (by spec, buildable anywhere) and channels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import simpy

from cluster.engine.messages import Channel, Message


class Component(Protocol):
    """What a partition needs from the model object an LP wraps."""

    transit_ps: int

    def on_message(self, msg: Message) -> None: ...
    def horizon_ps(self) -> int | None: ...
    def finish(self, end_ps: int) -> None: ...


Send = Callable[[Any, int, int], None]  # (payload, send_ps, size_bytes)


class LPConfig(Protocol):
    """A picklable recipe for a component: the same on the driver and in a Ray actor.

    `send` is the "out" port. An LP with other ports also gets `ports`, every port's send
    by name ("out" included): `build(env, send, tracer, ports=...)`."""

    def build(self, env: simpy.Environment, send: Send, tracer: Any) -> Component: ...


@dataclass(frozen=True)
class LPSpec:
    name: str
    datacenter: str
    config: Any  # an LPConfig
    transit_ps: int  # min time from an input to an output it causes (DESIGN.md)


@dataclass(frozen=True)
class Graph:
    lps: tuple[LPSpec, ...]
    channels: tuple[Channel, ...]

    def __post_init__(self) -> None:
        names = [lp.name for lp in self.lps]
        if len(set(names)) != len(names):
            raise ValueError("graph: LP names must be unique")
        known = set(names)
        for ch in self.channels:
            if ch.src not in known or ch.dst not in known:
                raise ValueError(f"graph: channel {ch.src}->{ch.dst} names an unknown LP")
        outs = [(ch.src, ch.port) for ch in self.channels]
        if len(set(outs)) != len(outs):
            raise ValueError("graph: each port of an LP joins one channel")
        self.check_lookahead()

    @property
    def lp(self) -> dict[str, LPSpec]:
        return {lp.name: lp for lp in self.lps}

    def out_channels(self, name: str) -> dict[str, Channel]:
        """The channels leaving `name`, by port."""
        return {ch.port: ch for ch in self.channels if ch.src == name}

    def check_lookahead(self) -> None:
        """Every cycle must carry positive lookahead, or conservative sync deadlocks."""
        transit = {lp.name: lp.transit_ps for lp in self.lps}
        zero = {}
        for ch in self.channels:
            if ch.latency_ps + transit[ch.dst] == 0:
                zero.setdefault(ch.src, []).append(ch.dst)
        state: dict[str, int] = {}

        def visit(node: str, path: list[str]) -> None:
            state[node] = 1
            for nxt in zero.get(node, []):
                if state.get(nxt) == 1:
                    raise ValueError(f"graph: zero-lookahead cycle {' -> '.join(path + [nxt])}")
                if nxt not in state:
                    visit(nxt, path + [nxt])
            state[node] = 2

        for name in sorted(transit):
            if name not in state:
                visit(name, [name])
