"""Recipes that turn the wafer and link models into logical processes.

Each config is frozen and picklable, so the driver and a Ray actor build the very same
component. The subclasses add the one thing a model lacks to be an LP: taking a
`Message` from the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import simpy

from cluster.engine.messages import Message
from common.units import NULL
from gpu import GpuSpec, GpuStage, GpuStagePlan
from interconnect import Link, LinkSpec
from interconnect.faults import LinkFault
from llm.ops import LayerShape
from wafer import CoTenant, Unit, WaferSpec, WaferStage


class WaferLP(WaferStage):
    def on_message(self, msg: Message) -> None:
        self.receive(msg.payload)

    def activity(self) -> dict:
        return {"core_ps_by_request": self.core_ps_by_request}

    def conservation(self) -> list[str]:
        """No KV cache left reserved once every request is done."""
        held = sorted(self._kv_reserved_at)
        return [f"KV cache of {len(held)} requests never freed (first: request {held[0]})"] if held else []


class LinkLP(Link):
    def on_message(self, msg: Message) -> None:
        p = msg.payload
        self.receive(p, msg.size_bytes, p.request_id, p.token, p.phase)

    def activity(self) -> dict:
        return {"bytes_by_request": self.bytes_by_request}


@dataclass(frozen=True)
class WaferConfig:
    is_device: ClassVar[bool] = True  # its actor is a WaferActor
    spec: WaferSpec
    shape: LayerShape
    vocab_size: int
    units: tuple[Unit, ...]
    detail: str
    last_stage: bool
    kv_tokens_reserved: int = 0  # KV-cache tokens each layer's region must hold
    co_tenants: tuple[CoTenant, ...] = ()  # models sharing this wafer's regions (Pass.model 1, 2, ...)
    lost_ps: int | None = None  # its replica is down from then on (a device of it lost)
    lost_name: str = ""  # the fault that took this very device ("wafer-lost", "site-lost"); "": its replica's

    def build(self, env: simpy.Environment, send, tracer) -> WaferLP:
        return WaferLP(env, self.spec, self.shape, self.vocab_size, list(self.units),
                       detail=self.detail, last_stage=self.last_stage, send=send, tracer=tracer,
                       kv_tokens_reserved=self.kv_tokens_reserved, co_tenants=self.co_tenants,
                       lost_ps=self.lost_ps, lost_name=self.lost_name)


@dataclass(frozen=True)
class LinkConfig:
    spec: LinkSpec
    faults: tuple[LinkFault, ...] = ()

    def build(self, env: simpy.Environment, send, tracer) -> LinkLP:
        return LinkLP(env, self.spec, send, tracer, self.faults)


class GpuLP(GpuStage):
    def on_message(self, msg: Message) -> None:
        self.receive(msg.payload)

    def activity(self) -> dict:
        return {"busy_ps_by_request": self.busy_ps_by_request}


class LostGpuLP(GpuLP):
    """A GPU stage lost at `lost_ps` (its replica down): it takes nothing from then on, and
    a step that ends then or later sends nothing. A GPU sends at the end of its step (no
    send at entry), so dropping at the send is exact; its horizon (a step's length from
    now) is a lower bound still. Ignores: the spans of the step the loss cuts, traced whole
    (the GPU model is another's; a wafer traces them as dropped)."""

    def __init__(self, *args, lost_ps: int, lost_name: str, send, tracer, **kwargs) -> None:
        def send_unless_lost(p, send_ps: int, size_bytes: int) -> None:
            if send_ps >= lost_ps:
                self._dropped(p, send_ps)
            else:
                send(p, send_ps, size_bytes)
        super().__init__(*args, send=send_unless_lost, tracer=tracer, **kwargs)
        self.lost_ps, self.lost_name = lost_ps, lost_name
        self._dropped_name = tracer.name("dropped")
        self._fault_name = tracer.name(lost_name) if lost_name else None
        self.dropped_passes = 0

    def _dropped(self, p, at_ps: int) -> None:
        self.dropped_passes += 1
        self._rows.append((at_ps, at_ps, self._tracer.template("fault", self._dropped_name), p.request_id, p.token))

    def on_message(self, msg: Message) -> None:
        if self.env._now >= self.lost_ps:
            self._dropped(msg.payload, self.env._now)
        else:
            self.receive(msg.payload)

    def finish(self, end_ps: int) -> None:
        super().finish(end_ps)
        if self._fault_name is not None and self.lost_ps <= end_ps:
            self._rows.append((self.lost_ps, end_ps, self._tracer.template("fault", self._fault_name), NULL, NULL))


@dataclass(frozen=True)
class GpuConfig:
    is_device: ClassVar[bool] = True
    spec: GpuSpec
    shape: LayerShape
    vocab_size: int
    plan: GpuStagePlan
    last_stage: bool
    lost_ps: int | None = None  # as WaferConfig's
    lost_name: str = ""

    def build(self, env: simpy.Environment, send, tracer) -> GpuLP:
        if self.lost_ps is not None:
            return LostGpuLP(env, self.spec, self.shape, self.vocab_size, self.plan, last_stage=self.last_stage,
                             send=send, tracer=tracer, lost_ps=self.lost_ps, lost_name=self.lost_name)
        return GpuLP(env, self.spec, self.shape, self.vocab_size, self.plan, last_stage=self.last_stage,
                     send=send, tracer=tracer)
