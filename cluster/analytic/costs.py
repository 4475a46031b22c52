"""What a pass costs on a replica, read off the event model's own components.

Nothing here prices an op: a pipeline is planned by the builder's own planners
(`cluster.fleet.build`), each stage is built from its LP config as the event model builds
it, and a pass's service on each region comes from the stage's `_profile` (a GPU stage's
from its `GpuStepCost`). A link is a FIFO wire (`LinkSpec.serialization_ps`) and then a
delay (its latency), so a replica's pipeline is one chain of FIFO servers with fixed
service, and delays between them. Planning and profiles are cached per distinct pipeline,
so a sweep pays for each once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import simpy

from cluster.fleet import build
from cluster.fleet.spec import ClusterSpec, PipelineSpec
from cluster.results.trace import Tracer
from cluster.serving.frontend import KvBudget
from gpu import GpuSpec, GpuStage
from interconnect import LinkSpec
from llm.config import resolve_model
from llm.passes import TOKEN_ID_BYTES, Pass
from wafer import WaferSpec, WaferStage

_CACHE_LIMIT = 512  # distinct plans, components and chains kept; a sweep rarely needs more
_PLANS: dict[tuple, build._Stages] = {}
_COMPONENTS: dict[object, object] = {}
_CHAINS: dict[tuple, object] = {}


def _remember(cache: dict, key, value):
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value
    return value


def _noop(*_args) -> None:
    return None


def planned(spec: ClusterSpec, pipe: PipelineSpec, device: WaferSpec | GpuSpec,
            longest: Mapping[str, int]) -> build._Stages:
    """The pipeline's stages as `build_cluster` plans them (its own planners), cached on
    what the planners read: the pipeline, the device, and with `max_active` the KV each
    region must reserve."""
    models = [resolve_model(m) for m in pipe.models]
    reserve = tuple(build._kv_tokens(spec, m, longest) for m in models)
    key = (pipe, device, reserve)
    stages = _PLANS.get(key)
    if stages is None:
        planner = build._gpu_stages if isinstance(device, GpuSpec) else build._wafer_stages
        stages = _remember(_PLANS, key, planner(spec, pipe, device, models, dict(longest)))
    return stages


def component(config) -> WaferStage | GpuStage:
    """The stage's model, built as the event model builds it (nothing sent, nothing traced)."""
    built = _COMPONENTS.get(config)
    if built is None:
        built = _remember(_COMPONENTS, config, config.build(simpy.Environment(), _noop, Tracer()))
    return built


@dataclass(frozen=True)
class Chain:
    """One model's passes over one replica's wafers and links, as FIFO servers in series:
    each stage's regions, then the wire of the link after it (a pipeline of one wafer has no
    link: its frontend channel has no latency). Service in ps per server."""

    decode: np.ndarray  # a decode step at the request's mean context
    prefill: np.ndarray  # all of one prompt's chunks together (the prefill's load)
    loop_ps: float  # a decode step frontend to frontend, nothing in the way
    train_ps: float  # a prompt's chunks, sent at once, to the first token back, nothing in the way
    link_ps: float  # the decode step's time on links (wire and latency): the trace's link time
    servers: tuple[tuple[int, str], ...]  # each server's stage and name, for the bound: (2, "region layer41")
    kv_bytes: tuple[int, ...]  # per stage, one request's KV cache (prompt plus output)
    max_tokens: int  # the longest context a request of this model can hold here


def _links(spec: ClusterSpec, sites: list[str]) -> list[LinkSpec | None]:
    """The link after each stage (None: one stage, joined to its frontend by a bare channel)."""
    if len(sites) == 1:
        return [None]
    return [build._stage_link(spec, sites[i], sites[(i + 1) % len(sites)]) for i in range(len(sites))]


def wafer_chain(spec: ClusterSpec, stages: build._Stages, sites: list[str], model: int, prompt: int,
                output: int) -> Chain:
    """A model's chain on a wafer replica whose stages sit at `sites`, for requests of
    `prompt` and `output` tokens, passes cut as the frontend cuts them."""
    key = ("wafer", stages.configs, tuple(sites), spec.links, spec.prefill_chunk_tokens, model, prompt, output)
    chain = _CHAINS.get(key)
    if chain is not None:
        return chain
    comps = [component(c) for c in stages.configs]
    links = _links(spec, sites)
    last = len(comps) - 1
    ctx = prompt + max(output - 2, 0) // 2  # decode step k reads prompt + k - 1 tokens: their mean
    step = prompt_chunks(prompt, spec.prefill_chunk_tokens)
    decode, chunks, names, delays = [], [[] for _ in step], [], []
    for s, (stage, link) in enumerate(zip(comps, links)):
        act = stage._tenants[model].act_bytes
        decode += stage._profile(1, ctx, True, "decode", model).service_ps
        for k, (n, done, emits) in enumerate(step):
            chunks[k] += stage._profile(n, done, emits, "prefill", model).service_ps
        names += [(s, f"region {u.name}") for u in stage.units]
        delays += [0] * (len(stage.units) - 1)
        if link is None:
            delays.append(0)
            continue
        # The last stage sends only token ids, and only for a pass that emits.
        decode.append(link.serialization_ps(TOKEN_ID_BYTES if s == last else act))
        for k, (n, _, emits) in enumerate(step):
            chunks[k].append(link.serialization_ps(TOKEN_ID_BYTES if emits else 0) if s == last
                             else link.serialization_ps(n * act))
        names.append((s, "link back to the frontend" if s == last else f"link to stage {s + 1}"))
        delays += [0, link.latency_ps]
    d, delay = np.array(decode, float), np.array(delays, float)
    train = _train_ps([np.array(c, float) for c in chunks], delay, [emits for *_, emits in step],
                      links[-1] is not None)
    model_kv = stages.kv.bytes_per_token[model]
    link_ps = 0.0 if links[-1] is None else float(sum(link.serialization_ps(
        TOKEN_ID_BYTES if s == last else comps[s]._tenants[model].act_bytes) + link.latency_ps
        for s, link in enumerate(links)))
    chain = Chain(d, np.sum(chunks, axis=0, dtype=float), float(d.sum() + delay.sum()), train, link_ps,
                  tuple(names),
                  tuple(b * (prompt + output) for b in model_kv), stages.kv.max_tokens(model))
    return _remember(_CHAINS, key, chain)


def prompt_chunks(prompt: int, chunk: int) -> list[tuple[int, int, bool]]:
    """(tokens, context before, emits) of each prefill pass, as the frontend cuts a prompt."""
    return [(min(chunk, prompt - done), done, done + chunk >= prompt) for done in range(0, prompt, chunk)]


def _train_ps(chunks: list[np.ndarray], delay: np.ndarray, emits: list[bool], last_link: bool) -> float:
    """When the last chunk's token reaches the frontend: a prompt's chunks, all sent at
    t=0, through the empty chain (Lindley's recursion: a server starts a pass when both
    have arrived; a chunk that emits nothing stops at the last wafer, short of its link)."""
    free = np.zeros(len(delay))
    t = 0.0
    for service, sends in zip(chunks, emits):
        t = 0.0
        stop = len(delay) - (1 if last_link and not sends else 0)
        for i in range(stop):
            t = max(t, free[i]) + service[i]
            free[i] = t
            t += delay[i]
    return t


@dataclass(frozen=True)
class GpuChain:
    """One model on a GPU replica: each stage is a tensor-parallel group that takes every
    pass waiting as one step (continuous batching); links between nodes as for wafers."""

    stages: tuple[GpuStage, ...]
    link_ps: float  # a decode step's time on the links between nodes (wires and latency)
    ctx: int  # a decode step's context: the request's mean
    chunks: tuple[tuple[int, int, bool], ...]  # a prompt's prefill passes (tokens, context, emits)
    kv_bytes: tuple[int, ...]
    max_tokens: int

    def step_ps(self, decode: float, prompts: float) -> float:
        """A token's trip: each stage's step over `decode` decode steps and the chunks of
        `prompts` prompts (fractions interpolate between whole batches), plus the links."""
        total = self.link_ps
        for stage in self.stages:
            total += _interpolate(lambda d, p, stage=stage: stage.step_ps(self._batch(d, p))[0], decode, prompts)
        return total

    def _batch(self, decode: int, prompts: int) -> list[Pass]:
        passes = [Pass(0, 1, "decode", 1, self.ctx, True, 0, False)] * decode
        return passes + [Pass(0, 0, "prefill", n, done, emits, 0, False)
                         for _ in range(prompts) for n, done, emits in self.chunks]


def _interpolate(f, x: float, y: float) -> float:
    """f at fractional (x, y), linear between the whole numbers around them."""
    x0, y0 = int(x), int(y)
    fx, fy = x - x0, y - y0
    base = f(x0, y0)
    return base + fx * (f(x0 + 1, y0) - base if fx else 0.0) + fy * (f(x0, y0 + 1) - base if fy else 0.0)


def gpu_chain(spec: ClusterSpec, stages: build._Stages, sites: list[str], prompt: int, output: int) -> GpuChain:
    """The model's chain on a GPU replica whose nodes sit at `sites`."""
    key = ("gpu", stages.configs, tuple(sites), spec.links, spec.prefill_chunk_tokens, prompt, output)
    chain = _CHAINS.get(key)
    if chain is not None:
        return chain
    comps = tuple(component(c) for c in stages.configs)
    links = _links(spec, sites)
    last = len(comps) - 1
    link_ps = 0.0 if links[-1] is None else float(sum(
        link.serialization_ps(TOKEN_ID_BYTES if s == last else comps[s].shape.activation_bytes_per_token)
        + link.latency_ps for s, link in enumerate(links)))
    kv: KvBudget = stages.kv
    chain = GpuChain(comps, link_ps, prompt + max(output - 2, 0) // 2,
                     tuple(prompt_chunks(prompt, spec.prefill_chunk_tokens)),
                     tuple(b * (prompt + output) for b in kv.bytes_per_token[0]), kv.max_tokens(0))
    return _remember(_CHAINS, key, chain)
