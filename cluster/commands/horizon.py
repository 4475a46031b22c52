"""How long a run's workload can need in simulated time, and refusing what would run past it.

Models a generous upper bound on a run's simulated end: ten times the analytic tier's
estimate of the run without faults (its steady state, from the event model's own costs),
plus every fault's window stretched by its bandwidth (a link down for D delays what waits
on it by at most D; one at share b stretches what crosses it by 1/b). Ignores what the
analytic tier cannot estimate (a description it refuses): then nothing is checked.

A windowed fault (a link's `for_ms`) that starts after that bound cannot touch the
workload: it would only lengthen the run (its window traced past the last request),
inflating the run's length, idle energy and cost. It is refused up front, naming it. A
device lost for good after the workload is done changes nothing and is left alone.
"""

from __future__ import annotations

from dataclasses import replace

from cluster.fleet.spec import ClusterSpec
from common.errors import ConfigError, SimError
from common.units import PS_PER_S

GENEROSITY = 10.0  # x the analytic estimate of the fault-free run


def workload_end_bound_ps(spec: ClusterSpec, devices: dict | None = None) -> int | None:
    """An upper bound on when the workload of `spec` is done, in simulated ps; None when the
    analytic tier cannot estimate it."""
    from cluster.analytic import estimate

    try:
        steady = estimate(replace(spec, faults=()), devices)
    except (SimError, ValueError, ArithmeticError):
        return None
    end_s = steady.get("sim_time_s")
    if not isinstance(end_s, (int, float)) or not end_s > 0:
        return None
    stretch_ms = sum(f.for_ms / max(f.bandwidth, 1e-9) if f.bandwidth < 1 else f.for_ms for f in spec.faults)
    return int(GENEROSITY * end_s * PS_PER_S + stretch_ms * 1e9)


def check_fault_times(spec: ClusterSpec, devices: dict | None = None, flag: str = "faults") -> None:
    """Refuse a fault that starts after the latest end its workload can need."""
    if not spec.faults:
        return
    bound_ps = workload_end_bound_ps(spec, devices)
    if bound_ps is None:
        return
    for i, fault in enumerate(spec.faults):
        # a windowed fault (a link's) is traced over its window, so it holds the run open to its
        # end; a device lost for good after the last request changes nothing, and is allowed
        if fault.for_ms > 0 and fault.at_ms * 1e9 > bound_ps:
            raise ConfigError(f"{flag}[{i}].at_ms: {fault.kind} on {fault.target} at {fault.at_ms:g} ms starts after "
                              f"the latest end the workload can need ({bound_ps / 1e9:.6g} ms, {GENEROSITY:g}x its "
                              f"analytic estimate plus the faults' windows): it would only lengthen the run")
