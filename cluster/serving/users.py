"""A population of users at a site: sends requests to its router and takes the tokens
back, recording what each request saw (the requests and tokens tables).

Open loop (Poisson, gamma, a replayed file): every request's send time is known before the
run. Closed loop: `users` users each send a request, wait for its last token, think for
an exponential time of mean `think_time_ps` (drawn from the population's own seeded
stream, in the order completions happen, which is deterministic) and send the next, until
`requests` have been sent. Times are the user's: the WAN to the router is in them.

A request whose replica is lost comes back as a `Retry` (the router sent it elsewhere): the
tokens it had are lost, the next ones count again from the first (its first token and
replica are the new attempt's), and the tokens table keeps only the last attempt's
tokens. One that no replica can take any more ends as `Lost`: status "failed".
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import pyarrow as pa
import simpy

from cluster.engine.messages import Message
from cluster.results.trace import TOKEN_SCHEMA, Tracer, table_batch
from cluster.serving.frontend import Lost, Reject, RequestOutcome, Retry, Token, requests_table
from cluster.serving.router import REQUEST_BYTES_PER_TOKEN
from cluster.serving.workload import Request, rng_for
from common.units import NULL


@dataclass(frozen=True)
class ClosedLoop:
    users: int
    think_time_ps: int  # mean, exponential
    requests: int  # sent in all
    first_id: int
    prompt_tokens: int
    output_tokens: int
    first_session: int  # user k is session first_session + k


@dataclass(frozen=True)
class UsersConfig:
    name: str  # the population's, names its random stream
    site: str
    model: str
    requests: tuple[Request, ...] = ()  # open loop, by arrival
    closed: ClosedLoop | None = None
    replica_sites: tuple[tuple[str, str], ...] = ()  # replica -> its site, for the requests table
    seed: int = 0

    def build(self, env: simpy.Environment, send, tracer: Tracer) -> Users:
        return Users(env, self, send, tracer)


class Users:
    transit_ps = 0  # a closed-loop user may send again at once (no think time)

    def __init__(self, env: simpy.Environment, config: UsersConfig, send, tracer: Tracer) -> None:
        self.env, self.config, self._send, self._rows = env, config, send, tracer.rows
        self._request_template = tracer.template("request", tracer.name("request"))
        self._site_of = dict(config.replica_sites)
        self._open = list(config.requests)
        self._next_open = 0
        # id -> [request, admitted, first, finish, tokens, reason, replica, queue, failed, attempts, tokens lost]
        self._outcomes: dict[int, list] = {}
        self._token_rows: list[tuple[int, int, int]] = []
        self._wakeups: list[tuple[int, int]] = []  # closed loop: (send time, user), a heap
        self._sent = 0
        self._problems: list[str] = []
        closed = config.closed
        if closed is not None:
            self._rng = rng_for(config.seed, f"think:{config.name}")
            self._user_of: dict[int, int] = {}
            for user in range(min(closed.users, closed.requests)):
                self._wake(user, 0)
        if self._open:
            env.process(self._arrive())

    def horizon_ps(self) -> int | None:
        times = [t for t, _ in self._wakeups[:1]]
        if self._next_open < len(self._open):
            times.append(self._open[self._next_open].arrival_ps)
        return min(times) if times else None

    def _arrive(self):
        env = self.env
        while self._next_open < len(self._open):
            req = self._open[self._next_open]
            if req.arrival_ps > env.now:
                yield env.timeout(req.arrival_ps - env.now)
            self._next_open += 1
            self._issue(req)

    def _issue(self, req: Request) -> None:
        self._outcomes[req.request_id] = [req, None, None, None, 0, None, None, None, False, 1, 0]
        self._sent += 1
        self._send(req, self.env.now, req.prompt_tokens * REQUEST_BYTES_PER_TOKEN)

    # -- closed loop -------------------------------------------------------------------
    def _wake(self, user: int, delay_ps: int) -> None:
        at = self.env.now + delay_ps
        heapq.heappush(self._wakeups, (at, user))
        self.env.timeout(delay_ps).callbacks.append(lambda _event: self._send_next())

    def _send_next(self) -> None:
        _, user = heapq.heappop(self._wakeups)
        c = self.config.closed
        rid = c.first_id + self._sent
        self._user_of[rid] = user
        self._issue(Request(rid, self.env.now, c.prompt_tokens, c.output_tokens, self.config.model,
                            self.config.site, c.first_session + user))

    def _done(self, request_id: int) -> None:
        outcome = self._outcomes[request_id]
        outcome[3] = self.env.now
        self._rows.append((outcome[0].arrival_ps, self.env.now, self._request_template, request_id, NULL))
        c = self.config.closed
        if c is not None and self._sent + len(self._wakeups) < c.requests:
            think = int(self._rng.exponential(c.think_time_ps)) if c.think_time_ps else 0
            self._wake(self._user_of.pop(request_id), think)

    # -- what comes back ---------------------------------------------------------------
    def on_message(self, msg: Message) -> None:
        payload = msg.payload
        if isinstance(payload, (Reject, Lost)):
            outcome = self._outcomes[payload.request_id]
            outcome[5], outcome[8] = payload.reason, isinstance(payload, Lost)
            self._done(payload.request_id)
            return
        if isinstance(payload, Retry):  # what it streamed is lost: it starts again elsewhere
            outcome = self._outcomes[payload.request_id]
            outcome[10] += outcome[4]
            outcome[1] = outcome[2] = outcome[6] = outcome[7] = None
            outcome[4], outcome[9] = 0, outcome[9] + 1
            return
        token: Token = payload
        outcome = self._outcomes[token.request_id]
        now = self.env.now
        if token.token == 0:
            outcome[1], outcome[2], outcome[6], outcome[7] = token.admitted_ps, now, token.replica, token.queue_ps
        if token.token != outcome[4]:
            self._problems.append(f"request {token.request_id}: token {token.token} came after {outcome[4]} tokens")
        outcome[4] += 1
        self._token_rows.append((token.request_id, token.token, now))
        if token.final:
            self._done(token.request_id)

    def finish(self, end_ps: int) -> None:
        pass

    def expected_requests(self) -> int:
        return len(self._open) if self.config.closed is None else self.config.closed.requests

    def conservation(self) -> list[str]:
        """Every request sent and answered; a completed one with its tokens, each once, in order."""
        problems = list(self._problems)
        answered = sum(1 for o in self._outcomes.values() if o[3] is not None)
        if answered != self.expected_requests():
            problems.append(f"{self.expected_requests() - answered} of {self.expected_requests()} requests "
                            f"never answered")
        short = [o for o in self._outcomes.values() if o[5] is None and o[3] is not None and o[4] != o[0].output_tokens]
        if short:
            problems.append(f"request {short[0][0].request_id} completed with {short[0][4]} of "
                            f"{short[0][0].output_tokens} tokens")
        return problems

    def requests_batch(self) -> pa.RecordBatch | None:
        if not self._outcomes:
            return None
        return requests_table([
            RequestOutcome(req, req.arrival_ps, admitted, first, finish, tokens, reason, replica,
                           self._site_of.get(replica) if replica else None, queue, failed, attempts, lost)
            for req, admitted, first, finish, tokens, reason, replica, queue, failed, attempts, lost
            in self._outcomes.values()])

    def tokens_batch(self) -> pa.RecordBatch | None:
        if not self._outcomes:
            return None
        rows = self._token_rows
        lost = {rid: o[10] for rid, o in self._outcomes.items() if o[10]}
        if lost:  # a request's first `lost` rows are its cut attempts' (rows are in time order)
            kept = []
            for row in rows:
                if lost.get(row[0]):
                    lost[row[0]] -= 1
                else:
                    kept.append(row)
            rows = kept
        return table_batch(TOKEN_SCHEMA, [list(c) for c in zip(*rows)] if rows else [[], [], []])
