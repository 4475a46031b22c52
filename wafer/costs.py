"""What an op costs on a region of a wafer: plain functions of (work, region, spec).

An op's time is max(compute, SRAM) + nonlinear + mesh + a region-wide barrier:
compute and SRAM streaming overlap on a core, the nonlinear evaluations, the
broadcast/reduction and the barrier that ends the op (2 x side hops, each costing
`sync_cycles_per_hop`) do not. Ignores: bank conflicts, load imbalance across
the region, overlap of one op's reduction with the next op's compute.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from common.units import PS_PER_S
from llm.ops import MeshPattern, OpWork
from wafer.spec import WaferSpec


@dataclass(frozen=True)
class Region:
    """A rectangle of cores that holds one unit (a layer, the embedding, the LM head)."""

    cores: int

    def __post_init__(self) -> None:
        if self.cores <= 0:
            raise ValueError(f"Region.cores: must be > 0, got {self.cores}")

    @property
    def side_cores(self) -> int:
        """Side of the (square) region: the hop count of a row-wide broadcast."""
        return max(1, math.isqrt(self.cores))


@dataclass(frozen=True)
class OpCost:
    compute_ps: int
    sram_ps: int
    nonlinear_ps: int
    mesh_ps: int
    overhead_ps: int

    @property
    def total_ps(self) -> int:
        return max(self.compute_ps, self.sram_ps) + self.nonlinear_ps + self.mesh_ps + self.overhead_ps


def cycles_to_ps(cycles: float, clock_hz: float) -> int:
    """Round up: a duration is never shorter than the hardware allows."""
    return math.ceil(cycles * PS_PER_S / clock_hz)


def mesh_cycles(pattern: MeshPattern, in_bytes: int, out_bytes: int, region: Region,
                spec: WaferSpec) -> float:
    """Cycles to move an op's operands across its region (WaferLLM's PLMR model).

    alpha x hops + bytes / link bandwidth + beta x re-routes. A MATMUL broadcasts its
    input down the region's columns (router multicast: one hop a cycle) and reduces its
    partial sums along the rows; a reduction is store-and-forward, every hop passing
    through a core that adds its own partial (router -> core, one add, core -> router).
    """
    if pattern is MeshPattern.NONE:
        return 0.0
    side = region.side_cores
    reduce_hop = spec.mesh_hop_cycles + 2 * spec.core_router_cycles + 1
    hops = side * spec.mesh_hop_cycles + side * reduce_hop
    serial = (in_bytes + out_bytes) / side / spec.mesh_link_bytes_per_cycle
    return hops + serial + spec.reroute_cycles


def op_cost(work: OpWork, region: Region, spec: WaferSpec) -> OpCost:
    cores, clock = region.cores, spec.clock_hz
    compute_s = work.flops / (cores * spec.fp16_flops_per_s_per_core)
    sram_s = work.sram_bytes / (cores * spec.sram_bytes_per_s_per_core)
    nonlinear_cycles = work.nonlinear_elements * spec.nonlinear_cycles_per_element / cores
    return OpCost(
        compute_ps=math.ceil(compute_s * PS_PER_S),
        sram_ps=math.ceil(sram_s * PS_PER_S),
        nonlinear_ps=cycles_to_ps(nonlinear_cycles, clock),
        mesh_ps=cycles_to_ps(mesh_cycles(work.mesh, work.mesh_in_bytes, work.mesh_out_bytes,
                                         region, spec), clock),
        overhead_ps=cycles_to_ps(2 * region.side_cores * spec.sync_cycles_per_hop, clock),
    )


def handoff_ps(activation_bytes: int, region: Region, spec: WaferSpec) -> int:
    """Move a pass's activations from one region to the next across their shared edge."""
    side = region.side_cores
    cycles = side * spec.mesh_hop_cycles + activation_bytes / (side * spec.mesh_link_bytes_per_cycle)
    return cycles_to_ps(cycles, spec.clock_hz)


def latency_optimal_cores(pass_ps: Callable[[Region], int], min_cores: int, max_cores: int) -> int:
    """The region size in [min_cores, max_cores] with the shortest pass.

    A pass's time is about work / cores + fabric x sqrt(cores): more cores divide the
    compute but lengthen every broadcast, reduction and barrier, so there is a best size.
    The search is ternary over that unimodal curve (exact for it; a pragmatic choice if
    rounding makes the curve flat in places, where any of the flat sizes is as fast).
    """
    if min_cores > max_cores:
        raise ValueError(f"region: needs {min_cores} cores but only {max_cores} are free")
    lo, hi = min_cores, max_cores
    while hi - lo > 2:
        a, b = lo + (hi - lo) // 3, hi - (hi - lo) // 3
        if pass_ps(Region(a)) <= pass_ps(Region(b)):
            hi = b
        else:
            lo = a
    return min(range(lo, hi + 1), key=lambda c: (pass_ps(Region(c)), c))
