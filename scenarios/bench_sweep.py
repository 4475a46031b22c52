"""Benchmark: a 1,000-point analytic sweep of the fleet (10 replica counts x 10 rates x 5
router policies x 2 seeds) as a whole cold-started `wafersim sweep` command, as a user runs it.

Prints one JSON object: `points`, `ok`, `failed`, `wall_s` (the command, start to exit),
`points_per_s`, and `table_mb`. Any flag after `--` goes to `wafersim sweep` (e.g.
`-- --fidelity event --max-points 24` times event points on a local Ray instead).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SPEC = """\
base = "fleet"
fidelity = "analytic"

[grid]
"replicas[0].count" = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
"users[*].rate_per_s" = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]
"routers[*].policy" = ["round-robin", "least-outstanding", "nearest-site", "most-free-kv", "session-affinity"]
seed = [0, 1]
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    with tempfile.TemporaryDirectory() as folder:
        spec, out = Path(folder) / "bench.toml", Path(folder) / "out"
        spec.write_text(SPEC)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "cluster.commands.cli", "sweep", str(spec), "-o", str(out),
                               "--quiet", *extra], cwd=ROOT, capture_output=True, text=True)
        wall_s = time.perf_counter() - t0
        if proc.returncode:
            print(proc.stderr.strip(), file=sys.stderr)
            return proc.returncode
        import pyarrow.parquet as pq

        table = out / "results.parquet"
        status = pq.read_table(table, columns=["status"]).column("status").to_pylist()
        table_mb = table.stat().st_size / 1e6
    print(json.dumps({
        "points": len(status),
        "ok": status.count("ok"),
        "failed": len(status) - status.count("ok"),
        "wall_s": round(wall_s, 3),
        "points_per_s": round(len(status) / wall_s, 3),
        "table_mb": round(table_mb, 3),
    }, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
