"""The GPU baseline: an H100 spec and the SimPy model of a tensor-parallel group."""

from gpu.model import GpuStage, GpuStagePlan, GpuStepCost, StepTime
from gpu.spec import GPU_PRESETS, H100, GpuSpec

__all__ = ["GPU_PRESETS", "GpuSpec", "GpuStage", "GpuStagePlan", "GpuStepCost", "H100", "StepTime"]
