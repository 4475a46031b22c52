"""A router: takes requests from users, picks a replica for each, and relays the tokens
back to the users who asked.

Models: admission by bytes as the router sees it. It reserves a request's KV cache on the
replica it sends it to and frees it when the last token comes back, so its view is never
less full than the replica's; a request that fits nowhere waits at the router (first come
first served per model) and one that can never fit anywhere is rejected with its reason.
Policies order the replicas serving the request's model; the first that fits gets it:
- round-robin: the replica after the last one chosen for that model;
- least-outstanding: fewest requests sent and not finished;
- nearest-site: lowest latency from the router, then fewest outstanding;
- most-free-kv: most KV-cache bytes free;
- session-affinity: a session's first request goes to the least outstanding replica that
  fits and every later one of that model waits for that replica (unless it could never fit
  there: then it goes where it fits, as a first request would).
Ties are broken by replica order (the cluster description's), never by chance.
A replica that loses a request (`Lost`: a device of it failed) is lost to the router from
then on: it routes nothing more there, tells the users their request starts again
(`Retry`: the tokens they had are lost) and puts it back in line, by its first arrival,
for the replicas left; with none left for its model, it and every later one fail
(`Lost` to the users). The router learns of a loss only from such a message.
Ignores: health checks, load reports from replicas (the router counts itself).
Several routers over one replica each count only what they sent: together they may send
it more than it has room for, and the excess waits at the replica, not at a router.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import simpy

from cluster.engine.messages import Message
from cluster.results.trace import Tracer
from cluster.serving.frontend import KvBudget, Lost, Reject, Retry, RouteRequest, Token
from cluster.serving.workload import Request
from common.errors import ConfigError
from common.units import NULL
from llm.passes import TOKEN_ID_BYTES

REQUEST_BYTES_PER_TOKEN = 4  # a prompt travels as int32 token ids


@dataclass(frozen=True)
class ReplicaInfo:
    """What a router knows of a replica: its port, site, models and KV budget."""

    name: str
    site: str
    models: tuple[str, ...]
    kv: KvBudget
    latency_ps: int  # from this router


@dataclass(frozen=True)
class RouterConfig:
    name: str
    policy: str
    replicas: tuple[ReplicaInfo, ...]

    def build(self, env: simpy.Environment, send, tracer: Tracer, ports=None) -> Router:
        return Router(env, self, tracer, ports or {})


def replica_port(replica: str) -> str:
    return f"replica:{replica}"


def users_port(users_lp: str) -> str:
    return f"users:{users_lp}"


class Router:
    transit_ps = 0  # a request is forwarded, a token relayed, the instant it arrives

    def __init__(self, env: simpy.Environment, config: RouterConfig, tracer: Tracer, ports: dict) -> None:
        self.env, self.config, self._ports = env, config, ports
        self._rows = tracer.rows
        self._queue_template = tracer.template("queue", tracer.name("routing"))
        reps = config.replicas
        self._by_model: dict[str, list[int]] = {}
        for i, r in enumerate(reps):
            for m in r.models:
                self._by_model.setdefault(m, []).append(i)
        self._kv_in_use = [[0] * len(r.kv.capacity_bytes) for r in reps]
        self._outstanding = [0] * len(reps)
        self._cursor: dict[str, int] = {}  # round-robin, per model
        self._affinity: dict[tuple[str, int], int] = {}  # (model, session) -> replica
        # per model, first come first served: (request, users port, arrived)
        self._waiting: dict[str, deque[tuple[Request, str, int]]] = {m: deque() for m in sorted(self._by_model)}
        # id -> (users port, replica, model, tokens, request, arrived)
        self._routes: dict[int, tuple[str, int, int, int, Request, int]] = {}
        self._lost: list[str] = [""] * len(reps)  # per replica: why it is lost ("": it is not)
        order = {"round-robin": self._round_robin, "least-outstanding": self._least_outstanding,
                 "nearest-site": self._nearest, "most-free-kv": self._most_free,
                 "session-affinity": self._affine}
        if config.policy not in order:
            raise ConfigError(f"router {config.name}: policy: unknown {config.policy!r}")
        self._order = order[config.policy]

    def horizon_ps(self) -> int | None:
        return None  # it only ever sends because something arrived

    def on_message(self, msg: Message) -> None:
        payload = msg.payload
        if isinstance(payload, Request):
            self._on_request(payload, users_port(msg.src))
        elif isinstance(payload, Token):
            self._on_token(payload)
        elif isinstance(payload, Lost):
            self._on_lost(payload)
        else:
            self._on_reject(payload)

    # -- requests ----------------------------------------------------------------------
    def _on_request(self, req: Request, port: str) -> None:
        reason = self._never_fits(req)
        if reason is not None:
            # A model whose replicas are all lost fails its requests; else it was never servable.
            answer = Lost if req.model in self._waiting and not self._by_model[req.model] else Reject
            self._ports[port](answer(req.request_id, reason), self.env.now, TOKEN_ID_BYTES)
            return
        self._waiting[req.model].append((req, port, self.env.now))
        self._dispatch()

    def _never_fits(self, req: Request) -> str | None:
        candidates = self._by_model.get(req.model)
        if not candidates:
            lost = [r for r in self._lost if r]
            return f"every replica serving model {req.model} is lost ({lost[-1]})" \
                if req.model in self._waiting and lost else f"no replica serves model {req.model}"
        tokens = req.prompt_tokens + req.output_tokens
        reps = self.config.replicas
        best = max(reps[i].kv.max_tokens(reps[i].models.index(req.model)) for i in candidates)
        if tokens > best:
            return f"context of {tokens} tokens exceeds the {best} the largest KV cache can hold"
        return None

    def _dispatch(self) -> None:
        """Send every waiting request that fits somewhere: within a model nobody overtakes;
        across models, the earliest arrival goes first."""
        blocked: set[str] = set()
        while True:
            heads = [(q[0][2], q[0][0].request_id, m) for m, q in self._waiting.items() if q and m not in blocked]
            if not heads:
                return
            model = min(heads)[2]
            req, port, arrived = self._waiting[model][0]
            chosen = self._choose(req)
            if chosen is None:
                blocked.add(model)
                continue
            self._waiting[model].popleft()
            self._send(req, port, arrived, chosen)

    def _choose(self, req: Request) -> int | None:
        tokens = req.prompt_tokens + req.output_tokens
        for i in self._order(req):
            r = self.config.replicas[i]
            need = r.kv.need(r.models.index(req.model), tokens)
            if all(u + n <= c for u, n, c in zip(self._kv_in_use[i], need, r.kv.capacity_bytes)):
                return i
            if self._sticky(req, i, tokens):
                return None  # wait for its replica
        return None

    def _sticky(self, req: Request, i: int, tokens: int) -> bool:
        """Session affinity: a bound session waits for its replica, if it can ever fit there."""
        if self.config.policy != "session-affinity" or self._affinity.get((req.model, req.session)) != i:
            return False
        r = self.config.replicas[i]
        return tokens <= r.kv.max_tokens(r.models.index(req.model))

    def _send(self, req: Request, port: str, arrived: int, i: int) -> None:
        now = self.env.now
        r = self.config.replicas[i]
        model = r.models.index(req.model)
        tokens = req.prompt_tokens + req.output_tokens
        self._kv_in_use[i] = [u + n for u, n in zip(self._kv_in_use[i], r.kv.need(model, tokens))]
        self._outstanding[i] += 1
        self._routes[req.request_id] = (port, i, model, tokens, req, arrived)
        self._cursor[req.model] = i
        key = (req.model, req.session)
        if req.session >= 0 and (key not in self._affinity or self._lost[self._affinity[key]]):
            self._affinity[key] = i  # a session bound to a lost replica binds again
        if now > arrived:
            self._rows.append((arrived, now, self._queue_template, req.request_id, NULL))
        self._ports[replica_port(r.name)](RouteRequest(req, now - arrived), now,
                                          req.prompt_tokens * REQUEST_BYTES_PER_TOKEN)

    # -- policies: replicas serving the model, best first --------------------------------
    def _round_robin(self, req: Request) -> list[int]:
        candidates = self._by_model[req.model]  # ascending replica indices
        last = self._cursor.get(req.model)
        start = 0 if last is None else next((k for k, i in enumerate(candidates) if i > last), 0)
        return candidates[start:] + candidates[:start]

    def _least_outstanding(self, req: Request) -> list[int]:
        return sorted(self._by_model[req.model], key=lambda i: (self._outstanding[i], i))

    def _nearest(self, req: Request) -> list[int]:
        reps = self.config.replicas
        return sorted(self._by_model[req.model], key=lambda i: (reps[i].latency_ps, self._outstanding[i], i))

    def _most_free(self, req: Request) -> list[int]:
        reps = self.config.replicas
        return sorted(self._by_model[req.model],
                      key=lambda i: (-(sum(reps[i].kv.capacity_bytes) - sum(self._kv_in_use[i])), i))

    def _affine(self, req: Request) -> list[int]:
        bound = self._affinity.get((req.model, req.session)) if req.session >= 0 else None
        bound = None if bound is not None and self._lost[bound] else bound  # bound again by `_send`
        rest = self._least_outstanding(req)
        return rest if bound is None else [bound] + [i for i in rest if i != bound]

    # -- tokens back -------------------------------------------------------------------
    def _on_token(self, token: Token) -> None:
        port = self._routes[token.request_id][0]
        self._ports[port](token, self.env.now, TOKEN_ID_BYTES)
        if token.final:
            self._release(token.request_id)

    def _on_reject(self, reject: Reject) -> None:
        port = self._routes[reject.request_id][0]
        self._ports[port](reject, self.env.now, TOKEN_ID_BYTES)
        self._release(reject.request_id)

    def _release(self, request_id: int, dispatch: bool = True) -> None:
        port, i, model, tokens, _, _ = self._routes.pop(request_id)
        r = self.config.replicas[i]
        self._kv_in_use[i] = [u - n for u, n in zip(self._kv_in_use[i], r.kv.need(model, tokens))]
        self._outstanding[i] -= 1
        if dispatch:
            self._dispatch()

    # -- losses ------------------------------------------------------------------------
    def _on_lost(self, lost: Lost) -> None:
        """Its replica lost the request: that replica is gone; retry the request elsewhere."""
        port, i, _, _, req, arrived = self._routes[lost.request_id]
        self._release(lost.request_id, dispatch=False)
        if not self._lost[i]:
            self._lose_replica(i, lost.reason)
        now = self.env.now
        reason = self._never_fits(req)  # with the replicas left
        if reason is None:
            self._ports[port](Retry(req.request_id), now, TOKEN_ID_BYTES)
            queue = self._waiting[req.model]
            at = next((k for k, (q, _, t) in enumerate(queue) if (t, q.request_id) > (arrived, req.request_id)),
                      len(queue))
            queue.insert(at, (req, port, arrived))
        else:
            self._ports[port](Lost(req.request_id, reason), now, TOKEN_ID_BYTES)
        self._dispatch()

    def _lose_replica(self, i: int, reason: str) -> None:
        """Route nothing more to replica `i`; what waits and fits no replica left fails."""
        self._lost[i] = reason or f"replica {self.config.replicas[i].name} lost"
        for candidates in self._by_model.values():
            if i in candidates:
                candidates.remove(i)
        now = self.env.now
        for model, queue in self._waiting.items():
            kept = deque()
            for req, port, arrived in queue:
                reason = self._never_fits(req)
                if reason is None:
                    kept.append((req, port, arrived))
                else:
                    self._ports[port](Lost(req.request_id, reason), now, TOKEN_ID_BYTES)
            self._waiting[model] = kept

    def finish(self, end_ps: int) -> None:
        pass

    def conservation(self) -> list[str]:
        waiting = sum(map(len, self._waiting.values()))
        if self._routes or waiting:
            return [f"{len(self._routes)} requests routed and never finished, {waiting} still waiting"]
        return []
