"""What both regimes share: a flow's outcome, a replica's admission, and the few
probability functions the steady state needs (no scipy: each is a few lines)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cluster.analytic.costs import Chain, GpuChain
from cluster.analytic.flows import Flow

EULER_GAMMA = 0.5772156649015329


@dataclass
class Outcome:
    """A flow's requests as their users see them. Times in ps, throughput per ps."""

    flow: Flow
    tpot_ps: float
    ttft_ps: float  # sent by the user to the first token back at the user
    queue_ps: float  # waiting for admission (router and replica)
    in_service: float  # the flow's requests at the replica at once
    throughput: float  # the flow's requests served per ps
    finish_ps: float  # when its last request is back at its user (from the run's start)
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # (ttft, tpot, requests)
    bound: str = ""
    link_ps: float = 0.0  # a decode step's time on links (their wires and latency)


@dataclass(frozen=True)
class ReplicaCosts:
    """What a replica offers its flows: per stage, the SRAM free beside the weights; the
    cap on requests in service (0: none); the pipeline's name, for the bound."""

    capacity_bytes: tuple[int, ...]
    max_active: int
    label: str


def fill(want: np.ndarray, chains: list[Chain | GpuChain], costs: ReplicaCosts) -> float:
    """How full `want[k]` requests of each flow at once would make the replica: the largest
    of each stage's KV bytes over its room and the requests over `max_active` (1: just full)."""
    need = np.sum([w * np.array(c.kv_bytes, float) for w, c in zip(want, chains)], axis=0)
    ratio = max([0.0] + [x / cap for cap, x in zip(costs.capacity_bytes, need) if cap > 0])
    if costs.max_active:
        ratio = max(ratio, float(want.sum()) / costs.max_active)
    return ratio


def admitted_fraction(want: np.ndarray, chains: list[Chain | GpuChain], costs: ReplicaCosts) -> float:
    """The share of `want[k]` requests of each flow at once that every stage's KV cache
    (and the cap on requests in service) admits: 1 when all fit."""
    return min(1.0, 1.0 / max(fill(want, chains, costs), 1e-300))


def bottleneck(decoding: np.ndarray, chains: list[Chain], loop: np.ndarray) -> tuple[float, float, int]:
    """The decode steps in flight on each server: flow k puts a_kj = decoding_k x D_kj of
    work per token on server j. A flow whose loop is longer than the level runs at its
    loop and takes a_kj / loop_k of the server; the rest share what is left at level T_j:
    sum_k a_kj / max(T_j, loop_k) = 1. Returns (max_j T_j, 0 when no server binds; the
    busiest server's work per token max_j sum_k a_kj; that server)."""
    a = np.array([k * c.decode for k, c in zip(decoding, chains)])  # flows x servers
    order = np.argsort(loop)
    levels = np.zeros(a.shape[1])
    below = np.zeros(a.shape[1])  # sum of a over the flows at the level
    above = np.sum(a / loop[:, None], axis=0)  # sum of a / loop over the flows at their loops
    for rank, k in enumerate(order):
        below += a[k]
        above -= a[k] / loop[k]
        t = below / np.maximum(1.0 - above, 1e-12)
        hi = loop[order[rank + 1]] if rank + 1 < len(order) else np.inf
        levels = np.where((t >= loop[k]) & (t <= hi) & (levels == 0), t, levels)
    total = a.sum(axis=0)
    j = int(np.argmax(levels)) if levels.any() else int(np.argmax(total))
    return float(levels[j]), float(total.max()), j


def loop_bound(chain: Chain, loop_ps: float) -> str:
    return f"token loop ({loop_ps / 1e9:.3g} ms, {100 * chain.link_ps / loop_ps:.0f}% of it on links)"


def server_name(chain: Chain, j: int, label: str) -> str:
    stage, what = chain.servers[j]
    return f"{what} of {label} stage {stage}"


def harmonic(k: float) -> float:
    """The expected longest of k exponentials of mean 1: H_k (linear below one)."""
    if k <= 1:
        return max(k, 0.0)
    return math.log(k) + EULER_GAMMA + 1 / (2 * k) - 1 / (12 * k * k)


def gamma_q(a: float, x: float) -> float:
    """The regularized upper incomplete gamma function Q(a, x): a series below a + 1, a
    continued fraction above (Numerical Recipes' gammq)."""
    if x <= 0:
        return 1.0
    front = math.exp(-x + a * math.log(x) - math.lgamma(a))
    if x < a + 1:
        term = total = 1.0 / a
        ap = a
        for _ in range(1000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-13:
                break
        return max(0.0, 1.0 - front * total)
    tiny = 1e-300
    b = x + 1 - a
    c, d = 1 / tiny, 1 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        h *= d * c
        if abs(d * c - 1) < 1e-13:
            break
    return front * h


def clear_share(rate: float, span: float, cv2: float) -> float:
    """The share of time nothing of a stream is present: items arrive `rate` per ps with
    gamma-distributed gaps of squared coefficient of variation `cv2` (Poisson: 1; one in k
    of a Poisson stream: 1/k) and each stays `span`. E[(G - span)+] / E[G] for a gap G:
    Q(s+1, y) - rate x span x Q(s, y), shape s = 1/cv2, y = s x rate x span; for Poisson
    it is exp(-rate x span)."""
    if rate <= 0 or span <= 0:
        return 1.0
    if abs(cv2 - 1.0) < 1e-9:
        return math.exp(-rate * span)
    shape = 1.0 / max(cv2, 1e-3)
    y = shape * rate * span
    whole = round(shape)
    if abs(shape - whole) < 1e-6 and whole <= 400:  # one in k of a Poisson stream: Erlang sums
        term = total = math.exp(-y)  # Q(k, y) = exp(-y) sum_{i<k} y^i / i!
        for i in range(1, whole):
            term *= y / i
            total += term
        return max(0.0, total + term * y / whole - rate * span * total)
    return max(0.0, gamma_q(shape + 1, y) - rate * span * gamma_q(shape, y))


def count_pmf(mean: float, users: float) -> tuple[np.ndarray, np.ndarray]:
    """(n, probability) of how many requests are doing something (mean `mean`) as one of
    them sees it: itself, and each of the other `users - 1` of a closed loop independently
    (binomial), or, open loop (users < 2), a Poisson number of others. Trimmed to +-8 sd."""
    closed = users >= 2
    if closed:
        others, q = int(round(users)) - 1, min(mean / users, 1.0)
        if q >= 1.0:
            return np.array([others + 1.0]), np.array([1.0])
        centre, sd = others * q, math.sqrt(max(others * q * (1 - q), 1e-12))
    else:
        centre, sd = mean, math.sqrt(max(mean, 1e-12))
    lo, hi = max(0, int(centre - 8 * sd)), int(centre + 8 * sd) + 1
    if closed:
        hi = min(hi, others)
    k = np.arange(lo, hi + 1, dtype=float)
    lgamma = np.vectorize(math.lgamma)
    if closed:
        logp = (math.lgamma(others + 1) - lgamma(k + 1) - lgamma(others - k + 1)
                + k * math.log(max(q, 1e-300)) + (others - k) * math.log1p(-q))
    else:
        logp = k * math.log(max(mean, 1e-300)) - mean - lgamma(k + 1)
    p = np.exp(logp - logp.max())
    return k + 1, p / p.sum()


def erlang_c(servers: int, offered: float) -> float:
    """The probability an arrival waits in an M/M/c queue (Erlang C), from Erlang B's
    recurrence; 1 when the offered load reaches the servers."""
    if offered >= servers:
        return 1.0
    b = 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    return servers * b / (servers - offered * (1 - b))


def mdc_wait(servers: float, offered: float, service: float, cv2: float) -> float:
    """Mean wait for one of `servers` places each held `service` (fixed), `offered` of
    them wanted on average, arrivals with gaps of squared variation `cv2`: the M/M/c wait
    scaled by (cv2 + 0) / 2 (Allen-Cunneen; fixed service has no variation)."""
    c = int(servers)
    if c < 1 or offered <= 0:
        return 0.0
    if offered >= c:
        return math.inf
    if c - offered > 8 * math.sqrt(c):  # nobody waits to speak of (Erlang C below ~1e-10)
        return 0.0
    return 0.5 * cv2 * erlang_c(c, offered) * service / (c - offered)
