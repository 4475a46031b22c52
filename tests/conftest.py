"""Shared helpers: run a scenario the way a user does, read its trace with pandas."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SMALL = ["--users", "4", "--prompt-tokens", "64", "--output-tokens", "8", "--prefill-chunk", "32"]


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "cluster.commands.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


def run_json(*args: str) -> dict:
    return json.loads(run_cli(*args, "--json").stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def headline_small(tmp_path_factory) -> dict:
    """The headline scenario, small, at the default placement and layer detail."""
    path = tmp_path_factory.mktemp("headline") / "run.arrow"
    return run_json("run", "llama70b_four_wafers", *SMALL, "--trace", str(path))


@pytest.fixture(scope="session")
def ray_cluster():
    """One Ray for the session: two nodes on this machine, one per simulated site."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"site:santa-clara": 1}, "include_dashboard": False,
        "object_store_memory": 100 * 1024 * 1024})
    cluster.add_node(num_cpus=1, resources={"site:stockton": 1}, object_store_memory=100 * 1024 * 1024)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="wafersim", log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()
