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

    def build(self, env: simpy.Environment, send, tracer) -> WaferLP:
        return WaferLP(env, self.spec, self.shape, self.vocab_size, list(self.units),
                       detail=self.detail, last_stage=self.last_stage, send=send, tracer=tracer,
                       kv_tokens_reserved=self.kv_tokens_reserved, co_tenants=self.co_tenants)


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


@dataclass(frozen=True)
class GpuConfig:
    is_device: ClassVar[bool] = True
    spec: GpuSpec
    shape: LayerShape
    vocab_size: int
    plan: GpuStagePlan
    last_stage: bool

    def build(self, env: simpy.Environment, send, tracer) -> GpuLP:
        return GpuLP(env, self.spec, self.shape, self.vocab_size, self.plan, last_stage=self.last_stage,
                     send=send, tracer=tracer)
