"""The SimPy model of one tensor-parallel GPU group running one pipeline stage.

Models continuous batching: when the group is free it takes every pass waiting (decode
steps and prefill chunks) as one step, formed at the batch boundary after every pass due
at that instant has arrived. A step reads the stage's weights once and each pass's KV
cache, and does every pass's FLOPs, at HBM bandwidth or tensor throughput whichever
binds (`GpuStepCost`), plus two costs that do not shrink as the group grows, which is
why HBM bandwidth utilisation falls with tensor parallelism:

- every kernel pays a fixed launch, synchronisation and ramp cost (`kernel_overhead_s`),
  however small its slice of the matrices;
- each layer ends its attention and its MLP with an all-reduce of the activations over
  NVLink: one more kernel, ceil(log2 g) latency steps (`allreduce_step_s`, recursive
  doubling) and the ring's 2 (g - 1) / g of the bytes at NVLink bandwidth.

The same constants serve every precision: fp8 halves the weight bytes streamed and
doubles tensor throughput, nothing else. Ignores: kernel overlap, batch-size limits
other than memory, speculative decode.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import simpy

from common.units import PS_PER_S
from gpu.spec import GpuSpec
from llm.ops import LayerShape, decoder_layer_ops
from llm.passes import TOKEN_ID_BYTES, Pass

# A step starts after every message due at the same instant has been delivered (as a
# serving engine's scheduler forms its batch at the iteration boundary): its priority
# sorts after any message delivery's (which encode sender and sequence number).
BATCH_BOUNDARY_PRIORITY = 1 << 100

ALLREDUCES_PER_LAYER = 2  # Megatron tensor parallelism: after o_proj and after down_proj
LM_HEAD_KERNELS = 2  # the LM head's matmul and sampling
ACTIVATION_BYTES = 2  # activations are all-reduced in 16-bit, whatever the weights' precision


@dataclass(frozen=True)
class GpuStagePlan:
    tp: int  # GPUs in the tensor-parallel group
    layers: tuple[int, ...]
    embed: bool
    lm_head: bool
    dtype: str  # "fp16" or "fp8"


@dataclass(frozen=True)
class StepTime:
    """Where one step's time goes, per GPU of the group."""

    stream_s: float  # weights and KV from HBM, or the FLOPs, whichever binds
    kernels_s: float  # the compute kernels' fixed costs
    allreduce_s: float  # the all-reduces: their kernels, latency steps and NVLink bytes
    hbm_bytes: int
    flops: int
    hbm_bound: bool

    @property
    def total_s(self) -> float:
        return self.stream_s + self.kernels_s + self.allreduce_s


class GpuStepCost:
    """The cost of one step of a stage on its tensor-parallel group; no simulation state."""

    def __init__(self, spec: GpuSpec, shape: LayerShape, vocab_size: int, plan: GpuStagePlan) -> None:
        self.spec, self.shape, self.vocab_size, self.plan = spec, shape, vocab_size, plan
        self.bytes_per_param = 1 if plan.dtype == "fp8" else 2
        head = vocab_size * shape.hidden_size * self.bytes_per_param if plan.lm_head else 0
        self.weight_bytes_per_gpu = (len(plan.layers) * shape.weight_params * self.bytes_per_param + head) // plan.tp
        self._work: dict[tuple[int, int, bool], tuple[int, int]] = {}

    def allreduce_s(self, tokens: int) -> float:
        """One all-reduce of `tokens` activations over the group (0 on one GPU)."""
        g, spec = self.plan.tp, self.spec
        if g == 1:
            return 0.0
        act_bytes = tokens * self.shape.hidden_size * ACTIVATION_BYTES
        return (spec.kernel_overhead_s + math.ceil(math.log2(g)) * spec.allreduce_step_s
                + 2 * (g - 1) / g * act_bytes / spec.nvlink_bytes_per_s)

    def step(self, passes: list[Pass]) -> StepTime:
        g, n_layers, spec = self.plan.tp, len(self.plan.layers), self.spec
        flops = kv_bytes = tokens = 0
        for p in passes:
            pass_flops, pass_kv_bytes = self._pass_work(p.n_tokens, p.ctx_tokens, p.emits)
            flops += pass_flops
            kv_bytes += pass_kv_bytes
            tokens += p.n_tokens
        hbm_bytes = self.weight_bytes_per_gpu + kv_bytes // g
        flops_per_gpu = flops // g
        hbm_s = hbm_bytes / spec.hbm_bytes_per_s
        flops_s = flops_per_gpu / spec.flops_per_s(self.plan.dtype)
        kernels = n_layers * spec.kernels_per_layer + (LM_HEAD_KERNELS if self.plan.lm_head else 0)
        return StepTime(max(hbm_s, flops_s), kernels * spec.kernel_overhead_s,
                        n_layers * ALLREDUCES_PER_LAYER * self.allreduce_s(tokens),
                        hbm_bytes, flops_per_gpu, hbm_s >= flops_s)

    def _pass_work(self, n: int, ctx: int, emits: bool) -> tuple[int, int]:
        """(FLOPs, KV bytes) of one pass over the stage's layers, cached: passes repeat."""
        key = (n, ctx, emits)
        work = self._work.get(key)
        if work is None:
            n_layers = len(self.plan.layers)
            flops = sum(op.flops for op in decoder_layer_ops(self.shape, n, ctx)) * n_layers
            if self.plan.lm_head and emits:
                flops += 2 * self.shape.hidden_size * self.vocab_size
            work = self._work[key] = (flops, (ctx + n) * self.shape.kv_bytes_per_token * n_layers)
        return work


class GpuStage:
    def __init__(self, env: simpy.Environment, spec: GpuSpec, shape: LayerShape, vocab_size: int,
                 plan: GpuStagePlan, *, last_stage: bool, send: Callable[[Pass, int, int], None],
                 tracer) -> None:
        self.env, self.spec, self.shape, self.vocab_size, self.plan = env, spec, shape, vocab_size, plan
        self.last_stage = last_stage
        self._send, self._tracer, self._rows = send, tracer, tracer.rows
        self._queue: deque[Pass] = deque()
        self._busy_until: int | None = None
        self._boundary_pending = False
        self.busy_ps_by_request: dict[int, float] = {}  # step time each request's passes took
        self._name = tracer.name("step")
        self.cost = GpuStepCost(spec, shape, vocab_size, plan)
        self.bytes_per_param = self.cost.bytes_per_param
        self.weight_bytes_per_gpu = self.cost.weight_bytes_per_gpu
        self.transit_ps = self.step_ps([Pass(0, 1, "decode", 1, 0, True, 0, False)])[0]

    def step_ps(self, passes: list[Pass]) -> tuple[int, int, int]:
        """(duration, HBM bytes per GPU, FLOPs per GPU) of one step over `passes`."""
        t = self.cost.step(passes)
        return math.ceil(t.total_s * PS_PER_S), t.hbm_bytes, t.flops

    def horizon_ps(self) -> int | None:
        if self._busy_until is not None:
            return self._busy_until
        return self.env.now + self.transit_ps if self._queue else None

    def receive(self, p: Pass) -> None:
        self._queue.append(p)
        if self._busy_until is None:
            self._at_batch_boundary()

    def _at_batch_boundary(self) -> None:
        """Start the next step now, but after every message due at this instant."""
        if self._boundary_pending:
            return
        self._boundary_pending = True
        boundary = simpy.Event(self.env)
        boundary.callbacks.append(self._start)
        boundary._ok, boundary._value = True, None
        self.env.schedule(boundary, BATCH_BOUNDARY_PRIORITY, 0)

    def _start(self, _event: simpy.Event | None = None) -> None:
        self._boundary_pending = False
        batch = list(self._queue)
        self._queue.clear()
        duration, hbm_bytes, flops = self.step_ps(batch)
        now = self.env._now
        self._busy_until = now + duration
        template = self._tracer.template("compute", self._name, None, hbm_bytes, flops,
                                         batch[0].phase if len({p.phase for p in batch}) == 1 else None)
        share = duration / len(batch)  # a step's GPU time, split evenly among its passes (energy)
        for p in batch:
            self._rows.append((now, now + duration, template, p.request_id, p.token))
            self.busy_ps_by_request[p.request_id] = self.busy_ps_by_request.get(p.request_id, 0.0) + share
        self.env.process(self._finish(batch, duration))

    def _finish(self, batch: list[Pass], duration: int):
        yield self.env.timeout(duration)
        self._busy_until = None
        for p in batch:
            if p.emits or not self.last_stage:
                size = TOKEN_ID_BYTES if self.last_stage else p.n_tokens * self.shape.activation_bytes_per_token
                self._send(p, self.env._now, size)
        if self._queue:
            # Not at once: a pass delivered at this very instant (a timeout runs before
            # any delivery at its time) joins this batch.
            self._at_batch_boundary()

    def finish(self, end_ps: int) -> None:
        pass
