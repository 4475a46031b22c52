"""The pass: tokens of one request crossing a pipeline once, whatever device runs it."""

from __future__ import annotations

from typing import NamedTuple

TOKEN_ID_BYTES = 4  # a token id travels as one int32


class Pass(NamedTuple):
    """Tokens of one request crossing the pipeline once (a prefill chunk or a decode step).
    A NamedTuple: it crosses Ray actors in every message, and pickles as a plain tuple."""

    request_id: int
    token: int  # index of the output token this pass works towards
    phase: str  # "prefill" or "decode"
    n_tokens: int
    ctx_tokens: int  # tokens already in this request's KV cache
    emits: bool  # the pass ends in a sampled token (decode, or the last prefill chunk)
    reserve_kv_tokens: int  # > 0 on a request's first pass: KV tokens to reserve
    final: bool  # the request's last pass: its KV cache is freed afterwards
    model: int = 0  # which of a replica's models (co-located on its devices) the pass belongs to
