"""The request frontend: admits requests, feeds prefill chunks and decode steps to the
first stage, and records each request's tokens as they come back.

Models: at most `max_active` requests hold a KV-cache reservation at once (the rest
wait, FIFO); a prompt enters as chunks of `prefill_chunk_tokens`; each sampled token
loops back and starts the next decode step. Ignores: tokenization, network to the user.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import simpy

from cluster.engine.messages import Message
from cluster.results.trace import REQUEST_SCHEMA, Tracer, int_array
from cluster.serving.workload import Request
from common.units import NULL
from llm.passes import Pass

PROMPT_TOKEN_BYTES = 4  # token ids enter as int32


@dataclass(frozen=True)
class FrontendConfig:
    requests: tuple[Request, ...]
    max_active: int
    prefill_chunk_tokens: int

    def build(self, env: simpy.Environment, send, rows: list[tuple]) -> Frontend:
        return Frontend(env, self, send, rows)


class Frontend:
    transit_ps = 0  # a returning token starts the next step at once

    def __init__(self, env: simpy.Environment, config: FrontendConfig, send, tracer: Tracer) -> None:
        self.env, self.config, self._send, self._rows = env, config, send, tracer.rows
        self._queue_template = tracer.template("queue", tracer.name("admission"))
        self._request_template = tracer.template("request", tracer.name("request"))
        self._arrivals = deque(config.requests)
        self._waiting: deque[Request] = deque()
        self._active = 0
        self._record: dict[int, list[int]] = {}  # id -> [arrival, admitted, first, finish]
        if self._arrivals:
            env.process(self._arrive())

    def horizon_ps(self) -> int | None:
        return self._arrivals[0].arrival_ps if self._arrivals else None

    def _arrive(self):
        while self._arrivals:
            req = self._arrivals[0]
            if req.arrival_ps > self.env.now:
                yield self.env.timeout(req.arrival_ps - self.env.now)
            self._arrivals.popleft()
            self._record[req.request_id] = [req.arrival_ps, -1, -1, -1]
            self._waiting.append(req)
            self._admit()

    def _admit(self) -> None:
        while self._waiting and self._active < self.config.max_active:
            req = self._waiting.popleft()
            self._active += 1
            now = self.env.now
            self._record[req.request_id][1] = now
            if now > req.arrival_ps:
                self._rows.append((req.arrival_ps, now, self._queue_template, req.request_id, NULL))
            chunk, done = self.config.prefill_chunk_tokens, 0
            while done < req.prompt_tokens:
                n = min(chunk, req.prompt_tokens - done)
                last = done + n == req.prompt_tokens
                p = Pass(req.request_id, 0, "prefill", n, done, last,
                         req.prompt_tokens + req.output_tokens if done == 0 else 0,
                         last and req.output_tokens == 1)
                self._send(p, now, n * PROMPT_TOKEN_BYTES)
                done += n

    def on_message(self, msg: Message) -> None:
        p: Pass = msg.payload
        now = self.env.now
        req = self.config.requests[p.request_id]
        record = self._record[p.request_id]
        if p.token == 0:
            record[2] = now
        if p.token + 1 < req.output_tokens:
            k = p.token + 1
            self._send(Pass(req.request_id, k, "decode", 1, req.prompt_tokens + k - 1, True, 0,
                            k == req.output_tokens - 1), now, PROMPT_TOKEN_BYTES)
            return
        record[3] = now
        self._rows.append((record[0], now, self._request_template, req.request_id, NULL))
        self._active -= 1
        self._admit()

    def finish(self, end_ps: int) -> None:
        pass

    def requests_batch(self) -> pa.RecordBatch:
        ids = sorted(rid for rid, r in self._record.items() if r[3] >= 0)
        reqs = [self.config.requests[i] for i in ids]
        rec = [self._record[i] for i in ids]
        ttft = [r[2] - r[0] for r in rec]
        tpot = [(r[3] - r[2]) // (q.output_tokens - 1) if q.output_tokens > 1 else None
                for r, q in zip(rec, reqs)]
        cols = [ids, [r[0] for r in rec], [r[1] for r in rec], [r[2] for r in rec],
                [r[3] for r in rec], [q.prompt_tokens for q in reqs], [q.output_tokens for q in reqs],
                ttft, [NULL if t is None else t for t in tpot]]
        return pa.record_batch([int_array(np.array(c, np.int64), f.type, f.name == "tpot_ps")
                                for c, f in zip(cols, REQUEST_SCHEMA)], schema=REQUEST_SCHEMA)
