"""Benchmark: 1,000 analytic estimates in one process, over a space around the fleet
scenario (replicas of the 70B 1-10, total rates of 50-5,000 requests/s, the five router
policies, 512- and 2,048-token prompts), as a sweep would ask for them.

Prints one JSON object: `points`, `wall_s`, `points_per_s`, `ms_per_point`,
`first_point_ms` (the first estimate plans the pipelines and pays for it) and `failed`.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace

from cluster.fleet.spec import ROUTER_POLICIES


def space():
    from scenarios.fleet import DEFAULT

    whole = sum(u.rate_per_s for u in DEFAULT.users)
    for count in range(1, 11):
        for rate in (50, 100, 200, 300, 500, 800, 1200, 2000, 3000, 5000):
            for policy in ROUTER_POLICIES:
                for prompt in (512, 2048):
                    yield replace(DEFAULT, replicas=(replace(DEFAULT.replicas[0], count=count), *DEFAULT.replicas[1:]),
                                  routers=tuple(replace(r, policy=policy) for r in DEFAULT.routers),
                                  users=tuple(replace(u, rate_per_s=rate * u.rate_per_s / whole, prompt_tokens=prompt)
                                              for u in DEFAULT.users))


def main(argv: list[str] | None = None) -> int:
    from cluster.analytic import estimate

    points = list(space())
    failed = 0
    t0 = time.perf_counter()
    first_ms = None
    for spec in points:
        t = time.perf_counter()
        try:
            estimate(spec)
        except Exception:  # a point the planner refuses counts, as a sweep would record it
            failed += 1
        if first_ms is None:
            first_ms = (time.perf_counter() - t) * 1e3
    wall = time.perf_counter() - t0
    print(json.dumps({"points": len(points), "failed": failed, "wall_s": round(wall, 3),
                      "points_per_s": round(len(points) / wall, 1), "ms_per_point": round(wall / len(points) * 1e3, 2),
                      "first_point_ms": round(first_ms, 1)}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
