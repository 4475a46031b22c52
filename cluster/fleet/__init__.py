"""Fleets: a cluster described as data (spec, TOML) and the one function that builds its LP graph."""
