"""Link specifications: how fast and how far a wire between two wafers is.

A link is `lanes` parallel lanes striped by the sender (RDMA over Ethernet), so a
transfer serializes at lanes x lane bandwidth; `latency_ps` is everything that does not
depend on size (propagation, switch and NIC hops).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from common.units import PS_PER_S


@dataclass(frozen=True)
class LinkSpec:
    lanes: int
    lane_bits_per_s: float
    latency_ps: int

    def __post_init__(self) -> None:
        if self.lanes <= 0:
            raise ValueError(f"LinkSpec.lanes: must be > 0, got {self.lanes}")
        if not self.lane_bits_per_s > 0:
            raise ValueError(f"LinkSpec.lane_bits_per_s: must be > 0, got {self.lane_bits_per_s}")
        if self.latency_ps < 0:
            raise ValueError(f"LinkSpec.latency_ps: must be >= 0, got {self.latency_ps}")

    @property
    def bits_per_s(self) -> float:
        return self.lanes * self.lane_bits_per_s

    def serialization_ps(self, size_bytes: int) -> int:
        """Time to put `size_bytes` on the wire; rounded up to whole picoseconds."""
        return math.ceil(size_bytes * 8 * PS_PER_S / (self.lanes * self.lane_bits_per_s))

    def with_latency(self, latency_ps: int) -> LinkSpec:
        return replace(self, latency_ps=latency_ps)


# FACTS "system I/O": 1.2 Tb/s per CS-3 as 12 x 100 GbE.
CS3_LANES = 12
CS3_LANE_BITS_PER_S = 100e9
# FACTS "system I/O": wafer-to-wafer over RDMA on Ethernet, "a few microseconds" a hop;
# we take 3 us for one hop through the datacenter's switch.
CS3_HOP_LATENCY_PS = 3_000_000

CS3_LINK = LinkSpec(lanes=CS3_LANES, lane_bits_per_s=CS3_LANE_BITS_PER_S, latency_ps=CS3_HOP_LATENCY_PS)
