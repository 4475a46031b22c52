"""A fleet: sixteen four-wafer Llama3.1-70B replicas (64 WSE-3) over Santa Clara, Stockton
and Dallas, three one-wafer Llama3.1-8B replicas, a router and users at each site.

Users send Poisson streams of 512-token prompts asking for 256 tokens (2,000 to the 70B,
300 to the 8B); each reaches its own site's router, which sends a request to the nearest
replica with room for its KV cache. Traced at stage detail. Every knob is a flag
(`--replicas`, `--router`, `--arrivals`, `--rate`, `--model`, ...), or write the whole
description in TOML (`--dump-config` prints this one to start from) and pass `--config`.
"""

import sys

from cluster.commands.fleet import run_fleet_cli
from cluster.fleet.spec import ClusterSpec, PipelineSpec, ReplicaSpec, RouterSpec, UserSpec

SITES = ("santa-clara", "stockton", "dallas")
L70, L8 = "llama3.1-70b", "llama3.1-8b"

DEFAULT = ClusterSpec(
    name="fleet",
    pipelines=(PipelineSpec("llama70b", (L70,), wafers=4), PipelineSpec("llama8b", (L8,), wafers=1)),
    replicas=(ReplicaSpec("llama70b", 16, SITES), ReplicaSpec("llama8b", 3, SITES)),
    routers=tuple(RouterSpec(site, site, "nearest-site") for site in SITES),
    users=(
        UserSpec("sc-70b", "santa-clara", L70, rate_per_s=80.0, requests=800),
        UserSpec("st-70b", "stockton", L70, rate_per_s=50.0, requests=500),
        UserSpec("da-70b", "dallas", L70, rate_per_s=70.0, requests=700),
        UserSpec("sc-8b", "santa-clara", L8, rate_per_s=10.0, requests=100),
        UserSpec("st-8b", "stockton", L8, rate_per_s=10.0, requests=100),
        UserSpec("da-8b", "dallas", L8, rate_per_s=10.0, requests=100),
    ),
    detail="stage",
)


def main(argv: list[str] | None = None) -> int:
    return run_fleet_cli("fleet", DEFAULT, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
