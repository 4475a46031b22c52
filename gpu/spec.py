"""GPU specifications: the baseline users compare wafers against (NVIDIA H100 in a DGX).

Models a GPU as HBM bandwidth, dense tensor FLOPs and a fixed cost per kernel, and a DGX
as 8 GPUs on NVLink. The free parameters (per-kernel overhead, per-step all-reduce
latency) are fitted by `wafersim calibrate` to one documented row (FACTS "NVIDIA H100":
NIM 2025, 70B in fp8 on 2 GPUs, 18.58 ms a token) and read from gpu/calibration.json;
every other documented row is a prediction (`wafersim validate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.calibration import read_calibrated
from common.checks import MAX_LATENCY_PS, check_number

CALIBRATION_FILE = Path(__file__).with_name("calibration.json")

# What a `--spec` what-if may set each constant to: (integer, lowest, highest); far outside
# any GPU built, and keeping every step a finite time a run reaches in useful time (a
# bandwidth may be near-ideal, 1e30: it only makes a cost vanish).
GPU_LIMITS: dict[str, tuple[bool, float, float]] = {
    "hbm_bytes": (True, 10**9, 10**15),  # at least a GB: the planner sizes nodes by it
    "hbm_bytes_per_s": (False, 1e6, 1e30),
    "fp16_flops_per_s": (False, 1e6, 1e30),
    "fp8_flops_per_s": (False, 1e6, 1e30),
    "nvlink_bytes_per_s": (False, 1e3, 1e30),
    "gpus_per_node": (True, 1, 1024),
    "node_link_bits_per_s": (False, 1e3, 1e30),
    "node_link_latency_ps": (True, 0, MAX_LATENCY_PS),
    "kernels_per_layer": (True, 1, 10**4),
    "kernel_overhead_s": (False, 0, 1.0),
    "allreduce_step_s": (False, 0, 1.0),
    "busy_w": (False, 0, 1e6),
    "idle_w": (False, 0, 1e6),
    "node_overhead_w": (False, 0, 1e7),
}


@dataclass(frozen=True)
class GpuSpec:
    name: str
    hbm_bytes: int
    hbm_bytes_per_s: float
    fp16_flops_per_s: float  # dense
    fp8_flops_per_s: float  # dense
    nvlink_bytes_per_s: float  # per GPU, one direction
    gpus_per_node: int
    node_link_bits_per_s: float  # between nodes, per node
    node_link_latency_ps: int
    kernels_per_layer: int  # kernels a decoder layer launches
    kernel_overhead_s: float  # fitted: launch, sync and HBM ramp of one kernel, however small
    allreduce_step_s: float  # fitted: latency of one of the ceil(log2 g) steps of an all-reduce
    # Power: a GPU while a step runs and while none does; the node's CPUs, NICs, NVSwitches
    # and fans, drawn whatever the load (shared among the node's GPUs).
    busy_w: float = 700.0
    idle_w: float = 75.0
    node_overhead_w: float = 4_600.0

    def __post_init__(self) -> None:
        for field, (integer, low, high) in GPU_LIMITS.items():
            check_number(f"GpuSpec.{field}", getattr(self, field), integer=integer, low=low, high=high,
                         error=ValueError)
        if not self.busy_w >= self.idle_w:
            raise ValueError(f"GpuSpec.busy_w: must be >= idle_w ({self.idle_w}), got {self.busy_w}")

    def flops_per_s(self, dtype: str) -> float:
        return self.fp8_flops_per_s if dtype == "fp8" else self.fp16_flops_per_s


def _calibrated(key: str, default: float) -> float:
    return read_calibrated(CALIBRATION_FILE, key, default)


H100 = GpuSpec(
    name="h100",
    hbm_bytes=80_000_000_000,  # FACTS "NVIDIA H100": HBM3 80 GB
    hbm_bytes_per_s=3.35e12,  # FACTS "NVIDIA H100": 3.35 TB/s
    fp16_flops_per_s=989e12,  # FACTS "NVIDIA H100": dense BF16/FP16 989 TFLOP/s
    fp8_flops_per_s=1979e12,  # NVIDIA H100 SXM datasheet: dense FP8 1,979 TFLOP/s (2x FP16)
    nvlink_bytes_per_s=450e9,  # FACTS "NVIDIA H100": NVLink 900 GB/s per GPU, both directions
    gpus_per_node=8,  # FACTS: DGX H100 = 8 GPUs
    node_link_bits_per_s=8 * 400e9,  # NVIDIA DGX H100 datasheet: 8x ConnectX-7 400 Gb/s
    node_link_latency_ps=3_000_000,  # assumed like one RDMA hop in a hall (FACTS "system I/O": a few us)
    kernels_per_layer=10,  # the ops of llm.ops.decoder_layer_ops, one kernel each
    # Calibrated (gpu/calibration.json, `wafersim calibrate`): 70B in fp8 on 2 GPUs at the
    # documented 18.58 ms a token (FACTS, NIM 2025), one all-reduce step costing what one
    # kernel does (one row cannot tell the two apart). Defaults: a typical CUDA launch
    # latency and one NVLink hop, used only until the file exists.
    kernel_overhead_s=_calibrated("kernel_overhead_s", 5e-6),
    allreduce_step_s=_calibrated("allreduce_step_s", 3e-6),
    busy_w=700.0,  # FACTS "Power": H100 SXM 700 W
    # Assumed (not in FACTS): an idle H100 SXM reads about 60-90 W; a parameter.
    idle_w=75.0,
    node_overhead_w=10_200.0 - 8 * 700.0,  # FACTS "Power": DGX H100 10.2 kW maximum, less its 8 GPUs
)

GPU_PRESETS: dict[str, GpuSpec] = {H100.name: H100}
