"""Requests that reach a replica together are served in waves, in step.

A burst at t=0, closed-loop users who never think, or a backlog far longer than the
replica holds: a wave of n requests (as many as the KV cache admits) sends its prompts at
once. They queue as one train at each server: request i's first token comes at the train's
start plus i prompts' time through the slowest server. Every decode step sent meanwhile
waits behind the train's last chunk, so all n decode from when the last prompt is done,
together, at max(L, n x D) per token: the token loop, or n steps through the busiest server
(a closed cycle of fixed-service FIFO servers runs at its slowest circuit: max-plus). All
the same length, they finish together and the next wave starts, after the router's round
trip (a backlog) or the users' (closed loop). Times in ps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cluster.analytic.costs import Chain, GpuChain
from cluster.analytic.flows import Flow
from cluster.analytic.queueing import Outcome, ReplicaCosts, admitted_fraction, bottleneck, loop_bound, server_name


def lockstep(flows: list[Flow], chains: list[Chain | GpuChain], costs: ReplicaCosts) -> list[Outcome]:
    """The flows' outcomes when their requests come in waves."""
    at_once = np.array([f.share * (f.demand.users if f.demand.kind == "closed" else f.demand.requests)
                        for f in flows])
    total = np.array([f.share * f.demand.requests for f in flows])
    admit = admitted_fraction(at_once, chains, costs)
    wave = at_once * admit
    count = max(1, math.ceil(float(np.max(total / np.maximum(wave, 1e-12))) - 1e-9))
    waves = [_wave(np.minimum(wave, np.maximum(total - w * wave, 0.0)), chains, costs) for w in range(count)]
    queued = admit < 1.0
    regap = max(_regap(f, queued) for f in flows)
    steps = np.array([f.demand.output - 1 for f in flows], float)
    # A wave starts when the last one's tokens are back (open loop: and its requests are in).
    starts, t = [], 0.0
    for w, wv in enumerate(waves):
        t = max(t, max(_arrival(f, (w + 1) * wave[k]) for k, f in enumerate(flows)))
        starts.append(t)
        t += wv.last_first + float(np.max(steps * wv.tpot)) + regap
    turn = t / count  # closed loop: one wave's turn
    outcomes = []
    for k, flow in enumerate(flows):
        d = flow.demand
        samples, queue, finish = [], 0.0, 0.0
        for w, wv in enumerate(waves):
            n = min(wave[k], max(total[k] - w * wave[k], 0.0))
            if n <= 0:
                break
            if d.kind == "closed":  # users beyond what the cache holds wait their turn
                waited = min(w, at_once[k] / wave[k] - 1) * turn
            else:
                waited = starts[w] - _arrival(flow, (w + 0.5) * wave[k])
            # Request i of n: its first token at first + i/n of the train; its steps all
            # wait for the last prompt, so its time per token carries the rest of the train.
            points = max(1, min(round(n), 9))
            for i in range(points):
                ttft = wv.first + (i + 0.5) / points * (wv.last_first - wv.first)
                samples.append((flow.in_ps + waited + ttft + flow.out_ps,
                                wv.tpot[k] + (wv.last_first - ttft) / max(steps[k], 1), n / points))
            queue += waited * n
            finish = starts[w] + wv.last_first + steps[k] * wv.tpot[k]
        finish += flow.in_ps + flow.out_ps
        weight = sum(s[2] for s in samples)
        outcomes.append(Outcome(
            flow, sum(s[1] * s[2] for s in samples) / weight, sum(s[0] * s[2] for s in samples) / weight,
            queue / max(total[k], 1e-12), float(wave[k]), total[k] / max(finish, 1.0), finish, samples,
            f"KV admission ({float(wave.sum()):.0f} requests at once)" if queued else waves[0].bound,
            getattr(chains[k], "link_ps", 0.0)))
    return outcomes


@dataclass(frozen=True)
class _Wave:
    """A wave at the replica: each flow's time per token, the first token of its first and
    last prompt, and what bounds the time per token."""

    tpot: np.ndarray
    last_first: float
    first: float
    bound: str


def _wave(n: np.ndarray, chains: list[Chain | GpuChain], costs: ReplicaCosts) -> _Wave:
    """A wave of n[k] requests of each flow."""
    if isinstance(chains[0], GpuChain):  # every prompt of the wave in one step, then one batch
        chain, count = chains[0], float(n.sum())
        first = chain.step_ps(0.0, count)
        return _Wave(np.full(len(n), chain.step_ps(max(count, 1.0), 0.0)), first, first,
                     f"GPU step (a batch of {count:.0f})")
    live = [c for c, k in zip(chains, n) if k > 0] or chains[:1]
    loop = np.array([c.loop_ps for c in chains])
    level, work, busiest = bottleneck(n, chains, loop)
    prefill = sum(k * c.prefill for k, c in zip(n, chains))
    first = max(c.train_ps for c in live)
    # The prompts queue at the server they load most, one behind the other.
    j = int(np.argmax(prefill))
    spacing = max(0.0, float(prefill[j]) - max(float(c.prefill[j]) for c in live))
    if level > 0:
        bound = f"bottleneck {server_name(live[0], busiest, costs.label)}"
    else:
        bound = loop_bound(live[0], max(c.loop_ps for c in live))
    return _Wave(np.maximum(loop, level), first + spacing, first, bound)


def _regap(flow: Flow, queued: bool) -> float:
    """From a wave's last token at the replica to the next wave's first request there: the
    users' round trip (closed loop, all admitted), else the router's (requests wait there)."""
    if not queued and flow.demand.kind == "closed":
        return flow.in_ps + flow.out_ps
    return flow.router_trip_ps


def _arrival(flow: Flow, count: float) -> float:
    """When an open-loop flow's `count`-th request has reached its replica (0: a burst, users)."""
    if flow.demand.kind != "open" or flow.share <= 0:
        return 0.0
    return count / (flow.share * flow.demand.rate_per_ps)
