"""`wafersim run fleet`: a cluster description (the scenario's own, or `--config FILE.toml`)
with the common knobs as flags over it. Flags win over the file; `--dump-config` prints the
description that would run, as TOML, and runs nothing."""

from __future__ import annotations

import argparse
import math
from dataclasses import replace

from cluster.commands.cli import FAULT_HELP, add_run_flags, parse_fault, report, run_options
from cluster.commands.common import Parser
from cluster.fleet.spec import ClusterSpec
from common.errors import ConfigError
from wafer import DETAILS


def fleet_parser(name: str, description: str) -> argparse.ArgumentParser:
    p = Parser(prog=f"wafersim run {name}", description=description)
    p.add_argument("--config", default=None, help="a cluster description in TOML (default: the scenario's own)")
    p.add_argument("--replicas", action="append", default=[], metavar="N|PIPELINE=N",
                   help="replicas of the first pipeline, or of the one named (repeatable)")
    p.add_argument("--router", default=None, help="every router's policy")
    p.add_argument("--arrivals", default=None, help="every population's arrivals: poisson, gamma, closed, "
                                                    "burst, or a request file")
    p.add_argument("--model", action="append", default=[],
                   help="serve only these models: their pipelines, replicas and users (repeatable)")
    p.add_argument("--rate", type=float, default=None, help="requests/s in all, shared as the populations' rates are")
    p.add_argument("--requests", type=int, default=None, help="requests in all, shared as the populations' are")
    p.add_argument("--users", type=int, default=None, help="closed-loop users per population")
    p.add_argument("--think-time-s", type=float, default=None, help="closed loop: mean think time")
    p.add_argument("--burstiness", type=float, default=None, help="gamma arrivals: the gaps' coefficient of variation")
    p.add_argument("--prompt-tokens", type=int, default=None)
    p.add_argument("--output-tokens", type=int, default=None)
    p.add_argument("--time-scale", type=float, default=None, help="stretch (>1) or compress (<1) arrival times")
    p.add_argument("--slo-ttft-ms", type=float, default=None)
    p.add_argument("--slo-tpot-ms", type=float, default=None)
    p.add_argument("--max-active", type=int, default=None, help="cap on requests a replica serves at once (0: bytes)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--detail", choices=DETAILS, default=None)
    p.add_argument("--fault", action="append", default=[], type=parse_fault, metavar="SPEC",
                   help=FAULT_HELP)
    p.add_argument("--dump-config", action="store_true", help="print the description as TOML and exit")
    p.add_argument("--fidelity", choices=("event", "analytic"), default="event",
                   help="event: simulate (the default); analytic: a closed-form steady-state estimate, no trace")
    add_run_flags(p)
    return p


def _shares(total: int, weights: list[int]) -> list[int]:
    """`total` split in proportion to `weights`, at least 1 each, summing to `total`: one
    each, then the rest by largest remainder (ties to the first)."""
    rest, whole = total - len(weights), sum(weights)
    raw = [rest * w / whole for w in weights]
    out = [1 + int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: (int(raw[i]) - raw[i], i))[:total - sum(out)]:
        out[i] += 1
    return out


def _only_models(spec: ClusterSpec, models: list[str]) -> ClusterSpec:
    from llm.config import resolve_model

    wanted = {resolve_model(m).name for m in models}
    served = {resolve_model(m).name for p in spec.pipelines for m in p.models}
    for m in sorted(wanted - served):
        raise ConfigError(f"--model: {m} is not served by this cluster; it serves {', '.join(sorted(served))}")
    pipes = tuple(p for p in spec.pipelines if wanted & {resolve_model(m).name for m in p.models})
    names = {p.name for p in pipes}
    return replace(spec, pipelines=pipes, replicas=tuple(r for r in spec.replicas if r.pipeline in names),
                   users=tuple(u for u in spec.users if resolve_model(u.model).name in wanted))


def apply_flags(spec: ClusterSpec, args: argparse.Namespace) -> ClusterSpec:
    """The description with the flags given laid over it."""
    if args.model:
        spec = _only_models(spec, args.model)
    replicas = list(spec.replicas)
    for item in args.replicas:
        pipeline, eq, count = item.rpartition("=")
        if not (count.isascii() and count.isdigit()) or int(count) <= 0:
            raise ConfigError(f"--replicas: expected N or PIPELINE=N with N > 0, got {item!r}")
        hits = [i for i, r in enumerate(replicas) if not eq or r.pipeline == pipeline][:1]
        if not hits:
            raise ConfigError(f"--replicas: no replicas of a pipeline {pipeline!r}")
        replicas[hits[0]] = replace(replicas[hits[0]], count=int(count))
    for flag, value in (("--users", args.users), ("--requests", args.requests),
                        ("--prompt-tokens", args.prompt_tokens), ("--output-tokens", args.output_tokens)):
        if value is not None and value < 1:  # the bounds above 1 are the cluster's, named there
            raise ConfigError(f"{flag}: must be >= 1, got {value}")
    users = list(spec.users)
    if args.requests is not None:
        if args.requests < len(users):
            raise ConfigError(f"--requests: must be at least one per population ({len(users)}), got {args.requests}")
        users = [replace(u, requests=n) for u, n in zip(users, _shares(args.requests, [u.requests for u in users]))]
    if args.rate is not None:
        if not (math.isfinite(args.rate) and args.rate > 0):
            raise ConfigError(f"--rate: must be a finite number > 0 requests/s, got {args.rate}")
        arrivals = args.arrivals or ""
        open_loop = [u for u in users if (arrivals or u.arrivals) in ("poisson", "gamma")]
        if not open_loop:
            raise ConfigError("--rate: no population has Poisson or gamma arrivals to take it")
        whole = sum(u.rate_per_s for u in open_loop)
        users = [replace(u, rate_per_s=args.rate * u.rate_per_s / whole) if u in open_loop else u for u in users]
    per_user = {"arrivals": args.arrivals, "users": args.users, "think_time_s": args.think_time_s,
                "burstiness_cv": args.burstiness, "prompt_tokens": args.prompt_tokens,
                "output_tokens": args.output_tokens}
    per_user = {k: v for k, v in per_user.items() if v is not None}
    users = [replace(u, **per_user) for u in users]
    routers = tuple(replace(r, policy=args.router) for r in spec.routers) if args.router else spec.routers
    top = {"time_scale": args.time_scale, "slo_ttft_ms": args.slo_ttft_ms, "slo_tpot_ms": args.slo_tpot_ms,
           "max_active": args.max_active, "seed": args.seed, "detail": args.detail}
    top = {k: v for k, v in top.items() if v is not None}
    return replace(spec, replicas=tuple(replicas), users=tuple(users), routers=routers,
                   faults=spec.faults + tuple(args.fault), **top)


def run_fleet_cli(name: str, default: ClusterSpec, description: str, argv: list[str] | None = None) -> int:
    from cluster.commands.scenario import run_cluster
    from cluster.fleet.toml import cluster_to_toml, load_cluster
    from cluster.fleet.validate import validate_cluster

    def run() -> tuple[dict | None, bool]:
        args = fleet_parser(name, description).parse_args(argv)
        spec = apply_flags(load_cluster(args.config) if args.config else default, args)
        validate_cluster(spec)
        if args.dump_config:
            print(cluster_to_toml(spec), end="")
            return None, False
        if args.fidelity == "analytic":  # no trace: the same summary, in closed form
            from cluster.analytic import estimate
            from cluster.analytic.report import format_estimate

            if args.price_kwh is not None or args.price_hour is not None:
                raise ConfigError("--price-kwh/--price-hour: the analytic tier estimates no energy; "
                                  "use --fidelity event")

            summary = estimate(spec)
            if args.json:
                return summary, True
            print(format_estimate(summary))
            return None, False
        return run_cluster(spec, run_options(args, spec.name, spec.seed)), args.json

    return report(run)
