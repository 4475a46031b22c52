"""Benchmark: how the Ray backend scales with actors on the fleet scenario.

Runs the fleet (scenarios.fleet, flags after `--` change it, e.g. `-- --requests 300
--detail layer`) in-process and on Ray with about 1, 2, 4, 8 and 16 actors (`--actors`),
each a cold `wafersim run` command, and prints one JSON object: per row the actors Ray
got (LPs are grouped per site, so the count is approximate), rounds, round p50 (ms),
events per actor per round, run time (start-up excluded), start-up, the driver's peak
memory and the largest actor's, each actor's busy seconds and events, and the speed-up
over in-process. `--weak` adds the weak-scaling line: replicas and actors doubled
together from `--weak-base` replicas and 1 actor.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from scenarios.fleet import DEFAULT

ROOT = Path(__file__).resolve().parent.parent


def lps_in_fleet(replicas: int) -> tuple[int, int]:
    """(LPs, sites) of the default fleet with `replicas` 70B replicas: per 70B replica a
    frontend, 4 wafers and 4 links; per 8B replica a frontend and a wafer; users and routers."""
    sites = len({s for r in DEFAULT.routers for s in [r.site]})
    eights = sum(r.count for r in DEFAULT.replicas[1:])
    return replicas * 9 + eights * 2 + len(DEFAULT.users) + len(DEFAULT.routers), sites


def run(extra: list[str], backend: str, actors: int | str | None, replicas: int) -> dict:
    """`actors`: about how many (LPs are cut into groups of equal size, never across a
    site), or "site": one actor per datacenter."""
    args = ["--replicas", str(replicas), *extra]
    if backend == "ray":
        lps, sites = lps_in_fleet(replicas)
        per_actor = "site" if actors == "site" else max(1, math.ceil(lps / max(int(actors or 1), sites)))
        args += ["--backend", "ray", "--lps-per-actor", str(per_actor)]
    with tempfile.TemporaryDirectory() as d:
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        proc = subprocess.run([sys.executable, "-m", "cluster.commands.cli", "run", "fleet", *args, "--quiet",
                               "--trace", f"{d}/t.arrow", "--json"], cwd=ROOT, capture_output=True, text=True)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode:
        raise SystemExit(proc.stderr.strip())
    s = json.loads(proc.stdout.strip().splitlines()[-1])
    run_s = s["wall_s"] - s["setup_wall_s"]
    got = s.get("ray_actors", 1)
    return {"backend": backend, "replicas": replicas, "actors": got, "rounds": s["rounds"],
            "round_ms_p50": s["round_wall_ms_p50"], "events": s["events"],
            "events_per_actor_per_round": round(s["events"] / got / max(1, s["rounds"])),
            "run_s": round(run_s, 3), "startup_s": round(s.get("ray_startup_s", 0.0), 3),
            "peak_rss_mb": round(max(peak, before) / 1024, 1),
            "actor_peak_rss_mb_max": max(s.get("actor_peak_rss_mb") or [0.0]),
            "actor_busy_s": s.get("actor_busy_s"), "actor_events": s.get("actor_events")}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--actors", default="site,4,8,16", help="a comma list of actor counts; 'site': one per datacenter")
    p.add_argument("--replicas", type=int, default=DEFAULT.replicas[0].count)
    p.add_argument("--weak", action="store_true")
    p.add_argument("--weak-base", type=int, default=2)
    args = p.parse_args(own)
    base = run(extra, "inprocess", None, args.replicas)
    rows = [base] + [run(extra, "ray", n if n == "site" else int(n), args.replicas) for n in args.actors.split(",")]
    for row in rows:
        row["speedup"] = round(base["run_s"] / row["run_s"], 3) if row["run_s"] else None
    out = {"strong": rows}
    if args.weak:
        weak, n = [], 1
        while n <= max(int(a) for a in args.actors.split(",") if a != "site"):
            weak.append(run(extra, "ray", n, args.weak_base * n))
            n *= 2
        out["weak"] = weak
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
