"""A chain of FIFO single servers: the regions a pass crosses on its way over a wafer.

Each region works on one pass at a time and passes leave in the order they came, so a
pass's whole schedule is known when it enters (Lindley's recursion,
end_j = max(end_{j-1}, free_j) + service_j). That is what lets a wafer promise its exact
next send time (its horizon) and lets `--detail stage` skip the per-layer events.

Most passes never wait (on the headline, 5 in 6 do not): their exits are entry + C_j,
with C the cumulative service. While the latest pass never waited, the tandem keeps
that O(1) form, and the next pass never waits either iff
entry >= entry_q + max_j(Cq_j - C_{j-1}), a gap that depends only on the two kinds of
pass and is cached per pair. Otherwise the recursion runs as one list comprehension.
"""

from __future__ import annotations

from itertools import chain
from operator import sub

_MAX_GAPS = 1 << 16  # pairs of pass kinds remembered; consecutive passes are mostly alike


class FifoTandem:
    """Departure bookkeeping for `n_units` FIFO servers in series."""

    def __init__(self, n_units: int) -> None:
        self._free_ps = [0] * n_units  # departure of the latest pass from each unit
        self._lazy: tuple[int, tuple[int, ...], int] | None = None  # (entry, cum_end, key)
        self._gaps: dict[tuple[int, int], int] = {}
        self.last_exit_ps = 0

    def admit(self, entry_ps: int, service_ps: tuple[int, ...], cum_end_ps: tuple[int, ...],
              key: int) -> list[int] | None:
        """Admit a pass at `entry_ps`. None if it never waits (it leaves unit j at
        entry_ps + cum_end_ps[j]), else when it leaves each unit. `key` names the kind of
        pass: equal keys, equal service."""
        lazy = self._lazy
        if lazy is not None:
            q_entry, q_cum, q_key = lazy
            gap = self._gaps.get((q_key, key))
            if gap is None:
                if len(self._gaps) >= _MAX_GAPS:
                    self._gaps.clear()
                gap = self._gaps[q_key, key] = max(map(sub, q_cum, chain((0,), cum_end_ps)))
            if entry_ps >= q_entry + gap:
                self._lazy = (entry_ps, cum_end_ps, key)
                self.last_exit_ps = entry_ps + cum_end_ps[-1]
                return None
            free = [q_entry + c for c in q_cum]
        else:
            free = self._free_ps
        t = entry_ps
        ends = [t := (t if t > f else f) + s for f, s in zip(free, service_ps)]
        self.last_exit_ps = t
        if t == entry_ps + cum_end_ps[-1]:  # it waited nowhere: a wait delays every later exit
            self._lazy = (entry_ps, cum_end_ps, key)
            return None
        self._lazy, self._free_ps = None, ends
        return ends
