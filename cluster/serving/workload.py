"""Requests: when they arrive and how long they are. Seeded, so a run is reproducible."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from common.errors import ConfigError
from common.units import PS_PER_S


@dataclass(frozen=True)
class Request:
    request_id: int
    arrival_ps: int
    prompt_tokens: int
    output_tokens: int


def rng_for(seed: int, stream: str) -> np.random.Generator:
    """A random stream named, not numbered: adding a stream never shifts another's draws."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(zlib.crc32(stream.encode()),)))


def generate_requests(n_requests: int, prompt_tokens: int, output_tokens: int,
                      rate_per_s: float, seed: int) -> list[Request]:
    """`n_requests` fixed-length requests; all at t=0 when `rate_per_s` is 0, else Poisson."""
    if n_requests <= 0:
        raise ConfigError(f"--requests: must be > 0, got {n_requests}")
    if prompt_tokens <= 0:
        raise ConfigError(f"--prompt-tokens: must be > 0, got {prompt_tokens}")
    if output_tokens <= 0:
        raise ConfigError(f"--output-tokens: must be > 0, got {output_tokens}")
    if rate_per_s < 0:
        raise ConfigError(f"--rate: must be >= 0 requests/s, got {rate_per_s}")
    if rate_per_s == 0:
        arrivals = [0] * n_requests
    else:
        gaps_s = rng_for(seed, "arrivals").exponential(1.0 / rate_per_s, n_requests)
        arrivals = np.cumsum(np.ceil(gaps_s * PS_PER_S).astype(np.int64)).tolist()
    return [Request(i, int(t), prompt_tokens, output_tokens) for i, t in enumerate(arrivals)]
