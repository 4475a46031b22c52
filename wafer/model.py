"""The SimPy model of one wafer running one pipeline stage of a transformer.

Models: each unit (embedding, decoder layer, LM head) on its own region of cores sized
by its weight bytes; a region works on one pass at a time, so passes of successive
tokens and users pipeline through the regions; op costs from `wafer.costs`; SRAM as a
capacity holding the weights and a KV-cache reservation per request. Ignores: prefill
and decode sharing a region's cores at once, KV layout across regions, core failures.

Loss (`lost_ps`, declared before the run: a lost wafer, or a stage of a replica that a
lost device took down): every pass not out by then is dropped. The loss time is known in
advance, so a pass knows at entry whether it will leave: one that will is sent at entry
(stage detail) or kept among the pending exits as ever, and one that will not is never
sent, so the horizon (the first pending exit) stays exact and send at entry stays valid
for the passes it covers. A dropped pass still holds its regions until the loss (the
passes behind it cannot overtake it) and is traced as a `fault` span "dropped" from its
entry to the loss (zero length if it came after); unfinished requests' KV is freed then.

Co-located models (`CoTenant`, e.g. an 8B beside a 70B): the regions are the primary
model's; a co-tenant's units share them (`wafer.tenants`), so a region serves one pass
at a time whichever model it belongs to, and a pass of any model crosses the same chain
of regions, with its own model's service on each. Ignores: a co-tenant's activations
crossing regions that hold none of its units (no handoff cost there).

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
from llm.ops import LayerShape, OpWork
from llm.passes import TOKEN_ID_BYTES, Pass
from wafer.costs import Region, handoff_ps, op_cost
from wafer.spec import WaferSpec
from wafer.tandem import FifoTandem
from wafer.tenants import Tenant, place_regions, spread, unit_ops

Detail = Literal["stage", "layer", "op"]
DETAILS: tuple[str, ...] = ("stage", "layer", "op")
NEVER_PS = 1 << 62  # a loss time no run reaches: a wafer that is never lost


@dataclass(frozen=True)
class Unit:
    """One region's job: 'embed', 'layer' (with its index) or 'lm_head'."""

    kind: str
    layer: int | None
    weight_bytes: int

    @property
    def name(self) -> str:
        return f"layer{self.layer}" if self.kind == "layer" else self.kind


@dataclass(frozen=True)
class CoTenant:
    """A co-located model's stage on this wafer; its passes carry `Pass.model` = its
    index in `co_tenants` + 1. `name` (the model's) prefixes its trace names."""

    name: str
    shape: LayerShape
    vocab_size: int
    units: tuple[Unit, ...]
    last_stage: bool  # its own pipeline's last stage (maybe not the primary's)
    kv_tokens_reserved: int = 0  # KV-cache tokens each of its layers must hold


@dataclass(frozen=True, slots=True)
class _Profile:
    """One kind of pass (model, tokens, context, emits, phase) through every region: costs
    and the trace layout of its spans, computed once and cached. Only the detail in use is
    traced, so only its templates are made. Region j is the primary's unit j; the spans of
    a co-tenant's unit carry the region it shares (`Tenant.regions`, from `spread`)."""

    service_ps: tuple[int, ...]
    cum_end_ps: tuple[int, ...]
    busy_units: tuple[int, ...]  # regions with work for this pass (the LM head idles on most)
    pick_busy: Callable[[list[int]], Sequence[int]] | None  # the ends `_walk` wakes at; None: all
    op_ps: tuple[tuple[int, tuple[int, ...]], ...]  # op detail: (busy region, its op durations)
    shape: int  # layer and op detail: the pass record's layout (Tracer.pass_shape)
    stage_template: int  # stage detail: one span per pass
    index: int  # this stage's number for the kind of pass (FifoTandem's key)
    free_delays: tuple[int, ...]  # a pass that never waits: from one event to the next
    free_shape: int  # and its record's layout, relative to its entry
    core_ps: int  # core-time it computes: the sum over regions of service x cores (its energy)


def _one(busy: tuple[int, ...]) -> Callable[[list[int]], tuple[int, ...]]:
    """itemgetter's tuple for zero or one index (itemgetter(j) would return a bare int)."""
    return lambda ends: tuple(ends[j] for j in busy)


class WaferStage:
    """One wafer holding `units` in series, and the units of any `co_tenants` on the same
    regions. Feed it passes with `receive`."""

    def __init__(self, env: simpy.Environment, spec: WaferSpec, shape: LayerShape,
                 vocab_size: int, units: list[Unit], *, detail: Detail,
                 last_stage: bool, send: Callable[[Pass, int, int], None], tracer,
                 kv_tokens_reserved: int = 0, co_tenants: Sequence[CoTenant] = (),
                 lost_ps: int | None = None, lost_name: str = "") -> None:
        if detail not in DETAILS:
            raise ValueError(f"detail: must be one of {', '.join(DETAILS)}, got {detail!r}")
        self.env, self.spec, self.shape, self.vocab_size = env, spec, shape, vocab_size
        self.units, self.detail, self.last_stage = units, detail, last_stage
        self._send, self._tracer, self._rows = send, tracer, tracer.rows
        names = {c.name for c in co_tenants}
        if len(names) < len(co_tenants) or "" in names or any(not c.units for c in co_tenants):
            raise ValueError("co_tenants: each needs a distinct, non-empty name and units on this wafer")
        # Pass.model indexes this: the primary (a region per unit), then each co-tenant.
        self._tenants = [Tenant.of(spec, shape, vocab_size, units, last_stage, "", kv_tokens_reserved,
                                   tuple(range(len(units))))]
        self._tenants += [Tenant.of(spec, c.shape, c.vocab_size, c.units, c.last_stage, f"{c.name}:",
                                    c.kv_tokens_reserved, spread(len(c.units), len(units))) for c in co_tenants]
        self.weight_bytes = sum(t.weight_bytes for t in self._tenants)  # every model's
        if self.weight_bytes > spec.sram_bytes:
            raise CapacityError(f"weights of {self.weight_bytes} B exceed {spec.name} SRAM of {spec.sram_bytes} B")
        self.regions = place_regions(spec, self._tenants)
        self.n_layers = sum(1 for u in units if u.kind == "layer")
        self.kv_bytes_per_token = self._tenants[0].kv_bytes_per_token  # the primary's
        self._tandem = FifoTandem(len(units))
        self._n_profiles = 0  # over every model: FifoTandem's key for a kind of pass
        self._pending_exits: deque[tuple[int, Pass, int]] = deque()  # (exit, pass, size) of those that will send
        self._kv_bytes_in_use = 0
        self.core_ps_by_request: dict[int, int] = {}  # core-time computed for each request (energy)
        self._kv_releases: list[tuple[int, int]] = []  # heap of (time, bytes)
        self._kv_reserved_at: dict[int, tuple[int, int]] = {}  # request -> (start, bytes)
        self._names = {name: tracer.name(name) for name in self._trace_names()}
        self._stage_detail = detail == "stage"
        # Nothing leaves at or after this (NEVER_PS: never lost); `lost_name`, the fault traced.
        self._lost_ps, self._lost_name = NEVER_PS if lost_ps is None else lost_ps, lost_name
        self.dropped_passes = 0  # received and dropped by the loss: counted, never sent
        if lost_ps is not None:
            self._names.update({name: tracer.name(name) for name in ("dropped", *filter(None, (lost_name,)))})
        for t in self._tenants:
            t.place(self.regions, self._names)
        # The tightest promise: no pass of any model can leave sooner than the cheapest one crosses.
        self.transit_ps = min(self._profile(1, 0, False, "decode", m).cum_end_ps[-1]
                              for m in range(len(self._tenants)))

    def _trace_names(self) -> list[str]:
        names = ["stage", "kv_cache", "weights"]
        for t in self._tenants:
            if t.prefix:  # the primary's come first, as they always have
                names += [f"{t.prefix}stage", f"{t.prefix}weights"]
            for unit in t.units:
                name = t.prefix + unit.name
                names += [name, f"{name}.handoff"]
                names += [f"{name}.{op.name}" for emits in (False, True)
                          for op in unit_ops(unit, t.shape, t.vocab_size, 1, 0, emits)]
        return names

    # -- costs -------------------------------------------------------------------------
    def _unit_cost(self, tenant: Tenant, unit: Unit, region: Region, shape_key: tuple[str, int], n: int,
                   ctx: int, emits: bool) -> tuple[list[tuple[OpWork, int]], int, int, int, int]:
        """(ops with their times, handoff, FLOPs, bytes, service) of a unit for a kind of pass.
        Keyed by what `unit_ops` and the handoff read: the context only matters to a layer,
        `emits` only to the LM head. Identical regions cost the same, on any stage sharing
        this spec and model (`shared_costs`)."""
        key = (shape_key, n, ctx if unit.kind == "layer" else -1, emits and unit.kind == "lm_head")
        cost = tenant.costs.get(key)
        if cost is None:
            works = unit_ops(unit, tenant.shape, tenant.vocab_size, n, ctx, emits)
            costed = [(w, op_cost(w, region, self.spec).total_ps) for w in works]
            hand = handoff_ps(n * tenant.act_bytes, region, self.spec) if works else 0
            cost = tenant.costs[key] = (costed, hand, sum(w.flops for w, _ in costed),
                                        sum(w.sram_bytes for w, _ in costed), sum(ps for _, ps in costed) + hand)
        return cost

    def _profile(self, n: int, ctx: int, emits: bool, phase: str, model: int = 0) -> _Profile:
        tenant, key = self._tenants[model], (n, ctx, emits, phase)
        profile = tenant.profiles.get(key)
        if profile is not None:
            return profile
        template, names, detail, prefix = self._tracer.template, self._names, self.detail, tenant.prefix
        per_shape: dict[tuple[str, int], tuple] = {}  # identical layers cost the same
        costs = []
        for j, unit, region, shape_key, name in tenant.placed:
            cost = per_shape.get(shape_key)
            if cost is None:
                cost = per_shape[shape_key] = self._unit_cost(tenant, unit, region, shape_key, n, ctx, emits)
            costs.append((j, unit, name, cost))
        # A region's service: its units' costs (one for the primary, any number for a co-tenant).
        service = [0] * len(self.regions)
        for j, _, _, cost in costs:
            service[j] += cost[4]
        cum_end = tuple(accumulate(service))
        op_ps: list[tuple[int, tuple[int, ...]]] = []
        spans = []  # (region j, start and end relative to its exit, template, C_j: its exit from entry)
        total_flops = total_bytes = 0
        act_bytes = n * tenant.act_bytes
        done = [0] * len(service)  # service of region j's units laid out so far
        for j, unit, name, (costed, hand, flops, nbytes, unit_ps) in costs:
            total_flops, total_bytes = total_flops + flops, total_bytes + nbytes
            start = done[j] - service[j]  # a region's units tile its service, ending at its exit
            done[j] += unit_ps
            if not unit_ps or detail == "stage":
                continue
            if detail == "layer":
                spans.append((j, start, start + unit_ps,
                              template("compute", name, unit.layer, nbytes, flops, phase, j), cum_end[j]))
                continue
            ops = [(ps, template("compute", names[f"{prefix}{unit.name}.{w.name}"], unit.layer, w.sram_bytes,
                                 w.flops, phase, j)) for w, ps in costed]
            ops.append((hand, template("fabric", names[f"{prefix}{unit.name}.handoff"], unit.layer, act_bytes,
                                       None, phase, j)))
            t = start  # op spans tile the unit's service
            for ps, op_template in ops:
                spans.append((j, t, t + ps, op_template, cum_end[j]))
                t += ps
            durations = tuple(ps for ps, _ in ops)
            if op_ps and op_ps[-1][0] == j:  # `_walk` wants one run of ops per region
                durations = op_ps.pop()[1] + durations
            op_ps.append((j, durations))
        busy = tuple(j for j, t in enumerate(service) if t)
        woken = busy  # the regions whose end `_walk` wakes at when the pass waits somewhere
        last = len(service) - 1
        if not service[last] and (emits or not tenant.last_stage):
            # It sends at its exit, which the pass ahead can hold back past its last work (a
            # co-tenant with no unit on the last regions): wake there too, for nothing to do.
            woken += (last,)
            op_ps.append((last, (0,)))
        # A pass that never waits leaves region j at entry + C_j: the same spans, at offsets
        # from its entry, and its events (at span ends) fixed delays apart.
        free_ends = [c + end for _, _, end, _, c in spans]
        profile = _Profile(
            tuple(service), cum_end, busy,
            None if len(woken) == len(service) else itemgetter(*woken) if len(woken) > 1 else _one(woken),
            tuple(op_ps), self._tracer.pass_shape(len(service), tuple(s[:4] for s in spans)),
            template("compute", names[f"{prefix}stage"], None, total_bytes, total_flops, phase)
            if detail == "stage" else NULL,
            self._n_profiles, tuple(map(sub, free_ends, [0, *free_ends])),
            self._tracer.pass_shape(1, tuple((0, c + start, c + end, t) for _, start, end, t, c in spans)),
            sum(s * r.cores for s, r in zip(service, self.regions)))
        self._n_profiles += 1
        tenant.profiles[key] = profile
        return profile

    # -- the port ----------------------------------------------------------------------
    def horizon_ps(self) -> int | None:
        """Exact time of the next send, if a pass is in flight (sends happen at exit)."""
        return self._pending_exits[0][0] if self._pending_exits else None

    def receive(self, p: Pass) -> None:
        now = self.env._now  # the hot path skips the property
        if now >= self._lost_ps:
            self._drop(p, now, now)
            return
        tenant = self._tenants[p.model]  # the pass's model: its costs, last stage and sizes
        profile = tenant.profiles.get((p.n_tokens, p.ctx_tokens, p.emits, p.phase)) \
            or self._profile(p.n_tokens, p.ctx_tokens, p.emits, p.phase, p.model)
        last = tenant.last_stage
        sends = p.emits or not last
        size = TOKEN_ID_BYTES if last else p.n_tokens * tenant.act_bytes
        ends = self._tandem.admit(now, profile.service_ps, profile.cum_end_ps, profile.index)
        exit_ps = now + profile.cum_end_ps[-1] if ends is None else ends[-1]
        if exit_ps >= self._lost_ps:  # FIFO exits never decrease: every later pass drops too
            self._drop(p, now, self._lost_ps)
            return
        if p.reserve_kv_tokens:
            self._reserve_kv(p.request_id, p.reserve_kv_tokens * tenant.kv_bytes_per_token, now)
        core_ps = self.core_ps_by_request
        core_ps[p.request_id] = core_ps.get(p.request_id, 0) + profile.core_ps
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
            self._pending_exits.append((exit_ps, p, size))
        Process(self.env, self._walk(p, profile, ends, sends))

    def _walk(self, p: Pass, profile: _Profile, ends: list[int] | None, sends: bool):
        """Live through the pass's schedule, one event per region it works on (or per op).
        Its spans are exact from the start (its entry, or `ends` if it waits somewhere), so
        it traces them as one record when it is done."""
        env = self.env
        if ends is None:  # it never waits: its schedule is its entry plus the profile's
            entry = env._now
            for delay in profile.free_delays:
                yield Timeout(env, delay)
            self._rows.append((profile.free_shape, p.request_id, p.token, entry))
        else:
            if self.detail == "layer":
                # Delays from one woken region's end to the next, as a C-level map: `end -
                # env._now` per event would cost a seventh of the SimPy event it schedules.
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
            # Send every pass due, in the order they entered: a pass with no work on the last
            # regions (a co-tenant's) leaves the instant the pass ahead does, and its event
            # may come first.
            pending, now = self._pending_exits, env._now
            while pending and pending[0][0] <= now:
                _, q, size = pending.popleft()
                self._send(q, now, size)

    def _drop(self, p: Pass, entry_ps: int, until_ps: int) -> None:
        """A pass the loss takes: counted, traced from its entry to the loss, never sent."""
        self.dropped_passes += 1
        self._rows.append((entry_ps, until_ps, self._tracer.template("fault", self._names["dropped"]),
                           p.request_id, p.token))

    # -- SRAM --------------------------------------------------------------------------
    def _reserve_kv(self, request_id: int, kv_bytes: int, now: int) -> None:
        while self._kv_releases and self._kv_releases[0][0] <= now:
            self._kv_bytes_in_use -= heapq.heappop(self._kv_releases)[1]
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
        """Trace what the wafer held for the whole run (each model's weights, until a loss),
        free the KV cache of requests the loss cut short, and trace the loss."""
        held_until = min(end_ps, self._lost_ps) if self._lost_name else end_ps  # a lost device's are gone
        for t in self._tenants:
            template = self._tracer.template("sram", self._names[f"{t.prefix}weights"], None, t.weight_bytes,
                                             None, None)
            self._rows.append((0, held_until, template, NULL, NULL))
        if self._lost_ps == NEVER_PS:
            return
        for request_id, (start, kv_bytes) in sorted(self._kv_reserved_at.items()):
            template = self._tracer.template("sram", self._names["kv_cache"], None, kv_bytes, None, None)
            self._rows.append((start, self._lost_ps, template, request_id, NULL))
        self._kv_reserved_at.clear()
        if self._lost_name and self._lost_ps <= end_ps:
            template = self._tracer.template("fault", self._names[self._lost_name])
            self._rows.append((self._lost_ps, end_ps, template, NULL, NULL))
