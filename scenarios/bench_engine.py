"""Benchmark: the engine against plain SimPy, and the peer serving workload from a cold start.

Prints one JSON object:
- the headline (70B, four wafers, default sites, 64 users, 512 prompt and 256 output
  tokens) in-process at layer detail: `wall_s`, `events`, `events_per_s`;
- plain SimPy timeouts in the same process: `raw_simpy_events_per_s`, and
  `simpy_ratio` = events_per_s / raw_simpy_events_per_s;
- the workload peer LLM-serving simulators are timed on (512 requests of 512 prompt and
  256 output tokens, Poisson at 2 requests/s, 70B on four wafers in one site) at
  `--detail stage`, timed as a whole command: `peer_workload_wall_s`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import simpy

from cluster.commands.scenario import RunOptions, ScenarioConfig, run_scenario

ROOT = Path(__file__).resolve().parent.parent


def raw_simpy_events_per_s(n_events: int = 1_000_000, processes: int = 64) -> float:
    """Plain SimPy: `processes` generators, each yielding integer timeouts."""
    env = simpy.Environment()
    per = n_events // processes

    def proc(env: simpy.Environment, step: int):
        for _ in range(per):
            yield env.timeout(step)

    for i in range(processes):
        env.process(proc(env, 1000 + i))
    t0 = time.perf_counter()
    env.run()
    return per * processes / (time.perf_counter() - t0)


def headline(tmp: Path, users: int, prompt: int, output: int) -> dict:
    cfg = ScenarioConfig("llama70b_four_wafers", "llama3.1-70b", 4,
                         ("santa-clara", "santa-clara", "stockton", "dallas"), users, prompt, output)
    return run_scenario(cfg, RunOptions(trace=str(tmp / "headline.arrow")))


def peer_workload(tmp: Path, requests: int) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "scenarios.llama70b_four_wafers", "--requests", str(requests),
           "--users", "64", "--rate", "2", "--prompt-tokens", "512", "--output-tokens", "256",
           "--sites", "santa-clara,santa-clara,santa-clara,santa-clara", "--detail", "stage",
           "--trace", str(tmp / "peer.arrow"), "--json"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=64)
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--output-tokens", type=int, default=256)
    p.add_argument("--peer-requests", type=int, default=512)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        raw = raw_simpy_events_per_s()
        run = headline(tmp, args.users, args.prompt_tokens, args.output_tokens)
        peer_wall, peer = peer_workload(tmp, args.peer_requests)
    print(json.dumps({
        "wall_s": round(run["wall_s"], 3),
        "events": run["events"],
        "events_per_s": round(run["events_per_s"]),
        "raw_simpy_events_per_s": round(raw),
        "simpy_ratio": round(run["events_per_s"] / raw, 3),
        "rounds": run["rounds"],
        "trace_rows": run["trace_rows"],
        "sim_time_s": run["sim_time_s"],
        "peer_workload_wall_s": round(peer_wall, 3),
        "peer_workload_events": peer["events"],
        "peer_workload_requests_completed": peer["requests_completed"],
        "peer_workload_sim_time_s": peer["sim_time_s"],
    }, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
