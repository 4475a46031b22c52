"""What a ClusterSpec means, checked before anything is built from it.

`validate_cluster` raises the first problem it finds as a one-line ConfigError naming the
field (`users[1].site: unknown site 'paris'; known: ...`). It checks types and ranges,
names and references, and that declared sites have room for the wafers placed there. It
does not check that a model fits a pipeline's SRAM: the planner does.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cluster.fleet.spec import ARRIVALS, ROUTER_POLICIES, ClusterSpec, FaultSpec, PipelineSpec
from cluster.fleet.toml import element_type, field_types
from common.checks import (
    MAX_INT64,
    MAX_LATENCY_PS,
    MAX_RATE_PER_S,
    MAX_REPLICAS,
    MAX_REQUESTS,
    MAX_TIME_S,
    MAX_TIME_SCALE,
    MAX_TOKENS,
    MAX_WAFERS,
    check_number,
)
from common.errors import ConfigError
from gpu.spec import GPU_PRESETS
from interconnect.faults import DEVICE_KINDS as DEVICE_FAULTS
from interconnect.faults import KINDS as LINK_FAULTS
from interconnect.sites import SITES
from llm.config import resolve_model
from wafer.model import DETAILS
from wafer.spec import WAFER_PRESETS

__all__ = ["validate_cluster"]



def _fail(path: str, problem: str) -> None:
    raise ConfigError(f"{path}: {problem}")


def _check_types(obj: Any, path: str) -> None:
    """Every field holds its declared type: ints are ints (not bools, not 4.0), numbers
    are finite, tuples are tuples. A spec built in Python skips the TOML reader's checks,
    and every range check below relies on this."""
    hints = field_types(type(obj))
    for f in dataclasses.fields(obj):
        _check_value(getattr(obj, f.name), hints[f.name], f"{path}.{f.name}" if path else f.name)


def _check_value(value: Any, tp: Any, path: str) -> None:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, tp):
            _fail(path, f"must be a {tp.__name__}, got {value!r}")
        _check_types(value, path)
        return
    elem = element_type(tp)
    if elem is not None:
        if not isinstance(value, tuple):
            _fail(path, f"must be a tuple, got {value!r}")
        for i, item in enumerate(value):
            _check_value(item, elem, f"{path}[{i}]")
        return
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            _fail(path, f"must be an integer, got {value!r}")
    elif tp is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            _fail(path, f"must be a number, got {value!r}")
        if not math.isfinite(value):
            _fail(path, f"must be finite, got {value!r}")
    elif tp is bool:
        if not isinstance(value, bool):
            _fail(path, f"must be a boolean, got {value!r}")
    elif tp is str:
        if not isinstance(value, str):
            _fail(path, f"must be a string, got {value!r}")


def _at_least(path: str, value: float, low: float) -> None:
    if value < low:
        _fail(path, f"must be >= {low}, got {value!r}")


def _above(path: str, value: float, low: float) -> None:
    if not value > low:
        _fail(path, f"must be > {low}, got {value!r}")


def _at_most(path: str, value: float, high: float, unit: str, why: str = "") -> None:
    check_number(path, value, high=high, unit=unit, why=why)


def _one_of(path: str, value: str, choices: Iterable[str], what: str) -> None:
    choices = list(choices)
    if value not in choices:
        _fail(path, f"unknown {what} {value!r}; known: {', '.join(map(str, choices))}")


def _unique(items: Sequence[Any], attr: str, path: str) -> None:
    seen: set[str] = set()
    for i, item in enumerate(items):
        name = getattr(item, attr)
        if name in seen:
            _fail(f"{path}[{i}].{attr}", f"duplicate name {name!r}")
        seen.add(name)


def _model_name(path: str, model: str) -> str:
    """The resolved model's name; resolve_model's error re-raised at the field."""
    try:
        return resolve_model(model).name
    except ConfigError as exc:
        # resolve_model speaks of the CLI flag; here the field is the place.
        raise ConfigError(f"{path}: {str(exc).removeprefix('--model: ')}") from None


def _stage_sites(pipeline: PipelineSpec, replica_site: str) -> list[str]:
    """Where each of a replica's wafers is: its stage sites, else all at its own site."""
    return list(pipeline.stage_sites) if pipeline.stage_sites else [replica_site] * pipeline.wafers


def _check_sites(spec: ClusterSpec) -> None:
    """Every site used is a known datacenter, and declared when any site is declared."""
    for i, site in enumerate(spec.sites):
        _one_of(f"sites[{i}].name", site.name, SITES, "site")
        _at_least(f"sites[{i}].wafers", site.wafers, 0)
    declared = [s.name for s in spec.sites]
    used = [(f"pipelines[{i}].stage_sites[{j}]", s) for i, p in enumerate(spec.pipelines)
            for j, s in enumerate(p.stage_sites)]
    used += [(f"replicas[{i}].sites[{j}]", s) for i, r in enumerate(spec.replicas) for j, s in enumerate(r.sites)]
    used += [(f"routers[{i}].site", r.site) for i, r in enumerate(spec.routers)]
    used += [(f"users[{i}].site", u.site) for i, u in enumerate(spec.users)]
    for path, site in used:
        _one_of(path, site, SITES, "site")
        if declared and site not in declared:
            _fail(path, f"site {site!r} is not declared in sites; declared: {', '.join(declared)}")


def _check_pipelines(spec: ClusterSpec) -> set[str]:
    """The pipelines' own fields; returns the names of the models served."""
    served: set[str] = set()
    for i, p in enumerate(spec.pipelines):
        at = f"pipelines[{i}]"
        _one_of(f"{at}.device", p.device, [*WAFER_PRESETS, *GPU_PRESETS], "device")
        _one_of(f"{at}.gpus", p.gpus, (1, 2, 4, 8), "GPU count")
        if p.device in GPU_PRESETS and (p.wafers != 1 or p.stage_sites):
            _fail(f"{at}.wafers", "a GPU pipeline sizes itself over DGX nodes in its replica's site; "
                                  "leave wafers at 1 and stage_sites empty")
        _one_of(f"{at}.dtype", p.dtype, ("fp16", "fp8") if p.device in GPU_PRESETS else ("fp16",), "dtype")
        _at_least(f"{at}.wafers", p.wafers, 1)
        _at_most(f"{at}.wafers", p.wafers, MAX_WAFERS, "wafers")
        if p.stage_sites and len(p.stage_sites) != p.wafers:
            _fail(f"{at}.stage_sites", f"must be empty or name one site per wafer ({p.wafers}), "
                                       f"got {len(p.stage_sites)}")
        if not p.models:
            _fail(f"{at}.models", "must name at least one model")
        names: list[str] = []
        for j, model in enumerate(p.models):
            name = _model_name(f"{at}.models[{j}]", model)
            if name in names:
                _fail(f"{at}.models[{j}]", f"model {name!r} is already in this pipeline")
            names.append(name)
        served.update(names)
    return served


def _check_capacity(spec: ClusterSpec) -> None:
    """Declared sites with a wafer count have room for the wafers placed there. A
    replica's copies go round-robin over its `sites`; a pipeline with stage sites puts
    one wafer at each stage's site."""
    pipelines = {p.name: p for p in spec.pipelines}
    placed: Counter[str] = Counter()
    for r in spec.replicas:
        for k in range(r.count):
            placed.update(_stage_sites(pipelines[r.pipeline], r.sites[k % len(r.sites)]))
    for i, site in enumerate(spec.sites):
        if site.wafers > 0 and placed[site.name] > site.wafers:
            _fail(f"sites[{i}].wafers", f"site {site.name!r} has room for {site.wafers} wafers "
                                        f"but {placed[site.name]} are placed there")


def validate_cluster(spec: ClusterSpec) -> None:
    """Raise ConfigError (one line, naming the field) for the first problem in `spec`."""
    if not isinstance(spec, ClusterSpec):
        raise ConfigError(f"cluster: expected a ClusterSpec, got {type(spec).__name__}")
    _check_types(spec, "")
    for name in ("pipelines", "replicas", "users"):
        if not getattr(spec, name):
            _fail(name, "must not be empty")
    for name in ("pipelines", "routers", "users", "sites"):
        _unique(getattr(spec, name), "name", name)

    # Cluster-wide settings.
    _one_of("detail", spec.detail, DETAILS, "detail")
    _at_least("seed", spec.seed, 0)
    _at_most("seed", spec.seed, MAX_INT64, "", "an int64")
    _at_least("prefill_chunk_tokens", spec.prefill_chunk_tokens, 1)
    _at_most("prefill_chunk_tokens", spec.prefill_chunk_tokens, MAX_TOKENS, "tokens")
    _at_least("max_active", spec.max_active, 0)
    _at_most("max_active", spec.max_active, MAX_REQUESTS, "requests")
    _above("time_scale", spec.time_scale, 0)
    _at_most("time_scale", spec.time_scale, MAX_TIME_SCALE, "", "arrivals stretched further outrun the clock")
    _at_least("slo_ttft_ms", spec.slo_ttft_ms, 0)
    _at_least("slo_tpot_ms", spec.slo_tpot_ms, 0)
    # LinkSpec checks its own ranges when built; finiteness was checked with the types.
    for name in ("intra_site", "wan"):
        link = getattr(spec.links, name)
        _above(f"links.{name}.lanes", link.lanes, 0)
        _above(f"links.{name}.lane_bits_per_s", link.lane_bits_per_s, 0)
        _at_least(f"links.{name}.latency_ps", link.latency_ps, 0)
        _at_most(f"links.{name}.latency_ps", link.latency_ps, MAX_LATENCY_PS, "ps", "one second")

    _check_sites(spec)
    served = _check_pipelines(spec)

    pipeline_names = [p.name for p in spec.pipelines]
    for i, r in enumerate(spec.replicas):
        _one_of(f"replicas[{i}].pipeline", r.pipeline, pipeline_names, "pipeline")
        _at_least(f"replicas[{i}].count", r.count, 1)
        _at_most(f"replicas[{i}].count", r.count, MAX_REPLICAS, "replicas")
        if not r.sites:
            _fail(f"replicas[{i}].sites", "must name at least one site")

    for i, router in enumerate(spec.routers):
        _one_of(f"routers[{i}].policy", router.policy, ROUTER_POLICIES, "policy")

    router_names = [r.name for r in spec.routers]
    for i, u in enumerate(spec.users):
        at = f"users[{i}]"
        if u.router:
            _one_of(f"{at}.router", u.router, router_names, "router")
        if u.arrivals not in ARRIVALS and not Path(u.arrivals).is_file():
            _fail(f"{at}.arrivals", f"{u.arrivals!r} is neither one of {', '.join(ARRIVALS)} nor an existing file")
        if u.arrivals in ("poisson", "gamma"):
            _above(f"{at}.rate_per_s", u.rate_per_s, 0)
        _above(f"{at}.burstiness_cv", u.burstiness_cv, 0)
        if u.arrivals == "closed":
            _at_least(f"{at}.users", u.users, 1)
        _at_least(f"{at}.think_time_s", u.think_time_s, 0)
        _at_least(f"{at}.requests", u.requests, 1)
        _at_most(f"{at}.requests", u.requests, MAX_REQUESTS, "requests", "a population's, made before the run")
        _at_most(f"{at}.users", u.users, MAX_REQUESTS, "users")
        if u.arrivals in ("poisson", "gamma"):
            _at_most(f"{at}.rate_per_s", u.rate_per_s, MAX_RATE_PER_S, "requests/s", "one a microsecond")
        _at_most(f"{at}.burstiness_cv", u.burstiness_cv, 100.0, "")
        _at_most(f"{at}.think_time_s", u.think_time_s, MAX_TIME_S, "s", "about 11.6 days")
        _at_least(f"{at}.prompt_tokens", u.prompt_tokens, 1)
        _at_least(f"{at}.output_tokens", u.output_tokens, 1)
        _at_most(f"{at}.prompt_tokens", u.prompt_tokens, MAX_TOKENS, "tokens")
        _at_most(f"{at}.output_tokens", u.output_tokens, MAX_TOKENS, "tokens")
        _at_most(f"{at}.sessions", u.sessions, MAX_REQUESTS, "sessions")
        _at_least(f"{at}.sessions", u.sessions, 0)
        model = _model_name(f"{at}.model", u.model)
        if model not in served:
            _fail(f"{at}.model", f"no pipeline serves {model!r}; served: {', '.join(sorted(served))}")

    for i, f in enumerate(spec.faults):
        _check_fault(f"faults[{i}]", f)

    _check_capacity(spec)


def _check_fault(at: str, f: FaultSpec) -> None:
    """One fault's fields; its target is checked where the graph is built."""
    _one_of(f"{at}.kind", f.kind, LINK_FAULTS + DEVICE_FAULTS, "fault kind")
    _at_least(f"{at}.at_ms", f.at_ms, 0)
    if f.kind in DEVICE_FAULTS:
        if f.for_ms:
            _fail(f"{at}.for_ms", f"{f.kind} is for good: a lost device stays lost (drop for_ms), got {f.for_ms}")
        if f.bandwidth != 1 or f.period_ms:
            _fail(f"{at}", f"{f.kind} takes only target and at_ms")
        return
    _above(f"{at}.for_ms", f.for_ms, 0)
    if not 0 < f.bandwidth <= 1:
        _fail(f"{at}.bandwidth", f"must be in (0, 1], got {f.bandwidth}")
    if f.kind == "link-flap":
        _above(f"{at}.period_ms", f.period_ms, 0)
    elif f.period_ms:
        _fail(f"{at}.period_ms", f"only link-flap has a period, not {f.kind}")
