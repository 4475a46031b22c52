"""Requests: when they arrive and how long they are. Seeded, so a run is reproducible.

Models: arrivals all at t=0, Poisson (exponential gaps) or bursty (gamma gaps with a
chosen coefficient of variation); fixed prompt and output lengths, or per-request lengths
replayed from a request file (`cluster.serving.requestfile`); a request may name its model,
the site its user sits in and the session (conversation) it belongs to.

Ignores: rate changes over a run (diurnal load: one rate per run), correlation between
successive gaps (arrivals are a renewal process), correlation between a request's lengths
and its arrival, tokenization (lengths are given in tokens) and users who wait for an
answer before asking again (arrivals are open-loop).
"""

from __future__ import annotations

import math
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
    model: str = ""  # "" = the run's one model
    user_site: str = ""  # "" = no site: the user's network is not modelled
    session: int = -1  # -1 = no session (common.units.NULL)


def rng_for(seed: int, stream: str) -> np.random.Generator:
    """A random stream named, not numbered: adding a stream never shifts another's draws."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(zlib.crc32(stream.encode()),)))


ARRIVAL_KINDS = ("poisson", "gamma")
MAX_ARRIVAL_PS = 2**63 - 1  # int64 picoseconds: about 106 days of simulated time


def _positive_finite(name: str, value: float) -> float:
    try:
        ok = not isinstance(value, bool) and math.isfinite(value) and value > 0
    except TypeError:
        ok = False
    if not ok:
        raise ConfigError(f"{name}: must be a finite number > 0, got {value!r}")
    return float(value)


def arrival_times_ps(kind: str, n: int, rate_per_s: float, burstiness_cv: float,
                     rng: np.random.Generator) -> np.ndarray:
    """`n` arrival times (int64 ps, non-decreasing): the running sum of `n` gaps, each
    rounded up to whole picoseconds.

    "poisson": exponential gaps of mean 1/rate (`burstiness_cv` is checked but unused).
    "gamma": gamma gaps of mean 1/rate and coefficient of variation `burstiness_cv`
    (shape k = 1/cv^2, scale = 1/(rate*k)); cv=1 is Poisson, cv>1 burstier, cv<1 more regular.
    "poisson" from the stream "arrivals" draws what the pipeline scenarios always drew.
    """
    if kind not in ARRIVAL_KINDS:
        raise ConfigError(f"kind: must be one of {', '.join(ARRIVAL_KINDS)}, got {kind!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ConfigError(f"n: must be an integer > 0, got {n!r}")
    rate = _positive_finite("rate_per_s", rate_per_s)
    cv = _positive_finite("burstiness_cv", burstiness_cv)
    if kind == "poisson":
        gaps_s = rng.exponential(1.0 / rate, int(n))
    else:
        shape = 1.0 / (cv * cv)
        gaps_s = rng.gamma(shape, 1.0 / (rate * shape), int(n))
    gaps_ps = np.ceil(gaps_s * PS_PER_S)
    # Checked as floats before the cast (a cast past int64 wraps round silently), with a
    # margin for the float sum's rounding.
    if not np.isfinite(gaps_ps).all() or float(gaps_ps.sum()) > 0.999 * MAX_ARRIVAL_PS:
        raise ConfigError(f"rate_per_s: {n} arrivals at {rate_per_s}/s run past the int64 picosecond "
                          f"clock (about 106 days)")
    return np.cumsum(gaps_ps.astype(np.int64))
