"""Links between wafers: specs, datacenter sites and the SimPy model of a link."""

from interconnect.link import Link
from interconnect.sites import SITES, Site, fibre_latency_ps, great_circle_km
from interconnect.spec import CS3_LINK, LinkSpec

__all__ = ["CS3_LINK", "Link", "LinkSpec", "SITES", "Site", "fibre_latency_ps", "great_circle_km"]
