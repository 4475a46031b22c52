"""A cluster described as data: sites, pipelines, replicas, routers, users and links.

The same description is these frozen dataclasses and a TOML file (`cluster.fleet.toml`);
`cluster.fleet.build` turns it into the LP graph. Figures a user writes are in the units
people think in (seconds, milliseconds, requests per second); the builder converts them
to integer picoseconds once, at the edge. Nothing here imports Ray or SimPy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from interconnect import CS3_LINK, LinkSpec
from interconnect.spec import WAN_PJ_PER_BIT

ROUTER_POLICIES = ("round-robin", "least-outstanding", "nearest-site", "most-free-kv", "session-affinity")
ARRIVALS = ("poisson", "gamma", "closed", "burst")  # or a path to a request file (CSV, Arrow, Parquet)


@dataclass(frozen=True)
class SiteSpec:
    """A datacenter and how many wafers it has room for (0: as many as are placed there)."""

    name: str
    wafers: int = 0


@dataclass(frozen=True)
class PipelineSpec:
    """One kind of replica: a model (or several sharing the same wafers) pipelined over
    `wafers` stages. `stage_sites` puts each stage in a datacenter; empty: every stage in
    the replica's own site. On a GPU device (`h100`) the pipeline is `gpus` tensor-parallel
    GPUs per DGX node in `dtype`, over as many nodes as the model needs."""

    name: str
    models: tuple[str, ...]
    wafers: int = 1
    device: str = "wse-3"
    stage_sites: tuple[str, ...] = ()
    gpus: int = 1
    dtype: str = "fp16"


@dataclass(frozen=True)
class ReplicaSpec:
    """`count` replicas of a pipeline, placed over `sites` in turn (the site of a replica is
    where its frontend and, unless its pipeline says otherwise, its stages are)."""

    pipeline: str
    count: int = 1
    sites: tuple[str, ...] = ()


@dataclass(frozen=True)
class RouterSpec:
    name: str
    site: str
    policy: str = "round-robin"


@dataclass(frozen=True)
class UserSpec:
    """A population of users at a site asking one model.

    `arrivals`: "poisson" (rate_per_s), "gamma" (rate_per_s, burstiness_cv: the gaps'
    coefficient of variation, 1 is Poisson, above 1 bursty), "closed" (`users` users, each
    sending its next request `think_time_s` (exponential mean) after the last one ends),
    "burst" (every request at t=0), or the path of a request file (its rows may name their
    own model, site and session). Random streams are named, never numbered: arrivals come
    from "arrivals:NAME" unless `arrivals_stream` names another.
    `requests` caps the requests sent in all. `router`: which router they reach (empty:
    the nearest). `sessions` > 0 gives each request a session id drawn from that many
    (what session affinity routes by)."""

    name: str
    site: str
    model: str
    arrivals: str = "poisson"
    rate_per_s: float = 1.0
    burstiness_cv: float = 1.0
    users: int = 1
    think_time_s: float = 0.0
    requests: int = 100
    prompt_tokens: int = 512
    output_tokens: int = 256
    router: str = ""
    sessions: int = 0
    arrivals_stream: str = ""  # the name of its arrivals' random stream (default: "arrivals:NAME")


# FACTS "system I/O" gives the wafer's 12 x 100 GbE; between sites we assume the same
# ports reach a carrier's wavelength, and add one switch hop at each end to the fibre.
WAN_LINK = LinkSpec(lanes=CS3_LINK.lanes, lane_bits_per_s=CS3_LINK.lane_bits_per_s,
                    latency_ps=2 * CS3_LINK.latency_ps, energy_pj_per_bit=WAN_PJ_PER_BIT)


@dataclass(frozen=True)
class LinksSpec:
    """`intra_site`: between wafers in one hall (and a router or frontend to a wafer
    there). `wan`: between sites, its `latency_ps` added to the fibre's propagation."""

    intra_site: LinkSpec = CS3_LINK
    wan: LinkSpec = WAN_LINK


@dataclass(frozen=True)
class FaultSpec:
    """A fault in the simulated cluster, from `at_ms` on. On a link (`target` names the link
    LP, e.g. "link:wafer1->wafer2"), for `for_ms`: `link-down` (it carries nothing;
    transfers wait), `link-degraded` (it keeps `bandwidth` of its bandwidth), `link-flap`
    (down for the first half of every `period_ms`). On devices, for good (no `for_ms`):
    `wafer-lost` (`target` names a wafer or GPU stage LP, e.g. "llama70b-0.wafer1") and
    `site-lost` (`target` names a datacenter: every device there); the replicas they hold
    fail their requests, which a router retries on the replicas left."""

    kind: str
    target: str
    at_ms: float
    for_ms: float = 0.0
    bandwidth: float = 1.0
    period_ms: float = 0.0


@dataclass(frozen=True)
class ClusterSpec:
    """A whole simulated cluster. `max_active`: a replica's cap on requests served at once
    (0: admission by KV-cache bytes alone). SLOs feed goodput (0: no SLO)."""

    name: str
    pipelines: tuple[PipelineSpec, ...]
    replicas: tuple[ReplicaSpec, ...]
    users: tuple[UserSpec, ...]
    routers: tuple[RouterSpec, ...] = ()
    sites: tuple[SiteSpec, ...] = ()
    links: LinksSpec = field(default_factory=LinksSpec)
    seed: int = 0
    detail: str = "stage"
    prefill_chunk_tokens: int = 128
    max_active: int = 0
    time_scale: float = 1.0
    slo_ttft_ms: float = 0.0
    slo_tpot_ms: float = 0.0
    faults: tuple[FaultSpec, ...] = ()
