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
    energy_pj_per_bit: float = 0.0  # optics, switches and NICs along the path, per bit carried

    def __post_init__(self) -> None:
        if self.lanes <= 0:
            raise ValueError(f"LinkSpec.lanes: must be > 0, got {self.lanes}")
        if not self.lane_bits_per_s > 0:
            raise ValueError(f"LinkSpec.lane_bits_per_s: must be > 0, got {self.lane_bits_per_s}")
        if self.latency_ps < 0:
            raise ValueError(f"LinkSpec.latency_ps: must be >= 0, got {self.latency_ps}")
        if not self.energy_pj_per_bit >= 0:
            raise ValueError(f"LinkSpec.energy_pj_per_bit: must be >= 0, got {self.energy_pj_per_bit}")

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

# Energy of a hop in a hall: one switch ASIC (Broadcom Tomahawk 5, 51.2 Tb/s at about
# 500 W: ~10 pJ/bit, TechInsights 2022 estimate) and a pluggable optic at each end (~15
# pJ/bit each for conventional DSP-based modules, Broadcom CPO comparison as reported by
# chipcraft.tech 2025): about 40 pJ/bit.
HALL_HOP_PJ_PER_BIT = 40.0
# Between sites: a 400ZR coherent pluggable at each end (16 W for 400 Gb/s, 40 pJ/bit,
# Infinera "Five considerations for comparing optical power consumption", 2020) and a
# switch at each end (~10 pJ/bit each); in-line amplifiers ignored: about 100 pJ/bit.
WAN_PJ_PER_BIT = 100.0

CS3_LINK = LinkSpec(lanes=CS3_LANES, lane_bits_per_s=CS3_LANE_BITS_PER_S, latency_ps=CS3_HOP_LATENCY_PS,
                    energy_pj_per_bit=HALL_HOP_PJ_PER_BIT)
