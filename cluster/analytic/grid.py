"""The analytic tier against the event model: a grid of points over users, wafers, sites
and replicas, each simulated (stage detail) and estimated, with the error on per-user
speed and aggregate throughput and, where one is over 10%, the reason.

Workloads are chosen to have little transient: closed-loop users who think about twice
as long as a request takes alone (so the burst every closed loop starts with, all users
at t=0, spreads out within a few rounds) over enough requests per user that the first
rounds are a small part of the run; 128-token prompts (one chunk) and 64 output tokens
keep the whole grid to seconds of simulation.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass

from cluster.analytic.estimator import estimate
from cluster.fleet.spec import ClusterSpec, PipelineSpec, ReplicaSpec, RouterSpec, UserSpec

HEADLINE_SITES = ("santa-clara", "santa-clara", "stockton", "dallas")
L8, L70 = "llama3.1-8b", "llama3.1-70b"
THRESHOLD_PCT = 10.0
PROMPT, OUTPUT = 128, 64


@dataclass(frozen=True)
class GridPoint:
    name: str
    model: str
    wafers: int
    stage_sites: tuple[str, ...]  # empty: every wafer at the replica's site
    replicas: int
    users: int
    per_user: int  # requests each user sends, on average
    think_s: float
    arrivals: str = "closed"
    rate_per_s: float = 0.0

    def spec(self) -> ClusterSpec:
        site = "santa-clara"
        pipe = PipelineSpec("p", (self.model,), self.wafers, stage_sites=self.stage_sites)
        users = UserSpec("u", site, self.model, self.arrivals, rate_per_s=self.rate_per_s or 1.0, users=self.users,
                         think_time_s=self.think_s, requests=self.users * self.per_user,
                         prompt_tokens=PROMPT, output_tokens=OUTPUT)
        return ClusterSpec(self.name, (pipe,), (ReplicaSpec("p", self.replicas, (site,)),), (users,),
                           (RouterSpec("r", site, "round-robin"),), detail="stage")


def grid() -> list[GridPoint]:
    """18 points: users 1, 8, 32, 96 on the 8B on one wafer and the 70B on four in one site;
    8 and 32 on the 8B on two wafers; 8, 32, 96 on the 70B over the headline's sites; 2 and 4
    replicas behind a round-robin router; a closed loop that never thinks (waves) and an
    open (Poisson) one."""
    # Requests per user shrink as users grow: enough rounds to desynchronise, few events.
    per_user = {1: 64, 8: 32, 32: 16, 96: 8}
    points = [GridPoint(f"8b, 1 wafer, {_users(u)}", L8, 1, (), 1, u, per_user[u], 0.1) for u in (1, 8, 32, 96)]
    points += [GridPoint(f"8b, 2 wafers, {u} users", L8, 2, (), 1, u, per_user[u], 0.1) for u in (8, 32)]
    points += [GridPoint(f"70b, 4 wafers in one site, {_users(u)}", L70, 4, (), 1, u, per_user[u], 0.4)
               for u in (1, 8, 32, 96)]
    points += [GridPoint(f"70b, 4 wafers over {','.join(HEADLINE_SITES)}, {u} users", L70, 4, HEADLINE_SITES, 1,
                         u, {8: 16, 32: 8, 96: 6}[u], 4.0) for u in (8, 32, 96)]
    points += [GridPoint("8b, 1 wafer, 2 replicas, 32 users", L8, 1, (), 2, 32, 16, 0.1),
               GridPoint("8b, 1 wafer, 4 replicas, 96 users", L8, 1, (), 4, 96, 8, 0.1),
               GridPoint("70b, 4 wafers in one site, 2 replicas, 32 users", L70, 4, (), 2, 32, 16, 0.4),
               GridPoint("8b, 1 wafer, 32 users who never think (waves)", L8, 1, (), 1, 32, 8, 0.0),
               GridPoint("8b, 1 wafer, Poisson 200 requests/s", L8, 1, (), 1, 1, 1000, 0.0, "poisson", 200.0)]
    return points


def _users(n: int) -> str:
    return f"{n} user" if n == 1 else f"{n} users"


@dataclass(frozen=True)
class GridRow:
    point: str
    users: int
    replicas: int
    requests: int
    event_tokens_per_s_per_user: float
    analytic_tokens_per_s_per_user: float
    speed_error_pct: float
    event_aggregate_tokens_per_s: float
    analytic_aggregate_tokens_per_s: float
    aggregate_error_pct: float
    event_ttft_ms_p50: float
    analytic_ttft_ms_p50: float
    bound: str
    event_wall_s: float
    analytic_wall_ms: float
    reason: str | None


def _error(event: float, analytic: float) -> float:
    return round((analytic - event) / event * 100, 2) if event else 0.0


def reason(p: GridPoint, speed_err: float, aggregate_err: float, bound: str) -> str | None:
    """Why a row is over the threshold, from what the point is (None: it is not)."""
    if max(abs(speed_err), abs(aggregate_err)) <= THRESHOLD_PCT:
        return None
    why = []
    requests = p.users * p.per_user
    if p.arrivals == "closed" and p.think_s > 0 and speed_err < -THRESHOLD_PCT:
        why.append(f"transient: all {p.users} users send their first request at t=0 and stay partly in step for "
                   f"several rounds (each of {p.per_user} here); requests in step cross fewer of each other's "
                   f"prompts, so the event run is faster than the steady state")
    if abs(aggregate_err) > THRESHOLD_PCT and p.arrivals == "closed" and p.think_s > 0:
        why.append(f"sampling: aggregate = tokens / the run's span, which ends with the longest of the last users' "
                   f"exponential think times (the estimate takes its mean); {requests} requests vary by seed")
    if bound.startswith("prompts"):
        why.append("many prompts cross the pipeline at once: the chain of held decode steps (one per prompt "
                   "window) is an approximation there")
    return "; ".join(why) or "not analysed"


def run_grid(points: list[GridPoint] | None = None) -> list[GridRow]:
    """Each point simulated at stage detail and estimated; the rows in grid order."""
    from cluster.commands.scenario import RunOptions, run_cluster

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for i, p in enumerate(points or grid()):
            spec = p.spec()
            t0 = time.perf_counter()
            ev = run_cluster(spec, RunOptions(trace=f"{folder}/point{i}.arrow"))
            event_wall = time.perf_counter() - t0
            t0 = time.perf_counter()
            an = estimate(spec)
            analytic_ms = (time.perf_counter() - t0) * 1e3
            speed = _error(ev["tokens_per_s_per_user"], an["tokens_per_s_per_user"])
            aggregate = _error(ev["aggregate_tokens_per_s"], an["aggregate_tokens_per_s"])
            rows.append(GridRow(p.name, p.users, p.replicas, p.users * p.per_user,
                                ev["tokens_per_s_per_user"], an["tokens_per_s_per_user"], speed,
                                ev["aggregate_tokens_per_s"], an["aggregate_tokens_per_s"], aggregate,
                                ev["ttft_ms_p50"], an["ttft_ms_p50"], an["bound"], round(event_wall, 3),
                                round(analytic_ms, 3), reason(p, speed, aggregate, an["bound"])))
    return rows


def format_grid(rows: list[GridRow]) -> str:
    w = max(len(r.point) for r in rows)
    head = (f"{'point':<{w}} {'tok/s/user':>10} {'analytic':>9} {'err %':>7} {'aggregate':>10} {'analytic':>9} "
            f"{'err %':>7}  bound")
    lines = [head]
    for r in rows:
        lines.append(f"{r.point:<{w}} {r.event_tokens_per_s_per_user:>10.1f} {r.analytic_tokens_per_s_per_user:>9.1f} "
                     f"{r.speed_error_pct:>7.1f} {r.event_aggregate_tokens_per_s:>10.0f} "
                     f"{r.analytic_aggregate_tokens_per_s:>9.0f} {r.aggregate_error_pct:>7.1f}  {r.bound}")
        if r.reason:
            lines.append(f"{'':<{w}}   over {THRESHOLD_PCT:.0f}%: {r.reason}")
    worst_speed = max(abs(r.speed_error_pct) for r in rows)
    worst_agg = max(abs(r.aggregate_error_pct) for r in rows)
    event_s = sum(r.event_wall_s for r in rows)
    analytic_ms = sum(r.analytic_wall_ms for r in rows) / len(rows)
    lines += ["", f"{len(rows)} points: largest error {worst_speed:.1f}% on per-user speed, {worst_agg:.1f}% on "
                  f"aggregate throughput; event model {event_s:.1f} s in all, analytic {analytic_ms:.1f} ms a point "
                  f"(the first pays for planning)"]
    return "\n".join(lines)


def rows_json(rows: list[GridRow]) -> list[dict]:
    return [asdict(r) for r in rows]
