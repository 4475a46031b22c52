"""One function from a cluster description to the LP graph: `build_cluster`.

The graph, in order: user populations (`users:NAME`), routers (`router:NAME`), then each
replica: its frontend (named after the replica), its stages (`REPLICA.wafer0`, ...) and the
links between them (`link:A->B`), the last link bringing tokens back to the frontend.
Channels: users <-> their router and router <-> every replica frontend carry the network's
latency (one switch hop in a site; the WAN hop plus the fibre between sites); stages are
joined by link LPs that queue and serialize. A cluster with no router and one replica is
the classic ring: the users sit beside the replica, which takes their requests itself,
and its LPs keep their plain names (`frontend`, `wafer0`, ...).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import simpy

from cluster.engine.graph import Graph, LPSpec
from cluster.engine.messages import Channel
from cluster.fleet.spec import ClusterSpec, PipelineSpec, UserSpec
from cluster.fleet.validate import validate_cluster
from cluster.results.trace import Tracer, TraceVocab
from cluster.serving.frontend import FrontendConfig, KvBudget
from cluster.serving.lps import GpuConfig, LinkConfig, WaferConfig
from cluster.serving.plan import GB, GPU_MEMORY_UTILIZATION, plan_gpu_pipeline, plan_pipeline
from cluster.serving.requestfile import read_request_file
from cluster.serving.router import ReplicaInfo, RouterConfig, replica_port, users_port
from cluster.serving.users import ClosedLoop, UsersConfig
from cluster.serving.workload import Request, arrival_times_ps, rng_for
from common.errors import ConfigError
from common.units import PS_PER_S, ps_from_ms, ps_from_s
from gpu import GPU_PRESETS, GpuSpec
from interconnect import SITES, LinkSpec, fibre_latency_ps
from interconnect.faults import DEVICE_KINDS, LinkFault
from llm.config import LlamaConfig, resolve_model
from wafer import WAFER_PRESETS, WaferSpec
from wafer.model import CoTenant


@dataclass(frozen=True)
class BuiltCluster:
    graph: Graph
    vocab: TraceVocab
    plan: dict[str, list[list[str]]]  # pipeline -> unit names per stage (the trace's metadata)


@dataclass(frozen=True)
class _Stages:
    """A pipeline's stages, planned once and shared by its replicas."""

    names: tuple[str, ...]
    configs: tuple[object, ...]
    kv: KvBudget
    models: tuple[str, ...]
    units: list[list[str]]


def network_latency_ps(spec: ClusterSpec, a: str, b: str) -> int:
    """One message between sites `a` and `b`: a switch hop in a hall, else the WAN."""
    if a == b:
        return spec.links.intra_site.latency_ps
    return spec.links.wan.latency_ps + fibre_latency_ps(SITES[a], SITES[b])


def _stage_link(spec: ClusterSpec, a: str, b: str) -> LinkSpec:
    base = spec.links.intra_site if a == b else spec.links.wan
    return base.with_latency(base.latency_ps + fibre_latency_ps(SITES[a], SITES[b]))


def _kv_tokens(spec: ClusterSpec, model: LlamaConfig, longest: dict[str, int]) -> int:
    """With a cap on requests in service, the KV every region must hold for that many
    of the longest requests of `model` (the planner refuses what does not fit); 0: the
    stages size their regions for whatever SRAM the weights leave (admission by bytes)."""
    return spec.max_active * longest.get(model.name, 0)


def _wafer_stages(spec: ClusterSpec, pipe: PipelineSpec, device: WaferSpec, models: list[LlamaConfig],
                  longest: dict[str, int]) -> _Stages:
    plans = [plan_pipeline(m, device, pipe.wafers, _kv_tokens(spec, m, longest)) for m in models]
    weights = [sum(p.stages[w].weight_bytes for p in plans) for w in range(pipe.wafers)]
    for w, total in enumerate(weights):
        if total > device.sram_bytes:
            raise ConfigError(
                f"plan: pipeline {pipe.name}: wafer{w} would hold {total / GB:.1f} GB of weights of "
                f"{' + '.join(m.name for m in models)}, over the {device.sram_bytes / GB:.1f} GB of a {device.name}")
    capacity = tuple(device.sram_bytes - w for w in weights)
    per_token = tuple(tuple(sum(1 for u in p.stages[w].units if u.kind == "layer") * m.layer_shape.kv_bytes_per_token
                            for w in range(pipe.wafers)) for p, m in zip(plans, models))
    configs = []
    for w in range(pipe.wafers):
        shares = sum(b[w] for b in per_token)
        # Regions hold the KV cache they serve: sized for every byte the weights leave, split
        # among the models in proportion to their bytes per token (or the cap's reservation).
        fill = [_kv_tokens(spec, m, longest) or (capacity[w] // shares if shares else 0) for m in models]
        last = w == pipe.wafers - 1
        tenants = tuple(CoTenant(m.name, m.layer_shape, m.vocab_size, p.stages[w].units, last, fill[k + 1])
                        for k, (p, m) in enumerate(zip(plans[1:], models[1:])))
        m0 = models[0]
        configs.append(WaferConfig(device, m0.layer_shape, m0.vocab_size, plans[0].stages[w].units, spec.detail,
                                   last, fill[0], tenants))
    units = [[u.name for p in plans for u in p.stages[w].units] for w in range(pipe.wafers)]
    return _Stages(tuple(f"wafer{w}" for w in range(pipe.wafers)), tuple(configs),
                   KvBudget(per_token, capacity), tuple(m.name for m in models), units)


def _gpu_stages(spec: ClusterSpec, pipe: PipelineSpec, device: GpuSpec, models: list[LlamaConfig],
                longest: dict[str, int]) -> _Stages:
    if len(models) > 1:
        raise ConfigError(f"pipelines: {pipe.name}: GPU pipelines serve one model")
    model = models[0]
    plans = plan_gpu_pipeline(model, device, pipe.gpus, pipe.dtype, _kv_tokens(spec, model, longest))
    weight_bytes = model.parameters * (1 if pipe.dtype == "fp8" else 2) // len(plans)
    capacity = tuple(int(pipe.gpus * device.hbm_bytes * GPU_MEMORY_UTILIZATION) - weight_bytes for _ in plans)
    per_token = (tuple(len(p.layers) * model.layer_shape.kv_bytes_per_token for p in plans),)
    last = len(plans) - 1
    configs = tuple(GpuConfig(device, model.layer_shape, model.vocab_size, p, i == last) for i, p in enumerate(plans))
    return _Stages(tuple(f"dgx{i}" for i in range(len(plans))), configs, KvBudget(per_token, capacity),
                   (model.name,), [[f"layer{layer}" for layer in p.layers] for p in plans])


def _population_requests(spec: ClusterSpec, index: int, u: UserSpec, model: str, first_id: int,
                         first_session: int) -> list[Request]:
    """An open-loop population's requests, ids from `first_id`, arrivals scaled by
    `time_scale`. Rows of a request file may name their own model, site and session."""
    rng = rng_for(spec.seed, u.arrivals_stream or f"arrivals:{u.name}")
    at = f"users[{index}]"
    if u.arrivals in ("poisson", "gamma", "burst"):
        times = [0] * u.requests if u.arrivals == "burst" else \
            arrival_times_ps(u.arrivals, u.requests, u.rate_per_s, u.burstiness_cv, rng).tolist()
        sessions = rng_for(spec.seed, f"sessions:{u.name}").integers(u.sessions, size=u.requests).tolist() \
            if u.sessions else [-1] * u.requests
        return [Request(first_id + i, _scaled_ps(spec, t, at), u.prompt_tokens, u.output_tokens, model, u.site,
                        s if s < 0 else first_session + s) for i, (t, s) in enumerate(zip(times, sessions))]
    rows = read_request_file(u.arrivals)[:u.requests]
    return [Request(first_id + i, _scaled_ps(spec, ps_from_s(r.arrival_s), at), r.prompt_tokens, r.output_tokens,
                    resolve_model(r.model).name if r.model else model, r.user_site or u.site,
                    -1 if r.session is None else first_session + r.session)
            for i, r in enumerate(rows)]


# Arrivals and think times beyond this are refused: the engine's clock runs to 2^62 ps
# (53 days) and a run must end well before it.
MAX_ARRIVAL_PS = 1 << 60


def _scaled_ps(spec: ClusterSpec, t_ps: int, at: str) -> int:
    """An arrival time stretched by `time_scale`, rounded up like every duration."""
    scaled = t_ps if spec.time_scale == 1 else math.ceil(t_ps * spec.time_scale)
    if scaled > MAX_ARRIVAL_PS:
        raise ConfigError(f"{at}: an arrival at {scaled / PS_PER_S:.3g} s (time_scale {spec.time_scale}) is beyond "
                          f"the {MAX_ARRIVAL_PS / PS_PER_S:.3g} s a run can simulate")
    return scaled


def _check_sites(what: str, sites: list[str]) -> None:
    for site in sites:
        if site not in SITES:
            raise ConfigError(f"{what}: unknown site {site!r}; known: {', '.join(SITES)}")


def build_cluster(spec: ClusterSpec, devices: Mapping[str, WaferSpec | GpuSpec] | None = None) -> BuiltCluster:
    """The LP graph of `spec`. `devices` replaces presets by name (what-if runs)."""
    validate_cluster(spec)
    devices = {**WAFER_PRESETS, **GPU_PRESETS, **(devices or {})}
    lps: list[tuple[str, str, object]] = []  # (name, site, config) in graph order
    channels: list[Channel] = []
    routed = bool(spec.routers)

    # Replicas: (name, pipeline, site), in description order.
    pipelines = {p.name: p for p in spec.pipelines}
    replicas: list[tuple[str, PipelineSpec, str]] = []
    for r in spec.replicas:
        done = sum(1 for _, p, _ in replicas if p.name == r.pipeline)
        replicas += [(f"{r.pipeline}-{done + k}", pipelines[r.pipeline], r.sites[k % len(r.sites)])
                     for k in range(r.count)]
    if not routed and len(replicas) != 1:
        raise ConfigError(f"routers: {len(replicas)} replicas need a router to share the users; add [[routers]]")

    # Users.
    requests: list[tuple[UserSpec, list[Request]]] = []
    longest: dict[str, int] = {}  # per model, the longest context asked for (prompt + output)
    first_id = first_session = 0
    closed: dict[str, ClosedLoop] = {}
    for i, u in enumerate(spec.users):
        model = resolve_model(u.model).name
        if u.arrivals == "closed":
            if not routed:
                raise ConfigError(f"users[{i}].arrivals: closed-loop users need a router; add [[routers]]")
            think_ps = _scaled_ps(spec, ps_from_s(u.think_time_s), f"users[{i}].think_time_s")
            closed[u.name] = ClosedLoop(u.users, think_ps, u.requests, first_id, u.prompt_tokens, u.output_tokens,
                                        first_session)
            reqs: list[Request] = []
            first_id, first_session = first_id + u.requests, first_session + u.users
            longest[model] = max(longest.get(model, 0), u.prompt_tokens + u.output_tokens)
        else:
            reqs = _population_requests(spec, i, u, model, first_id, first_session)
            _check_sites(f"users[{i}].arrivals: {u.arrivals}: user_site", sorted({r.user_site for r in reqs}))
            # a file's sessions are its own: the next population's start after its highest
            first_session += max([u.sessions] + [r.session - first_session + 1 for r in reqs if r.session >= 0])
            first_id += len(reqs)
            for r in reqs:
                longest[r.model] = max(longest.get(r.model, 0), r.prompt_tokens + r.output_tokens)
        requests.append((u, reqs))

    # Pipelines, planned once each.
    stages: dict[str, _Stages] = {}
    for pipe in spec.pipelines:
        device, models = devices[pipe.device], [resolve_model(m) for m in pipe.models]
        planner = _gpu_stages if isinstance(device, GpuSpec) else _wafer_stages
        stages[pipe.name] = planner(spec, pipe, device, models, longest)

    replica_sites = tuple((name, site) for name, _, site in replicas)
    if routed:
        router_sites = {r.name: r.site for r in spec.routers}
        populations: dict[str, list[tuple[str, str]]] = {r.name: [] for r in spec.routers}  # router -> [(lp, site)]
        for u, reqs in requests:
            # A replayed file's rows may come from several sites: one LP per site.
            by_site = {u.site: reqs} if u.name in closed else {}
            for r in reqs:
                by_site.setdefault(r.user_site, []).append(r)
            for site, site_reqs in sorted(by_site.items(), key=lambda kv: kv[0] != u.site):
                router = u.router or min(spec.routers, key=lambda r: network_latency_ps(spec, site, r.site)).name
                lp = f"users:{u.name}" if site == u.site else f"users:{u.name}@{site}"
                lps.append((lp, site, UsersConfig(u.name, site, resolve_model(u.model).name, tuple(site_reqs),
                                                  closed.get(u.name) if site == u.site else None,
                                                  replica_sites, spec.seed)))
                channels.append(Channel(lp, f"router:{router}", network_latency_ps(spec, site, router_sites[router])))
                populations[router].append((lp, site))
        for r in spec.routers:
            infos = tuple(ReplicaInfo(name, site, stages[p.name].models, stages[p.name].kv,
                                      network_latency_ps(spec, r.site, site)) for name, p, site in replicas)
            lps.append((f"router:{r.name}", r.site, RouterConfig(r.name, r.policy, infos)))
            channels += [Channel(f"router:{r.name}", lp, network_latency_ps(spec, r.site, site), users_port(lp))
                         for lp, site in populations[r.name]]
            channels += [Channel(f"router:{r.name}", name, network_latency_ps(spec, r.site, site), replica_port(name))
                         for name, _, site in replicas]
            channels += [Channel(name, f"router:{r.name}", network_latency_ps(spec, site, r.site),
                                 f"reply:router:{r.name}") for name, _, site in replicas]

    # Replicas: frontend, stages, links.
    replica_stages: dict[str, list[str]] = {}  # frontend LP -> its stage LPs (a lost device takes them all)
    for name, pipe, site in replicas:
        st = stages[pipe.name]
        head, prefix = (name, f"{name}.") if routed else ("frontend", "")
        own = tuple(sorted((r for _, reqs in requests for r in reqs), key=lambda r: (r.arrival_ps, r.request_id))) \
            if not routed else ()
        if own and any(r.user_site != site for r in own):
            raise ConfigError(f"users: a cluster with no router serves users at its replica's site ({site}); "
                              f"add [[routers]] for users elsewhere")
        lps.append((head, site, FrontendConfig(own, spec.max_active, spec.prefill_chunk_tokens, st.kv,
                                               st.models, name if routed else head, site)))
        sites = list(pipe.stage_sites) if pipe.stage_sites else [site] * len(st.names)
        names = [prefix + s for s in st.names]
        replica_stages[head] = names
        channels.append(Channel(head, names[0], 0))
        for i, (stage, config) in enumerate(zip(names, st.configs)):
            lps.append((stage, sites[i], config))
            if len(names) == 1:
                channels.append(Channel(stage, head, 0))
                continue
            j = (i + 1) % len(names)
            link = f"link:{stage}->{names[j]}"
            lps.append((link, sites[i], LinkConfig(_stage_link(spec, sites[i], sites[j]))))
            channels += [Channel(stage, link, 0), Channel(link, names[j] if j else head, 0)]

    lps = _with_faults(spec, lps, replica_stages)
    graph, vocab = _graph(lps, channels)
    return BuiltCluster(graph, vocab, {p.name: stages[p.name].units for p in spec.pipelines})


def _with_faults(spec: ClusterSpec, lps: list[tuple[str, str, object]],
                 replica_stages: dict[str, list[str]]) -> list[tuple[str, str, object]]:
    """Each declared fault on the LPs it hits: a link fault on the link LP it names; a lost
    device (a wafer or GPU stage by name, or every one at a site) takes its whole replica
    down at the loss: the frontend and every stage learn the time, the device itself also
    the fault's name to trace. A name that hits nothing is an error."""
    if not spec.faults:
        return lps
    index = {name: i for i, (name, _, _) in enumerate(lps)}
    links = [name for name, _, config in lps if isinstance(config, LinkConfig)]
    devices = [name for name, _, config in lps if getattr(config, "is_device", False)]
    out = list(lps)
    lost: dict[str, tuple[int, str, str]] = {}  # device -> (loss, fault kind, reason), the earliest
    for i, f in enumerate(spec.faults):
        if f.kind in DEVICE_KINDS:
            hit = [f.target] if f.target in devices else [] if f.kind == "wafer-lost" else \
                [d for d in devices if lps[index[d]][1] == f.target]
            if not hit:
                what = f"device {f.target!r}; devices" if f.kind == "wafer-lost" else \
                    f"device at site {f.target!r}; sites with devices"
                known = devices if f.kind == "wafer-lost" else dict.fromkeys(lps[index[d]][1] for d in devices)
                raise ConfigError(f"faults[{i}].target: no {what}: {', '.join(known) or 'none'}")
            at_ps, reason = ps_from_ms(f.at_ms), f"{f.kind.split('-')[0]} {f.target} lost at {f.at_ms:g} ms"
            for d in hit:
                if d not in lost or at_ps < lost[d][0]:
                    lost[d] = (at_ps, f.kind, reason)
            continue
        if f.target not in index or f.target not in links:
            raise ConfigError(f"faults[{i}].target: no link {f.target!r}; links: {', '.join(links) or 'none'}")
        try:
            fault = LinkFault(f.kind, ps_from_ms(f.at_ms), ps_from_ms(f.at_ms + f.for_ms), f.bandwidth,
                              ps_from_ms(f.period_ms))
        except ValueError as exc:
            raise ConfigError(f"faults[{i}]: {exc}") from None
        name, site, config = out[index[f.target]]
        out[index[f.target]] = (name, site, replace(config, faults=config.faults + (fault,)))
    for head, stages in replica_stages.items():
        losses = [lost[s] for s in stages if s in lost]
        if not losses:
            continue
        at_ps, _, reason = min(losses)
        name, site, config = out[index[head]]
        out[index[head]] = (name, site, replace(config, lost_ps=at_ps, lost_reason=reason))
        for s in stages:
            name, site, config = out[index[s]]
            out[index[s]] = (name, site, replace(config, lost_ps=at_ps, lost_name=lost[s][1] if s in lost else ""))
    return out


def _graph(lps: list[tuple[str, str, object]], channels: list[Channel]) -> tuple[Graph, TraceVocab]:
    """Probe every component once for its promises and trace names, then make the graph."""
    ports: dict[str, list[str]] = {}
    for ch in channels:
        ports.setdefault(ch.src, []).append(ch.port)
    specs, names = [], set()
    for name, site, config in lps:
        tracer = Tracer()  # a probe: learns the component's promises and trace names
        extra = {"ports": {p: (lambda *a: None) for p in ports[name]}} if set(ports.get(name, ())) - {"out"} else {}
        probe = config.build(simpy.Environment(), lambda *a: None, tracer, **extra)
        specs.append(LPSpec(name, site, config, probe.transit_ps))
        names.update(tracer.seen_names)
    vocab = TraceVocab(tuple(lp.name for lp in specs), tuple(dict.fromkeys(site for _, site, _ in lps)),
                       tuple(sorted(names)))
    try:
        return Graph(tuple(specs), tuple(channels)), vocab
    except ValueError as exc:  # a zero-latency cycle: conservative synchronization could not advance
        raise ConfigError(f"links: {exc}; give the links a latency > 0") from None

