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


def test_a_flap_is_down_for_the_first_half_of_each_period_of_its_window():
    flap = (LinkFault("link-flap", 100, 350, period_ps=100),)  # down [100,150) [200,250) [300,350)
    assert [wire_start_ps(flap, t) for t in (99, 100, 149, 150, 199, 230, 320, 350)] == \
        [99, 150, 150, 150, 199, 250, 350, 350]
    with pytest.raises(ValueError, match="period"):
        LinkFault("link-down", 0, 10, period_ps=4)


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


def test_a_flapping_link_delays_only_what_crosses_it_and_only_in_its_down_halves(tmp_path):
    """Down for the first half of every period of the window: a transfer on the flapping
    link never starts in a down half (one ready then waits for the next up edge); the
    other links' wire time is the clean run's."""
    at_ps, for_ps, period_ps = 10 * 10**9, 60 * 10**9, 4 * 10**9
    run_cli("run", "llama70b_four_wafers", *ONE_USER, "--trace", str(tmp_path / "clean.arrow"))
    run_cli("run", "llama70b_four_wafers", *ONE_USER, "--fault", f"link-flap:{LINK}:at_ms=10:for_ms=60:period_ms=4",
            "--trace", str(tmp_path / "flap.arrow"))
    spans, clean = pd.read_feather(tmp_path / "flap.arrow"), pd.read_feather(tmp_path / "clean.arrow")
    mine = spans[spans.lp == LINK]
    starts = mine[mine.kind == "link"].start_ps
    in_window = starts[(starts >= at_ps) & (starts < at_ps + for_ps)]
    assert len(in_window) and ((in_window - at_ps) % period_ps >= period_ps // 2).all()
    waits = mine[mine.kind == "queue"]
    assert len(waits) and ((waits.end_ps - at_ps) % period_ps == period_ps // 2).all()
    assert spans[spans.kind == "fault"][["lp", "name", "start_ps", "end_ps"]].astype(str).values.tolist() == \
        [[LINK, "link-flap", str(at_ps), str(at_ps + for_ps)]]
    others = spans[(spans.kind == "queue") & (spans.lp.astype(str).str.startswith("link:")) & (spans.lp != LINK)]
    assert others.empty

    def wire_ps(s):
        links = s[s.kind == "link"]
        return (links.end_ps - links.start_ps).groupby(links.lp, observed=True).sum()
    assert wire_ps(spans).to_dict() == wire_ps(clean).to_dict()


def test_a_lost_wafer_with_no_router_fails_its_requests_with_the_reason(tmp_path):
    summary = run_json("run", "llama70b_four_wafers", "--users", "4", "--output-tokens", "64", "--prompt-tokens",
                       "64", *ONE_SITE, "--fault", "wafer-lost:wafer2:at_ms=20", "--trace", str(tmp_path / "t.arrow"))
    req = pd.read_feather(tmp_path / "t.requests.arrow")
    assert list(req.status) == ["failed"] * 4 and set(req.reason) == {"wafer wafer2 lost at 20 ms"}
    assert (req.finish_ps == 20 * 10**9).all() and (req.tokens < req.output_tokens).all()
    assert summary["requests_failed"] == 4 and summary["requests_completed"] == 0
    spans = pd.read_feather(tmp_path / "t.arrow")
    assert spans[spans.name == "wafer-lost"].lp.tolist() == ["wafer2"]


def test_a_loss_after_the_last_request_finishes_changes_nothing(tmp_path):
    run_cli("run", "llama70b_four_wafers", *ONE_USER, "--trace", str(tmp_path / "clean.arrow"))
    run_cli("run", "llama70b_four_wafers", *ONE_USER, "--fault", "wafer-lost:wafer2:at_ms=5000",
            "--trace", str(tmp_path / "late.arrow"))
    for table in ("", ".requests", ".tokens"):
        clean, late = (pd.read_feather(tmp_path / f"{name}{table}.arrow") for name in ("clean", "late"))
        # Compared by value: the faulty run's name dictionary holds the fault's names, unused.
        pd.testing.assert_frame_equal(clean.astype(str), late.astype(str))


def test_a_lost_wafer_stays_lost(tmp_path):
    proc = run_cli("run", "llama70b_four_wafers", *ONE_USER, "--fault", "wafer-lost:wafer2:at_ms=1:for_ms=2",
                   "--trace", str(tmp_path / "t.arrow"), check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "a lost device stays lost" in proc.stderr
