"""The fleet command as a user runs it: the README's TOML example, flags over a file,
--dump-config, and bad input refused in one line."""

from __future__ import annotations

import json
import re

import pandas as pd
import pyarrow as pa
import pyarrow.ipc
import pytest

from tests.conftest import ROOT, run_cli, run_json


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    return re.search(r"<!-- fleet-example -->\n```toml\n(.*?)```", text, re.S).group(1)


def test_the_readme_cluster_runs(tmp_path):
    config = tmp_path / "two-sites.toml"
    config.write_text(readme_example())
    trace = tmp_path / "t.arrow"
    summary = run_json("run", "fleet", "--config", str(config), "--trace", str(trace))
    assert summary["requests_completed"] == 52 and summary["requests_rejected"] == 0
    assert set(summary["by_model"]) == {"llama3.1-8b", "llama3.1-70b"}
    assert summary["slo_ttft_ms"] == 200.0
    requests = pd.read_feather(tmp_path / "t.requests.arrow")
    # the 70B is served only by the shared pipeline in Stockton; the agents are in Santa Clara
    assert set(requests[requests["model"] == "llama3.1-70b"]["replica_site"]) == {"stockton"}
    meta = json.loads(pa.ipc.open_file(trace).schema.metadata[b"wafersim"])
    assert meta["cluster"]["name"] == "two-sites"


def test_flags_override_the_file_and_dump_config_round_trips(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(readme_example())
    trace = tmp_path / "never.arrow"
    dumped = run_cli("run", "fleet", "--config", str(config), "--replicas", "small=3", "--router", "most-free-kv",
                     "--requests", "10", "--dump-config", "--trace", str(trace)).stdout
    assert 'policy = "most-free-kv"' in dumped and "count = 3" in dumped
    again = tmp_path / "again.toml"
    again.write_text(dumped)
    assert run_cli("run", "fleet", "--config", str(again), "--dump-config").stdout == dumped
    assert not trace.exists()  # a dump runs nothing


@pytest.mark.parametrize("args,message", [
    (["--replicas", "0"], "--replicas: expected N or PIPELINE=N"),
    (["--router", "random"], "routers[0].policy: unknown policy 'random'"),
    (["--model", "llama3.1-405b"], "--model: llama3.1-405b is not served"),
    (["--rate", "-5"], "--rate: must be a finite number > 0"),
    (["--replicas", "²"], "--replicas: expected N or PIPELINE=N"),
    (["--requests", "1000000000000"], "at most 10,000,000 requests"),
    (["--time-scale", "1e12"], "is beyond the"),
    (["--arrivals", "nowhere.csv"], "users[0].arrivals: 'nowhere.csv' is neither"),
    (["--config", "missing.toml"], "missing.toml"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_bad_fleet_input_is_one_line(tmp_path, args, message):
    trace = tmp_path / "t.arrow"
    proc = run_cli("run", "fleet", *args, "--trace", str(trace), check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert not list(tmp_path.iterdir())


def test_a_bad_request_file_row_is_refused_by_number(tmp_path):
    requests = tmp_path / "requests.csv"
    requests.write_text("arrival_s,prompt_tokens,output_tokens\n0.0,64,8\n0.1,64,-3\n")
    proc = run_cli("run", "fleet", "--arrivals", str(requests), "--model", "llama3.1-8b", "--trace",
                   str(tmp_path / "t.arrow"), check=False)
    assert proc.returncode == 2 and "row 2: output_tokens" in proc.stderr


def test_totals_from_flags_are_shared_exactly():
    tomllib = pytest.importorskip("tomllib")

    dumped = run_cli("run", "fleet", "--requests", "7", "--rate", "90", "--dump-config").stdout
    users = tomllib.loads(dumped)["users"]
    assert sum(u.get("requests", 100) for u in users) == 7
    assert sum(u["rate_per_s"] for u in users) == pytest.approx(90)
