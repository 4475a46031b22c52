"""A scenario from end to end: config -> plan -> graph -> engine -> trace -> summary."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import simpy

from cluster.errors import ConfigError
from cluster.frontend import FrontendConfig
from cluster.graph import Graph, LPSpec
from cluster.lps import LinkConfig, WaferConfig
from cluster.messages import Channel
from cluster.model import resolve_model
from cluster.plan import PipelinePlan, plan_pipeline
from cluster.summary import summarize
from cluster.trace import Tracer, TraceVocab, TraceWriter
from cluster.workload import generate_requests
from interconnect import CS3_LINK, SITES, fibre_latency_ps
from wafer import DETAILS, WAFER_PRESETS

VERSION = "0.1.0"


@dataclass(frozen=True)
class ScenarioConfig:
    """What is simulated. Everything here goes into the trace's metadata."""

    scenario: str
    model: str
    wafers: int
    sites: tuple[str, ...]
    users: int
    prompt_tokens: int
    output_tokens: int
    seed: int = 0
    detail: str = "layer"
    wafer: str = "wse-3"
    requests: int | None = None  # default: one request per user
    rate_per_s: float = 0.0  # 0: every request arrives at t=0
    prefill_chunk_tokens: int = 128

    def validate(self) -> None:
        for name in ("wafers", "users", "prompt_tokens", "output_tokens", "prefill_chunk_tokens"):
            value = getattr(self, name)
            if value <= 0:
                raise ConfigError(f"--{name.replace('_', '-')}: must be > 0, got {value}")
        if self.requests is not None and self.requests <= 0:
            raise ConfigError(f"--requests: must be > 0, got {self.requests}")
        if self.detail not in DETAILS:
            raise ConfigError(f"--detail: must be one of {', '.join(DETAILS)}, got {self.detail!r}")
        if self.wafer not in WAFER_PRESETS:
            raise ConfigError(f"--wafer: unknown wafer {self.wafer!r}; known: {', '.join(WAFER_PRESETS)}")
        if len(self.sites) != self.wafers:
            raise ConfigError(f"--sites: {len(self.sites)} site(s) given for {self.wafers} wafer(s); "
                              f"give one per wafer")
        for site in self.sites:
            if site not in SITES:
                raise ConfigError(f"--sites: unknown site {site!r}; known: {', '.join(SITES)}")


@dataclass(frozen=True)
class RunOptions:
    """How it is run. None of this may change a result, so none of it is in the trace."""

    trace: str
    backend: str = "inprocess"
    lps_per_partition: int | None = None  # None: in-process runs everything as one partition
    max_window_ps: int | None = None
    backend_options: dict = field(default_factory=dict)


def build_graph(cfg: ScenarioConfig, plan: PipelinePlan) -> tuple[Graph, TraceVocab]:
    """The ring: frontend -> wafer0 -> link -> wafer1 -> ... -> last wafer -> link -> frontend."""
    model, n = plan.model, len(plan.stages)
    requests = generate_requests(cfg.requests or cfg.users, cfg.prompt_tokens, cfg.output_tokens,
                                 cfg.rate_per_s, cfg.seed)
    configs: list[tuple[str, str, object]] = [
        ("frontend", cfg.sites[0], FrontendConfig(tuple(requests), cfg.users, cfg.prefill_chunk_tokens))]
    channels: list[Channel] = [Channel("frontend", "wafer0", 0)]
    for stage in plan.stages:
        w = stage.wafer
        configs.append((f"wafer{w}", cfg.sites[w], WaferConfig(
            plan.spec, model.layer_shape, model.vocab_size, stage.units, cfg.detail, w == n - 1)))
        nxt = (w + 1) % n
        dst_name, dst_site = (f"wafer{nxt}", cfg.sites[nxt]) if nxt else ("frontend", cfg.sites[0])
        if n == 1:
            channels.append(Channel("wafer0", "frontend", 0))
            continue
        link = f"link:wafer{w}->wafer{nxt}"
        latency = CS3_LINK.latency_ps + fibre_latency_ps(SITES[cfg.sites[w]], SITES[dst_site])
        configs.append((link, cfg.sites[w], LinkConfig(CS3_LINK.with_latency(latency))))
        channels += [Channel(f"wafer{w}", link, 0), Channel(link, dst_name, 0)]
    lps, names = [], set()
    for name, site, config in configs:
        tracer = Tracer()  # a probe: learns the component's promises and trace names
        probe = config.build(simpy.Environment(), lambda *a: None, tracer)
        lps.append(LPSpec(name, site, config, probe.transit_ps))
        names.update(tracer.seen_names)
    vocab = TraceVocab(tuple(lp.name for lp in lps), tuple(dict.fromkeys(cfg.sites)), tuple(sorted(names)))
    return Graph(tuple(lps), tuple(channels)), vocab


def partition_groups(graph: Graph, lps_per_partition: int | None) -> list[list[str]]:
    """Consecutive LPs of one datacenter, at most `lps_per_partition` to a group (None: one
    group for everything). A group never spans two sites, so it can be pinned to one."""
    names = [lp.name for lp in graph.lps]
    if lps_per_partition is None:
        return [names]
    if lps_per_partition <= 0:
        raise ConfigError(f"--lps-per-actor: must be > 0, got {lps_per_partition}")
    groups: list[list[str]] = []
    site = None
    for lp in graph.lps:
        if lp.datacenter != site or len(groups[-1]) == lps_per_partition:
            groups.append([])
            site = lp.datacenter
        groups[-1].append(lp.name)
    return groups


def prepare(cfg: ScenarioConfig) -> tuple[PipelinePlan, Graph, TraceVocab]:
    """Validate and plan; raises ConfigError before anything is written."""
    cfg.validate()
    model = resolve_model(cfg.model)
    plan = plan_pipeline(model, WAFER_PRESETS[cfg.wafer], cfg.wafers,
                         cfg.users * (cfg.prompt_tokens + cfg.output_tokens))
    graph, vocab = build_graph(cfg, plan)
    return plan, graph, vocab


def make_backend(opts: RunOptions, graph: Graph, groups: list[list[str]], vocab: TraceVocab,
                 writer: TraceWriter):
    if opts.backend == "inprocess":
        from cluster.backends.inprocess import InProcessBackend
        return InProcessBackend(graph, groups, vocab, writer)
    if opts.backend == "ray":
        from cluster.backends.ray_backend import RayBackend
        return RayBackend(graph, groups, vocab, **opts.backend_options)
    raise ConfigError(f"--backend: unknown backend {opts.backend!r}")


def run_scenario(cfg: ScenarioConfig, opts: RunOptions) -> dict:
    """Run, write the trace (atomically) and return the summary."""
    wall0 = time.perf_counter()
    plan, graph, vocab = prepare(cfg)
    groups = partition_groups(graph, opts.lps_per_partition)
    from cluster.engine import Engine

    metadata = {"scenario": asdict(cfg), "version": VERSION,
                "plan": [[u.name for u in s.units] for s in plan.stages]}
    writer = TraceWriter(opts.trace, list(vocab.lps), metadata)
    backend = None
    try:
        backend = make_backend(opts, graph, groups, vocab, writer)
        setup_s = time.perf_counter() - wall0
        engine = Engine(graph, groups, backend, writer, opts.max_window_ps)
        stats = engine.run()
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    finally:
        if backend is not None:
            backend.shutdown()
    summary = summarize(opts.trace)
    wall_s = time.perf_counter() - wall0
    rounds_ms = sorted(stats.round_wall_ms)
    summary.update({
        "scenario": cfg.scenario,
        "backend": opts.backend,
        "events": stats.events,
        "rounds": stats.rounds,
        "messages": stats.messages,
        "trace_rows": writer.rows,
        "wall_s": wall_s,
        "setup_wall_s": setup_s,
        "sync_wall_s": stats.sync_wall_s,
        "round_wall_ms_p50": rounds_ms[len(rounds_ms) // 2] if rounds_ms else None,
        "events_per_s": stats.events / wall_s if wall_s else None,
        "trace": str(Path(opts.trace)),
    })
    summary.update(getattr(backend, "summary_extra", lambda: {})())
    return summary
