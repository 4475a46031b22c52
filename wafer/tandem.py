"""A chain of FIFO single servers: the regions a pass crosses on its way over a wafer.

Each region works on one pass at a time and passes leave in the order they came, so a
pass's whole schedule is known when it enters (Lindley's recursion,
end_j = max(end_{j-1}, free_j) + service_j). That is what lets a wafer promise its exact
next send time (its horizon) and lets `--detail stage` skip the per-layer events.

The recursion unrolls to a running maximum (max-plus algebra):
end_j = C_j + max(entry, max_{i<=j}(free_i - C_{i-1})), with C the cumulative service,
which `itertools.accumulate` evaluates without a Python-level loop.
"""

from __future__ import annotations

from itertools import accumulate, chain, islice
from operator import add, sub


class FifoTandem:
    """Departure bookkeeping for `n_units` FIFO servers in series."""

    def __init__(self, n_units: int) -> None:
        self._free_ps = [0] * n_units  # departure of the latest pass from each unit
        # When the latest pass met an empty tandem its departures are entry + cum_end;
        # kept lazily so an uncontended pass costs O(1), not O(units).
        self._lazy: tuple[int, tuple[int, ...]] | None = None
        self.last_exit_ps = 0

    def _free(self) -> list[int]:
        if self._lazy is not None:
            entry_ps, cum_end_ps = self._lazy
            self._free_ps = [entry_ps + c for c in cum_end_ps]
            self._lazy = None
        return self._free_ps

    def _ends(self, entry_ps: int, cum_end_ps: tuple[int, ...]) -> list[int]:
        cum_start = chain((0,), cum_end_ps)  # C_{j-1}; map() stops at the shorter list
        running = accumulate(map(sub, self._free(), cum_start), max, initial=entry_ps)
        ends = list(map(add, cum_end_ps, islice(running, 1, None)))
        self._free_ps = ends
        self.last_exit_ps = ends[-1]
        return ends

    def exit_ps(self, entry_ps: int, service_ps: tuple[int, ...], cum_end_ps: tuple[int, ...]) -> int:
        """Admit a pass at `entry_ps`; return when it leaves the last unit."""
        if entry_ps >= self.last_exit_ps:  # the tandem is empty: nobody to wait for
            self._lazy = (entry_ps, cum_end_ps)
            self.last_exit_ps = entry_ps + cum_end_ps[-1]
            return self.last_exit_ps
        return self._ends(entry_ps, cum_end_ps)[-1]

    def schedule(self, entry_ps: int, service_ps: tuple[int, ...],
                 cum_end_ps: tuple[int, ...]) -> tuple[list[int], list[int]]:
        """Admit a pass at `entry_ps`; return its start and end time at every unit."""
        ends = self._ends(entry_ps, cum_end_ps)
        return list(map(sub, ends, service_ps)), ends
