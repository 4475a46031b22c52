"""Calibration, validation and the H100 baseline, checked from first principles."""

import json

import pytest

from cluster.commands.calibrate import (
    H100_FIT_ROW,
    WSE3_8B_TOKENS_PER_S,
    fit_gpu,
    fit_wafer,
    gpu_point,
    hbm_utilization,
    run_point,
    wafer_point,
)
from gpu import H100
from gpu.spec import CALIBRATION_FILE as GPU_CALIBRATION_FILE
from llm.config import MODEL_PRESETS
from tests.conftest import run_cli
from wafer.spec import CALIBRATION_FILE, WSE3


def test_checked_in_calibration_is_the_fit():
    """The constants in wafer/calibration.json and gpu/calibration.json are what `wafersim
    calibrate` finds today, to the digit it writes: the fit is deterministic, so any drift
    means the model changed under the file. (The presets read these files, so comparing a
    preset with its file only checks that it reads them; the re-fit is the real check.)"""
    stored = json.loads(CALIBRATION_FILE.read_text())
    assert WSE3.sync_cycles_per_hop == stored["constants"]["sync_cycles_per_hop"]  # the preset reads it
    wafer = fit_wafer()
    assert wafer["constants"] == stored["constants"]

    # Every input the fit recorded is still the spec's (the fitted one moves; fields added
    # since, such as power, were not inputs).
    recorded = {k: v for k, v in stored["fit"]["inputs"].items() if k != "sync_cycles_per_hop"}
    assert {k: wafer["fit"]["inputs"][k] for k in recorded} == recorded
    stored_gpu = json.loads(GPU_CALIBRATION_FILE.read_text())
    assert H100.kernel_overhead_s == stored_gpu["constants"]["kernel_overhead_s"]  # the preset reads it
    assert H100.allreduce_step_s == stored_gpu["constants"]["allreduce_step_s"]
    gpu = fit_gpu()
    assert gpu["constants"] == stored_gpu["constants"]
    assert gpu["fit"]["inputs"] == stored_gpu["fit"]["inputs"]


def test_a_faster_clock_speeds_predictions_and_the_fit_absorbs_it():
    """Raise the clock: every wafer prediction gets faster; re-fit from the one point and
    8B is back at the published speed, with a costlier barrier per hop."""
    faster = (("clock_hz", WSE3.clock_hz * 1.5),)
    base_70b = run_point(wafer_point("llama3.1-70b", 4))["tokens_per_s_per_user"]
    fast_70b = run_point(wafer_point("llama3.1-70b", 4, overrides=faster))["tokens_per_s_per_user"]
    assert fast_70b > base_70b
    refit = fit_wafer(faster)
    assert refit["fit"]["simulated_tokens_per_s"] == pytest.approx(WSE3_8B_TOKENS_PER_S, rel=1e-3)
    assert refit["constants"]["sync_cycles_per_hop"] > WSE3.sync_cycles_per_hop


def test_faster_hbm_speeds_gpu_predictions_and_the_fit_absorbs_it():
    """Double HBM bandwidth: 70B on 8 GPUs gets faster; re-fit from the one row and that
    row is back at its published time per token, with a costlier kernel."""
    faster = (("hbm_bytes_per_s", 2 * H100.hbm_bytes_per_s),)
    base = run_point(gpu_point("llama3.1-70b", gpus=8))["tokens_per_s_per_user"]
    fast = run_point(gpu_point("llama3.1-70b", gpus=8, overrides=faster))["tokens_per_s_per_user"]
    assert fast > base
    refit = fit_gpu(faster)
    assert refit["fit"]["simulated_itl_ms"] == pytest.approx(H100_FIT_ROW.published, rel=1e-4)
    assert refit["constants"]["kernel_overhead_s"] > H100.kernel_overhead_s


def test_more_hbm_bandwidth_speeds_the_gpu():
    base = run_point(gpu_point("llama3.1-70b", gpus=2))["tpot_ms_mean"]
    more = run_point(gpu_point("llama3.1-70b", gpus=2, overrides=(("hbm_bytes_per_s", 2 * H100.hbm_bytes_per_s),)))
    assert more["tpot_ms_mean"] < base


@pytest.mark.parametrize("model,gpus,dtype", [("llama3.1-8b", 1, "fp16"), ("llama3.1-70b", 2, "fp16"),
                                              ("llama3.1-70b", 8, "fp8")])
def test_h100_decode_never_beats_streaming_its_weights(model, gpus, dtype):
    cfg = gpu_point(model, gpus=gpus, dtype=dtype)
    summary = run_point(cfg)
    bytes_per_param = 1 if dtype == "fp8" else 2
    floor_s = MODEL_PRESETS[model].parameters * bytes_per_param / gpus / H100.hbm_bytes_per_s
    assert summary["tpot_ms_mean"] / 1e3 >= floor_s
    assert 0 < hbm_utilization(cfg, summary) <= 1


@pytest.mark.parametrize("point", ["wafer", "gpu"])
def test_more_users_never_raise_one_users_speed(point):
    make = (lambda users: wafer_point("llama3.1-70b", 4, users=users)) if point == "wafer" else \
        (lambda users: gpu_point("llama3.1-70b", gpus=8, users=users))
    speeds = [run_point(make(users))["tokens_per_s_per_user"] for users in (1, 4, 16, 48)]
    assert all(a >= b for a, b in zip(speeds, speeds[1:])), speeds
    assert speeds[-1] < speeds[0], speeds  # the users count: the check above holds were it ignored


def test_doubling_link_bandwidth_never_slows_a_run():
    slow = run_point(wafer_point("llama3.1-70b", 4, users=16))
    cfg = wafer_point("llama3.1-70b", 4, users=16)
    from dataclasses import replace
    fast = run_point(replace(cfg, link_overrides=(("lane_bits_per_s", 200e9),)))
    # Strictly: `<=` would pass were the override ignored.
    assert fast["tpot_ms_mean"] < slow["tpot_ms_mean"]
    assert fast["ttft_ms_p50"] < slow["ttft_ms_p50"]


def test_validate_prints_every_row_as_json():
    proc = run_cli("validate", "--json")
    rows = json.loads(proc.stdout.strip().splitlines()[-1])["rows"]
    assert len(rows) >= 7
    keys = {"name", "role", "published", "simulated", "unit", "error_pct", "source"}
    assert all(keys <= set(r) for r in rows)
    assert {r["role"] for r in rows} == {"calibration", "prediction"}
    for r in rows:
        if r["role"] == "calibration":
            assert abs(r["error_pct"]) < 0.5, r
    assert sum(r["role"] == "prediction" for r in rows) >= 4
    h100 = [r for r in rows if "x H100" in r["name"]]
    assert [r["role"] for r in h100].count("calibration") == 1  # one documented row fitted
    assert {r["published"] for r in h100 if r["role"] == "prediction"} >= {60.0, 40.0, 25.0, 2.2}
    notes = json.loads(proc.stdout.strip().splitlines()[-1])["notes"]
    assert any("fp16" in n and "HBM ceiling 190" in n for n in notes)
    assert any("fp8" in n and "HBM ceiling 380" in n for n in notes)


def test_h100_baseline_has_the_wafer_summary_keys(tmp_path):
    out = json.loads(run_cli("run", "h100_baseline", "--gpus", "8", "--users", "2", "--prompt-tokens", "64",
                             "--output-tokens", "8", "--trace", str(tmp_path / "h.arrow"),
                             "--json").stdout.strip().splitlines()[-1])
    for key in ("tokens_per_s_per_user", "aggregate_tokens_per_s", "ttft_ms_p50", "tpot_ms_p50",
                "requests_completed", "sim_time_s", "events", "rounds", "messages", "wall_s", "trace"):
        assert key in out
    assert out["requests_completed"] == 2


def test_405b_pipelines_across_dgx_nodes(tmp_path):
    out = json.loads(run_cli("run", "h100_baseline", "--model", "llama3.1-405b", "--users", "1",
                             "--prompt-tokens", "32", "--output-tokens", "4", "--trace", str(tmp_path / "h.arrow"),
                             "--json").stdout.strip().splitlines()[-1])
    assert "link:dgx0->dgx1" in out["link_ms_per_token_by_link"]


def test_h100_too_small_is_a_clear_error(tmp_path):
    proc = run_cli("run", "h100_baseline", "--model", "llama3.1-405b", "--gpus", "2",
                   "--trace", str(tmp_path / "h.arrow"), check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --gpus")
    assert list(tmp_path.iterdir()) == []


def test_h100_baseline_takes_no_detail(tmp_path):
    """A GPU step is one span whatever the detail: the option would do nothing, so it is refused."""
    proc = run_cli("run", "h100_baseline", "--detail", "op", "--trace", str(tmp_path / "h.arrow"), check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == ["error: unrecognized arguments: --detail op"]
    assert list(tmp_path.iterdir()) == []
