"""Op costs on a region follow from FLOPs, SRAM bytes and mesh hops."""

from dataclasses import replace

import pytest

from llm.ops import LayerShape, MeshPattern, decoder_layer_ops
from wafer import WSE2, WSE3
from wafer.costs import Region, op_cost

SHAPE_70B = LayerShape(8192, 28672, 64, 8, 128)


def test_wse3_peak_matches_facts():
    """900k-class cores x 8 lanes x 2 x 1.1 GHz is about 15.8 PFLOP/s (FACTS, derived)."""
    assert WSE3.peak_fp16_flops_per_s == pytest.approx(15.7e15, rel=0.02)
    assert WSE3.cores * WSE3.sram_bytes_per_core <= WSE3.sram_bytes * 1.001


def test_layer_weights_match_facts():
    """70B: 1.711 GB of FP16 weights per layer, 4 KiB of KV cache per token (FACTS)."""
    assert SHAPE_70B.weight_bytes == pytest.approx(1.711e9, rel=1e-3)
    assert SHAPE_70B.kv_bytes_per_token == 4096


def test_matmul_between_compute_and_communication_bounds():
    """An op is never faster than its compute or its SRAM streaming, and no slower than
    all of its parts added up."""
    region = Region(40_000)
    for work in decoder_layer_ops(SHAPE_70B, 1, 512):
        cost = op_cost(work, region, WSE3)
        assert cost.total_ps >= max(cost.compute_ps, cost.sram_ps)
        assert cost.total_ps <= cost.compute_ps + cost.sram_ps + cost.nonlinear_ps + cost.mesh_ps + cost.overhead_ps
        if work.mesh is MeshPattern.MATMUL:
            assert cost.mesh_ps > 0


def test_more_cores_speed_compute_but_lengthen_the_fabric():
    """A bigger region divides a chunk's FLOPs over more cores, but every broadcast,
    reduction and barrier crosses more hops: prefill gains, a lone decode token loses."""
    def layer_ps(cores, n, ctx):
        return sum(op_cost(w, Region(cores), WSE3).total_ps for w in decoder_layer_ops(SHAPE_70B, n, ctx))

    assert layer_ps(40_000, 512, 0) < layer_ps(10_000, 512, 0)
    fabric = [sum(op_cost(w, Region(c), WSE3).mesh_ps for w in decoder_layer_ops(SHAPE_70B, 1, 100))
              for c in (10_000, 40_000)]
    assert fabric[1] > fabric[0]
    assert layer_ps(40_000, 1, 4000) > layer_ps(40_000, 1, 100)  # more context, never faster


def test_prefill_chunk_is_compute_bound():
    """A 256-token chunk does 256x the FLOPs; on a region it takes far longer than a token."""
    region = Region(40_000)
    one = sum(op_cost(w, region, WSE3).total_ps for w in decoder_layer_ops(SHAPE_70B, 1, 0))
    chunk_ops = decoder_layer_ops(SHAPE_70B, 256, 0)
    chunk = sum(op_cost(w, region, WSE3).total_ps for w in chunk_ops)
    flops = sum(w.flops for w in chunk_ops)
    assert chunk >= flops / (region.cores * WSE3.fp16_flops_per_s_per_core) * 1e12
    assert chunk > 20 * one


def test_wse2_is_slower_than_wse3_per_region():
    ops = decoder_layer_ops(SHAPE_70B, 16, 0)
    assert sum(op_cost(w, Region(30_000), WSE2).total_ps for w in ops) > \
        sum(op_cost(w, Region(30_000), WSE3).total_ps for w in ops)


def test_spec_rejects_nonsense():
    with pytest.raises(ValueError, match="clock_hz"):
        replace(WSE3, clock_hz=0)
