"""A replica's frontend: admits requests, feeds prefill chunks and decode steps to the
first stage, and loops each sampled token back into the next decode step.

Models: admission by bytes: a request is taken when its KV cache (prompt plus output
tokens) fits in what every stage's SRAM has free beside the weights and the KV of the
requests already in (and, with `max_active`, while fewer than that many are in); the rest
wait, first come first served. A prompt enters as chunks of `prefill_chunk_tokens`; a
replica may serve several models co-located on its wafers (`Pass.model`).
Ignores: tokenization, preemption, prefix caching.

A lost replica (`lost_ps`: a device of it lost, a fault declared before the run): the
frontend stands for the serving host that watches its devices, so it knows the loss the
instant it happens. At `lost_ps` it fails every request in service or waiting (a router is
told with `Lost`, and retries elsewhere; its own requests end "failed" with the reason),
fails every later one on arrival, and drops the tokens still coming back (traced as
`fault` "dropped"). The timer that wakes it at the loss is armed only while it has
requests, so a loss after its last request changes nothing, not even the run's end.

Two ways to be fed: with `requests` of its own (a cluster with no router: the users sit
beside the replica, and this LP records the requests and tokens tables), or by routers,
which send `RouteRequest`s and get every token back on this LP's port "reply:ROUTER" (the
users' LP records the tables then).
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

import pyarrow as pa
import simpy

from cluster.engine.messages import Message
from cluster.results.trace import REQUEST_SCHEMA, TOKEN_SCHEMA, Tracer, table_batch
from cluster.serving.workload import Request
from common.units import NULL
from llm.passes import TOKEN_ID_BYTES, Pass

PROMPT_TOKEN_BYTES = 4  # token ids enter as int32


class RouteRequest(NamedTuple):
    """A request on its way to a replica: `waited_ps` so far at its router."""

    request: Request
    waited_ps: int


class Token(NamedTuple):
    """An output token on its way back to its user; the first carries admission facts."""

    request_id: int
    token: int
    final: bool
    admitted_ps: int
    queue_ps: int  # waiting for admission, router and replica together
    replica: str


class Reject(NamedTuple):
    request_id: int
    reason: str


class Lost(NamedTuple):
    """A request its replica lost (a device failed): to the router, which retries it; from
    a router with no replica left for it, to the users, where it ends "failed"."""

    request_id: int
    reason: str


class Retry(NamedTuple):
    """To the users: their request's replica was lost and the router sent it to another;
    the tokens already streamed are lost and come again from the first."""

    request_id: int


@dataclass(frozen=True)
class KvBudget:
    """What admission by bytes needs: per model, the KV bytes a token takes on each stage;
    per stage, the SRAM bytes free for KV cache."""

    bytes_per_token: tuple[tuple[int, ...], ...]
    capacity_bytes: tuple[int, ...]

    def need(self, model: int, tokens: int) -> tuple[int, ...]:
        return tuple(b * tokens for b in self.bytes_per_token[model])

    def max_tokens(self, model: int) -> int:
        """The longest context one request of `model` can ever hold here."""
        return min((c // b for c, b in zip(self.capacity_bytes, self.bytes_per_token[model]) if b),
                   default=1 << 62)


@dataclass(frozen=True)
class FrontendConfig:
    requests: tuple[Request, ...]
    max_active: int  # 0: no cap but the bytes
    prefill_chunk_tokens: int
    kv: KvBudget | None = None  # None: admission by `max_active` alone
    models: tuple[str, ...] = ("",)  # what `Request.model` names, in `Pass.model` order
    replica: str = "frontend"
    site: str = ""
    lost_ps: int | None = None  # the replica is lost then (a device of it); None: never
    lost_reason: str = ""  # what failed requests say

    def build(self, env: simpy.Environment, send, tracer: Tracer, ports=None) -> Frontend:
        return Frontend(env, self, send, tracer, ports)


class Frontend:
    transit_ps = 0  # a returning token starts the next step at once

    def __init__(self, env: simpy.Environment, config: FrontendConfig, send, tracer: Tracer, ports=None) -> None:
        self.env, self.config, self._send, self._rows = env, config, send, tracer.rows
        self._ports = ports or {}
        self._queue_template = tracer.template("queue", tracer.name("admission"))
        self._request_template = tracer.template("request", tracer.name("request"))
        self._arrivals = deque(config.requests)
        self._waiting: deque[tuple[Request, int, int, object]] = deque()  # (request, arrived, waited, reply)
        self._active: dict[int, tuple[Request, int, int, object]] = {}  # id -> (request, admitted, queue, reply)
        self._kv_in_use = [0] * len(config.kv.capacity_bytes) if config.kv else []
        self._model_index = {m: i for i, m in enumerate(config.models)}
        # own requests: id -> [arrival, admitted, first, finish, tokens, reason, failed]
        self._record: dict[int, list] = {}
        self._token_rows: list[tuple[int, int, int]] = []
        self._loss_timer: simpy.Timeout | None = None  # armed while requests are in: wakes us at the loss
        if config.lost_ps is not None:
            self._dropped_template = tracer.template("fault", tracer.name("dropped"))
        if self._arrivals:
            env.process(self._arrive())

    def horizon_ps(self) -> int | None:
        arrival = self._arrivals[0].arrival_ps if self._arrivals else None
        if self._loss_timer is None:
            return arrival
        return self.config.lost_ps if arrival is None else min(arrival, self.config.lost_ps)

    def _arrive(self):
        while self._arrivals:
            req = self._arrivals[0]
            if req.arrival_ps > self.env.now:
                yield self.env.timeout(req.arrival_ps - self.env.now)
            self._arrivals.popleft()
            self._record[req.request_id] = [req.arrival_ps, None, None, None, 0, None, False]
            self._take(req, 0, None)

    def on_message(self, msg: Message) -> None:
        payload = msg.payload
        if isinstance(payload, RouteRequest):
            self._take(payload.request, payload.waited_ps, self._ports[f"reply:{msg.src}"])
        else:
            self._on_token(payload)

    # -- admission ---------------------------------------------------------------------
    def _never_fits(self, req: Request) -> str | None:
        model = self._model_index.get(req.model, 0 if req.model == "" else None)
        if model is None:
            return f"replica {self.config.replica} does not serve model {req.model}"
        kv = self.config.kv
        tokens = req.prompt_tokens + req.output_tokens
        if kv is not None and tokens > kv.max_tokens(model):
            return f"context of {tokens} tokens exceeds the {kv.max_tokens(model)} the KV cache can hold"
        return None

    def _take(self, req: Request, waited_ps: int, reply) -> None:
        """`reply`: the port back to the router that sent it (None: one of our own)."""
        if self._is_lost():
            self._fail(req.request_id, reply)
            return
        reason = self._never_fits(req)
        if reason is not None:
            self._finish_request(req.request_id, reason)
            if reply is not None:
                reply(Reject(req.request_id, reason), self.env.now, TOKEN_ID_BYTES)
            return
        self._waiting.append((req, self.env.now, waited_ps, reply))
        self._admit()
        if self.config.lost_ps is not None and self._loss_timer is None:
            self._arm()

    def _fits(self, model: int, tokens: int) -> bool:
        if self.config.max_active and len(self._active) >= self.config.max_active:
            return False
        kv = self.config.kv
        if kv is None:
            return True
        return all(u + n <= c for u, n, c in zip(self._kv_in_use, kv.need(model, tokens), kv.capacity_bytes))

    def _admit(self) -> None:
        """First come, first served: the head of the line waits for room; nobody overtakes."""
        while self._waiting:
            req, arrived, waited, reply = self._waiting[0]
            model = self._model_index.get(req.model, 0)
            tokens = req.prompt_tokens + req.output_tokens
            if not self._fits(model, tokens):
                return
            self._waiting.popleft()
            now = self.env.now
            if self.config.kv is not None:
                self._kv_in_use = [u + n for u, n in zip(self._kv_in_use, self.config.kv.need(model, tokens))]
            self._active[req.request_id] = (req, now, waited + now - arrived, reply)
            if req.request_id in self._record:
                self._record[req.request_id][1] = now
            if now > arrived:
                self._rows.append((arrived, now, self._queue_template, req.request_id, NULL))
            chunk, done = self.config.prefill_chunk_tokens, 0
            while done < req.prompt_tokens:
                n = min(chunk, req.prompt_tokens - done)
                last = done + n == req.prompt_tokens
                self._send(Pass(req.request_id, 0, "prefill", n, done, last,
                                tokens if done == 0 else 0, last and req.output_tokens == 1, model),
                           now, n * PROMPT_TOKEN_BYTES)
                done += n

    # -- tokens ------------------------------------------------------------------------
    def _on_token(self, p: Pass) -> None:
        now = self.env.now
        entry = self._active.get(p.request_id)
        if entry is None:  # its request failed with the replica: received, and dropped
            self._rows.append((now, now, self._dropped_template, p.request_id, p.token))
            return
        req, admitted, queue_ps, reply = entry
        k = p.token + 1
        final = k == req.output_tokens
        if reply is not None:
            reply(Token(req.request_id, p.token, final, admitted, queue_ps, self.config.replica),
                        now, TOKEN_ID_BYTES)
        else:
            record = self._record[req.request_id]
            if p.token == 0:
                record[2] = now
            record[4] = k
            self._token_rows.append((req.request_id, p.token, now))
        if not final:
            self._send(Pass(req.request_id, k, "decode", 1, req.prompt_tokens + k - 1, True, 0,
                            k == req.output_tokens - 1, p.model), now, PROMPT_TOKEN_BYTES)
            return
        del self._active[req.request_id]
        if self.config.kv is not None:
            need = self.config.kv.need(p.model, req.prompt_tokens + req.output_tokens)
            self._kv_in_use = [u - n for u, n in zip(self._kv_in_use, need)]
        if req.request_id in self._record:
            self._finish_request(req.request_id, None)
        self._admit()
        if self._loss_timer is not None and not self._active and not self._waiting:
            self._disarm()

    def _finish_request(self, request_id: int, reason: str | None, failed: bool = False) -> None:
        record = self._record.get(request_id)
        if record is None:
            return
        record[3], record[5], record[6] = self.env.now, reason, failed
        self._rows.append((record[0], self.env.now, self._request_template, request_id, NULL))

    # -- loss --------------------------------------------------------------------------
    def _is_lost(self) -> bool:
        return self.config.lost_ps is not None and self.env.now >= self.config.lost_ps

    def _arm(self) -> None:
        """Wake at the loss, if it is still to come: requests are in and would be cut."""
        if self.env.now < self.config.lost_ps:
            self._loss_timer = self.env.timeout(self.config.lost_ps - self.env.now)
            self._loss_timer.callbacks.append(self._on_loss)

    def _disarm(self) -> None:
        """Nothing left to cut: take the wake-up back out of the queue (SimPy has no cancel),
        so that a loss after the last request leaves the run as it was, its end included."""
        queue, timer = self.env._queue, self._loss_timer
        self._loss_timer = None
        for i, entry in enumerate(queue):
            if entry[3] is timer:
                queue[i] = queue[-1]
                queue.pop()
                heapq.heapify(queue)
                return

    def _on_loss(self, _event: simpy.Event) -> None:
        """The replica is lost: fail what is in service, then what waits, in that order."""
        self._loss_timer = None
        for req, *_, reply in [*self._active.values(), *self._waiting]:
            self._fail(req.request_id, reply)
        self._active.clear()
        self._waiting.clear()
        self._kv_in_use = [0] * len(self._kv_in_use)

    def _fail(self, request_id: int, reply) -> None:
        if reply is not None:
            reply(Lost(request_id, self.config.lost_reason), self.env.now, TOKEN_ID_BYTES)
        else:
            self._finish_request(request_id, self.config.lost_reason, failed=True)

    # -- results -----------------------------------------------------------------------
    def finish(self, end_ps: int) -> None:
        pass

    def conservation(self) -> list[str]:
        """Every request taken was answered, a completed one with exactly its tokens."""
        problems = []
        if self._active or self._waiting:
            problems.append(f"{len(self._active)} requests in service and {len(self._waiting)} waiting at the end")
        unanswered = sum(1 for r in self._record.values() if r[3] is None)
        if unanswered or len(self._record) != len(self.config.requests):
            problems.append(f"{unanswered + len(self.config.requests) - len(self._record)} of its "
                            f"{len(self.config.requests)} requests never answered")
        by_id = {r.request_id: r for r in self.config.requests}
        short = [rid for rid, r in self._record.items() if r[5] is None and r[4] != by_id[rid].output_tokens]
        if short:
            problems.append(f"request {short[0]} completed with {self._record[short[0]][4]} of "
                            f"{by_id[short[0]].output_tokens} tokens")
        return problems

    def requests_batch(self) -> pa.RecordBatch | None:
        if not self._record:
            return None
        by_id = {r.request_id: r for r in self.config.requests}
        return requests_table([
            RequestOutcome(by_id[rid], arrival, admitted, first, finish, tokens, reason,
                           self.config.replica if reason is None or failed else None,
                           self.config.site if reason is None or failed else None,
                           None if admitted is None else admitted - arrival, failed)
            for rid, (arrival, admitted, first, finish, tokens, reason, failed) in self._record.items()])

    def tokens_batch(self) -> pa.RecordBatch | None:
        if not self._record:
            return None
        return table_batch(TOKEN_SCHEMA, [list(c) for c in zip(*self._token_rows)] if self._token_rows
                           else [[], [], []])


class RequestOutcome(NamedTuple):
    """What happened to one request, as its user saw it (None: never happened)."""

    request: Request
    arrival_ps: int
    admitted_ps: int | None
    first_token_ps: int | None
    finish_ps: int | None
    tokens: int
    reason: str | None  # None: completed
    replica: str | None
    replica_site: str | None
    queue_ps: int | None
    failed: bool = False  # its replica was lost (and no other took it): status "failed"
    attempts: int = 1  # replicas it was sent to: 1 + the retries after a loss
    tokens_lost: int = 0  # tokens streamed by the attempts a loss cut short, streamed again


def requests_table(outcomes: list[RequestOutcome]) -> pa.RecordBatch:
    """The requests table's rows (REQUEST_SCHEMA) from outcomes, in request id order."""
    rows = []
    for o in sorted(outcomes, key=lambda o: o.request.request_id):
        q = o.request
        done = o.reason is None and o.finish_ps is not None and o.first_token_ps is not None
        tpot = (o.finish_ps - o.first_token_ps) // (q.output_tokens - 1) if done and q.output_tokens > 1 else None
        rows.append((q.request_id, o.arrival_ps, o.admitted_ps, o.first_token_ps, o.finish_ps, q.prompt_tokens,
                     q.output_tokens, o.first_token_ps - o.arrival_ps if done else None, tpot,
                     q.model or None, q.user_site or None, o.replica, o.replica_site,
                     None if q.session < 0 else q.session, o.queue_ps,
                     o.finish_ps - o.arrival_ps if done else None, o.tokens,
                     "completed" if o.reason is None else "failed" if o.failed else "rejected", o.reason, None,
                     o.attempts, o.tokens_lost))
    columns = [list(c) for c in zip(*rows)] if rows else [[] for _ in REQUEST_SCHEMA]
    return table_batch(REQUEST_SCHEMA, columns)
