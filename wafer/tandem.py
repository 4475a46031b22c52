"""A chain of FIFO single servers: the regions a pass crosses on its way over a wafer.

Each region works on one pass at a time and passes leave in the order they came, so a
pass's whole schedule is known when it enters (Lindley's recursion,
end_j = max(end_{j-1}, free_j) + service_j). That is what lets a wafer promise its exact
next send time (its horizon) and lets `--detail stage` skip the per-layer events.

The recursion runs as one list comprehension with a running value: a few tens of ns a
unit, several times cheaper than the max-plus form built from `itertools.accumulate`
(a builtin call per element) that it replaced.
"""

from __future__ import annotations


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

    def ends(self, entry_ps: int, service_ps: tuple[int, ...]) -> list[int]:
        """Admit a pass at `entry_ps`; return when it leaves each unit (it starts there at
        end - service)."""
        t = entry_ps
        free = self._free_ps if self._lazy is None else self._free()
        ends = self._free_ps = [t := (t if t > f else f) + s for f, s in zip(free, service_ps)]
        self.last_exit_ps = t
        return ends

    def exit_ps(self, entry_ps: int, service_ps: tuple[int, ...], cum_end_ps: tuple[int, ...]) -> int:
        """Admit a pass at `entry_ps`; return when it leaves the last unit."""
        if entry_ps >= self.last_exit_ps:  # the tandem is empty: nobody to wait for
            self._lazy = (entry_ps, cum_end_ps)
            self.last_exit_ps = entry_ps + cum_end_ps[-1]
            return self.last_exit_ps
        return self.ends(entry_ps, service_ps)[-1]
