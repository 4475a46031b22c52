"""Link specifications: how fast and how far a wire between two wafers is.

A link is `lanes` parallel lanes striped by the sender (RDMA over Ethernet), so a
transfer serializes at lanes x lane bandwidth; `latency_ps` is everything that does not
depend on size (propagation, switch and NIC hops).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from common.checks import MAX_LATENCY_PS, check_number
from common.units import PS_PER_S

MAX_LANES = 1024
MIN_LANE_BITS_PER_S = 1.0  # a layer's activations then take about a day of simulated time


@dataclass(frozen=True)
class LinkSpec:
    lanes: int
    lane_bits_per_s: float
    latency_ps: int
    energy_pj_per_bit: float = 0.0  # optics, switches and NICs along the path, per bit carried

    def __post_init__(self) -> None:
        check_number("LinkSpec.lanes", self.lanes, integer=True, low=0, above=True, high=MAX_LANES, error=ValueError)
        if self.lane_bits_per_s != math.inf:  # inf: an ideal wire (no user input reaches it: validate_cluster)
            check_number("LinkSpec.lane_bits_per_s", self.lane_bits_per_s, low=MIN_LANE_BITS_PER_S,
                         error=ValueError)
        # A user's latency is bounded by MAX_LATENCY_PS; the fibre's propagation comes on top.
        check_number("LinkSpec.latency_ps", self.latency_ps, integer=True, low=0, high=2 * MAX_LATENCY_PS,
                     error=ValueError)
        check_number("LinkSpec.energy_pj_per_bit", self.energy_pj_per_bit, low=0, high=1e6, error=ValueError)

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
