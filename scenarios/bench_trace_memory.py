"""Benchmark: the driver's memory while it writes a big trace. Llama3.1-8B on one WSE-3 at
`--detail op` (about 350 spans a pass), 64 users with long outputs: over 10 million span
rows, run as a cold-started command, as a user runs it.

The writer spools each LP's record batches to disk as they come and lays them out at the
end from memory-mapped spools, so the driver's peak resident memory should not grow with
the trace: it must stay under 1 GB (`PEAK_RSS_LIMIT_MB`).

Prints one JSON object: `rows` (span rows written), `wall_s` (the command, start to exit),
`run_wall_s` (the run as the simulator times it), `peak_rss_mb` (the command's peak
resident memory, from getrusage of the child), `trace_mb`, `rows_per_s` and `under_limit`.
Flags: `--output-tokens N` (default 480: 64 x 481 passes, about 10.4 million rows), `--keep
DIR` (keep the trace there instead of a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEAK_RSS_LIMIT_MB = 1024
MIN_ROWS = 10_000_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scenarios.bench_trace_memory")
    parser.add_argument("--output-tokens", type=int, default=480)
    parser.add_argument("--keep", default=None, help="folder to keep the trace in")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.keep or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        trace = folder / "big.arrow"
        command = [sys.executable, "-m", "cluster.commands.cli", "run", "llama8b_one_wafer", "--detail", "op",
                   "--users", "64", "--prompt-tokens", "128", "--output-tokens", str(args.output_tokens),
                   "--quiet", "--trace", str(trace), "--json"]
        t0 = time.perf_counter()
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        wall_s = time.perf_counter() - t0
        if proc.returncode:
            print(proc.stderr.strip(), file=sys.stderr)
            return proc.returncode
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        trace_mb = sum(p.stat().st_size for p in folder.glob("big*.arrow")) / 1e6
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # ru_maxrss is KiB on Linux
    rows = summary["trace_rows"]
    print(json.dumps({
        "rows": rows,
        "wall_s": round(wall_s, 2),
        "run_wall_s": round(summary["wall_s"], 2),
        "rows_per_s": round(rows / summary["wall_s"]),
        "peak_rss_mb": round(peak_mb, 1),
        "peak_rss_limit_mb": PEAK_RSS_LIMIT_MB,
        "under_limit": peak_mb < PEAK_RSS_LIMIT_MB,
        "trace_mb": round(trace_mb, 1),
        "enough_rows": rows >= MIN_ROWS,
    }, sort_keys=True))
    return 0 if peak_mb < PEAK_RSS_LIMIT_MB else 1


if __name__ == "__main__":
    sys.exit(main())
