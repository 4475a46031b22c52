"""Datacenter sites and the latency of the fibre between them.

WAN latency = great-circle distance x route factor x fibre delay, plus the datacenter
hop at each end. Ignores: amplifier and regeneration delay, queueing in the carrier's
network, route diversity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EARTH_RADIUS_KM = 6371.0  # mean radius, IUGG
FIBRE_PS_PER_KM = 4_900_000  # FACTS "between datacenters": light in fibre 4.9-5 us/km
ROUTE_FACTOR = 1.3  # FACTS: fibre routes run about 1.3x the great-circle distance


@dataclass(frozen=True)
class Site:
    name: str
    latitude_deg: float
    longitude_deg: float


# FACTS "How Cerebras serves Llama 3.1": deployed datacenters named Santa Clara,
# Stockton, Dallas. Coordinates are the cities' centres (public gazetteer figures).
# Another datacenter is one more entry here.
SITES: dict[str, Site] = {
    s.name: s for s in (
        Site("santa-clara", 37.3541, -121.9552),
        Site("stockton", 37.9577, -121.2908),
        Site("dallas", 32.7767, -96.7970),
    )
}


def great_circle_km(a: Site, b: Site) -> float:
    """Haversine distance on a spherical Earth."""
    lat1, lon1, lat2, lon2 = map(math.radians, (a.latitude_deg, a.longitude_deg,
                                                b.latitude_deg, b.longitude_deg))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(h))


def fibre_latency_ps(a: Site, b: Site) -> int:
    """One-way propagation over a fibre route between two sites (0 within a site)."""
    if a.name == b.name:
        return 0
    return math.ceil(great_circle_km(a, b) * ROUTE_FACTOR * FIBRE_PS_PER_KM)
