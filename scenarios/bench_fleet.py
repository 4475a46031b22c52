"""Benchmark: the fleet scenario (64 + 3 wafers, 2,300 requests, stage detail) as a whole
cold-started command, as a user runs it.

Prints one JSON object: `wall_s` (the command, start to exit), `run_wall_s` (the run as the
simulator times it), `events`, `events_per_s`, `rounds`, `messages`, `requests_completed`,
`sim_time_s`, `peak_rss_mb` (the command's peak resident memory) and `trace_mb`. Any flag
after `--` goes to `wafersim run fleet` (e.g. `-- --backend ray --lps-per-actor site`).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    with tempfile.TemporaryDirectory() as folder:
        trace = Path(folder) / "fleet.arrow"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "cluster.commands.cli", "run", "fleet", "--trace", str(trace),
                               "--json", *extra], cwd=ROOT, capture_output=True, text=True)
        wall_s = time.perf_counter() - t0
        if proc.returncode:
            print(proc.stderr.strip(), file=sys.stderr)
            return proc.returncode
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        trace_mb = sum(p.stat().st_size for p in Path(folder).iterdir()) / 1e6
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    print(json.dumps({
        "wall_s": round(wall_s, 3),
        "run_wall_s": round(summary["wall_s"], 3),
        "events": summary["events"],
        "events_per_s": round(summary["events"] / summary["wall_s"]),
        "rounds": summary["rounds"],
        "messages": summary["messages"],
        "requests_completed": summary["requests_completed"],
        "sim_time_s": summary["sim_time_s"],
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "trace_mb": round(trace_mb, 1),
        "backend": summary["backend"],
    }, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
