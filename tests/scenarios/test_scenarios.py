"""What a user does: run a scenario command, open the trace with pandas, check the physics."""

import json

import pandas as pd
import pyarrow as pa
import pyarrow.ipc
import pytest

from cluster.results.summary import summarize
from interconnect import CS3_LINK, SITES, fibre_latency_ps
from tests.conftest import SMALL, run_cli, run_json

ONE_SITE = "santa-clara,santa-clara,santa-clara,santa-clara"


def test_trace_has_the_design_columns_and_types(headline_small):
    path = headline_small["trace"]
    spans = pd.read_feather(path)
    schema = pa.ipc.open_file(path).schema
    expected = {"start_ps": pa.int64(), "end_ps": pa.int64(), "request_id": pa.int64(),
                "token": pa.int32(), "layer": pa.int16(), "bytes": pa.int64(), "flops": pa.int64()}
    for column, typ in expected.items():
        assert schema.field(column).type == typ
    for column in ("lp", "datacenter", "kind", "name"):
        assert pa.types.is_dictionary(schema.field(column).type)
    meta = json.loads(schema.metadata[b"wafersim"])
    assert meta["scenario"]["model"] == "llama3.1-70b"
    assert meta["scenario"]["seed"] == 0
    assert set(spans["lp"]) == {"frontend", "wafer0", "wafer1", "wafer2", "wafer3",
                                "link:wafer0->wafer1", "link:wafer1->wafer2",
                                "link:wafer2->wafer3", "link:wafer3->wafer0"}
    assert (spans["end_ps"] >= spans["start_ps"]).all()


def test_every_generated_token_crosses_every_layer(headline_small):
    spans = pd.read_feather(headline_small["trace"])
    layers = spans[(spans["kind"] == "compute") & spans["layer"].notna()]
    per_token = layers.groupby(["request_id", "token"])["layer"].unique()
    assert len(per_token) == 4 * 8  # users x output tokens
    for seen in per_token:
        assert sorted(set(int(x) for x in seen)) == list(range(80))
    requests = pd.read_feather(headline_small["trace"].replace(".arrow", ".requests.arrow"))
    assert len(requests) == 4 and (requests["output_tokens"] == 8).all()
    assert (requests["first_token_ps"] > requests["arrival_ps"]).all()


def test_default_placement_pays_the_wan_round_trip(headline_small):
    """Every decode step crosses Santa Clara -> Stockton -> Dallas -> Santa Clara: its time
    per output token is at least the fibre's, and the links are most of it."""
    sc, st, da = SITES["santa-clara"], SITES["stockton"], SITES["dallas"]
    ring_ps = fibre_latency_ps(sc, st) + fibre_latency_ps(st, da) + fibre_latency_ps(da, sc)
    assert ring_ps > 25e9  # tens of milliseconds
    assert headline_small["tpot_ms_p50"] * 1e9 >= ring_ps
    assert headline_small["link_ms_per_token"] * 1e9 >= ring_ps
    assert headline_small["link_share_of_tpot"] > 0.9
    assert headline_small["requests_completed"] == 4


def test_one_site_links_are_a_small_share(tmp_path):
    summary = run_json("run", "llama70b_four_wafers", *SMALL, "--sites", ONE_SITE,
                       "--trace", str(tmp_path / "t.arrow"))
    assert summary["link_share_of_tpot"] < 0.02
    assert summary["link_ms_per_token"] * 1e9 >= 4 * CS3_LINK.latency_ps


def test_no_wafer_holds_more_than_44_gb(headline_small):
    peaks = headline_small["sram_peak_gb"]
    assert set(peaks) == {"wafer0", "wafer1", "wafer2", "wafer3"}
    assert all(30 < gb <= 44.0 for gb in peaks.values())


def test_same_seed_same_bytes(tmp_path):
    """From the command line: seed 7 twice gives the same bytes; seed 8, the control, not."""
    paths = []
    for i, seed in enumerate(("7", "7", "8")):
        path = tmp_path / f"run{i}.arrow"
        run_cli("run", "llama70b_four_wafers", *SMALL, "--rate", "50", "--requests", "6",
                "--seed", seed, "--trace", str(path))
        paths.append(path)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].with_name("run0.requests.arrow").read_bytes() == \
        paths[1].with_name("run1.requests.arrow").read_bytes()
    assert paths[2].with_name("run2.requests.arrow").read_bytes() != \
        paths[0].with_name("run0.requests.arrow").read_bytes()


def test_partitioning_and_window_cap_never_change_the_trace(tmp_path):
    """One partition, one LP per partition with the conservative engine, and a tiny window:
    the same bytes."""
    base = ["run", "llama70b_four_wafers", *SMALL, "--rate", "80", "--requests", "6"]
    variants = {"one": [], "split": ["--lps-per-actor", "1"],
                "split3-tiny": ["--lps-per-actor", "3", "--max-window-ps", "2000000"]}
    data = {}
    for name, extra in variants.items():
        path = tmp_path / f"{name}.arrow"
        summary = run_json(*base, *extra, "--trace", str(path))
        data[name] = (path.read_bytes(), summary["rounds"])
    assert data["one"][0] == data["split"][0] == data["split3-tiny"][0]
    assert data["one"][1] == 1  # one partition: one round, whatever the run
    assert data["split3-tiny"][1] > data["split"][1] > 1  # the tiny cap outweighs the bigger groups


def test_stage_and_layer_detail_agree(tmp_path):
    """Detail changes what is traced, not the timing: the same requests table, exactly."""
    out = {}
    for detail in ("stage", "layer"):
        out[detail] = run_json("run", "llama70b_four_wafers", "--users", "8", "--prompt-tokens", "256",
                               "--output-tokens", "16", "--detail", detail,
                               "--trace", str(tmp_path / f"{detail}.arrow"))
    for key in ("tokens_per_s_per_user", "ttft_ms_p50", "tpot_ms_p50"):
        assert out["stage"][key] == out["layer"][key]
    tables = [pa.ipc.open_file(str(tmp_path / f"{d}.requests.arrow")).read_all() for d in ("stage", "layer")]
    assert tables[0].equals(tables[1])


def test_summary_command_reads_a_trace(headline_small):
    again = run_cli("summary", headline_small["trace"], "--json")
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary["tpot_ms_p50"] == headline_small["tpot_ms_p50"]
    assert summary == summarize(headline_small["trace"])


def test_llama8b_one_wafer_runs(tmp_path):
    summary = run_json("run", "llama8b_one_wafer", *SMALL, "--trace", str(tmp_path / "t.arrow"))
    assert summary["requests_completed"] == 4
    assert summary["link_ms_per_token"] in (None, 0)
    assert summary["tokens_per_s_per_user"] > 100


@pytest.mark.parametrize("args,needle", [
    (["--model", "llama-9000"], "--model"),
    (["--users", "0"], "--users"),
    (["--users", "-3"], "--users"),
    (["--output-tokens", "0"], "--output-tokens"),
    (["--prompt-tokens", "-1"], "--prompt-tokens"),
    (["--sites", "santa-clara,dallas"], "--sites"),
    (["--sites", "santa-clara,santa-clara,stockton,mars"], "mars"),
    (["--wafers", "2", "--sites", "santa-clara,dallas"], "--wafers"),
    (["--users", "many"], "--users"),
    (["--detail", "atoms"], "--detail"),
    (["--rate", "-2"], "--rate"),
    (["--spec", "warp_factor=9"], "warp_factor"),
    (["--sites", "santa-clara*x"], "--sites"),
    (["--address", "10.0.0.1:6379"], "--address: only the ray backend uses it"),
    (["--placement", "by-site"], "--placement: only the ray backend uses it"),
    (["--backend", "ray", "--address", "127.0.0.1:1"], "--address: no Ray answers at 127.0.0.1:1"),
])
def test_bad_input_is_one_line_exit_2_and_no_file(tmp_path, args, needle):
    path = tmp_path / "bad.arrow"
    proc = run_cli("run", "llama70b_four_wafers", *args, "--trace", str(path), check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_unwritable_trace_path_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = run_cli("run", "llama8b_one_wafer", *SMALL, "--trace", str(blocker / "t.arrow"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: --trace") and len(proc.stderr.strip().splitlines()) == 1


def test_site_shorthand_repeats_a_site(tmp_path):
    summary = run_json("run", "llama70b_four_wafers", *SMALL, "--sites", "santa-clara*2,dallas*2",
                       "--trace", str(tmp_path / "t.arrow"))
    meta = json.loads(pa.ipc.open_file(summary["trace"]).schema.metadata[b"wafersim"])
    assert meta["scenario"]["sites"] == ["santa-clara", "santa-clara", "dallas", "dallas"]


def test_a_trace_path_that_is_a_folder_is_refused_before_the_run(tmp_path):
    proc = run_cli("run", "llama70b_four_wafers", *SMALL, "--trace", str(tmp_path), check=False)
    assert proc.returncode == 2 and "is a folder" in proc.stderr and proc.stderr.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_a_reader_that_goes_away_is_not_a_traceback(tmp_path):
    """`wafersim ... | true`: the reader is gone before the summary is printed."""
    import subprocess
    import sys

    from tests.conftest import ROOT
    proc = subprocess.run(f"{sys.executable} -m cluster.commands.cli run llama70b_four_wafers --users 2 "
                          f"--output-tokens 2 --trace {tmp_path / 't.arrow'} | true; exit ${{PIPESTATUS[0]}}",
                          shell=True, executable="/bin/bash", cwd=ROOT, capture_output=True, text=True)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
    assert proc.returncode == 141  # as a shell reports a writer whose reader left


def test_ten_reruns_give_ten_identical_traces_and_another_seed_another(tmp_path):
    """Determinism, with its control: every file of ten same-seed runs is identical (in
    one process, so any state a run leaves behind would show), and a different seed moves
    the arrivals and so the trace."""
    from cluster.commands.scenario import RunOptions, ScenarioConfig, run_scenario

    def files(seed: int, i: int) -> list[bytes]:
        cfg = ScenarioConfig("rerun", "llama3.1-70b", 4, ("santa-clara", "santa-clara", "stockton", "dallas"),
                             4, 64, 6, seed=seed, requests=6, rate_per_s=50.0, prefill_chunk_tokens=32)
        path = tmp_path / f"s{seed}-{i}.arrow"
        run_scenario(cfg, RunOptions(trace=str(path)))
        return [p.read_bytes() for p in sorted(tmp_path.glob(f"s{seed}-{i}.*"))]

    runs = [files(7, i) for i in range(10)]
    assert len(runs[0]) == 4 and all(r == runs[0] for r in runs[1:])
    assert files(8, 0)[0] != runs[0][0]


def test_list_names_every_scenario():
    listed = run_cli("list").stdout.split()
    assert {"llama70b_four_wafers", "llama8b_one_wafer", "fleet", "h100_baseline", "bench_fleet"} <= set(listed)
