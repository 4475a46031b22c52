"""Faults a link can suffer, declared before the run: down for a while, or degraded to a
share of its bandwidth. A link knows its whole schedule, so it still knows a transfer's
arrival the moment the transfer enters (send at entry stays valid): a transfer that would
start on a down wire waits for it to come back; one that starts on a degraded wire
serializes at the reduced rate for its whole length (a transfer does not straddle)."""

from __future__ import annotations

import math
from dataclasses import dataclass

KINDS = ("link-down", "link-degraded")


@dataclass(frozen=True)
class LinkFault:
    kind: str
    start_ps: int
    end_ps: int
    bandwidth: float = 1.0  # link-degraded: the share of the bandwidth left, in (0, 1]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not 0 <= self.start_ps < self.end_ps:
            raise ValueError(f"fault: needs 0 <= start < end, got {self.start_ps} and {self.end_ps} ps")
        if not (math.isfinite(self.bandwidth) and 0 < self.bandwidth <= 1):
            raise ValueError(f"fault: bandwidth must be in (0, 1], got {self.bandwidth}")


def wire_start_ps(faults: tuple[LinkFault, ...], ready_ps: int) -> int:
    """When a transfer ready at `ready_ps` can start: after every outage covering it."""
    start, moved = ready_ps, True
    while moved:
        moved = False
        for f in faults:
            if f.kind == "link-down" and f.start_ps <= start < f.end_ps:
                start, moved = f.end_ps, True
    return start


def bandwidth_share(faults: tuple[LinkFault, ...], start_ps: int) -> float:
    """The share of bandwidth a transfer starting at `start_ps` gets (the worst degradation)."""
    return min((f.bandwidth for f in faults if f.kind == "link-degraded" and f.start_ps <= start_ps < f.end_ps),
               default=1.0)
