"""Simulated time is integer picoseconds everywhere (DESIGN.md); these convert at the edges.

Durations from seconds are rounded up to whole picoseconds, so a cost is never zero by
rounding and the same float always gives the same int.
"""

from __future__ import annotations

import math

PS_PER_NS = 1_000
PS_PER_US = 1_000_000
PS_PER_MS = 1_000_000_000
PS_PER_S = 1_000_000_000_000

NULL = -1  # "none" in a trace row or an int column: ids, counts and layers are never negative


def ps_from_s(seconds: float) -> int:
    """Seconds to whole picoseconds, rounded up."""
    return math.ceil(seconds * PS_PER_S)


def ps_from_ms(milliseconds: float) -> int:
    return math.ceil(milliseconds * PS_PER_MS)


def ps_from_us(microseconds: float) -> int:
    return math.ceil(microseconds * PS_PER_US)
