"""Faults declared before the run. A link goes down for a while (`link-down`), keeps a
share of its bandwidth (`link-degraded`) or flaps: down for the first half of each period
of its window, up for the second (`link-flap`). A device is lost for good (`wafer-lost`,
and `site-lost`: every device of a datacenter); `cluster.fleet.build` turns those into the
loss times the wafer, GPU and frontend models take (`wafer` may not import this package).

A link knows its whole schedule, so it still knows a transfer's arrival the moment the
transfer enters (send at entry stays valid): a transfer that would start on a down wire
waits for it to come back; one that starts on a degraded wire serializes at the reduced
rate for its whole length (a transfer does not straddle). A flap is the same rule with a
periodic outage, so a transfer ready in a down half waits for the next up half."""

from __future__ import annotations

import math
from dataclasses import dataclass

KINDS = ("link-down", "link-degraded", "link-flap")  # a link LP's faults (and their trace names)
DEVICE_KINDS = ("wafer-lost", "site-lost")  # a device lost for good, from `at_ms` on


@dataclass(frozen=True)
class LinkFault:
    kind: str
    start_ps: int
    end_ps: int
    bandwidth: float = 1.0  # link-degraded: the share of the bandwidth left, in (0, 1]
    period_ps: int = 0  # link-flap: down for the first period_ps // 2 of each period

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not 0 <= self.start_ps < self.end_ps:
            raise ValueError(f"fault: needs 0 <= start < end, got {self.start_ps} and {self.end_ps} ps")
        if not (math.isfinite(self.bandwidth) and 0 < self.bandwidth <= 1):
            raise ValueError(f"fault: bandwidth must be in (0, 1], got {self.bandwidth}")
        if (self.kind == "link-flap") != (self.period_ps > 0) or self.period_ps == 1:
            raise ValueError(f"fault: a period (>= 2 ps) goes with link-flap only, got {self.period_ps} ps "
                             f"for {self.kind}")

    def down_until_ps(self, t_ps: int) -> int:
        """When the wire is up again for a transfer ready at `t_ps` (t_ps itself if it is up)."""
        if not self.start_ps <= t_ps < self.end_ps:
            return t_ps
        if self.kind == "link-down":
            return self.end_ps
        if self.kind == "link-flap":
            phase = (t_ps - self.start_ps) % self.period_ps
            down_ps = self.period_ps // 2
            return min(t_ps - phase + down_ps, self.end_ps) if phase < down_ps else t_ps
        return t_ps


def wire_start_ps(faults: tuple[LinkFault, ...], ready_ps: int) -> int:
    """When a transfer ready at `ready_ps` can start: after every outage covering it."""
    start, moved = ready_ps, True
    while moved:
        moved = False
        for f in faults:
            later = f.down_until_ps(start)
            if later != start:
                start, moved = later, True
    return start


def bandwidth_share(faults: tuple[LinkFault, ...], start_ps: int) -> float:
    """The share of bandwidth a transfer starting at `start_ps` gets (the worst degradation)."""
    return min((f.bandwidth for f in faults if f.kind == "link-degraded" and f.start_ps <= start_ps < f.end_ps),
               default=1.0)
