"""Requests that reach a replica at random (open loop, or closed-loop users who think):
a fixed point in each flow's time per output token T. Times in ps, rates per ps.

Given T, a request spends R = TTFT + (output - 1) x T at the replica; closed-loop users
send X = users / (network + R + think) a ps, an open loop its rate; Little's law gives the
requests in service N = X x R, and the KV cache admits a share of them (the rest wait:
X falls to what is admitted). Of those, X x (output - 1) x T are decoding. Then T:

- *free of prompts*, the decoding requests circulate at max(L, n x D): the token loop, or
  n steps through the busiest server (max-plus, as in waves); n varies about its mean
  (binomial over closed-loop users, Poisson open loop) and a request's speed is its steps
  per unit of time, so T_free is the harmonic mean of that over n;
- *prompts*: another request's chunks are sent at once and cross the pipeline slower than
  a step (time P, its train), and a step sent behind them leaves with them. A step is held
  if a prompt came while the step before it was out; a held step takes P less the latest
  prompt's age, so held steps come in runs while prompts overlap (a two-state chain, see
  `_with_prompts`). A slower model's steps hold a co-located faster model's steps alike.

The map is iterated in log T, its step halved each time it reverses, until it settles.
"""

from __future__ import annotations

import math

import numpy as np

from cluster.analytic.costs import Chain, GpuChain
from cluster.analytic.flows import Flow
from cluster.analytic.queueing import (
    Outcome,
    ReplicaCosts,
    admitted_fraction,
    bottleneck,
    clear_share,
    count_pmf,
    fill,
    harmonic,
    loop_bound,
    mdc_wait,
    server_name,
)

DAMPING = 1.0  # of the first steps of the fixed point, in log T: the plain map, until it overshoots
MAX_ITERATIONS = 200
TOLERANCE = 1e-6  # relative; the model is good to a few percent, not to parts per million
# When a full KV cache admits a request, it is because another's last token just came
# back: the steps that came back before it are already ahead of its prompt, so a prompt
# lands ahead of about half the decoding requests, not all of them.
REACH_WHEN_ADMITTED_ON_RELEASE = 0.5


class _Flows:
    """The flows on one replica as arrays (k: flow)."""

    def __init__(self, flows: list[Flow], chains: list[Chain | GpuChain], costs: ReplicaCosts) -> None:
        self.flows, self.chains, self.costs = flows, chains, costs
        demands = [f.demand for f in flows]
        self.steps = np.array([max(d.output - 1, 0) for d in demands], float)
        self.closed = np.array([d.kind == "closed" for d in demands])
        self.users = np.array([f.share * d.users for f, d in zip(flows, demands)])
        self.think = np.array([d.think_ps for d in demands])
        self.rate = np.array([f.share * d.rate_per_ps for f, d in zip(flows, demands)])
        self.trip = np.array([f.in_ps + f.out_ps for f in flows])
        self.gpu = isinstance(chains[0], GpuChain)
        if self.gpu:
            self.loop = np.full(len(flows), chains[0].step_ps(1.0, 0.0))
            self.train = np.full(len(flows), chains[0].step_ps(0.0, 1.0))
        else:
            self.loop = np.array([c.loop_ps for c in chains])
            self.train = np.array([c.train_ps for c in chains])
        self.all_closed_users = float(self.users.sum()) if self.closed.all() else 0.0


def steady(flows: list[Flow], chains: list[Chain | GpuChain], costs: ReplicaCosts) -> list[Outcome]:
    """The flows' outcomes at the fixed point."""
    fl = _Flows(flows, chains, costs)
    tpot, ttft = fl.loop.copy(), fl.train.copy()
    damping, last = DAMPING, None
    for _ in range(MAX_ITERATIONS):
        state = _given(tpot, ttft, fl)
        step = np.log(state["tpot"]) - np.log(tpot)
        if np.all(np.abs(step) <= TOLERANCE):
            break
        # More requests in flight slow every token, and slower tokens let fewer in: where
        # that feedback is strong the plain map overshoots, so each reversal halves the step.
        if last is not None and float(np.dot(step, last)) < 0:
            damping = max(damping / 2, 1 / 64)
        tpot, ttft, last = tpot * np.exp(damping * step), state["ttft"], step
    return _outcomes(fl, _given(tpot, ttft, fl))


def _given(tpot: np.ndarray, ttft: np.ndarray, fl: _Flows) -> dict:
    """What follows from a guess of each flow's time per token and to its first token."""
    in_replica = ttft + fl.steps * tpot  # admitted to its last token back at the frontend
    x = np.where(fl.closed, fl.users / np.maximum(fl.trip + in_replica + fl.think, 1.0), fl.rate)
    full = fill(x * in_replica, fl.chains, fl.costs)
    admit = min(1.0, 1.0 / max(full, 1e-300))
    x = x * admit  # a full cache lets in only what it holds: the rest wait
    decoding = x * fl.steps * tpot
    state = {"x": x, "in_replica": in_replica, "admit": admit, "in_service": x * in_replica}
    if fl.gpu:
        return {**state, **_gpu_step(x, decoding, tpot, fl)}
    level, work, busiest = bottleneck(decoding, fl.chains, fl.loop)
    if np.ptp(fl.loop) <= 1e-3 * fl.loop.max():  # one loop for all: n varies about its mean
        free = _free_tpot(fl.loop, work, float(decoding.sum()), fl.all_closed_users, admit < 1.0)
    else:  # loops differ: each flow at its loop or the shared level, whichever is longer
        free = np.maximum(fl.loop, level)
    waited = _train_wait(x, fl.chains)
    # The steps held behind a prompt leave it in a bunch, one per busiest-server step: on
    # average half the busiest server's work after it.
    # Near full, more and more admissions wait for a release (a ramp, not a step, so that
    # the fixed point's map stays continuous).
    reach = 1.0 - (1.0 - REACH_WHEN_ADMITTED_ON_RELEASE) * min(1.0, max(0.0, (full - 0.9) / 0.1))
    rates, spans = _prompts_ahead(x, fl, waited + work / 2, reach)
    cv2 = np.array([f.cv2 for f in fl.flows])
    # A prompt sent behind a slower one (a co-located model's, a longer prompt) leaves with it.
    ttft = fl.train + waited + np.array([sum(_trailing(r, p - fl.train[k]) for r, p in zip(rates[k], fl.train))
                                          for k in range(len(x))])
    # So does a step behind a slower model's step: those hold it as prompts do.
    slower = np.where(fl.loop[None, :] > fl.loop[:, None] * 1.001, decoding / np.maximum(tpot, 1.0), 0.0)
    rates, spans, cv2 = np.hstack([rates, slower]), np.concatenate([spans, fl.loop]), np.concatenate([cv2, 0 * cv2 + 1])
    new = np.array([_with_prompts(free[k], rates[k], spans, cv2) for k in range(len(x))])
    parts = {loop_bound(fl.chains[0], float(fl.loop.mean())): float(fl.loop.mean()),
             "bottleneck " + server_name(fl.chains[0], busiest, fl.costs.label): float(np.mean(free - fl.loop)),
             "prompts crossing ahead of the decode steps (prefill)": float(np.mean(new - free))}
    return {**state, "tpot": new, "ttft": ttft, "bound": max(parts, key=parts.get)}


def _gpu_step(x: np.ndarray, decoding: np.ndarray, tpot: np.ndarray, fl: _Flows) -> dict:
    """A GPU replica batches every pass waiting: a token's time is one step over all
    decoding requests and the prompts that arrived during the last step; a prompt waits
    half a step, then rides in the next (assumed: the flows share one shape)."""
    chain = fl.chains[0]
    batch = max(float(decoding.sum()), 1.0)
    prompts = float(x.sum() * tpot[0])
    step = chain.step_ps(batch, prompts)
    first = 0.5 * step + chain.step_ps(batch, prompts + 1.0)
    return {"tpot": np.full(len(x), step), "ttft": np.full(len(x), first),
            "bound": f"GPU step (a batch of {batch:.0f})"}


def _with_prompts(free: float, rates: np.ndarray, spans: np.ndarray, cv2: np.ndarray) -> float:
    """Time per token with prompts crossing ahead (`rates[j]` of them a ps from flow j,
    each holding the pipeline `spans[j]`, gaps of squared variation `cv2[j]`). A step sent
    while a prompt that entered a < span - free ago is in the pipeline leaves with it, span
    - a after it was sent; the prompts that matter to a step are those that entered while
    the step before it was out (earlier ones are ahead of that one). So the steps form a
    chain: after a free step (time `free`) the next is held with probability q_f = 1 - (no
    prompt within `free`); after a held one (mean time D) with q_b = 1 - (no prompt within
    D); a held step takes span - (the age of the latest prompt then). T is the chain's
    mean step: the share of held steps is q_f / (q_f + 1 - q_b)."""
    # Streams alike (the same prompts from several populations) merge: rates add.
    streams: dict[tuple[float, float], float] = {}
    for r, p, c in zip(rates.tolist(), spans.tolist(), cv2.tolist()):
        if r > 0 and p > free:
            streams[(p, c)] = streams.get((p, c), 0.0) + r
    if not streams:
        return free
    alike = [(r, p, c) for (p, c), r in streams.items()]

    def held_after(window: float) -> tuple[float, float]:
        """(probability a step is held, its mean time) when the window before it is `window`:
        each stream independently, the one that holds it weighted by its chance to."""
        clear, hit_sum, weighted = 1.0, 0.0, 0.0
        for r, p, c in alike:
            cleared = clear_share(r, window, c)
            clear *= cleared
            hit_sum += 1.0 - cleared
            weighted += (1.0 - cleared) * max(free, p - _latest_age(r, window))
        return 1.0 - clear, weighted / hit_sum if hit_sum > 0 else free

    q_f, after_free = held_after(free)

    def gap(held: float) -> tuple[float, float]:  # the held time's fixed point: gap = 0
        q_b, after_held = held_after(held)
        return (1 - q_b) * after_free + q_b * after_held - held, q_b

    # Secant steps from the held time after a free step (the map is a contraction, so the
    # root is bracketed by it and its image; a few steps settle it).
    h0, (g0, q_b) = after_free, gap(after_free)
    h1 = h0 + g0
    for _ in range(30):
        g1, q_b = gap(h1)
        if abs(g1) <= 1e-7 * h1 or g1 == g0:
            break
        h0, h1, g0 = h1, max(free, h1 - g1 * (h1 - h0) / (g1 - g0)), g1
    share = q_f / max(q_f + 1 - q_b, 1e-12)
    return (1 - share) * free + share * h1


def _trailing(rate: float, lead: float) -> float:
    """What a prompt loses to a slower one ahead: sent a (Poisson) after the latest of them,
    which leaves `lead` later than it would alone, it leaves max(0, lead - a) late:
    lead - (1 - e^(-rate lead)) / rate on average."""
    if rate <= 0 or lead <= 0:
        return 0.0
    return lead + math.expm1(-rate * lead) / rate


def _latest_age(rate: float, window: float) -> float:
    """How long ago the latest of a Poisson stream's arrivals came, given one came within
    `window`: 1/rate - window e^(-rate window) / (1 - e^(-rate window)) (half the window
    when it is short)."""
    y = rate * window
    if y < 1e-6:
        return window / 2
    return 1.0 / rate - window * math.exp(-y) / -math.expm1(-y)


def _free_tpot(loop: np.ndarray, work: float, decoding: float, users: float, pinned: bool) -> np.ndarray:
    """Time per token free of prompts: max(loop, work x n / mean n) as n, the requests
    decoding, varies (a full KV cache pins it); harmonic over n, as speed is per time."""
    if work <= 0 or decoding <= 0 or pinned:
        return np.maximum(loop, work)
    n, pmf = count_pmf(decoding, users)
    per_request = work / decoding
    return np.array([1.0 / float(np.sum(pmf / np.maximum(lp, per_request * n))) for lp in loop])


def _prompts_ahead(x: np.ndarray, fl: _Flows, extra: np.ndarray, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """The prompts each flow's decoding requests see: rates[k, j], flow j's prompts a ps
    that land ahead of flow k's steps (a closed loop's own users send x (users - 1) / users
    of its prompts to the others), and spans[j], how long one holds the pipeline: its train,
    its wait, and the bunch of steps that leave after it."""
    own = np.where(fl.closed, x * np.maximum(fl.users - 1, 0) / np.maximum(fl.users, 1e-12), x)
    rates = reach * np.tile(x, (len(x), 1))
    np.fill_diagonal(rates, reach * own)
    return rates, fl.train + extra


def _train_wait(x: np.ndarray, chains: list[Chain]) -> np.ndarray:
    """A prompt's wait for the prompts ahead of it, at the server they load most: M/D/1
    (Pollaczek-Khinchine, each prompt's chunks one job)."""
    load = sum(xi * c.prefill for xi, c in zip(x, chains))
    j = int(np.argmax(load))
    rho = min(float(load[j]), 0.999)
    second = sum(xi * float(c.prefill[j]) ** 2 for xi, c in zip(x, chains))
    return np.full(len(chains), second / (2 * (1 - rho)))


def _outcomes(fl: _Flows, state: dict) -> list[Outcome]:
    out = []
    for k, f in enumerate(fl.flows):
        d = f.demand
        x, tpot = float(state["x"][k]), float(state["tpot"][k])
        in_replica = float(state["in_replica"][k])
        requests = f.share * d.requests
        full = state["admit"] < 1.0
        if fl.closed[k]:
            users = f.share * d.users
            cycle = users / max(x, 1e-300)
            queue = max(0.0, cycle - (f.in_ps + f.out_ps + in_replica + d.think_ps)) if full else 0.0
            # The last request is committed once `requests - users` have come back; the
            # users thinking then each send one more, the last after the longest think.
            thinking = users * d.think_ps / max(cycle, 1.0)
            finish = max(requests - users, 0.0) / max(x, 1e-300) + d.think_ps * harmonic(thinking) + in_replica
        elif full:  # more arrive than it serves: the backlog grows all run
            served_by = requests / max(x, 1e-300)
            queue = 0.5 * (served_by - requests / max(fl.rate[k], 1e-300))
            finish = served_by + in_replica
        else:
            held = state["in_service"]
            queue = mdc_wait(_room(fl, held), float(held.sum()), in_replica, f.cv2)
            finish = d.last_arrival_ps + queue + in_replica
        finish += f.in_ps + f.out_ps
        ttft = f.in_ps + queue + float(state["ttft"][k]) + f.out_ps
        bound = f"KV admission ({float(state['in_service'].sum()):.0f} requests at once)" if full else state["bound"]
        out.append(Outcome(f, tpot, ttft, queue, float(state["in_service"][k]), x, finish, [(ttft, tpot, requests)],
                           bound, getattr(fl.chains[k], "link_ps", 0.0)))
    return out


def _room(fl: _Flows, held: np.ndarray) -> float:
    """How many requests, in the mix now in service, the replica holds at once."""
    scale = 1e9 / max(float(held.sum()), 1e-12)  # far more than fit: the admitted share says how many do
    return float(held.sum()) * admitted_fraction(held * scale, fl.chains, fl.costs) * scale
