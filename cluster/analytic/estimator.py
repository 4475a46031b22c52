"""`estimate`: a cluster description to the event summary's steady-state figures."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from cluster.analytic import costs as pc
from cluster.analytic.flows import Demand, Flow, demands, replicas, route
from cluster.analytic.queueing import Outcome, ReplicaCosts
from cluster.analytic.steady import steady
from cluster.analytic.waves import lockstep
from cluster.fleet.spec import ClusterSpec
from cluster.fleet.validate import validate_cluster
from common.errors import ConfigError
from common.units import PS_PER_MS, PS_PER_S
from gpu import GPU_PRESETS, GpuSpec
from wafer import WAFER_PRESETS, WaferSpec

# Open-loop requests arriving this many times faster than a full replica serves them
# pile up; it then lets them in a wave at a time, as each wave finishes together.
BACKLOG = 2.0


def estimate(spec: ClusterSpec, devices: Mapping[str, WaferSpec | GpuSpec] | None = None) -> dict:
    """The summary a run of `spec` would print, in closed form (`cluster.analytic` says
    how). `devices` replaces presets by name, as `build_cluster`'s does."""
    wall0 = time.perf_counter()
    validate_cluster(spec)
    if spec.faults:
        raise ConfigError("faults: the analytic tier models a steady state without faults; use fidelity event")
    devices = {**WAFER_PRESETS, **GPU_PRESETS, **(devices or {})}
    wanted = demands(spec)
    longest: dict[str, int] = {}
    for d in wanted:
        longest[d.model] = max(longest.get(d.model, 0), d.longest)
    reps = replicas(spec)
    _check_routing(spec, reps, wanted)
    plans = {p.name: pc.planned(spec, p, devices[p.device], longest) for p in spec.pipelines}

    def chain(r: int, d: Demand):
        rep = reps[r]
        stages = plans[rep.pipeline.name]
        if d.model not in stages.models:
            return None
        if isinstance(devices[rep.pipeline.device], GpuSpec):
            return pc.gpu_chain(spec, stages, rep.stage_sites, d.prompt, d.output)
        return pc.wafer_chain(spec, stages, rep.stage_sites, stages.models.index(d.model), d.prompt, d.output)

    flows: list[tuple[Flow, object]] = []
    rejected = 0.0
    for d in wanted:
        chains = [chain(r, d) for r in range(len(reps))]
        fits = [c is not None and d.prompt + d.output <= c.max_tokens for c in chains]
        capacity = [_capacity(c, plans[reps[r].pipeline.name].kv.capacity_bytes, spec.max_active) if ok else 0.0
                    for r, (c, ok) in enumerate(zip(chains, fits))]
        alone = [_alone_ps(c, d) if ok else 0.0 for c, ok in zip(chains, fits)]
        routed = route(spec, d, reps, fits, capacity, alone)
        if not routed:
            rejected += d.requests  # its context fits no replica's KV cache: every router refuses it
        flows += [(f, chains[f.replica]) for f in routed]

    outcomes: list[Outcome] = []
    solved: dict[tuple, list[Outcome]] = {}  # replicas alike (a fleet's, site by site) are solved once
    for r, rep in enumerate(reps):
        mine = [(f, c) for f, c in flows if f.replica == r]
        if not mine:
            continue
        key = (rep.pipeline.name, tuple((id(f.demand), f.share, f.in_ps, f.out_ps, f.router_trip_ps, f.cv2, id(c))
                                        for f, c in mine))
        if key not in solved:
            stages = plans[rep.pipeline.name]
            costs = ReplicaCosts(stages.kv.capacity_bytes, spec.max_active, rep.pipeline.name)
            solved[key] = _solve([f for f, _ in mine], [c for _, c in mine], costs)
        outcomes += [replace(o, flow=f) for o, (f, _) in zip(solved[key], mine)]
    return _summary(spec, outcomes, rejected, time.perf_counter() - wall0)


def _check_routing(spec: ClusterSpec, reps: list, wanted: list[Demand]) -> None:
    """What `build_cluster` refuses about who reaches whom, refused alike."""
    if spec.routers:
        return
    if len(reps) != 1:
        raise ConfigError(f"routers: {len(reps)} replicas need a router to share the users; add [[routers]]")
    for d in wanted:
        if d.kind == "closed":
            raise ConfigError(f"users[{d.population}].arrivals: closed-loop users need a router; add [[routers]]")
        if d.site != reps[0].site:
            raise ConfigError(f"users: a cluster with no router serves users at its replica's site "
                              f"({reps[0].site}); add [[routers]] for users elsewhere")


def _solve(flows: list[Flow], chains: list, costs: ReplicaCosts) -> list[Outcome]:
    """One replica's flows, in the regime their arrivals put it in."""
    kinds = {f.demand.kind for f in flows}
    if all(f.demand.kind == "burst" or (f.demand.kind == "closed" and f.demand.think_ps == 0) for f in flows):
        return lockstep(flows, chains, costs)
    out = steady(flows, chains, costs)
    if kinds == {"open"}:
        offered = sum(f.share * f.demand.rate_per_ps for f in flows)
        if offered >= BACKLOG * sum(o.throughput for o in out):
            return lockstep(flows, chains, costs)
    if kinds == {"closed"}:
        return _with_first_round(out, lockstep([_first_round(f) for f in flows], chains, costs))
    return out


def _first_round(flow: Flow) -> Flow:
    """A closed loop's first requests: every user sends one at t=0, a burst."""
    d = flow.demand
    return replace(flow, demand=replace(d, think_ps=0.0, requests=min(d.users, d.requests)))


def _with_first_round(steady_out: list[Outcome], first: list[Outcome]) -> list[Outcome]:
    """The steady state, but each user's first request goes out with everyone's at t=0
    and is served in that wave (no prompt crosses its steps), which also shortens the run."""
    out = []
    for s, f in zip(steady_out, first):
        d = s.flow.demand
        users = min(d.users, d.requests) * s.flow.share
        rest = max(s.flow.share * d.requests - users, 0.0)
        scale_first = users / max(sum(w for *_, w in f.samples), 1e-12)
        scale_rest = rest / max(sum(w for *_, w in s.samples), 1e-12)
        samples = [(a, b, w * scale_first) for a, b, w in f.samples] + [(a, b, w * scale_rest) for a, b, w in s.samples]
        total = users + rest
        sooner = (s.ttft_ps + (d.output - 1) * s.tpot_ps) - (f.ttft_ps + (d.output - 1) * f.tpot_ps)
        out.append(replace(s, samples=samples, finish_ps=s.finish_ps - max(sooner, 0.0),
                           tpot_ps=sum(b * w for _, b, w in samples) / total,
                           ttft_ps=sum(a * w for a, _, w in samples) / total))
    return out


def _capacity(chain, capacity_bytes: tuple[int, ...], max_active: int) -> float:
    """How many requests of this shape the replica holds at once."""
    held = min((cap / b for cap, b in zip(capacity_bytes, chain.kv_bytes) if b), default=np.inf)
    return float(min(held, max_active or np.inf))


def _alone_ps(chain, d: Demand) -> float:
    """A request's time at the replica with nothing else there."""
    if isinstance(chain, pc.GpuChain):
        return chain.step_ps(0.0, 1.0) + (d.output - 1) * chain.step_ps(1.0, 0.0)
    return chain.train_ps + (d.output - 1) * chain.loop_ps


def _weighted_median(values: list[float], weights: list[float]) -> float | None:
    """The median of values with weights (counts of requests); where the halfway point
    falls between two values, their mean, as numpy's median of the requests would be."""
    if not values or sum(weights) <= 0:
        return None
    order = np.argsort(values)
    v, w = np.asarray(values, float)[order], np.asarray(weights, float)[order]
    cum = np.cumsum(w)
    half = 0.5 * cum[-1]
    i = int(np.searchsorted(cum, half * (1 - 1e-9)))
    if abs(cum[i] - half) <= 1e-9 * cum[-1] and i + 1 < len(v):
        return float(0.5 * (v[i] + v[i + 1]))
    return float(v[i])


def _mean(values: list[float], weights: list[float]) -> float | None:
    return float(np.average(values, weights=weights)) if values and sum(weights) > 0 else None


def _ms(ps: float | None) -> float | None:
    return None if ps is None else float(ps) / PS_PER_MS


def _summary(spec: ClusterSpec, outcomes: list[Outcome], rejected: float, wall_s: float) -> dict:
    """The event summary's keys that a steady state gives, plus `fidelity` and `bound`."""
    requests = [o.flow.share * o.flow.demand.requests for o in outcomes]
    samples = [(s, o) for o in outcomes for s in o.samples]
    ttft, weights = [s[0] for s, _ in samples], [s[2] for s, _ in samples]
    multi = [(s, o) for s, o in samples if o.flow.demand.output > 1]  # TPOT needs a second token
    tpot, tpot_weights = [s[1] for s, _ in multi], [s[2] for s, _ in multi]
    tokens = sum(n * o.flow.demand.output for n, o in zip(requests, outcomes))
    span_ps = max((o.finish_ps for o in outcomes), default=0.0)
    decode_weights = [n * max(o.flow.demand.output - 1, 0) for n, o in zip(requests, outcomes)]
    tpot_mean = _mean(tpot, tpot_weights)
    link_ps = _mean([o.link_ps for o in outcomes], decode_weights)
    # What bounds per-user speed: where most requests are served.
    typical = max(zip(requests, outcomes), key=lambda t: t[0], default=(0, None))[1]
    return {
        "scenario": spec.name,
        "fidelity": "analytic",
        "bound": typical.bound if typical is not None else None,
        "requests_completed": int(round(sum(requests))),
        "requests_rejected": int(round(rejected)),
        "tokens_per_s_per_user": _weighted_median([PS_PER_S / t for t in tpot], tpot_weights),
        "aggregate_tokens_per_s": float(tokens / (span_ps / PS_PER_S)) if span_ps else None,
        "steady_tokens_per_s": float(sum(o.throughput * o.flow.demand.output for o in outcomes) * PS_PER_S),
        "ttft_ms_p50": _ms(_weighted_median(ttft, weights)),
        "ttft_ms_mean": _ms(_mean(ttft, weights)),
        "tpot_ms_p50": _ms(_weighted_median(tpot, tpot_weights)),
        "tpot_ms_mean": _ms(tpot_mean),
        "queue_ms_mean": _ms(_mean([o.queue_ps for o in outcomes], requests)),
        "in_service_mean": float(sum(o.in_service for o in outcomes)),
        "link_ms_per_token": _ms(link_ps),
        "link_share_of_tpot": float(link_ps / tpot_mean) if link_ps is not None and tpot_mean else None,
        "sim_time_s": float(span_ps / PS_PER_S),
        "wall_s": wall_s,
    }
