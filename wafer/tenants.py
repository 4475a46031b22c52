"""The models a wafer holds, as its passes see them: one `Tenant` per model.

A wafer's regions are its primary model's, one per unit (model 0). A co-located model
(a co-tenant, model 1, 2, ...) gets no cores of its own: its units are spread in order
over those regions and costed on them, so that a region still serves one pass at a time
whichever model it belongs to. A tenant holds what `WaferStage` needs per model: its
costs, its trace names' prefix, where its units sit, and its cached pass profiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from common.errors import CapacityError
from llm.ops import LayerShape, OpWork, decoder_layer_ops, embedding_ops, lm_head_ops
from wafer.costs import Region, latency_optimal_cores, op_cost
from wafer.spec import WaferSpec

if TYPE_CHECKING:
    from wafer.model import Unit, _Profile


def unit_ops(unit: Unit, shape: LayerShape, vocab_size: int, n: int, ctx: int, emits: bool) -> list[OpWork]:
    """The ops of one unit of a model for a pass of `n` tokens over `ctx` of cache."""
    if unit.kind == "layer":
        return decoder_layer_ops(shape, n, ctx)
    if unit.kind == "embed":
        return embedding_ops(shape.hidden_size, n, shape.bytes_per_param)
    return lm_head_ops(shape.hidden_size, vocab_size, shape.bytes_per_param) if emits else []


def spread(n_units: int, n_regions: int) -> tuple[int, ...]:
    """The region of each of a co-tenant's units: evenly over the regions and in order
    (unit i of n on region i x regions // n), so its passes cross them front to back."""
    return tuple(i * n_regions // n_units for i in range(n_units))


_COST_TABLES: dict[tuple[int, LayerShape, int], tuple[WaferSpec, dict]] = {}


def shared_costs(spec: WaferSpec, shape: LayerShape, vocab_size: int) -> dict:
    """One unit-cost table per (spec, model) in this process, so that a region costed for
    one stage is costed for every stage with a region that size. The spec is matched by
    identity (the stages of a run share it, in-process or unpickled together in an actor;
    the entry holds it, so its id cannot be reused), the small layer shape by value."""
    key = (id(spec), shape, vocab_size)
    entry = _COST_TABLES.get(key)
    if entry is None or entry[0] is not spec:
        if len(_COST_TABLES) >= 8:  # runs come and go in one process; keep a few
            _COST_TABLES.clear()
        entry = _COST_TABLES[key] = (spec, {})
    return entry[1]


@dataclass(slots=True, eq=False)
class Tenant:
    """One model on a wafer. `receive` looks it up once per pass (`Pass.model`)."""

    shape: LayerShape
    vocab_size: int
    units: tuple[Unit, ...]
    last_stage: bool  # of its own pipeline: whether its passes send, and what
    prefix: str  # of its trace names: "" for the primary, "<model name>:" for a co-tenant
    kv_tokens_reserved: int  # KV-cache tokens each of its layers must hold
    regions: tuple[int, ...]  # the region each unit runs on, in order
    act_bytes: int  # activations per token: what a pass hands on and sends
    kv_bytes_per_token: int  # over its layers on this wafer
    weight_bytes: int
    costs: dict  # its unit-cost table (`shared_costs`)
    profiles: dict[tuple[int, int, bool, str], _Profile]  # (n, ctx, emits, phase) -> profile
    # (region j, unit, region, cost key, trace name) per unit: set once regions are sized
    placed: tuple[tuple[int, Unit, Region, tuple[str, int], int], ...] = ()

    @classmethod
    def of(cls, spec: WaferSpec, shape: LayerShape, vocab_size: int, units: Sequence[Unit], last_stage: bool,
           prefix: str, kv_tokens_reserved: int, regions: tuple[int, ...]) -> Tenant:
        layers = sum(1 for u in units if u.kind == "layer")
        return cls(shape, vocab_size, tuple(units), last_stage, prefix, kv_tokens_reserved, regions,
                   shape.activation_bytes_per_token, layers * shape.kv_bytes_per_token,
                   sum(u.weight_bytes for u in units), shared_costs(spec, shape, vocab_size), {})

    def sram_bytes(self, unit: Unit) -> int:
        """What a unit holds in SRAM: its weights and, for a layer, its reserved KV cache."""
        kv = self.kv_tokens_reserved * self.shape.kv_bytes_per_token if unit.kind == "layer" else 0
        return unit.weight_bytes + kv

    def place(self, regions: Sequence[Region], names: dict[str, int]) -> None:
        """Bind each unit to its sized region, its cost key and its trace name."""
        self.placed = tuple((j, unit, regions[j], (unit.kind, regions[j].cores), names[self.prefix + unit.name])
                            for j, unit in zip(self.regions, self.units))


def place_regions(spec: WaferSpec, tenants: Sequence[Tenant]) -> list[Region]:
    """Each of the primary model's units (tenants[0]) gets a region: the size with the
    shortest decode pass, no smaller than what its weights and reserved KV cache need in
    SRAM, no larger than its byte-proportional share of the wafer (so that every region
    fits). More cores divide the work but lengthen the fabric, so a small model does not
    spread over the whole wafer. Co-tenant units count in their region's bytes: its share,
    what it needs, and a floor of their weights and the primary's, which wins over the share
    (weights have nowhere else to go; a KV reservation over the share is trimmed, as the
    primary's always is). A region too small for its weights is an error, never a clamp."""
    chosen: dict[tuple, int] = {}
    regions = []
    primary, per_core = tenants[0], spec.sram_bytes_per_core
    all_weight_bytes = sum(t.weight_bytes for t in tenants)
    hosted = [0] * len(primary.units)  # co-tenants' bytes on each region, KV cache included
    hosted_weights = [0] * len(primary.units)
    for t in tenants[1:]:
        for j, unit in zip(t.regions, t.units):
            hosted[j] += t.sram_bytes(unit)
            hosted_weights[j] += unit.weight_bytes
    for unit, extra, extra_weights in zip(primary.units, hosted, hosted_weights):
        weights = unit.weight_bytes + extra_weights
        need = -(-(primary.sram_bytes(unit) + extra) // per_core)
        weight_cores = -(-weights // per_core)
        share = max(1, spec.cores * weights // all_weight_bytes)
        most = max(share, weight_cores) if extra else share
        if weight_cores > most:
            raise CapacityError(f"{spec.name}: {unit.name}'s weights need {weight_cores} cores at "
                                f"sram_bytes_per_core={per_core}, over its share of {most} of the "
                                f"{spec.cores} cores (raise sram_bytes_per_core, or use more wafers)")
        key = (unit.kind, need, most)
        if key not in chosen:
            ops = unit_ops(unit, primary.shape, primary.vocab_size, 1, 0, True)
            chosen[key] = latency_optimal_cores(
                lambda r, ops=ops: sum(op_cost(w, r, spec).total_ps for w in ops), min(need, most), most)
        regions.append(Region(chosen[key]))
    cores = sum(r.cores for r in regions)
    if cores > spec.cores:
        raise CapacityError(f"regions holding every model's weights take {cores} cores, over the "
                            f"{spec.cores} cores of {spec.name}")
    return regions
