"""The SimPy model of one wafer running one pipeline stage of a transformer.

Models: each unit (embedding, decoder layer, LM head) on its own region of cores sized
by its weight bytes; a region works on one pass at a time, so passes of successive
tokens and users pipeline through the regions; op costs from `wafer.costs`; SRAM as a
capacity holding the weights and a KV-cache reservation per request. Ignores: prefill
and decode sharing a region's cores at once, KV layout across regions, core failures.

The model knows only its output port (`send`) and its trace buffer (`tracer`); the engine
that owns time and routes messages is somebody else's business.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain
from operator import itemgetter, sub
from typing import Literal

import simpy
from simpy.events import Process, Timeout

from common.errors import CapacityError
from common.units import NULL
from llm.ops import LayerShape, OpWork, decoder_layer_ops, embedding_ops, lm_head_ops
from llm.passes import TOKEN_ID_BYTES, Pass
from wafer.costs import Region, handoff_ps, latency_optimal_cores, op_cost
from wafer.spec import WaferSpec
from wafer.tandem import FifoTandem

Detail = Literal["stage", "layer", "op"]
DETAILS: tuple[str, ...] = ("stage", "layer", "op")


@dataclass(frozen=True)
class Unit:
    """One region's job: 'embed', 'layer' (with its index) or 'lm_head'."""

    kind: str
    layer: int | None
    weight_bytes: int

    @property
    def name(self) -> str:
        return f"layer{self.layer}" if self.kind == "layer" else self.kind


@dataclass(frozen=True, slots=True)
class _Profile:
    """One kind of pass (tokens, context, emits, phase) through every unit: costs and the
    trace layout of its spans, computed once and cached. Only the detail in use is traced,
    so only its templates are made."""

    service_ps: tuple[int, ...]
    cum_end_ps: tuple[int, ...]
    busy_units: tuple[int, ...]  # units with work for this pass (the LM head idles on most)
    pick_busy: Callable[[list[int]], Sequence[int]] | None  # None: every unit is busy
    op_ps: tuple[tuple[int, tuple[int, ...]], ...]  # op detail: (busy unit, its op durations)
    shape: int  # layer and op detail: the pass record's layout (Tracer.pass_shape)
    stage_template: int  # stage detail: one span per pass
    index: int  # this stage's number for the kind of pass (FifoTandem's key)
    free_delays: tuple[int, ...]  # a pass that never waits: from one event to the next
    free_shape: int  # and its record's layout, relative to its entry


_COST_TABLES: dict[tuple[int, LayerShape, int], tuple[WaferSpec, dict]] = {}


def _shared_costs(spec: WaferSpec, shape: LayerShape, vocab_size: int) -> dict:
    """One unit-cost table per (spec, model) in this process, so that a region costed for
    one stage is costed for every stage with a region that size. The spec is matched by
    identity (the stages of a run share it, in-process or unpickled together in an actor;
    the entry holds it, so its id cannot be reused), the small layer shape by value."""
    key = (id(spec), shape, vocab_size)
    entry = _COST_TABLES.get(key)
    if entry is None or entry[0] is not spec:
        if len(_COST_TABLES) >= 8:  # runs come and go in one process; keep a few
            _COST_TABLES.clear()
        entry = _COST_TABLES[key] = (spec, {})
    return entry[1]


def _one(busy: tuple[int, ...]) -> Callable[[list[int]], tuple[int, ...]]:
    """itemgetter's tuple for zero or one index (itemgetter(j) would return a bare int)."""
    return lambda ends: tuple(ends[j] for j in busy)


class WaferStage:
    """One wafer holding `units` in series. Feed it passes with `receive`."""

    def __init__(self, env: simpy.Environment, spec: WaferSpec, shape: LayerShape,
                 vocab_size: int, units: list[Unit], *, detail: Detail,
                 last_stage: bool, send: Callable[[Pass, int, int], None], tracer,
                 kv_tokens_reserved: int = 0) -> None:
        if detail not in DETAILS:
            raise ValueError(f"detail: must be one of {', '.join(DETAILS)}, got {detail!r}")
        self.env, self.spec, self.shape, self.vocab_size = env, spec, shape, vocab_size
        self.units, self.detail, self.last_stage = units, detail, last_stage
        self._send, self._tracer, self._rows = send, tracer, tracer.rows
        self.weight_bytes = sum(u.weight_bytes for u in units)
        if self.weight_bytes > spec.sram_bytes:
            raise CapacityError(f"weights of {self.weight_bytes} B exceed {spec.name} SRAM of {spec.sram_bytes} B")
        self.regions = self._place(kv_tokens_reserved)
        self.n_layers = sum(1 for u in units if u.kind == "layer")
        self.kv_bytes_per_token = self.n_layers * shape.kv_bytes_per_token
        self._act_bytes = shape.activation_bytes_per_token
        self._tandem = FifoTandem(len(units))
        self._costs = _shared_costs(spec, shape, vocab_size)
        self._profiles: dict[tuple[int, int, bool, str], _Profile] = {}
        self._pending_exits: deque[int] = deque()  # exit times of passes that will send
        self._kv_bytes_in_use = 0
        self._kv_releases: list[tuple[int, int]] = []  # heap of (time, bytes)
        self._kv_reserved_at: dict[int, tuple[int, int]] = {}  # request -> (start, bytes)
        self._names = {name: tracer.name(name) for name in self._trace_names()}
        self._stage_detail = detail == "stage"
        self._unit_info = [(j, unit, region, (unit.kind, region.cores), self._names[unit.name])
                           for j, (unit, region) in enumerate(zip(units, self.regions))]
        # The tightest promise: no pass can leave sooner than the cheapest one crosses.
        self.transit_ps = self._profile(1, 0, False, "decode").cum_end_ps[-1]

    def _trace_names(self) -> list[str]:
        names = ["stage", "kv_cache", "weights"]
        for unit in self.units:
            names += [unit.name, f"{unit.name}.handoff"]
            names += [f"{unit.name}.{op.name}" for emits in (False, True) for op in self._unit_ops(unit, 1, 0, emits)]
        return names

    def _place(self, kv_tokens: int) -> list[Region]:
        """Each unit's region: the size with the shortest decode pass, no smaller than what
        its weights and reserved KV cache need in SRAM, no larger than its byte-proportional
        share of the wafer (so that every region fits). More cores divide the work but
        lengthen the fabric, so a small model does not spread over the whole wafer."""
        spec, chosen, regions = self.spec, {}, []
        for unit in self.units:
            kv = kv_tokens * self.shape.kv_bytes_per_token if unit.kind == "layer" else 0
            need = -(-(unit.weight_bytes + kv) // spec.sram_bytes_per_core)
            share = max(1, spec.cores * unit.weight_bytes // self.weight_bytes)
            key = (unit.kind, need, share)
            if key not in chosen:
                ops = self._unit_ops(unit, 1, 0, True)
                chosen[key] = latency_optimal_cores(
                    lambda r, ops=ops: sum(op_cost(w, r, spec).total_ps for w in ops), min(need, share), share)
            regions.append(Region(chosen[key]))
        return regions

    # -- costs -------------------------------------------------------------------------
    def _unit_ops(self, unit: Unit, n: int, ctx: int, emits: bool) -> list[OpWork]:
        if unit.kind == "layer":
            return decoder_layer_ops(self.shape, n, ctx)
        if unit.kind == "embed":
            return embedding_ops(self.shape.hidden_size, n, self.shape.bytes_per_param)
        return lm_head_ops(self.shape.hidden_size, self.vocab_size, self.shape.bytes_per_param) if emits else []

    def _unit_cost(self, unit: Unit, region: Region, shape_key: tuple[str, int], n: int, ctx: int,
                   emits: bool) -> tuple[list[tuple[OpWork, int]], int, int, int, int]:
        """(ops with their times, handoff, FLOPs, bytes, service) of a unit for a kind of pass.
        Keyed by what `_unit_ops` and the handoff read: the context only matters to a layer,
        `emits` only to the LM head. Identical regions cost the same, on any stage sharing
        this spec and model (`_shared_costs`)."""
        key = (shape_key, n, ctx if unit.kind == "layer" else -1, emits and unit.kind == "lm_head")
        cost = self._costs.get(key)
        if cost is None:
            works = self._unit_ops(unit, n, ctx, emits)
            costed = [(w, op_cost(w, region, self.spec).total_ps) for w in works]
            hand = handoff_ps(n * self._act_bytes, region, self.spec) if works else 0
            cost = self._costs[key] = (costed, hand, sum(w.flops for w, _ in costed),
                                       sum(w.sram_bytes for w, _ in costed), sum(ps for _, ps in costed) + hand)
        return cost

    def _profile(self, n: int, ctx: int, emits: bool, phase: str) -> _Profile:
        key = (n, ctx, emits, phase)
        profile = self._profiles.get(key)
        if profile is not None:
            return profile
        template, names, detail = self._tracer.template, self._names, self.detail
        service, op_ps = [], []
        spans = []  # (unit j, start and end relative to its exit, template, C_j: its exit from entry)
        total_flops = total_bytes = cum_ps = 0
        act_bytes = n * self.shape.activation_bytes_per_token
        per_shape: dict[tuple[str, int], tuple] = {}  # identical layers cost the same
        for j, unit, region, shape_key, name in self._unit_info:
            cost = per_shape.get(shape_key)
            if cost is None:
                cost = per_shape[shape_key] = self._unit_cost(unit, region, shape_key, n, ctx, emits)
            costed, hand, flops, nbytes, unit_ps = cost
            total_flops, total_bytes = total_flops + flops, total_bytes + nbytes
            service.append(unit_ps)
            cum_ps += unit_ps
            if not unit_ps or detail == "stage":
                continue
            if detail == "layer":
                spans.append((j, -unit_ps, 0, template("compute", name, unit.layer, nbytes, flops, phase), cum_ps))
                continue
            ops = [(ps, template("compute", names[f"{unit.name}.{w.name}"], unit.layer, w.sram_bytes,
                                 w.flops, phase)) for w, ps in costed]
            ops.append((hand, template("fabric", names[f"{unit.name}.handoff"], unit.layer, act_bytes,
                                       None, phase)))
            t = -unit_ps  # op spans tile the unit's service, ending at its exit
            for ps, op_template in ops:
                spans.append((j, t, t + ps, op_template, cum_ps))
                t += ps
            op_ps.append((j, tuple(ps for ps, _ in ops)))
        busy = tuple(j for j, t in enumerate(service) if t)
        # A pass that never waits leaves unit j at entry + C_j: the same spans, at offsets
        # from its entry, and its events (at span ends) fixed delays apart.
        free_ends = [c + end for _, _, end, _, c in spans]
        profile = _Profile(
            tuple(service), tuple(accumulate(service)), busy,
            None if len(busy) == len(service) else itemgetter(*busy) if len(busy) > 1 else _one(busy),
            tuple(op_ps), self._tracer.pass_shape(len(service), tuple(s[:4] for s in spans)),
            template("compute", names["stage"], None, total_bytes, total_flops, phase) if detail == "stage" else NULL,
            len(self._profiles), tuple(map(sub, free_ends, [0, *free_ends])),
            self._tracer.pass_shape(1, tuple((0, c + start, c + end, t) for _, start, end, t, c in spans)))
        self._profiles[key] = profile
        return profile

    # -- the port ----------------------------------------------------------------------
    def horizon_ps(self) -> int | None:
        """Exact time of the next send, if a pass is in flight (sends happen at exit)."""
        return self._pending_exits[0] if self._pending_exits else None

    def receive(self, p: Pass) -> None:
        now = self.env._now  # the hot path skips the property
        if p.reserve_kv_tokens:
            self._reserve_kv(p.request_id, p.reserve_kv_tokens, now)
        profile = self._profiles.get((p.n_tokens, p.ctx_tokens, p.emits, p.phase)) \
            or self._profile(p.n_tokens, p.ctx_tokens, p.emits, p.phase)
        sends = p.emits or not self.last_stage
        size = TOKEN_ID_BYTES if self.last_stage else p.n_tokens * self._act_bytes
        ends = self._tandem.admit(now, profile.service_ps, profile.cum_end_ps, profile.index)
        exit_ps = now + profile.cum_end_ps[-1] if ends is None else ends[-1]
        if self._stage_detail:
            self._rows.append((now, exit_ps, profile.stage_template, p.request_id, p.token))
            if p.final:
                self._leave(p, exit_ps)
            if sends:  # send at entry: a FIFO stage with fixed service knows the exit now
                self._send(p, exit_ps, size)
            return
        if p.final:
            self._leave(p, exit_ps)
        if sends:
            self._pending_exits.append(exit_ps)
        Process(self.env, self._walk(p, profile, ends, sends, size))

    def _walk(self, p: Pass, profile: _Profile, ends: list[int] | None, sends: bool, size: int):
        """Live through the pass's schedule, one event per unit (or per op). Its spans are
        exact from the start (its entry, or `ends` if it waits somewhere), so it traces
        them as one record when it is done."""
        env = self.env
        if ends is None:  # it never waits: its schedule is its entry plus the profile's
            entry = env._now
            for delay in profile.free_delays:
                yield Timeout(env, delay)
            self._rows.append((profile.free_shape, p.request_id, p.token, entry))
        else:
            if self.detail == "layer":
                # Delays from one busy unit's end to the next, as a C-level map: `end - env._now`
                # per event would cost a seventh of the SimPy event it schedules.
                busy = ends if profile.pick_busy is None else profile.pick_busy(ends)
                for delay in map(sub, busy, chain((env._now,), busy)):
                    yield Timeout(env, delay)
            else:
                service = profile.service_ps
                for j, durations in profile.op_ps:
                    t = ends[j] - service[j]
                    for op_ps in durations:
                        t += op_ps
                        yield Timeout(env, t - env._now)
            self._rows.append((profile.shape, p.request_id, p.token, *ends))
        if sends:
            self._pending_exits.popleft()
            self._send(p, env._now, size)

    # -- SRAM --------------------------------------------------------------------------
    def _reserve_kv(self, request_id: int, tokens: int, now: int) -> None:
        while self._kv_releases and self._kv_releases[0][0] <= now:
            self._kv_bytes_in_use -= heapq.heappop(self._kv_releases)[1]
        kv_bytes = tokens * self.kv_bytes_per_token
        in_use = self.weight_bytes + self._kv_bytes_in_use + kv_bytes
        if in_use > self.spec.sram_bytes:
            raise CapacityError(f"request {request_id}: KV cache of {kv_bytes} B would bring SRAM to "
                                f"{in_use} B, over the {self.spec.sram_bytes} B of {self.spec.name}")
        self._kv_bytes_in_use += kv_bytes
        self._kv_reserved_at[request_id] = (now, kv_bytes)

    def _leave(self, p: Pass, exit_ps: int) -> None:
        if p.request_id not in self._kv_reserved_at:
            return
        start, kv_bytes = self._kv_reserved_at.pop(p.request_id)
        heapq.heappush(self._kv_releases, (exit_ps, kv_bytes))
        template = self._tracer.template("sram", self._names["kv_cache"], None, kv_bytes, None, None)
        self._rows.append((start, exit_ps, template, p.request_id, NULL))

    def finish(self, end_ps: int) -> None:
        """Trace what the wafer held for the whole run."""
        template = self._tracer.template("sram", self._names["weights"], None, self.weight_bytes, None, None)
        self._rows.append((0, end_ps, template, NULL, NULL))
