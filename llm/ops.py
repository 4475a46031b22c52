"""The work in one transformer pass, op by op: FLOPs, SRAM bytes and mesh traffic.

A *pass* pushes `n_tokens` new tokens (one for decode, a chunk for prefill) through a
unit, attending over `ctx_tokens` tokens already in the KV cache. The counts are exact
for a Llama-style decoder layer (RMSNorm, GQA attention, SwiGLU MLP); what the counts
cost on a wafer is `wafer.costs`' business.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class MeshPattern(Enum):
    """How an op moves data across the cores of its region."""

    NONE = "none"  # elementwise: data stays on its core
    MATMUL = "matmul"  # broadcast the input along columns, reduce partial sums along rows
    ALLREDUCE = "allreduce"  # one scalar per token gathered and broadcast back (a norm)


@dataclass(frozen=True)
class LayerShape:
    """The dimensions a decoder layer's cost depends on (mirrors HF config fields)."""

    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    bytes_per_param: int = 2  # FP16/BF16

    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_key_value_heads * self.head_dim

    @property
    def weight_params(self) -> int:
        h, f = self.hidden_size, self.intermediate_size
        attn = h * (self.q_size + 2 * self.kv_size) + self.q_size * h
        return attn + 3 * h * f + 2 * h  # two RMSNorm weight vectors

    @property
    def weight_bytes(self) -> int:
        return self.weight_params * self.bytes_per_param

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.kv_size * self.bytes_per_param  # K and V

    @property
    def activation_bytes_per_token(self) -> int:
        return self.hidden_size * self.bytes_per_param


@dataclass(frozen=True)
class OpWork:
    """What one op of one pass must do, independent of the hardware."""

    name: str
    flops: int
    sram_bytes: int  # bytes read from and written to SRAM
    mesh: MeshPattern
    mesh_in_bytes: int = 0  # bytes broadcast into the region (MATMUL)
    mesh_out_bytes: int = 0  # bytes reduced out of the region (MATMUL)
    nonlinear_elements: int = 0  # exp, SiLU, rsqrt evaluations


def _matmul(name: str, n: int, k: int, m: int, bpp: int) -> OpWork:
    """y[n, m] = x[n, k] @ W[k, m]; weights are read from SRAM once per token (GEMV dataflow)."""
    return OpWork(name, flops=2 * n * k * m, sram_bytes=n * (k * m + k + m) * bpp,
                  mesh=MeshPattern.MATMUL, mesh_in_bytes=n * k * bpp, mesh_out_bytes=n * m * bpp)


def _norm(name: str, n: int, h: int, bpp: int) -> OpWork:
    return OpWork(name, flops=4 * n * h, sram_bytes=3 * n * h * bpp, mesh=MeshPattern.ALLREDUCE,
                  mesh_in_bytes=n * 4, mesh_out_bytes=n * 4, nonlinear_elements=n)


def _elementwise(name: str, n: int, elements: int, bpp: int, nonlinear: int = 0) -> OpWork:
    return OpWork(name, flops=n * elements, sram_bytes=3 * n * elements * bpp,
                  mesh=MeshPattern.NONE, nonlinear_elements=n * nonlinear)


def decoder_layer_ops(shape: LayerShape, n_tokens: int, ctx_tokens: int) -> list[OpWork]:
    """The ops of one decoder layer for a pass of `n_tokens` over `ctx_tokens` of cache."""
    if n_tokens <= 0 or ctx_tokens < 0:
        raise ValueError(f"pass: n_tokens must be > 0 and ctx_tokens >= 0, got {n_tokens}, {ctx_tokens}")
    n, h, f, b = n_tokens, shape.hidden_size, shape.intermediate_size, shape.bytes_per_param
    q, kv, heads, d = shape.q_size, shape.kv_size, shape.num_attention_heads, shape.head_dim
    # Causal attention: token i of the chunk sees ctx + i + 1 keys.
    keys_seen = n * ctx_tokens + n * (n + 1) // 2
    attention = OpWork(
        "attention",
        flops=4 * keys_seen * heads * d,  # QK^T and PV
        # Read each cached K/V once per pass; write the new tokens' K/V.
        sram_bytes=(ctx_tokens + n) * 2 * kv * b + n * 2 * kv * b + 2 * n * q * b,
        mesh=MeshPattern.MATMUL, mesh_in_bytes=n * q * b, mesh_out_bytes=n * q * b,
        nonlinear_elements=keys_seen * heads,  # softmax exp
    )
    return [
        _norm("attn_norm", n, h, b),
        _matmul("qkv_proj", n, h, q + 2 * kv, b),
        attention,
        _matmul("o_proj", n, q, h, b),
        _elementwise("residual1", n, h, b),
        _norm("mlp_norm", n, h, b),
        _matmul("gate_up_proj", n, h, 2 * f, b),
        _elementwise("silu_mul", n, f, b, nonlinear=1),
        _matmul("down_proj", n, f, h, b),
        _elementwise("residual2", n, h, b),
    ]


def embedding_ops(hidden_size: int, n_tokens: int, bytes_per_param: int = 2) -> list[OpWork]:
    """Look up `n_tokens` rows of the embedding table."""
    return [OpWork("embed_lookup", flops=0, sram_bytes=2 * n_tokens * hidden_size * bytes_per_param,
                   mesh=MeshPattern.NONE)]


def lm_head_ops(hidden_size: int, vocab_size: int, bytes_per_param: int = 2) -> list[OpWork]:
    """Final norm, logits and greedy sampling for the one token a pass emits."""
    return [
        _norm("final_norm", 1, hidden_size, bytes_per_param),
        _matmul("lm_head", 1, hidden_size, vocab_size, bytes_per_param),
        OpWork("sample", flops=vocab_size, sram_bytes=vocab_size * bytes_per_param,
               mesh=MeshPattern.ALLREDUCE, mesh_in_bytes=8, mesh_out_bytes=8),
    ]
