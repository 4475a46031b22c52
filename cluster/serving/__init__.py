"""Serving: pipeline plans, the LP recipes for devices and links, replica frontends, routers, users and workloads."""
