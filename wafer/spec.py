"""Wafer specifications: the hardware constants of one wafer-scale processor.

Models a wafer as a 2D mesh of identical cores, each with private SRAM, FP16 SIMD lanes
and a router; ignores defective-core remapping (we use the mesh the SDK exposes).
Every constant carries its unit and cites its row in shared/FACTS.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.calibration import read_calibrated
from common.checks import check_number

CALIBRATION_FILE = Path(__file__).with_name("calibration.json")

# What a `--spec` what-if may set each constant to: (integer, lowest, highest). The bounds
# are far outside any wafer built or planned, and keep every op's time a finite number of
# picoseconds that a run reaches in useful time.
WAFER_LIMITS: dict[str, tuple[bool, float, float]] = {
    "mesh_width_cores": (True, 1, 100_000),
    "mesh_height_cores": (True, 1, 100_000),
    "sram_bytes": (True, 1, 10**15),
    "sram_bytes_per_core": (True, 1, 10**9),
    "sram_bytes_per_s": (False, 1e9, 1e21),
    "fp16_lanes_per_core": (True, 1, 4096),
    "clock_hz": (False, 1e6, 1e12),
    "mesh_link_bytes_per_cycle": (True, 1, 2**20),
    "mesh_hop_cycles": (True, 1, 10**6),
    "core_router_cycles": (True, 0, 10**6),
    "sync_cycles_per_hop": (False, 0, 1e6),
    "reroute_cycles": (True, 0, 10**6),
    "nonlinear_cycles_per_element": (False, 0, 1e6),
    "system_busy_w": (False, 0, 1e7),
    "system_idle_w": (False, 0, 1e7),
}
_POSITIVE = {"nonlinear_cycles_per_element"}  # > 0, not >= 0


@dataclass(frozen=True)
class WaferSpec:
    """One wafer. Frozen: per-run state lives in the SimPy model, never here."""

    name: str
    mesh_width_cores: int
    mesh_height_cores: int
    sram_bytes: int  # usable SRAM capacity of the whole wafer
    sram_bytes_per_core: int
    sram_bytes_per_s: float  # aggregate SRAM bandwidth of the wafer
    fp16_lanes_per_core: int  # FP16 FMAs per core per cycle
    clock_hz: float
    mesh_link_bytes_per_cycle: int  # per direction, per neighbouring core pair
    mesh_hop_cycles: int  # one router hop
    core_router_cycles: int  # core <-> its own router
    # Free parameters of the cost model (issue 4 fits them to one published point).
    # An op ends with a region-wide barrier: a completion signal across the region and
    # back (2 x side hops), each hop handled by a core's software (PLMR's alpha); fitted.
    sync_cycles_per_hop: float
    reroute_cycles: int  # beta of WaferLLM's PLMR model: one software re-route
    nonlinear_cycles_per_element: float  # exp / SiLU / rsqrt, per element per core
    # Power of the whole system (wafer, power supplies, cooling, I/O): with every core
    # computing, and powered but with no core computing. In between it follows the share of
    # core-time spent computing (wafer.power).
    system_busy_w: float = 23_000.0
    system_idle_w: float = 9_200.0

    def __post_init__(self) -> None:
        for field, (integer, low, high) in WAFER_LIMITS.items():
            check_number(f"WaferSpec.{field}", getattr(self, field), integer=integer, low=low, high=high,
                         above=low == 0 and field in _POSITIVE, error=ValueError)
        if not self.system_busy_w >= self.system_idle_w:
            raise ValueError(f"WaferSpec.system_busy_w: must be >= system_idle_w ({self.system_idle_w}), "
                             f"got {self.system_busy_w}")

    @property
    def cores(self) -> int:
        return self.mesh_width_cores * self.mesh_height_cores

    @property
    def sram_bytes_per_s_per_core(self) -> float:
        return self.sram_bytes_per_s / self.cores

    @property
    def fp16_flops_per_s_per_core(self) -> float:
        return self.fp16_lanes_per_core * 2 * self.clock_hz  # an FMA is 2 FLOPs

    @property
    def peak_fp16_flops_per_s(self) -> float:
        return self.fp16_flops_per_s_per_core * self.cores


# Calibrated: fitted by `wafersim calibrate` so that Llama3.1-8B on one WSE-3 decodes one
# user at the published ~1,800 tokens/s (wafer/calibration.json holds the fit and its
# inputs). WSE-2 shares it: same software stack. The fallback, 2 cycles a hop (one
# router hop plus a core handing the signal on), is used only without the file.
DEFAULT_SYNC_CYCLES_PER_HOP = read_calibrated(CALIBRATION_FILE, "sync_cycles_per_hop", 2.0)
# Uncalibrated: 0 re-routes by default (a region's traffic stays on its own rows and columns).
DEFAULT_REROUTE_CYCLES = 0
# Uncalibrated: transcendental ops run without SIMD, about 4 cycles an element.
DEFAULT_NONLINEAR_CYCLES_PER_ELEMENT = 4.0

WSE3 = WaferSpec(
    name="wse-3",
    mesh_width_cores=762,  # FACTS: WSE-3 mesh seen by the SDK 762 x 1172 (WaferLLM compile.py)
    mesh_height_cores=1172,
    sram_bytes=44_000_000_000,  # FACTS: WSE-3 SRAM 44 GB per wafer (Hot Chips 2024)
    sram_bytes_per_core=48 * 1024,  # FACTS: 48 KB per core (Hot Chips 2024)
    sram_bytes_per_s=21e15,  # FACTS: SRAM bandwidth 21 PB/s per wafer (Hot Chips 2024)
    fp16_lanes_per_core=8,  # FACTS: FP16 SIMD width 8 lanes per core per cycle
    clock_hz=1.1e9,  # FACTS: clock about 1.1 GHz (WaferLLM; WSE-3 not published)
    mesh_link_bytes_per_cycle=4,  # FACTS: mesh link 32 bits per cycle per direction
    mesh_hop_cycles=1,  # FACTS: one hop per cycle (WaferLLM; Luczynski et al.)
    core_router_cycles=2,  # FACTS: core-to-router about 2 cycles
    sync_cycles_per_hop=DEFAULT_SYNC_CYCLES_PER_HOP,
    reroute_cycles=DEFAULT_REROUTE_CYCLES,
    nonlinear_cycles_per_element=DEFAULT_NONLINEAR_CYCLES_PER_ELEMENT,
    system_busy_w=23_000.0,  # FACTS "Power": CS-3 system about 23 kW (medium-low confidence)
    # Assumed (no public figure): 40% of it with no core computing: SRAM and logic leakage,
    # the clock tree, power conversion, pumps and fans, which do not follow the load.
    system_idle_w=0.4 * 23_000.0,
)

WSE2 = WaferSpec(
    name="wse-2",
    mesh_width_cores=757,  # FACTS: WSE-2 mesh 757 x 996 (WaferLLM)
    mesh_height_cores=996,
    sram_bytes=40_000_000_000,  # FACTS: WSE-2 40 GB SRAM
    sram_bytes_per_core=48 * 1024,  # FACTS: WSE-2 48 KB per core
    # FACTS gives no WSE-2 SRAM bandwidth: assume the WSE-3 per-core figure
    # (21 PB/s / 893,064 cores), scaled to WSE-2's core count.
    sram_bytes_per_s=21e15 / (762 * 1172) * (757 * 996),
    fp16_lanes_per_core=4,  # FACTS: WSE-2 4 FP16 lanes
    clock_hz=1.1e9,  # FACTS: about 1.1 GHz, WSE-2's maximum (WaferLLM)
    mesh_link_bytes_per_cycle=4,  # FACTS: mesh link 32 bits per cycle per direction
    mesh_hop_cycles=1,  # FACTS: one hop per cycle
    core_router_cycles=2,  # FACTS: core-to-router about 2 cycles
    sync_cycles_per_hop=DEFAULT_SYNC_CYCLES_PER_HOP,
    reroute_cycles=DEFAULT_REROUTE_CYCLES,
    nonlinear_cycles_per_element=DEFAULT_NONLINEAR_CYCLES_PER_ELEMENT,
    system_busy_w=20_000.0,  # FACTS "Power": CS-1 was 20 kW maximum; assumed for CS-2
    system_idle_w=0.4 * 20_000.0,  # assumed, as for WSE-3
)

WAFER_PRESETS: dict[str, WaferSpec] = {spec.name: spec for spec in (WSE3, WSE2)}
