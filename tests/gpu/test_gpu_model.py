"""The GPU baseline from first principles: where tensor parallelism's losses come from,
fp8 against 16-bit with one set of constants, and the batch boundary."""

from dataclasses import fields, replace

import pytest
import simpy

from cluster.commands.calibrate import gpu_point, hbm_utilization, run_point
from cluster.engine.partition import _delivery_priority
from cluster.results.trace import Tracer
from gpu import H100, GpuStage, GpuStagePlan, GpuStepCost
from llm.config import MODEL_PRESETS
from llm.passes import Pass

MODEL = MODEL_PRESETS["llama3.1-70b"]
FREE = (("kernel_overhead_s", 0.0), ("allreduce_step_s", 0.0))


def decode(ctx: int = 256, request: int = 0) -> Pass:
    return Pass(request, 1, "decode", 1, ctx, True, 0, False)


def cost(tp: int, dtype: str = "fp16", spec=H100) -> GpuStepCost:
    """70B whole on one tensor-parallel group (what it costs, not whether it fits)."""
    plan = GpuStagePlan(tp, tuple(range(MODEL.num_hidden_layers)), True, True, dtype)
    return GpuStepCost(spec, MODEL.layer_shape, MODEL.vocab_size, plan)


def mbu(gpus: int, overrides: tuple = (), dtype: str = "fp16") -> float:
    cfg = gpu_point("llama3.1-70b", gpus=gpus, overrides=overrides, dtype=dtype)
    return hbm_utilization(cfg, run_point(cfg))


def test_no_constant_depends_on_the_gpu_count():
    """The spec holds scalars only: nothing is fitted per tensor-parallel degree."""
    assert all(isinstance(getattr(H100, f.name), (int, float, str)) for f in fields(H100))


def test_bandwidth_utilisation_falls_with_tensor_parallelism():
    """Fixed costs per kernel and per all-reduce step do not shrink with a GPU's slice of
    the weights: MBU falls from 2 to 4 to 8 GPUs. Without them the weights stream at
    HBM speed on any number of GPUs."""
    fitted = [mbu(g) for g in (2, 4, 8)]
    assert fitted[0] > fitted[1] > fitted[2]
    assert fitted[0] / fitted[2] > 1.5
    assert all(mbu(g, FREE) > 0.97 for g in (2, 4, 8))


def test_the_fall_is_the_fixed_costs_share():
    """At 8 GPUs a token's time is the weights' stream plus fixed costs that grow with the
    all-reduce's log2(g) steps: more GPUs, more fixed time, less stream."""
    two, eight = cost(2).step([decode()]), cost(8).step([decode()])
    assert eight.stream_s == pytest.approx(two.stream_s / 4, rel=0.01)
    assert eight.kernels_s == two.kernels_s
    assert eight.allreduce_s > two.allreduce_s
    assert eight.kernels_s + eight.allreduce_s > eight.stream_s  # 70B on a DGX is bound by fixed costs


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_allreduce_cost_is_log2_steps_plus_ring_bytes(tp):
    steps_only = replace(H100, kernel_overhead_s=0.0, allreduce_step_s=1e-6, nvlink_bytes_per_s=1e30)
    bytes_only = replace(H100, kernel_overhead_s=0.0, allreduce_step_s=0.0)
    tokens = 64
    act_bytes = tokens * MODEL.hidden_size * 2
    assert cost(tp, spec=steps_only).allreduce_s(tokens) == pytest.approx(1e-6 * {1: 0, 2: 1, 4: 2, 8: 3}[tp])
    assert cost(tp, spec=bytes_only).allreduce_s(tokens) == pytest.approx(
        2 * (tp - 1) / tp * act_bytes / H100.nvlink_bytes_per_s)
    # two per layer, each its own kernel as well
    per_layer = cost(tp).step([decode()]).allreduce_s / MODEL.num_hidden_layers
    one = H100.kernel_overhead_s + {1: 0, 2: 1, 4: 2, 8: 3}[tp] * H100.allreduce_step_s \
        + 2 * (tp - 1) / tp * MODEL.hidden_size * 2 / H100.nvlink_bytes_per_s
    assert per_layer == pytest.approx(0.0 if tp == 1 else 2 * one)


def test_fp8_halves_the_bytes_and_keeps_every_constant():
    fp16, fp8 = cost(2, "fp16").step([decode()]), cost(2, "fp8").step([decode()])
    assert fp8.kernels_s == fp16.kernels_s and fp8.allreduce_s == fp16.allreduce_s
    weights16, weights8 = cost(2, "fp16").weight_bytes_per_gpu, cost(2, "fp8").weight_bytes_per_gpu
    assert weights8 == pytest.approx(weights16 / 2, rel=1e-6)


def test_fp8_over_fp16_at_batch_1():
    """Halving the bytes streamed speeds a token by less than 2x: the fixed costs stay.
    (FACTS reports about 2.2x, late-2023 software; `wafersim validate` shows the gap.)"""
    speed = {d: run_point(gpu_point("llama3.1-70b", gpus=2, dtype=d))["tokens_per_s_per_user"]
             for d in ("fp16", "fp8")}
    assert 1.5 < speed["fp8"] / speed["fp16"] < 2.0


def test_tensor_parallelism_still_speeds_a_user_up():
    speeds = [run_point(gpu_point("llama3.1-70b", gpus=g))["tokens_per_s_per_user"] for g in (2, 4, 8)]
    assert speeds[0] < speeds[1] < speeds[2]


def _stage(env: simpy.Environment, tracer: Tracer) -> GpuStage:
    plan = GpuStagePlan(2, tuple(range(MODEL.num_hidden_layers)), True, True, "fp16")
    return GpuStage(env, H100, MODEL.layer_shape, MODEL.vocab_size, plan, last_stage=True,
                    send=lambda p, t, size: None, tracer=tracer)


def _deliver(env: simpy.Environment, at_ps: int, stage: GpuStage, p: Pass, seq: int) -> None:
    """A message delivery as the engine schedules one: after every timer at its instant."""
    event = simpy.Event(env)
    event._ok, event._value = True, None
    event.callbacks.append(lambda _e: stage.receive(p))
    env.schedule(event, _delivery_priority(0, seq), at_ps)


def test_a_pass_arriving_as_a_step_ends_joins_the_next_batch():
    """A step ends at t while another pass waits; a pass delivered at exactly t must be
    in the step that starts at t, not wait a whole step more."""
    env, tracer = simpy.Environment(), Tracer()
    stage = _stage(env, tracer)
    first_ps = stage.step_ps([decode(request=0)])[0]
    _deliver(env, 0, stage, decode(request=0), 0)
    _deliver(env, 1, stage, decode(request=1), 1)  # waits for the first step
    _deliver(env, first_ps, stage, decode(request=2), 2)  # arrives as the first step ends
    env.run()
    starts = {row[3]: row[0] for row in tracer.rows}
    assert starts[0] == 0
    assert starts[1] == starts[2] == first_ps


def test_a_step_waits_for_every_pass_due_at_its_start():
    env, tracer = simpy.Environment(), Tracer()
    stage = _stage(env, tracer)
    for i in range(3):
        _deliver(env, 5, stage, decode(request=i), i)
    env.run()
    assert {row[0] for row in tracer.rows} == {5} and len(tracer.rows) == 3
