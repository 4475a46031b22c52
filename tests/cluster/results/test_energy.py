"""Energy from first principles: conservation, idle floors, peak ceilings, and what load does."""

from __future__ import annotations

import pandas as pd
import pytest

from cluster.commands.scenario import RunOptions, run_cluster
from cluster.fleet.spec import ClusterSpec, PipelineSpec, ReplicaSpec, RouterSpec, UserSpec
from common.units import PS_PER_S
from tests.conftest import run_cli, run_json
from wafer import WSE3

ONE_SITE = "santa-clara,santa-clara,santa-clara,santa-clara"


def tables(trace: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    return (pd.read_feather(trace.replace(".arrow", ".energy.arrow")),
            pd.read_feather(trace.replace(".arrow", ".requests.arrow")))


def test_energy_is_conserved_and_bounded(tmp_path):
    trace = str(tmp_path / "t.arrow")
    summary = run_json("run", "llama70b_four_wafers", "--users", "8", "--prompt-tokens", "64", "--output-tokens",
                       "16", "--trace", trace, "--price-kwh", "0.12", "--price-hour", "20")
    energy, requests = tables(trace)
    run_s = summary["sim_time_s"]
    assert energy["energy_j"].sum() == pytest.approx(summary["energy_j"], rel=1e-12)
    assert (energy["energy_j"] == energy["idle_j"] + energy["dynamic_j"]).all()
    assert (energy["energy_j"] >= energy["idle_w"] * run_s * (1 - 1e-12)).all()
    assert (energy["energy_j"] <= energy["peak_w"] * run_s).all()
    wafers = energy[energy["device"] == "wafer"]
    assert len(wafers) == 4 and (wafers["idle_w"] == WSE3.system_idle_w).all()
    assert (wafers["dynamic_j"] > 0).all()
    # every joule is charged to a request: every wafer worked for some
    assert requests["energy_j"].sum() == pytest.approx(summary["energy_j"], rel=1e-9)
    assert summary["joules_per_token"] == pytest.approx(summary["energy_j"] / (8 * 16))
    assert summary["avg_power_kw"] == pytest.approx(summary["energy_j"] / run_s / 1e3)
    kwh = summary["energy_j"] / 3.6e6
    usd = 0.12 * kwh + 20 * 4 * run_s / 3600
    assert summary["usd_per_million_tokens"] == pytest.approx(usd / (8 * 16) * 1e6)


def test_an_idle_replica_costs_its_idle_power(tmp_path):
    """Users in Santa Clara with nearest-site routing never reach the Dallas replica: its
    wafer draws exactly its idle power for the whole run, and nothing is charged to it."""
    spec = ClusterSpec(
        "idle", (PipelineSpec("p8", ("llama3.1-8b",), wafers=1),), (ReplicaSpec("p8", 2, ("santa-clara", "dallas")),),
        (UserSpec("u", "santa-clara", "llama3.1-8b", rate_per_s=50.0, requests=5, prompt_tokens=32,
                  output_tokens=4),), (RouterSpec("r", "santa-clara", "nearest-site"),), detail="stage")
    summary = run_cluster(spec, RunOptions(trace=str(tmp_path / "t.arrow")))
    energy, requests = tables(str(tmp_path / "t.arrow"))
    idle = energy.set_index("lp").loc["p8-1.wafer0"]
    busy = energy.set_index("lp").loc["p8-0.wafer0"]
    assert idle["dynamic_j"] == 0 and busy["dynamic_j"] > 0
    assert idle["energy_j"] == pytest.approx(WSE3.system_idle_w * summary["sim_time_s"], rel=1e-12)
    # the idle replica's energy is nobody's: the requests carry the rest
    assert requests["energy_j"].sum() == pytest.approx(summary["energy_j"] - idle["energy_j"], rel=1e-9)


def test_more_users_on_a_pipeline_that_is_not_full_lower_the_joules_per_token(tmp_path):
    """The idle floor is paid whatever the load; more users share it (and the pipeline's
    token rate grows almost in proportion while it is far from full)."""
    per_token = []
    for users in (1, 4, 16):
        s = run_json("run", "llama70b_four_wafers", "--sites", ONE_SITE, "--users", str(users), "--prompt-tokens",
                     "32", "--output-tokens", "16", "--detail", "stage", "--trace", str(tmp_path / f"{users}.arrow"))
        per_token.append(s["joules_per_token"])
    assert per_token[0] > 2 * per_token[1] > 4 * per_token[2] > 0


@pytest.mark.parametrize("args,message", [
    (["--price-kwh", "-1"], "--price-kwh: must be a finite number >= 0"),
    (["--price-hour", "inf"], "--price-hour: must be a finite number >= 0"),
    (["--price-kwh", "cheap"], "--price-kwh: invalid float value"),
    (["--spec", "system_idle_w=-5"], "system_idle_w: must be >= 0"),
    (["--spec", "system_busy_w=10"], "system_busy_w: must be >= system_idle_w"),
    (["--link", "energy_pj_per_bit=-1"], "energy_pj_per_bit: must be >= 0"),
])
def test_bad_prices_and_power_figures_are_refused(tmp_path, args, message):
    proc = run_cli("run", "llama70b_four_wafers", *args, "--trace", str(tmp_path / "t.arrow"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert not list(tmp_path.iterdir())


def test_run_time_is_what_idle_energy_scales_with(tmp_path):
    trace = str(tmp_path / "t.arrow")
    summary = run_json("run", "llama8b_one_wafer", "--users", "2", "--output-tokens", "4", "--trace", trace)
    energy, _ = tables(trace)
    wafer = energy[energy["device"] == "wafer"].iloc[0]
    spans = pd.read_feather(trace)
    assert wafer["idle_j"] == pytest.approx(WSE3.system_idle_w * spans["end_ps"].max() / PS_PER_S, rel=1e-12)
    assert summary["energy_j_by_site"] == pytest.approx({"santa-clara": summary["energy_j"]})


def test_h100_vs_wse3_prints_energy_and_cost_beside_speed():
    proc = run_cli("run", "h100_vs_wse3", "--model", "llama3.1-70b", "--users", "2", "--output-tokens", "8",
                   "--prompt-tokens", "32", "--price-kwh", "0.1", "--price-hour-wafer", "60", "--price-hour-gpu", "3",
                   "--json")
    import json
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    wse, gpu = (out["runs"][k] for k in sorted(out["runs"], reverse=True))  # "wse-3 x4", "h100 x8"
    assert wse["joules_per_token"] > 0 and gpu["joules_per_token"] > 0
    assert out["wse3_over_h100_joules_per_token"] == pytest.approx(wse["joules_per_token"] / gpu["joules_per_token"])
    assert wse["usd_per_million_tokens"] > 0 and gpu["usd_per_million_tokens"] > 0
    assert "energy per token, wafer over GPU" in proc.stdout


def test_validate_reports_energy_rows_as_predictions():
    from cluster.commands.validate import energy_rows

    table = {"wse-3": {1: 100.0, 64: 3.0}, "h100": {1: 150.0, 64: 2.0}}
    one, best = energy_rows((), table)
    assert one.role == best.role == "prediction"
    assert one.simulated == pytest.approx(100 / 150) and best.simulated == pytest.approx(3.0 / 2.0)
    assert one.error_pct == pytest.approx((100 / 150 * 3 - 1) * 100, abs=0.01)


def test_the_printed_summary_shows_energy_and_a_later_price_keeps_the_run_s(tmp_path):
    trace = str(tmp_path / "t.arrow")
    printed = run_cli("run", "llama8b_one_wafer", "--users", "2", "--output-tokens", "4", "--trace", trace,
                      "--price-hour", "2").stdout
    assert "joules_per_token" in printed and "usd_per_million_tokens" in printed
    import json
    both = json.loads(run_cli("summary", trace, "--price-kwh", "0.1", "--json").stdout)
    assert both["usd_per_kwh"] == 0.1 and both["usd_per_device_hour"] == 2.0


def test_the_analytic_tier_refuses_prices_it_cannot_use(tmp_path):
    proc = run_cli("run", "llama70b_four_wafers", "--fidelity", "analytic", "--price-kwh", "0.1", check=False)
    assert proc.returncode == 2 and "analytic tier estimates no energy" in proc.stderr
