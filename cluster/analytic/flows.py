"""Where requests go: each population's requests as flows to replicas, the way the routers
would spread them, with the network's latency each way.

A flow is the share of one population's requests (of one model, from one site) that one
replica serves. Users reach the router they name, else the nearest. Round-robin spreads a
model's requests evenly over the replicas serving it; least-outstanding, most-free-KV and
session affinity keep the requests out at each even, so each replica takes them in inverse
proportion to how long it keeps one (Little's law); nearest-site keeps them on the
replicas closest to the router until those are full (their KV cache, at the unloaded time
in service) and spills the rest to the next closest. A replica dealt one request in k of a
Poisson stream sees gaps k times as regular (squared coefficient of variation 1/k).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from cluster.fleet.build import network_latency_ps
from cluster.fleet.spec import ClusterSpec, PipelineSpec, UserSpec
from cluster.serving.requestfile import read_request_file
from common.units import PS_PER_S, ps_from_s
from llm.config import resolve_model


@dataclass(frozen=True)
class Demand:
    """One population's requests of one model from one site, before routing. Times in ps."""

    population: int  # index in spec.users
    site: str
    model: str
    kind: str  # "closed", "open" (Poisson, gamma, a file's rows) or "burst" (all at t=0)
    requests: float
    prompt: int
    output: int
    users: float = 0.0  # closed loop
    think_ps: float = 0.0  # closed loop, mean
    rate_per_ps: float = 0.0  # open loop
    arrival_cv2: float = 1.0  # open loop: squared coefficient of variation of the gaps
    last_arrival_ps: float = 0.0  # open loop: when the last request is sent
    router: str = ""
    longest: int = 0  # the longest context asked for (prompt plus output): what planning reserves

    def __post_init__(self) -> None:
        if not self.longest:
            object.__setattr__(self, "longest", self.prompt + self.output)


@dataclass(frozen=True)
class Flow:
    """A demand's share on one replica: `share` of its requests (and of its closed-loop
    users, or its rate), `in_ps` from the user to the replica, `out_ps` back."""

    demand: Demand
    replica: int
    share: float
    in_ps: float
    out_ps: float
    router_trip_ps: float = 0.0  # router to replica and back: a queued request's wait after a release
    cv2: float = 1.0  # squared coefficient of variation of its arrivals' gaps at the replica


@dataclass(frozen=True)
class Replica:
    name: str
    pipeline: PipelineSpec
    site: str

    @property
    def stage_sites(self) -> list[str]:
        stages = len(self.pipeline.stage_sites) or self.pipeline.wafers
        return list(self.pipeline.stage_sites) or [self.site] * stages


def replicas(spec: ClusterSpec) -> list[Replica]:
    """Every replica, named and placed as `build_cluster` names and places them."""
    pipes = {p.name: p for p in spec.pipelines}
    out: list[Replica] = []
    for r in spec.replicas:
        done = sum(1 for x in out if x.pipeline.name == r.pipeline)
        out += [Replica(f"{r.pipeline}-{done + k}", pipes[r.pipeline], r.sites[k % len(r.sites)])
                for k in range(r.count)]
    return out


def demands(spec: ClusterSpec) -> list[Demand]:
    """Each population's requests, arrival times stretched by `time_scale`."""
    out = []
    scale = spec.time_scale
    for i, u in enumerate(spec.users):
        model = resolve_model(u.model).name
        base = Demand(i, u.site, model, "open", float(u.requests), u.prompt_tokens, u.output_tokens, router=u.router)
        if u.arrivals == "closed":
            out.append(replace(base, kind="closed", users=float(min(u.users, u.requests)),
                               think_ps=float(math.ceil(ps_from_s(u.think_time_s) * scale))))
        elif u.arrivals == "burst":
            out.append(replace(base, kind="burst"))
        elif u.arrivals in ("poisson", "gamma"):
            rate = u.rate_per_s / scale / PS_PER_S
            cv2 = u.burstiness_cv ** 2 if u.arrivals == "gamma" else 1.0
            out.append(replace(base, rate_per_ps=rate, arrival_cv2=cv2, last_arrival_ps=u.requests / rate))
        else:
            out += _file_demands(i, u, model, scale)
    return out


def _file_demands(index: int, u: UserSpec, model: str, scale: float) -> list[Demand]:
    """A request file's rows grouped by site and model: each group an open-loop stream at
    its mean rate over the file's span, with its mean lengths (all at t=0: a burst)."""
    rows = read_request_file(u.arrivals)[:u.requests]
    span_ps = (rows[-1].arrival_s - rows[0].arrival_s) * scale * PS_PER_S
    groups: dict[tuple[str, str], list] = {}
    for r in rows:
        groups.setdefault((r.user_site or u.site, resolve_model(r.model).name if r.model else model), []).append(r)
    out = []
    for (site, m), rs in groups.items():
        n = len(rs)
        prompt = round(sum(r.prompt_tokens for r in rs) / n)
        output = round(sum(r.output_tokens for r in rs) / n)
        base = Demand(index, site, m, "burst", float(n), prompt, output, router=u.router,
                      longest=max(r.prompt_tokens + r.output_tokens for r in rs))
        if span_ps > 0:
            base = replace(base, kind="open", rate_per_ps=n / span_ps,
                           last_arrival_ps=rs[-1].arrival_s * scale * PS_PER_S)
        out.append(base)
    return out


def route(spec: ClusterSpec, demand: Demand, reps: list[Replica], fits: list[bool],
          capacity: list[float], unloaded_ps: list[float]) -> list[Flow]:
    """The demand's flows. `fits[r]`: its requests can ever fit replica r; `capacity[r]`:
    how many of them replica r holds at once; `unloaded_ps[r]`: one's time there alone."""
    candidates = [r for r, ok in enumerate(fits) if ok]
    if not candidates:
        return []
    source_cv2 = demand.arrival_cv2 if demand.kind == "open" else 1.0  # many users merged: Poisson
    if not spec.routers:  # the ring: users beside the replica, no network
        return [Flow(demand, candidates[0], 1.0, 0.0, 0.0, 0.0, source_cv2)]
    routers = {r.name: r for r in spec.routers}
    router = routers[demand.router] if demand.router else \
        min(spec.routers, key=lambda r: network_latency_ps(spec, demand.site, r.site))
    to_router = network_latency_ps(spec, demand.site, router.site)
    from_router = network_latency_ps(spec, router.site, demand.site)
    hop = {r: network_latency_ps(spec, router.site, reps[r].site) for r in candidates}
    back = {r: network_latency_ps(spec, reps[r].site, router.site) for r in candidates}
    if router.policy == "nearest-site":
        shares = _nearest(demand, candidates, hop, capacity, unloaded_ps)
    elif router.policy == "round-robin":
        shares = dict.fromkeys(candidates, 1.0 / len(candidates))
    else:
        # Least outstanding (and most free KV, and where sessions start): requests out are
        # kept even, so by Little's law a replica takes them in inverse proportion to how
        # long each stays out (the network to it and back, and its time in service).
        out = {r: hop[r] + back[r] + unloaded_ps[r] for r in candidates}
        whole = sum(1 / t for t in out.values())
        shares = {r: 1 / t / whole for r, t in out.items()}
    # Every policy deals a model's requests out in turn, or to the least loaded (much the
    # same): a replica with share 1/k gets one in k, its gaps k times as regular.
    return [Flow(demand, r, s, float(to_router + hop[r]), float(back[r] + from_router), float(hop[r] + back[r]),
                 source_cv2 * min(1.0, s)) for r, s in shares.items() if s > 0]


def _nearest(demand: Demand, candidates: list[int], hop: dict[int, int], capacity: list[float],
             unloaded_ps: list[float]) -> dict[int, float]:
    """Closest replicas first, each group evenly (ties go to the least outstanding), until
    the concurrency the demand needs is placed; what the farthest cannot hold stays there
    (it queues at the router)."""
    alone = sum(unloaded_ps[r] for r in candidates) / len(candidates)
    if demand.kind == "closed":
        need = demand.users * alone / (alone + demand.think_ps)  # users not thinking
    elif demand.kind == "burst":
        need = demand.requests
    else:
        need = demand.rate_per_ps * alone  # Little's law
    shares = dict.fromkeys(candidates, 0.0)
    left = 1.0
    by_latency = sorted(set(hop.values()))
    for k, latency in enumerate(by_latency):
        group = [r for r in candidates if hop[r] == latency]
        room = sum(capacity[r] for r in group)
        take = left if k == len(by_latency) - 1 or need * left <= room else room / need
        for r in group:
            shares[r] = take / len(group)
        left -= take
        if left <= 1e-12:
            break
    return shares
