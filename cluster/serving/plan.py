"""Pipeline plans: which units of a model each wafer holds.

The planner cuts [embedding, layer 0..n-1, LM head] into one contiguous range per wafer,
minimizing the largest range's weight bytes, and refuses a plan whose weights plus the
KV cache reserved for the requested users and context do not fit a wafer's SRAM.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.errors import ConfigError
from gpu import GpuSpec, GpuStagePlan
from llm.config import LlamaConfig
from wafer import Unit, WaferSpec

GB = 1e9


@dataclass(frozen=True)
class Stage:
    wafer: int
    units: tuple[Unit, ...]
    kv_reserved_bytes: int  # for the requested users at full context

    @property
    def weight_bytes(self) -> int:
        return sum(u.weight_bytes for u in self.units)

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(u.layer for u in self.units if u.kind == "layer")


@dataclass(frozen=True)
class PipelinePlan:
    model: LlamaConfig
    spec: WaferSpec
    stages: tuple[Stage, ...]


def model_units(model: LlamaConfig) -> list[Unit]:
    layer_bytes = model.layer_shape.weight_bytes
    return ([Unit("embed", None, model.embedding_bytes)]
            + [Unit("layer", i, layer_bytes) for i in range(model.num_hidden_layers)]
            + [Unit("lm_head", None, model.lm_head_bytes)])


def _cut(sizes: list[int], parts: int, cap: int) -> list[int] | None:
    """Greedy cut points with every part <= cap and exactly `parts` non-empty parts."""
    cuts, acc, start = [], 0, 0
    for i, size in enumerate(sizes):
        left_units, left_parts = len(sizes) - i, parts - len(cuts)
        if i > start and (acc + size > cap or left_units < left_parts):
            cuts.append(i)
            acc, start = 0, i
        if size > cap:
            return None
        acc += size
    return cuts if len(cuts) == parts - 1 else None


def plan_pipeline(model: LlamaConfig, spec: WaferSpec, wafers: int, kv_tokens: int) -> PipelinePlan:
    """Balance `model` over `wafers` by bytes; `kv_tokens` is users x (prompt + output)."""
    units = model_units(model)
    if wafers > len(units):
        raise ConfigError(f"--wafers: {model.name} has {len(units)} units to place, fewer than {wafers} wafers")
    if model.weight_bytes > wafers * spec.sram_bytes:
        raise ConfigError(
            f"--wafers: {model.name} needs {model.weight_bytes / GB:.1f} GB of weights, but {wafers} "
            f"{spec.name} wafer(s) hold {wafers * spec.sram_bytes / GB:.1f} GB of SRAM")
    sizes = [u.weight_bytes for u in units]
    lo, hi = max(sizes), sum(sizes)
    while lo < hi:  # the smallest bottleneck a contiguous cut can reach
        mid = (lo + hi) // 2
        if _cut(sizes, wafers, mid) is None:
            lo = mid + 1
        else:
            hi = mid
    cuts = [0, *(_cut(sizes, wafers, lo) or []), len(units)]
    kv_per_layer_token = model.layer_shape.kv_bytes_per_token
    stages = []
    for w in range(wafers):
        stage_units = tuple(units[cuts[w]:cuts[w + 1]])
        layers = sum(1 for u in stage_units if u.kind == "layer")
        stage = Stage(w, stage_units, layers * kv_per_layer_token * kv_tokens)
        need = stage.weight_bytes + stage.kv_reserved_bytes
        if need > spec.sram_bytes:
            raise ConfigError(
                f"plan: wafer{w} would hold {stage.weight_bytes / GB:.1f} GB of weights + "
                f"{stage.kv_reserved_bytes / GB:.1f} GB of KV cache for {kv_tokens} tokens, over the "
                f"{spec.sram_bytes / GB:.1f} GB of a {spec.name}; use fewer users, shorter context "
                f"or more wafers")
        stages.append(stage)
    return PipelinePlan(model, spec, tuple(stages))


# Share of HBM a serving engine can give weights and KV cache; the rest is activations,
# workspace and the CUDA context (assumed; vLLM's default gpu_memory_utilization is 0.9).
GPU_MEMORY_UTILIZATION = 0.9


def plan_gpu_pipeline(model: LlamaConfig, spec: GpuSpec, tp: int, dtype: str, kv_tokens: int) -> list[GpuStagePlan]:
    """Tensor parallel over `tp` GPUs of a node; pipeline over as many nodes as the weights
    and the KV cache for `kv_tokens` need (the layers split evenly)."""
    if tp not in (1, 2, 4, 8) or tp > spec.gpus_per_node:
        raise ConfigError(f"--gpus: must be 1, 2, 4 or 8 (GPUs of one DGX), got {tp}")
    bytes_per_param = 1 if dtype == "fp8" else 2
    weights = model.parameters * bytes_per_param
    kv = kv_tokens * model.kv_bytes_per_token  # KV stays 16-bit
    per_node = tp * spec.hbm_bytes * GPU_MEMORY_UTILIZATION
    nodes = max(1, -(-(weights + kv) // int(per_node)))
    if nodes > 1 and tp < spec.gpus_per_node:
        raise ConfigError(f"--gpus: {model.name} in {dtype} needs {(weights + kv) / GB:.0f} GB of weights and "
                          f"KV cache; {tp} GPU(s) hold {per_node / GB:.0f} GB usable; use --gpus 8 to "
                          f"pipeline across DGX nodes")
    if nodes > model.num_hidden_layers:
        raise ConfigError(f"plan: {model.name} cannot be split over {nodes} nodes")
    layers = list(range(model.num_hidden_layers))
    cuts = [round(i * len(layers) / nodes) for i in range(nodes + 1)]
    return [GpuStagePlan(tp, tuple(layers[cuts[i]:cuts[i + 1]]), i == 0, i == nodes - 1, dtype)
            for i in range(nodes)]
