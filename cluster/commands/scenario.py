"""A scenario from end to end: config -> plan -> graph -> engine -> trace -> summary."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from cluster.commands.horizon import check_fault_times
from cluster.commands.progress import RunProgress
from cluster.commands.signals import WATCHDOG_S, Watchdog, stop_on_signals
from cluster.engine.graph import Graph
from cluster.fleet.build import build_cluster
from cluster.fleet.spec import ClusterSpec, FaultSpec, LinksSpec, PipelineSpec, ReplicaSpec, UserSpec
from cluster.results.energy import Prices, energy_batch, energy_by_lp, request_energy_j
from cluster.results.summary import summarize
from cluster.results.trace import TraceVocab, energy_path, requests_path, tokens_path
from cluster.results.writer import TraceWriter
from common.checks import MAX_INT64, MAX_LATENCY_PS, MAX_RATE_PER_S, MAX_REQUESTS, MAX_TOKENS, MAX_WAFERS, check_number
from common.errors import ConfigError, ConservationError, LPFailure, SimError
from gpu import GPU_PRESETS, GpuSpec
from interconnect import CS3_LINK, SITES, LinkSpec
from llm.config import resolve_model
from wafer import DETAILS, WAFER_PRESETS, WaferSpec

VERSION = "0.1.0"
DTYPES = ("fp16", "fp8")


@dataclass(frozen=True)
class ScenarioConfig:
    """What is simulated. Everything here goes into the trace's metadata."""

    scenario: str
    model: str
    wafers: int  # pipeline stages on wafers; a GPU pipeline sizes itself
    sites: tuple[str, ...]
    users: int
    prompt_tokens: int
    output_tokens: int
    seed: int = 0
    detail: str = "layer"
    device: str = "wse-3"  # a wafer preset, or a GPU preset (h100)
    requests: int | None = None  # default: one request per user
    rate_per_s: float = 0.0  # 0: every request arrives at t=0
    prefill_chunk_tokens: int = 128
    gpus: int = 1  # GPU devices: tensor-parallel GPUs per DGX node
    dtype: str = "fp16"  # GPU devices: weight precision
    spec_overrides: tuple[tuple[str, float], ...] = ()  # (field, value) changes to the device preset
    link_overrides: tuple[tuple[str, float], ...] = ()  # (field, value) changes to the inter-device link
    faults: tuple[FaultSpec, ...] = ()  # links down/degraded/flapping, devices or sites lost (FaultSpec)

    @property
    def on_gpu(self) -> bool:
        return self.device in GPU_PRESETS

    def device_spec(self) -> WaferSpec | GpuSpec:
        """The device preset with `spec_overrides` applied."""
        preset = GPU_PRESETS[self.device] if self.on_gpu else WAFER_PRESETS[self.device]
        return _override(preset, self.spec_overrides, "--spec")

    def link_spec(self, base: LinkSpec) -> LinkSpec:
        """The link between devices with `link_overrides` applied."""
        return _override(base, self.link_overrides, "--link")

    def to_cluster(self) -> ClusterSpec:
        """The ring as a cluster description: one replica, no router, the users beside
        its first stage, at most `users` requests in service (their KV reserved up front)."""
        home = self.sites[0]
        if self.on_gpu:
            spec = self.device_spec()
            link = self.link_spec(LinkSpec(lanes=1, lane_bits_per_s=spec.node_link_bits_per_s,
                                           latency_ps=spec.node_link_latency_ps))
        else:
            link = self.link_spec(CS3_LINK)
        pipe = PipelineSpec("ring", (self.model,), 1 if self.on_gpu else self.wafers, self.device,
                            () if self.on_gpu else self.sites, self.gpus, self.dtype)
        users = UserSpec("users", home, self.model, "poisson" if self.rate_per_s else "burst",
                         rate_per_s=self.rate_per_s or 1.0, requests=self.requests or self.users,
                         prompt_tokens=self.prompt_tokens, output_tokens=self.output_tokens,
                         arrivals_stream="arrivals")  # the stream these scenarios always drew from
        return ClusterSpec(self.scenario, (pipe,), (ReplicaSpec("ring", 1, (home,)),), (users,),
                           links=LinksSpec(link, link), seed=self.seed, detail=self.detail,
                           prefill_chunk_tokens=self.prefill_chunk_tokens, max_active=self.users,
                           faults=self.faults)

    def validate(self) -> None:
        """Every number a flag gives, in range, named by its flag (`--prefill-chunk`
        for `prefill_chunk_tokens`); then the model and the sites."""
        for flag, value, high, unit in (
                ("--wafers", self.wafers, MAX_WAFERS, "wafers"), ("--users", self.users, MAX_REQUESTS, "users"),
                ("--prompt-tokens", self.prompt_tokens, MAX_TOKENS, "tokens"),
                ("--output-tokens", self.output_tokens, MAX_TOKENS, "tokens"),
                ("--prefill-chunk", self.prefill_chunk_tokens, MAX_TOKENS, "tokens"),
                ("--requests", self.requests, MAX_REQUESTS, "requests"), ("--gpus", self.gpus, 8, "GPUs")):
            if value is not None:
                check_number(flag, value, integer=True, low=1, high=high, unit=unit)
        check_number("--seed", self.seed, integer=True, low=0, high=MAX_INT64)
        check_number("--rate", self.rate_per_s, low=0, high=MAX_RATE_PER_S, unit="requests/s")
        for key, value in self.link_overrides:  # a link spec holds the fibre's propagation on top
            if key == "latency_ps":
                check_number("--link latency_ps", value, low=0, high=MAX_LATENCY_PS, unit="ps", why="one second")
        if self.detail not in DETAILS:
            raise ConfigError(f"--detail: must be one of {', '.join(DETAILS)}, got {self.detail!r}")
        if self.device not in WAFER_PRESETS and not self.on_gpu:
            raise ConfigError(f"--wafer: unknown device {self.device!r}; known: "
                              f"{', '.join([*WAFER_PRESETS, *GPU_PRESETS])}")
        if self.dtype not in DTYPES or (self.dtype != "fp16" and not self.on_gpu):
            raise ConfigError(f"--dtype: must be one of {', '.join(DTYPES)} (fp8 on GPUs only), got {self.dtype!r}")
        stages = 1 if self.on_gpu else self.wafers
        if len(self.sites) != stages:
            what = "one site for the GPU nodes" if self.on_gpu else "one per wafer"
            raise ConfigError(f"--sites: {len(self.sites)} site(s) given for {self.wafers} wafer(s); give {what}")
        for site in self.sites:
            if site not in SITES:
                raise ConfigError(f"--sites: unknown site {site!r}; known: {', '.join(SITES)}")
        resolve_model(self.model)  # its errors name --model; the cluster's would name the pipeline


def _override(spec, overrides: tuple[tuple[str, float], ...], flag: str):
    """A frozen spec with some fields changed; integers stay integers."""
    known = {f.name for f in fields(spec)}
    changes = {}
    for key, value in overrides:
        if key not in known or key == "name":
            raise ConfigError(f"{flag}: {getattr(spec, 'name', 'the link')} has no constant {key!r}")
        current = getattr(spec, key)
        changes[key] = int(value) if isinstance(current, int) and float(value).is_integer() else value
    try:
        return replace(spec, **changes)
    except ValueError as exc:
        raise ConfigError(f"{flag}: {exc}") from None


@dataclass(frozen=True)
class RunOptions:
    """How it is run. None of this may change a result, so none of it is in the trace."""

    trace: str
    backend: str = "inprocess"
    lps_per_partition: int | None = None  # None: in-process runs everything as one partition
    max_window_ps: int | None = None
    backend_options: dict = field(default_factory=dict)
    prices: Prices = field(default_factory=Prices)  # for the summary's cost; the simulation ignores them
    progress: bool = False  # simulated time and events/s on stderr, when it is a terminal
    watchdog_s: float | None = WATCHDOG_S  # end a run whose simulated time stalls this long (0/None: never)


def partition_groups(graph: Graph, lps_per_partition: int | None) -> list[list[str]]:
    """Each datacenter's LPs in graph order, cut into groups of at most `lps_per_partition`
    (None: one group for everything). A group never spans two sites, so it can be pinned
    to one; a site's LPs in a fleet need not be neighbours in the graph."""
    names = [lp.name for lp in graph.lps]
    if lps_per_partition is None:
        return [names]
    if lps_per_partition <= 0:
        raise ConfigError(f"--lps-per-actor: must be > 0, got {lps_per_partition}")
    by_site: dict[str, list[str]] = {}
    for lp in graph.lps:
        by_site.setdefault(lp.datacenter, []).append(lp.name)
    return [lps[i:i + lps_per_partition] for lps in by_site.values() for i in range(0, len(lps), lps_per_partition)]


def prepare(cfg: ScenarioConfig) -> tuple[list[list[str]], Graph, TraceVocab]:
    """Validate and plan; raises ConfigError before anything is written. Returns the
    plan (unit names per stage), the graph and the trace vocabulary."""
    cfg.validate()
    built = build_cluster(cfg.to_cluster(), {cfg.device: cfg.device_spec()})
    return built.plan["ring"], built.graph, built.vocab


def make_backend(opts: RunOptions, graph: Graph, groups: list[list[str]], vocab: TraceVocab,
                 writer: TraceWriter, progress=None):
    if opts.backend == "inprocess":
        from cluster.engine.backends.inprocess import InProcessBackend
        return InProcessBackend(graph, groups, vocab, writer, progress)
    if opts.backend == "ray":
        from cluster.engine.backends.ray_backend import RayBackend
        return RayBackend(graph, groups, vocab, writer, progress=progress, **opts.backend_options)
    raise ConfigError(f"--backend: unknown backend {opts.backend!r}")


def _json_safe(value):
    """Floats JSON can hold: a non-finite one as its string ("inf", "nan"), which float()
    reads back; containers walked."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _calibration(path: Path) -> dict:
    """A calibration file as the run found it: its fitted constants, what the fit matched,
    and the file's sha256 (the identity of the fit and its inputs). Device specs read it
    when first imported, so its constants can differ from the spec's after a re-fit in the
    same process: the device entries hold what was used."""
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
    except (OSError, ValueError):
        return {"sha256": None, "constants": None}
    fit = data.get("fit") or {}
    return {"sha256": hashlib.sha256(raw).hexdigest(), "constants": data.get("constants"),
            "fit_point": fit.get("point"), "fit_source": fit.get("source")}


def resolved_config(graph: Graph, links: LinksSpec) -> dict:
    """Every constant the run used, resolved: each distinct device spec (its LPs beside it;
    `WaferSpec(**entry["spec"])` rebuilds it, calibrated constants included), each link LP's
    spec (the fibre's propagation in its latency), the network's base links, and the
    calibration files the device packages read."""
    from gpu.spec import CALIBRATION_FILE as GPU_CALIBRATION
    from wafer.spec import CALIBRATION_FILE as WAFER_CALIBRATION

    devices: list[dict] = []
    by_spec: dict[object, dict] = {}
    link_specs: dict[str, dict] = {}
    for lp in graph.lps:
        spec = getattr(lp.config, "spec", None)
        if isinstance(spec, LinkSpec):
            link_specs[lp.name] = _json_safe(asdict(spec))
        elif isinstance(spec, (WaferSpec, GpuSpec)):
            entry = by_spec.get(spec)
            if entry is None:
                entry = by_spec[spec] = {"type": type(spec).__name__, "spec": _json_safe(asdict(spec)), "lps": []}
                devices.append(entry)
            entry["lps"].append(lp.name)
    files = {WaferSpec: ("wafer/calibration.json", WAFER_CALIBRATION),
             GpuSpec: ("gpu/calibration.json", GPU_CALIBRATION)}
    calibration = {name: _json_safe(_calibration(path)) for typ, (name, path) in files.items()
                   if any(isinstance(spec, typ) for spec in by_spec)}
    return {"devices": devices, "links": link_specs, "network": _json_safe(asdict(links)),
            "calibration": calibration}


def run_scenario(cfg: ScenarioConfig, opts: RunOptions) -> dict:
    """Run the ring, write the trace (atomically) and return the summary."""
    wall0 = time.perf_counter()
    plan, graph, vocab = prepare(cfg)
    check_fault_times(cfg.to_cluster(), {cfg.device: cfg.device_spec()}, "--fault")  # none past the workload's end
    metadata = {"scenario": asdict(cfg), "version": VERSION, "plan": plan,
                "resolved": resolved_config(graph, cfg.to_cluster().links)}
    return run_graph(graph, vocab, metadata, opts, cfg.scenario, wall0)


def run_cluster(spec: ClusterSpec, opts: RunOptions, devices: dict | None = None) -> dict:
    """Run a cluster description, write the trace (atomically) and return the summary."""
    wall0 = time.perf_counter()
    built = build_cluster(spec, devices)
    check_fault_times(spec, devices)  # none past the workload's end
    metadata = {"cluster": asdict(spec), "version": VERSION, "plan": built.plan,
                "slo": {"ttft_ms": spec.slo_ttft_ms, "tpot_ms": spec.slo_tpot_ms},
                "resolved": resolved_config(built.graph, spec.links)}
    return run_graph(built.graph, built.vocab, metadata, opts, spec.name, wall0)


def _check_sram(graph: Graph, summary: dict) -> None:
    """No device held more than its memory at any time, read back from the trace's SRAM
    spans (independent of the model's own bookkeeping, which refuses it as it happens)."""
    for lp in graph.lps:
        capacity = getattr(getattr(lp.config, "spec", None), "sram_bytes", None)
        peak_gb = summary.get("sram_peak_gb", {}).get(lp.name)
        if capacity and peak_gb and round(peak_gb * 1e9) > capacity:
            raise ConservationError(f"conservation: {lp.name} held {peak_gb:.3f} GB, over its "
                                    f"{capacity / 1e9:.3f} GB of SRAM")


def _start_backend(opts: RunOptions, graph: Graph, groups: list[list[str]], vocab: TraceVocab,
                   writer: TraceWriter, progress):
    """`make_backend`, and if it fails half way (a signal during Ray's start, an actor that
    dies while the graph is built), stop the Ray this run was starting: the backend never
    came back, so it cannot shut down itself. Ray's own errors become one `LPFailure` line."""
    ray = sys.modules.get("ray") if opts.backend == "ray" else None
    ours = ray is None or not ray.is_initialized()  # a Ray the caller initialized is theirs
    # Ray's start puts a C++ SIGTERM handler in the driver that dumps a stack and dies without
    # cleaning up; this keeps it out, so SIGTERM stays the run's (its Python one is undone by
    # stop_on_signals). Read when the Ray processes start, so theirs stay out too.
    quiet = opts.backend == "ray" and "RAY_DISABLE_FAILURE_SIGNAL_HANDLER" not in os.environ
    if quiet:
        os.environ["RAY_DISABLE_FAILURE_SIGNAL_HANDLER"] = "1"
    try:
        return make_backend(opts, graph, groups, vocab, writer, progress)
    except BaseException as exc:
        ray = sys.modules.get("ray") if opts.backend == "ray" else None
        if ours and ray is not None and ray.is_initialized():
            ray.shutdown()
        if opts.backend == "ray" and isinstance(exc, Exception) and not isinstance(exc, (SimError, OSError)):
            first = (str(exc).strip().splitlines() or [""])[0]
            raise LPFailure(f"ray backend failed to start: {type(exc).__name__}: {first}") from None
        raise
    finally:
        if quiet:
            del os.environ["RAY_DISABLE_FAILURE_SIGNAL_HANDLER"]


def run_graph(graph: Graph, vocab: TraceVocab, metadata: dict, opts: RunOptions, name: str,
              wall0: float) -> dict:
    """Run the graph, write the trace and return the summary. SIGINT and SIGTERM stop it
    (`Stopped`, exit 130/143) and the watchdog ends it when simulated time stalls for
    `opts.watchdog_s` (`HangError`); either way no file is left and Ray is stopped."""
    groups = partition_groups(graph, opts.lps_per_partition)
    from cluster.engine.rounds import Engine

    if opts.prices != Prices():
        metadata = {**metadata, "prices": asdict(opts.prices)}
    if opts.watchdog_s is not None and not (math.isfinite(opts.watchdog_s) and opts.watchdog_s >= 0):
        raise ConfigError(f"--watchdog-s: must be a number of seconds >= 0 (0: off), got {opts.watchdog_s}")
    watchdog = Watchdog(opts.watchdog_s, groups)
    progress = RunProgress(name, opts.progress)

    def tell(now_ps: int, events: int) -> None:  # the bar and the watchdog both follow the run
        watchdog.poke(now_ps, events)
        progress(now_ps, events)

    # SIGINT/SIGTERM from here on stop the run with one line and 130/143, files and Ray cleaned up
    with stop_on_signals(watchdog, name) as rearm:
        writer = TraceWriter(opts.trace, list(vocab.lps), metadata)
        backend = None
        try:
            backend = _start_backend(opts, graph, groups, vocab, writer, tell)
            rearm()  # Ray's start put its own SIGTERM handler in place
            watchdog.watch_backend(backend)
            watchdog.start()
            setup_s = time.perf_counter() - wall0
            engine = Engine(graph, groups, backend, writer, opts.max_window_ps)
            stats = engine.run(tell if opts.backend != "inprocess" else None)
            watchdog.stop()
            energies = energy_by_lp(graph.lps, engine.activity, stats.end_ps)
            backend.shutdown()  # before the files appear: a signal during Ray's stop leaves none
            writer.commit(energy_batch(energies), request_energy_j(energies))
        except BaseException:
            watchdog.stop()
            if backend is not None:
                backend.shutdown()  # first: no actor still writes into the spool folder being removed
            writer.abort()
            raise
        finally:
            progress.close()
            if sys.exc_info()[0] is not None:
                # the exception's traceback keeps this frame: let it not keep Ray's objects alive
                # to the interpreter's exit
                backend = engine = None  # noqa: F841
    summary = summarize(opts.trace)
    try:
        _check_sram(graph, summary)
    except ConservationError:
        for path in (opts.trace, requests_path(opts.trace), tokens_path(opts.trace), energy_path(opts.trace)):
            Path(path).unlink(missing_ok=True)
        raise
    wall_s = time.perf_counter() - wall0
    rounds_ms = sorted(stats.round_wall_ms)
    summary.update({
        "scenario": name,
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
