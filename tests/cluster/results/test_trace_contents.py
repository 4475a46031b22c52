"""What a whole run's trace says, read as an analyst reads it: links busy apart from in
flight, regions that never overlap, and every constant the run used in its metadata."""

import hashlib
import json

import numpy as np
import pyarrow as pa
import pytest

from cluster.commands.scenario import RunOptions, ScenarioConfig, run_scenario
from cluster.results.loader import open_trace
from cluster.results.summary import summarize
from gpu import GpuSpec
from gpu.spec import CALIBRATION_FILE as GPU_CALIBRATION
from interconnect import LinkSpec
from wafer import WaferSpec
from wafer.spec import CALIBRATION_FILE as WAFER_CALIBRATION

WAN = ScenarioConfig("wan", "llama3.1-70b", 4, ("santa-clara", "santa-clara", "stockton", "dallas"), 4, 64, 8,
                     detail="layer", link_overrides=(("lanes", 4),))


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    path = tmp_path_factory.mktemp("wan") / "t.arrow"
    summary = run_scenario(WAN, RunOptions(trace=str(path)))
    return summary, open_trace(path)


def test_link_and_flight_tile_each_transfer(wan):
    """Per link, transfers in order: busy [start, start + serialization), then flight up to
    the arrival; the wire carries one at a time."""
    _, t = wan
    spans = t.spans
    for lp, device in t.meta["resolved"]["links"].items():
        spec = LinkSpec(**device)
        mine = spans[(spans.lp == lp) & spans.kind.isin(["link", "flight"])]
        busy, flight = mine[mine.kind == "link"], mine[mine.kind == "flight"]
        assert len(busy) == len(flight) > 0 and list(mine.kind) == ["link", "flight"] * len(busy)
        b0, b1 = busy.start_ps.to_numpy(), busy.end_ps.to_numpy()
        f0, f1 = flight.start_ps.to_numpy(), flight.end_ps.to_numpy()
        assert (b1 == f0).all() and (f1 - f0 == spec.latency_ps).all()
        assert (b1 - b0 == [spec.serialization_ps(int(n)) for n in busy["bytes"]]).all()
        assert (busy["bytes"].to_numpy() == flight["bytes"].to_numpy()).all()
        assert (b1[:-1] <= b0[1:]).all()


def test_a_wan_links_busy_time_is_far_below_the_run(wan):
    """Summed, a WAN link's old transfer spans came to about twice the run; its wire is
    busy for a sliver of it. link_ms_per_token keeps counting both parts."""
    summary, t = wan
    spans = t.spans
    run_ps = int(spans.end_ps.max())
    wan_link = "link:wafer2->wafer3"  # Stockton to Dallas: 14 ms of fibre
    mine = spans[spans.lp == wan_link]
    busy = mine[mine.kind == "link"]
    on_link = mine[mine.kind.isin(["link", "flight"])]
    assert int((on_link.end_ps - on_link.start_ps).sum()) > run_ps  # transfers overlap in flight
    busy_ps = int((busy.end_ps - busy.start_ps).sum())
    assert busy_ps < run_ps / 1000
    shares = summary["link_busy_share_by_link"]
    assert shares[wan_link] == pytest.approx(busy_ps / run_ps)
    assert summary["link_busy_share"] == max(shares.values()) < 0.01
    decode = on_link[on_link.phase == "decode"]
    tokens = int((t.requests.output_tokens - 1).sum())
    assert summary["link_ms_per_token_by_link"][wan_link] == pytest.approx(
        int((decode.end_ps - decode.start_ps).sum()) / tokens / 1e9)
    assert summary["link_share_of_tpot"] > 0.9
    assert summarize(t.path)["link_busy_share"] == summary["link_busy_share"]


def test_every_layer_span_has_a_region_that_never_overlaps(wan):
    _, t = wan
    compute = t.spans[t.spans.kind == "compute"]
    assert compute.region.notna().all() and compute.layer.notna().sum() > 0
    assert t.spans[t.spans.kind != "compute"].region.isna().all()
    for (lp, region), group in compute.groupby(["lp", "region"], observed=True):
        order = np.argsort(group.start_ps.to_numpy(), kind="stable")
        start, end = group.start_ps.to_numpy()[order], group.end_ps.to_numpy()[order]
        assert (end[:-1] <= start[1:]).all(), (lp, region)
    plan = t.meta["plan"]
    for stage, units in enumerate(plan):
        mine = compute[compute.lp == f"wafer{stage}"]
        assert sorted(mine.region.unique()) == list(range(len(units)))
        assert set(zip(mine.region, mine.name)) <= {(j, name) for j, name in enumerate(units)}


def test_resolved_metadata_rebuilds_every_spec_the_run_used(wan):
    _, t = wan
    resolved = json.loads(pa.ipc.open_file(str(t.path)).schema.metadata[b"wafersim"])["resolved"]
    assert resolved == t.meta["resolved"]
    (device,) = resolved["devices"]
    assert device["type"] == "WaferSpec" and device["lps"] == [f"wafer{i}" for i in range(4)]
    assert WaferSpec(**device["spec"]) == WAN.device_spec()
    calibration = resolved["calibration"]["wafer/calibration.json"]
    assert calibration["sha256"] == hashlib.sha256(WAFER_CALIBRATION.read_bytes()).hexdigest()
    assert calibration["constants"] == json.loads(WAFER_CALIBRATION.read_text())["constants"]
    # ... and the spec the run used carries them (the lines above only compare the file with itself)
    assert {k: device["spec"][k] for k in calibration["constants"]} == calibration["constants"]
    links = {lp: LinkSpec(**spec) for lp, spec in resolved["links"].items()}
    assert set(links) == {f"link:wafer{i}->wafer{(i + 1) % 4}" for i in range(4)}
    assert {spec.lanes for spec in links.values()} == {4}  # the --link override, applied
    assert links["link:wafer2->wafer3"].latency_ps > 10**10  # the fibre to Dallas is in it
    assert LinkSpec(**resolved["network"]["wan"]).lanes == 4


def test_resolved_metadata_of_a_gpu_run(tmp_path):
    cfg = ScenarioConfig("g", "llama3.1-8b", 1, ("santa-clara",), 1, 32, 2, device="h100", detail="stage",
                         spec_overrides=(("idle_w", 80.0),))
    run_scenario(cfg, RunOptions(trace=str(tmp_path / "g.arrow")))
    resolved = open_trace(tmp_path / "g.arrow").meta["resolved"]
    (device,) = resolved["devices"]
    assert device["type"] == "GpuSpec" and GpuSpec(**device["spec"]) == cfg.device_spec()
    assert GpuSpec(**device["spec"]).idle_w == 80.0
    assert set(resolved["calibration"]) == {"gpu/calibration.json"}
    assert resolved["calibration"]["gpu/calibration.json"]["sha256"] == \
        hashlib.sha256(GPU_CALIBRATION.read_bytes()).hexdigest()
