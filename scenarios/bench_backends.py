"""Benchmark: the headline scenario on both backends, same seed, same trace.

Runs Llama3.1-70B on four wafers at the default sites (64 users, 512 prompt and 256
output tokens) in-process and on a local Ray, checks the traces are identical, and
prints one JSON object: `inprocess_wall_s`, `ray_wall_s` (start-up and teardown of the
actors and of the local Ray excluded: fixed costs, reported as `ray_startup_s` and
`ray_shutdown_s`), `rounds`, `events_per_round`, `round_wall_ms_p50`, `ray_ratio`, and
`ray_ratio_with_teardown` for those who count stopping Ray as part of the run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from cluster.commands.cli import SITE_GROUPS
from cluster.commands.scenario import RunOptions, ScenarioConfig, run_scenario


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=64)
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--output-tokens", type=int, default=256)
    p.add_argument("--lps-per-actor", default="site",
                   help="an integer, or 'site' (default): one actor per datacenter")
    p.add_argument("--detail", default="layer")
    p.add_argument("--address", default=None)
    args = p.parse_args(argv)
    lps_per_actor = SITE_GROUPS if args.lps_per_actor == "site" else int(args.lps_per_actor)
    cfg = ScenarioConfig("llama70b_four_wafers", "llama3.1-70b", 4,
                         ("santa-clara", "santa-clara", "stockton", "dallas"),
                         args.users, args.prompt_tokens, args.output_tokens, detail=args.detail)
    with tempfile.TemporaryDirectory() as d:
        local = run_scenario(cfg, RunOptions(trace=f"{d}/inprocess.arrow"))
        ray_run = run_scenario(cfg, RunOptions(trace=f"{d}/ray.arrow", backend="ray",
                                               lps_per_partition=lps_per_actor,
                                               backend_options={"address": args.address}))
        identical = Path(f"{d}/inprocess.arrow").read_bytes() == Path(f"{d}/ray.arrow").read_bytes()
    ray_wall = ray_run["wall_s"] - ray_run["ray_startup_s"] - ray_run["ray_shutdown_s"]
    print(json.dumps({
        "inprocess_wall_s": round(local["wall_s"], 3),
        "ray_wall_s": round(ray_wall, 3),
        "ray_startup_s": round(ray_run["ray_startup_s"], 3),
        "ray_shutdown_s": round(ray_run["ray_shutdown_s"], 3),
        "ray_sync_wall_s": round(ray_run["sync_wall_s"], 3),
        "rounds": ray_run["rounds"],
        "events": ray_run["events"],
        "events_per_round": round(ray_run["events"] / max(1, ray_run["rounds"]), 1),
        "round_wall_ms_p50": round(ray_run["round_wall_ms_p50"], 3),
        "ray_actors": ray_run["ray_actors"],
        "ray_nodes": ray_run["ray_nodes"],
        "ray_ratio": round(ray_wall / local["wall_s"], 3),
        "ray_ratio_with_teardown": round((ray_wall + ray_run["ray_shutdown_s"]) / local["wall_s"], 3),
        "lps_per_actor": args.lps_per_actor,
        "identical_trace": identical,
        "sim_time_s": ray_run["sim_time_s"],
        "actor_busy_s": ray_run["actor_busy_s"],
        "actor_events": ray_run["actor_events"],
    }, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
