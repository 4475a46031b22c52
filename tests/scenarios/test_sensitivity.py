"""Every constant a user can change moves the result it should: each `--spec` field of the
wafer and of the GPU, and each `--link` field, changed alone on a small run, moves its
figure in the direction the model says (a faster clock lowers the time per token, more SRAM
bandwidth lowers decode time, a slower link lengthens transfers, more latency delays
arrivals, more watts cost more joules). A field that moves nothing is a failure naming it:
either the model ignores a constant it exposes, or the run below cannot show it and needs
another (say which in EXPECT).

Runs: Llama3.1-8B over two WSE-3 wafers in one hall (links between them), a few users, a
few tokens, `--detail stage`, in-process; the GPU fields on one H100.
"""

from __future__ import annotations

from dataclasses import fields

import pytest

from cluster.commands.scenario import RunOptions, ScenarioConfig, run_scenario
from common.errors import ConfigError
from gpu import GPU_PRESETS
from interconnect import CS3_LINK
from wafer.spec import WSE3

WAFER_RUN = dict(scenario="sensitivity", model="llama3.1-8b", wafers=2, sites=("santa-clara", "santa-clara"),
                 users=4, prompt_tokens=256, output_tokens=8, detail="stage", prefill_chunk_tokens=128)
GPU_RUN = dict(scenario="sensitivity-gpu", model="llama3.1-8b", wafers=1, sites=("santa-clara",), users=4,
               prompt_tokens=256, output_tokens=8, device="h100", prefill_chunk_tokens=128)

UP, DOWN = +1, -1
REFUSED = "refused"  # the changed run no longer fits: the constant decides whether it runs at all

# field: (new value, figure, direction it must move). The new value is a plain change of the
# preset's (x2, /2, or from 0); the figure is what the model says that constant drives.
WAFER_EXPECT = {
    # fewer cores: smaller regions, which are faster or slower (work / cores against the fabric): it moves
    "mesh_width_cores": (WSE3.mesh_width_cores // 2, "ttft_ms_mean", None),
    "mesh_height_cores": (WSE3.mesh_height_cores // 2, "ttft_ms_mean", None),
    # what a wafer holds: these pipelines reserve every user's KV cache up front, so less SRAM
    # than weights plus caches refuses the plan (a fleet would queue them: admission by bytes)
    "sram_bytes": (8_040_000_000, "plan", REFUSED),
    # a region is never smaller than its weights' cores: less SRAM a core forces bigger
    # regions than the latency-optimal size (more cores a region, a longer fabric)
    "sram_bytes_per_core": (20 * 1024, "tpot_ms_mean", UP),
    "sram_bytes_per_s": (WSE3.sram_bytes_per_s * 2, "tpot_ms_mean", DOWN),  # decode reads every weight
    "fp16_lanes_per_core": (WSE3.fp16_lanes_per_core * 2, "ttft_ms_mean", DOWN),  # prefill is compute
    "clock_hz": (WSE3.clock_hz * 2, "tpot_ms_mean", DOWN),
    "mesh_link_bytes_per_cycle": (WSE3.mesh_link_bytes_per_cycle * 4, "ttft_ms_mean", DOWN),
    "mesh_hop_cycles": (WSE3.mesh_hop_cycles * 4, "tpot_ms_mean", UP),
    "core_router_cycles": (WSE3.core_router_cycles * 4, "tpot_ms_mean", UP),
    "sync_cycles_per_hop": (WSE3.sync_cycles_per_hop * 2, "tpot_ms_mean", UP),
    "reroute_cycles": (50, "tpot_ms_mean", UP),
    "nonlinear_cycles_per_element": (WSE3.nonlinear_cycles_per_element * 4, "ttft_ms_mean", UP),
    "system_busy_w": (WSE3.system_busy_w * 2, "energy_j", UP),
    "system_idle_w": (WSE3.system_idle_w * 2, "energy_j", UP),
}

LINK_EXPECT = {
    "lanes": (CS3_LINK.lanes // 4, "link_ms_per_token", UP),  # a quarter of the wire: longer serialisation
    "lane_bits_per_s": (CS3_LINK.lane_bits_per_s / 4, "link_ms_per_token", UP),
    "latency_ps": (CS3_LINK.latency_ps * 10, "tpot_ms_mean", UP),  # every token crosses it: later arrival
    "energy_pj_per_bit": (CS3_LINK.energy_pj_per_bit * 10, "energy_j", UP),
}

H100 = GPU_PRESETS["h100"]
GPU_EXPECT = {
    "hbm_bytes": (17_000_000_000, "plan", REFUSED),  # 16 GB of weights and the caches no longer fit
    "hbm_bytes_per_s": (H100.hbm_bytes_per_s * 2, "tpot_ms_mean", DOWN),  # decode reads every weight
    "fp16_flops_per_s": (H100.fp16_flops_per_s / 4, "ttft_ms_mean", UP),  # prefill is compute
    "fp8_flops_per_s": None,  # fp8 only: its own run below
    "nvlink_bytes_per_s": None,  # tensor parallel only: its own run below
    "gpus_per_node": None,  # a pipeline over nodes only: its own run below
    "node_link_bits_per_s": None,
    "node_link_latency_ps": None,
    "kernels_per_layer": (H100.kernels_per_layer * 4, "tpot_ms_mean", UP),
    "kernel_overhead_s": (H100.kernel_overhead_s * 4, "tpot_ms_mean", UP),
    "allreduce_step_s": None,  # tensor parallel only
    "busy_w": (H100.busy_w * 2, "energy_j", UP),
    "idle_w": None,  # a GPU that never idles: its own run below
    "node_overhead_w": (H100.node_overhead_w * 2, "energy_j", UP),
}
# GPU fields that a one-GPU fp16 run cannot show, with the run that does: (run changes, field
# value, figure, direction)
GPU_SPECIAL = {
    "fp8_flops_per_s": ({"dtype": "fp8"}, H100.fp8_flops_per_s / 8, "ttft_ms_mean", UP),
    "nvlink_bytes_per_s": ({"gpus": 8}, H100.nvlink_bytes_per_s / 100, "tpot_ms_mean", UP),
    "allreduce_step_s": ({"gpus": 8}, H100.allreduce_step_s * 10, "tpot_ms_mean", UP),
    # 405B in fp16 (810 GB) on eight GPUs a node: a pipeline over two DGX nodes and their link
    "gpus_per_node": ({"model": "llama3.1-405b", "gpus": 8}, 16, "plan", REFUSED),
    "node_link_bits_per_s": ({"model": "llama3.1-405b", "gpus": 8}, 1e9, "tpot_ms_mean", UP),
    "node_link_latency_ps": ({"model": "llama3.1-405b", "gpus": 8}, 10**9, "tpot_ms_mean", UP),
    # idle power only counts while the GPU waits: requests spread out by Poisson arrivals
    "idle_w": ({"rate_per_s": 10.0}, H100.idle_w * 2, "energy_j", UP),
}


def _run(tmp_path, name: str, base: dict, **changes) -> dict:
    cfg = ScenarioConfig(**{**base, **changes})
    try:
        return run_scenario(cfg, RunOptions(trace=str(tmp_path / f"{name}.arrow"), watchdog_s=0))
    except ConfigError as exc:
        return {"plan": f"refused: {exc}"}


@pytest.fixture(scope="module")
def baselines(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("sensitivity")
    return {"wafer": _run(folder, "wafer", WAFER_RUN), "gpu": _run(folder, "gpu", GPU_RUN)}


def _moved(field: str, before: dict, after: dict, figure: str, direction) -> None:
    assert "plan" not in before, f"{field}: the unchanged run was {before['plan']}"
    if direction == REFUSED:
        assert after.get("plan", "").startswith("refused"), f"{field}: the run should no longer fit, but ran"
        return
    assert "plan" not in after, f"{field}: the changed run was {after['plan']}"
    old, new = before[figure], after[figure]
    assert old is not None and new is not None, f"{field}: {figure} is missing from the summary"
    if direction is None:
        assert new != old, f"{field}: moved nothing ({figure} stayed {old})"
    elif direction == UP:
        assert new > old, f"{field}: {figure} should rise, went {old} -> {new}"
    else:
        assert new < old, f"{field}: {figure} should fall, went {old} -> {new}"


def test_every_exposed_field_has_an_expectation():
    """A new constant must say what it moves (or which run shows it)."""
    assert set(WAFER_EXPECT) == {f.name for f in fields(WSE3)} - {"name"}
    assert set(LINK_EXPECT) == {f.name for f in fields(CS3_LINK)}
    assert set(GPU_EXPECT) == {f.name for f in fields(H100)} - {"name"}
    assert {k for k, v in GPU_EXPECT.items() if v is None} == set(GPU_SPECIAL)


@pytest.mark.parametrize("field", sorted(WAFER_EXPECT))
def test_wafer_spec_field_moves_its_figure(tmp_path, baselines, field):
    value, figure, direction = WAFER_EXPECT[field]
    after = _run(tmp_path, field, WAFER_RUN, spec_overrides=((field, value),))
    _moved(f"--spec {field}", baselines["wafer"], after, figure, direction)


@pytest.mark.parametrize("field", sorted(LINK_EXPECT))
def test_link_field_moves_its_figure(tmp_path, baselines, field):
    value, figure, direction = LINK_EXPECT[field]
    after = _run(tmp_path, field, WAFER_RUN, link_overrides=((field, value),))
    _moved(f"--link {field}", baselines["wafer"], after, figure, direction)


@pytest.mark.parametrize("field", sorted(k for k, v in GPU_EXPECT.items() if v is not None))
def test_gpu_spec_field_moves_its_figure(tmp_path, baselines, field):
    value, figure, direction = GPU_EXPECT[field]
    after = _run(tmp_path, field, GPU_RUN, spec_overrides=((field, value),))
    _moved(f"--spec {field} (h100)", baselines["gpu"], after, figure, direction)


@pytest.mark.parametrize("field", sorted(GPU_SPECIAL))
def test_gpu_spec_field_moves_its_figure_on_the_run_that_uses_it(tmp_path, field):
    changes, value, figure, direction = GPU_SPECIAL[field]
    before = _run(tmp_path, "base", GPU_RUN, **changes)
    after = _run(tmp_path, field, GPU_RUN, **changes, spec_overrides=((field, value),))
    _moved(f"--spec {field} (h100, {changes})", before, after, figure, direction)


def test_a_spec_that_would_force_a_clamp_is_refused_naming_the_field(tmp_path):
    """No silent clamp: SRAM a core too small for a region's weights at its share of the
    wafer is an error naming `sram_bytes_per_core`, not a region quietly short of cores."""
    from common.errors import CapacityError

    cfg = ScenarioConfig(**{**WAFER_RUN, "wafers": 1, "sites": ("santa-clara",)},
                         spec_overrides=(("sram_bytes_per_core", 1024),))
    with pytest.raises(CapacityError, match="sram_bytes_per_core=1024"):
        run_scenario(cfg, RunOptions(trace=str(tmp_path / "clamp.arrow")))
    assert list(tmp_path.iterdir()) == []
