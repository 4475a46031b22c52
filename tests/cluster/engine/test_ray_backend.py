"""The Ray backend gives the in-process result, bit for bit, on one node or two."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pytest

from cluster.commands.scenario import RunOptions, ScenarioConfig, run_scenario
from common.errors import ConfigError
from tests.conftest import ROOT

ray = pytest.importorskip("ray")

SITES_2 = ("santa-clara", "santa-clara", "stockton", "stockton")


def config(sites=SITES_2, **kw) -> ScenarioConfig:
    base = dict(scenario="test", model="llama3.1-70b", wafers=4, sites=sites, users=4,
                prompt_tokens=64, output_tokens=6, prefill_chunk_tokens=32, rate_per_s=60.0, requests=6)
    base.update(kw)
    return ScenarioConfig(**base)


def read(path: str) -> tuple[pa.Table, pa.Table]:
    spans = pa.ipc.open_file(path).read_all()
    requests = pa.ipc.open_file(path.replace(".arrow", ".requests.arrow")).read_all()
    return spans, requests


def test_ray_equals_inprocess_across_two_nodes(ray_cluster, tmp_path):
    """One LP per actor, pinned by site to two Ray nodes: the same tables, row for row."""
    cfg = config()
    local = run_scenario(cfg, RunOptions(trace=str(tmp_path / "local.arrow"), lps_per_partition=1))
    remote = run_scenario(cfg, RunOptions(trace=str(tmp_path / "ray.arrow"), backend="ray", lps_per_partition=1,
                                          backend_options={"placement": "by-site"}))
    assert remote["ray_nodes"] == 2
    assert remote["trace_pulled_bytes"] > 0  # stockton's actors spooled on the other node
    assert remote["rounds"] == local["rounds"] > 1  # windows depend on the grouping, never the backend
    for a, b in zip(read(str(tmp_path / "local.arrow")), read(str(tmp_path / "ray.arrow"))):
        assert a.equals(b)
    assert (tmp_path / "local.arrow").read_bytes() == (tmp_path / "ray.arrow").read_bytes()


def test_grouping_and_tiny_windows_change_nothing(ray_cluster, tmp_path):
    cfg = config(sites=("santa-clara", "santa-clara", "stockton", "dallas"))
    run_scenario(cfg, RunOptions(trace=str(tmp_path / "local.arrow")))
    run_scenario(cfg, RunOptions(trace=str(tmp_path / "ray3.arrow"), backend="ray", lps_per_partition=3,
                                 max_window_ps=500_000, backend_options={"placement": "spread"}))
    assert (tmp_path / "local.arrow").read_bytes() == (tmp_path / "ray3.arrow").read_bytes()
    assert (tmp_path / "local.requests.arrow").read_bytes() == (tmp_path / "ray3.requests.arrow").read_bytes()


def test_by_site_needs_a_node_for_every_site(ray_cluster, tmp_path):
    cfg = config(sites=("santa-clara", "santa-clara", "stockton", "dallas"))
    with pytest.raises(ConfigError, match="site:dallas"):
        run_scenario(cfg, RunOptions(trace=str(tmp_path / "t.arrow"), backend="ray", lps_per_partition=1,
                                     backend_options={"placement": "by-site"}))
    assert list(tmp_path.iterdir()) == []


def test_killed_wafer_actor_ends_the_run(ray_cluster, tmp_path):
    """ray.kill on a wafer's actor mid-run: one line naming it, exit 2, no trace, no actors left."""
    trace = tmp_path / "killed.arrow"
    proc = subprocess.Popen(
        [sys.executable, "-m", "scenarios.llama70b_four_wafers", "--backend", "ray", "--lps-per-actor", "1",
         "--address", ray_cluster.address, "--placement", "by-site", "--sites", "santa-clara*2,stockton*2",
         "--users", "32", "--output-tokens", "400", "--trace", str(trace)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    victim = None
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["name"].endswith(":wafer2")]
        victim = names[0] if names else None
        time.sleep(0.2)
    assert victim, "the run never created wafer2's actor"
    run_id = victim.split(":")[0]
    spools = Path(tempfile.gettempdir()).glob
    while not list(spools(f"wafersim-spool-{run_id}-*")) and time.monotonic() < deadline:
        time.sleep(0.2)  # the Stockton actors are up (their spool folders made): the rounds run
    assert list(spools(f"wafersim-spool-{run_id}-*")), "the Stockton actors never started"
    time.sleep(1.0)  # let it get going
    killed_at = time.monotonic()
    ray.kill(ray.get_actor(victim, namespace="wafersim"))
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - killed_at < 30
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "wafer2" in lines[0], err
    assert list(tmp_path.iterdir()) == []
    time.sleep(1.0)
    left = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(run_id)]
    assert left == []
    # the killed actor (on the Stockton node) never dropped its spool folder: the driver's task there did
    assert list(Path(tempfile.gettempdir()).glob(f"wafersim-spool-{run_id}-*")) == []


def test_ray_client_addresses_are_refused(tmp_path):
    """The actors connect back to the driver: a Ray Client driver (ray://) is not on the cluster."""
    with pytest.raises(ConfigError, match="ray://"):
        run_scenario(config(), RunOptions(trace=str(tmp_path / "t.arrow"), backend="ray",
                                          backend_options={"address": "ray://127.0.0.1:10001"}))
    assert list(tmp_path.iterdir()) == []


def test_a_refused_token_is_one_line_at_once(monkeypatch):
    """A Ray with token authentication that refuses this driver: one line saying what to
    set, before ray.init's twenty seconds of retries (checked by hand against `ray start
    --head` with RAY_AUTH_MODE=token; here the refusal is Ray's own exception, made)."""
    import ray._raylet
    from ray.exceptions import AuthenticationError

    from cluster.engine.backends import ray_connect

    def refuse(*args, **kwargs):
        raise AuthenticationError("RPC error: InvalidAuthToken")
    monkeypatch.setattr(ray._raylet, "GcsClient", refuse)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with pytest.raises(ConfigError, match="uses token authentication and refused this driver: set RAY_AUTH_MODE=token"):
        ray_connect._check_token("127.0.0.1:6379")
