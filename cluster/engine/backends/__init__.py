"""Backends run partitions: `inprocess` here, `ray` in actors. Only ray_backend imports ray."""

BACKENDS = ("inprocess", "ray")
