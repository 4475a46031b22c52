"""Link faults from first principles: an outage on the only path delays the tokens by the
wait it causes, a degraded link slows only what crosses it, bad specs are one line."""

from __future__ import annotations

import pandas as pd
import pytest

from interconnect.faults import LinkFault, bandwidth_share, wire_start_ps
from tests.conftest import run_cli, run_json

ONE_SITE = ["--sites", "santa-clara,santa-clara,santa-clara,santa-clara"]
ONE_USER = ["--users", "1", "--output-tokens", "16", "--prompt-tokens", "64", *ONE_SITE]
LINK = "link:wafer1->wafer2"


def test_outages_and_degradations_compose():
    down = (LinkFault("link-down", 100, 200), LinkFault("link-down", 200, 300), LinkFault("link-degraded", 0, 50, 0.5))
    assert wire_start_ps(down, 50) == 50 and wire_start_ps(down, 150) == 300 and wire_start_ps(down, 300) == 300
    assert bandwidth_share(down, 10) == 0.5 and bandwidth_share(down, 60) == 1.0


def test_a_link_down_on_the_only_path_delays_the_tokens_by_the_wait(tmp_path):
    """One user, a pipeline with one path: the pass that meets the outage waits for the
    link to come back, and every later token of the request is that much later."""
    clean = run_json("run", "llama70b_four_wafers", *ONE_USER, "--trace", str(tmp_path / "clean.arrow"))
    faulty = run_json("run", "llama70b_four_wafers", *ONE_USER, "--fault", f"link-down:{LINK}:at_ms=40:for_ms=50",
                      "--trace", str(tmp_path / "faulty.arrow"))
    spans = pd.read_feather(tmp_path / "faulty.arrow")
    waits = spans[(spans.lp == LINK) & (spans.kind == "queue")]
    assert len(waits) == 1  # one pass met the outage
    wait_ps = int(waits.end_ps.iloc[0] - waits.start_ps.iloc[0])
    assert int(waits.end_ps.iloc[0]) == 90 * 10**9  # it left when the link came back
    assert 0 < wait_ps <= 50 * 10**9
    clean_req = pd.read_feather(tmp_path / "clean.requests.arrow")
    faulty_req = pd.read_feather(tmp_path / "faulty.requests.arrow")
    assert int(faulty_req.finish_ps.iloc[0] - clean_req.finish_ps.iloc[0]) == wait_ps
    fault = spans[spans.kind == "fault"]
    assert list(fault.lp) == [LINK] and list(fault.name) == ["link-down"]
    assert faulty["requests_completed"] == clean["requests_completed"] == 1


def test_a_degraded_link_slows_only_the_traffic_that_crosses_it(tmp_path):
    run_cli("run", "llama70b_four_wafers", *ONE_USER, "--trace", str(tmp_path / "clean.arrow"))
    run_cli("run", "llama70b_four_wafers", *ONE_USER, "--fault", f"link-degraded:{LINK}:at_ms=0:for_ms=1000:"
            "bandwidth=0.25", "--trace", str(tmp_path / "slow.arrow"))

    def wire_ps(path):
        spans = pd.read_feather(path)
        links = spans[spans.kind == "link"]
        return (links.end_ps - links.start_ps).groupby(links.lp, observed=True).sum()

    clean, slow = wire_ps(tmp_path / "clean.arrow"), wire_ps(tmp_path / "slow.arrow")
    for lp in clean.index:
        if lp == LINK:
            assert slow[lp] == pytest.approx(4 * clean[lp], rel=1e-6)
        else:
            assert slow[lp] == clean[lp]


@pytest.mark.parametrize("fault,message", [
    ("link-down:link:wafer9->wafer2:at_ms=1:for_ms=2", "faults[0].target: no link 'link:wafer9->wafer2'"),
    ("link-down:link:wafer1->wafer2:at_ms=1", "expected KIND:LINK:at_ms=A:for_ms=D"),
    ("link-melted:link:wafer1->wafer2:at_ms=1:for_ms=2", "unknown fault kind 'link-melted'"),
    ("link-degraded:link:wafer1->wafer2:at_ms=1:for_ms=2:bandwidth=0", "faults[0].bandwidth: must be in (0, 1]"),
    ("link-down:link:wafer1->wafer2:at_ms=-1:for_ms=2", "faults[0].at_ms"),
    ("link-down:link:wafer1->wafer2:at_ms=1:for_ms=2:speed=3", "unknown field 'speed'"),
])
def test_bad_faults_are_one_line(tmp_path, fault, message):
    proc = run_cli("run", "llama70b_four_wafers", *ONE_USER, "--fault", fault, "--trace", str(tmp_path / "t.arrow"),
                   check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert not list(tmp_path.iterdir())


def test_the_analytic_tier_refuses_faults():
    proc = run_cli("run", "llama70b_four_wafers", "--fidelity", "analytic", "--fault",
                   f"link-down:{LINK}:at_ms=1:for_ms=2", check=False)
    assert proc.returncode == 2 and "without faults" in proc.stderr
