"""`wafersim sweep`: the spec's paths and errors, point ids, the results table, resuming,
failed points, refining an analytic sweep. Event sweeps run on the session's Ray."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from cluster.commands.cli import main as cli
from cluster.sweep import load_sweep, run_sweep, sweep_from_dict
from cluster.sweep.spec import apply_path, point_id
from cluster.sweep.table import choose_refine
from common.errors import ConfigError
from tests.conftest import ROOT

TINY = """
[base]
name = "tiny"

[[base.pipelines]]
name = "small"
models = ["llama3.1-8b"]
wafers = 1

[[base.replicas]]
pipeline = "small"
sites = ["dallas"]

[[base.users]]
name = "chat"
site = "dallas"
model = "llama3.1-8b"
rate_per_s = 50.0
requests = 4
prompt_tokens = 64
output_tokens = 8
"""

TWELVE = TINY + """
[grid]
seed = [0, 1, 2]
"users[0].rate_per_s" = [20.0, 80.0]
"users[0].arrivals" = ["poisson", "gamma"]
"""


def write(tmp_path: Path, text: str, top: str = "") -> Path:
    """A sweep file: `top` (top-level keys, before any table), then `text`."""
    path = tmp_path / "sweep.toml"
    path.write_text(textwrap.dedent(top) + textwrap.dedent(text))
    return path


def table(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "results.parquet")


@pytest.fixture(scope="module")
def full_run(ray_cluster, tmp_path_factory):
    """The twelve-point sweep, run once without a stop."""
    folder = tmp_path_factory.mktemp("sweep_full")
    sweep = load_sweep(write(folder, TWELVE))
    result = run_sweep(sweep, folder / "out")
    return sweep, result, table(folder / "out")


def test_twelve_points_give_twelve_rows(full_run):
    sweep, result, df = full_run
    assert len(sweep.points) == 12 and len(result.ran) == 12 and result.failed == 0
    assert len(df) == 12 and df["point_id"].is_unique
    assert list(df.columns[:4]) == ["point_id", "seed", "users[0].rate_per_s", "users[0].arrivals"]
    assert set(df["status"]) == {"ok"} and df["error"].isna().all() and set(df["fidelity"]) == {"event"}
    for column in ("tokens_per_s_per_user", "aggregate_tokens_per_s", "ttft_ms_p50", "ttft_ms_p99", "tpot_ms_p50",
                   "e2e_ms_p50", "requests_completed", "requests_rejected", "goodput_requests_per_s",
                   "joules_per_token", "sim_time_s", "events", "rounds", "wall_s"):
        assert df[column].notna().all(), column
    assert (df["requests_completed"] == 4).all()
    # A row's parameters are its point's, and its id is the hash of them.
    for point, (_, row) in zip(sweep.points, df.iterrows()):
        assert row["point_id"] == point.id == point_id(point.params)
        assert row["seed"] == point.params["seed"]
    # The seed changes the run: Poisson gaps differ.
    first = df[(df["users[0].rate_per_s"] == 20.0) & (df["users[0].arrivals"] == "poisson")]
    assert first["sim_time_s"].nunique() == 3


def test_a_stopped_sweep_resumes_with_only_the_missing_points(full_run, tmp_path):
    sweep, _, whole = full_run
    out = tmp_path / "out"
    first = run_sweep(sweep, out, max_points=6)
    assert first.stopped and len(first.ran) == 6
    half = table(out)
    assert len(half) == 6
    again = run_sweep(sweep, out)
    assert again.skipped == 6 and not again.stopped
    ran_now = {r.split(":")[0] for r in again.ran}
    assert len(again.ran) == 6 and ran_now == {p.id for p in sweep.points} - set(half["point_id"])
    done = table(out)
    kept = done.set_index("point_id").loc[half["point_id"], "wall_s"]
    assert list(kept) == list(half["wall_s"])  # the first six were not run again
    # Exactly (assert_frame_equal allows a relative 1e-5 on floats unless told otherwise)
    pd.testing.assert_frame_equal(done.drop(columns="wall_s"), whole.drop(columns="wall_s"), check_exact=True)
    assert run_sweep(sweep, out).ran == []  # nothing left


def test_an_interrupted_sweep_keeps_what_finished(ray_cluster, tmp_path):
    sweep = load_sweep(write(tmp_path, TWELVE))
    seen = []

    def stop_at_three(row):
        seen.append(row["point_id"])
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, tmp_path / "out", on_point=stop_at_three)
    df = table(tmp_path / "out")
    assert sorted(df["point_id"]) == sorted(seen) and set(df["status"]) == {"ok"}


def test_failed_points_are_rows_and_the_rest_complete(ray_cluster, tmp_path, capsys):
    spec = write(tmp_path, TINY + """
        [[zip]]
        "pipelines[0].models" = [["llama3.1-8b"], ["llama3.1-405b"], ["llama3.1-8b"]]
        "users[0].model" = ["llama3.1-8b", "llama3.1-405b", "llama3.1-8b"]
        "users[0].rate_per_s" = [20.0, 20.0, -1.0]
        """.replace("\n        ", "\n"), top="keep_traces = true\n")
    out = tmp_path / "out"
    assert cli(["sweep", str(spec), "-o", str(out), "--quiet"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("sweep: 3 points: 3 run, 0 skipped (done before), 2 failed"), line
    df = table(out)
    assert list(df["status"]) == ["ok", "failed", "failed"]
    assert pd.isna(df["error"][0])
    assert "405b" in df["error"][1].lower()  # refused by the planner, in the task
    assert df["error"][2] == "users[0].rate_per_s: must be > 0, got -1.0"  # refused by validation
    assert df["requests_completed"][0] == 4 and pd.isna(df["requests_completed"][1])
    trace = Path(df["trace"][0])
    assert trace == out / "traces" / f"{df['point_id'][0]}.arrow" or trace == (out / "traces" / trace.name).resolve()
    assert pa.ipc.open_file(trace).read_all().num_rows > 0
    assert trace.with_name(trace.stem + ".requests.arrow").exists()
    # A rerun retries the failed points only.
    assert cli(["sweep", str(spec), "-o", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("sweep: 3 points: 2 run, 1 skipped (done before), 2 failed")


@pytest.mark.parametrize("body, message", [
    ('[grid]\n"users[0].rate" = [1.0]',
     "grid: users[0].rate: unknown key 'rate' in users[0]; known: arrivals, arrivals_stream"),
    ('[grid]\n"routers[*].policy" = ["round-robin"]', "grid: routers[*].policy: routers is empty"),
    ('[grid]\n"replicas[3].count" = [1]', "grid: replicas[3].count: replicas has 1 element(s), no [3]"),
    ('[grid]\n"links.wan.speed" = [1.0]', "grid: links.wan.speed: unknown key 'speed' in links.wan"),
    ('[grid]\nseed = 3', "grid: seed: expected a non-empty array of values"),
    ('[grid]\nseed = [1, 1]', "comes twice"),
    ('colour = "blue"', "colour: unknown key; known: base, fidelity"),
    ('fidelity = "exact"', "fidelity: must be one of event, analytic"),
    ('[[zip]]\nseed = [1, 2]\n"users[0].requests" = [3]', "zip[0]: its arrays must have one length"),
    ('[set]\n"users[0].colour" = 1', "set: users[0].colour: unknown key 'colour'"),
])
def test_bad_specs_are_one_line_and_exit_2(tmp_path, capsys, body, message):
    top = body.startswith(("colour", "fidelity"))
    spec = write(tmp_path, TINY if top else TINY + body, top=body + "\n" if top else "")
    assert cli(["sweep", str(spec), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: sweep: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()  # nothing ran


def test_paths_reach_every_element_and_merge_tables():
    tree = {"users": [{"rate_per_s": 1.0, "site": "a"}, {"rate_per_s": 2.0, "site": "b"}],
            "links": {"wan": {"lanes": 12, "latency_ps": 5}}}
    apply_path(tree, "users[*].rate_per_s", 9.0)
    apply_path(tree, "links.wan", {"lanes": 4})
    apply_path(tree, "users[1]", {"site": "c"})
    assert tree == {"users": [{"rate_per_s": 9.0, "site": "a"}, {"rate_per_s": 9.0, "site": "c"}],
                    "links": {"wan": {"lanes": 4, "latency_ps": 5}}}
    with pytest.raises(ConfigError, match=r"malformed path segment 'users\[x\]'"):
        apply_path(tree, "users[x].site", "d")


def test_point_ids_are_sha256_of_canonical_json():
    assert point_id({"seed": 1, "users[*].rate_per_s": 2.0}) == point_id({"users[*].rate_per_s": 2.0, "seed": 1})
    import hashlib

    assert point_id({"seed": 1}) == hashlib.sha256(b'{"seed":1}').hexdigest()[:16]
    assert point_id({"seed": 1}) != point_id({"seed": 1.0})


def test_bases_by_name_path_and_table(tmp_path):
    fleet = sweep_from_dict({"base": "fleet", "grid": {"replicas[0].count": [1, 2]}}, "s")
    assert [p.spec.replicas[0].count for p in fleet.points] == [1, 2]
    ring = sweep_from_dict({"base": "llama70b_four_wafers", "grid": {"max_active": [8]}}, "s")
    assert ring.points[0].spec.pipelines[0].wafers == 4 and ring.points[0].spec.max_active == 8
    from cluster.fleet.toml import cluster_to_toml
    (tmp_path / "c.toml").write_text(cluster_to_toml(fleet.points[1].spec))
    by_path = sweep_from_dict({"base": "c.toml", "grid": {"links.wan.lane_bits_per_s": [1e9, 4e9]}}, "s", tmp_path)
    assert by_path.points[1].spec.links.wan.lane_bits_per_s == 4e9
    assert by_path.points[1].spec.replicas[0].count == 2
    # Dotted keys written bare read as nested tables: the same paths.
    nested = sweep_from_dict({"base": "fleet", "grid": {"links": {"wan": {"lanes": [1, 2]}}}}, "s")
    assert nested.params == ["links.wan.lanes"]


def test_the_example_sweep_has_at_least_twelve_valid_points():
    sweep = load_sweep(ROOT / "scenarios" / "sweeps" / "fleet_small.toml")
    assert len(sweep.points) >= 12 and all(p.spec is not None for p in sweep.points)
    assert all(u.requests == 20 for p in sweep.points for u in p.spec.users)
    assert {r.policy for p in sweep.points for r in p.spec.routers} == {"round-robin", "nearest-site"}


def test_refine_picks_the_best_and_the_furthest_from_the_fit():
    rows = [{"point_id": f"p{i}", "status": "ok", "x": x, "tokens_per_s_per_user": 100.0 - x,
             "aggregate_tokens_per_s": 10.0 * x} for i, x in enumerate([1.0, 2.0, 4.0, 8.0, 16.0])]
    rows[2]["aggregate_tokens_per_s"] = 400.0  # off the power law 10 x
    rows.append({"point_id": "bad", "status": "failed", "x": 32.0})
    assert choose_refine(rows, ["x"], 1) == [("p0", "best"), ("p2", "surprise")]
    assert choose_refine(rows, ["x"], 0) == []


def test_analytic_points_need_no_ray_and_refuse_refine_on_event(tmp_path):
    sweep = load_sweep(write(tmp_path, TWELVE))
    with pytest.raises(ConfigError, match="--refine: needs fidelity analytic"):
        run_sweep(sweep, tmp_path / "out", refine=2)


def test_a_thousand_analytic_points(tmp_path):
    spec = write(tmp_path, TINY + """
        [[base.routers]]
        name = "r"
        site = "dallas"

        [grid]
        "users[0].rate_per_s" = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]
        "users[0].requests" = [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 5120]
        "replicas[0].count" = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
        """.replace("\n        ", "\n"), top='fidelity = "analytic"\n')
    sweep = load_sweep(spec)
    assert sweep.fidelity == "analytic"
    result = run_sweep(sweep, tmp_path / "out")
    df = table(tmp_path / "out")
    assert len(sweep.points) == 1000 and len(df) == 1000 and df["point_id"].is_unique
    assert set(df["fidelity"]) == {"analytic"} and len(result.ran) == 1000
    assert (df["status"] == "ok").mean() > 0.9, df["error"].dropna().head()


def test_refine_reruns_picked_points_in_full(ray_cluster, tmp_path):
    sweep = load_sweep(write(tmp_path, TWELVE))
    result = run_sweep(sweep, tmp_path / "out", fidelity="analytic", refine=1)
    df = table(tmp_path / "out")
    event = df[df["fidelity"] == "event"]
    assert len(df[df["fidelity"] == "analytic"]) == 12 and len(event) == 2
    assert sorted(event["refine_reason"]) == ["best", "surprise"] and set(event["status"]) == {"ok"}
    assert result.points == 14


@pytest.mark.parametrize("body", ['[set]\n"users[0].rate_per_s" = inf\n[grid]\nseed = [1, 2]\n',
                                  '[grid]\n"users[0].rate_per_s" = [nan, 4.0]\n',
                                  '[grid]\nseed = [1979-05-27]\n'])
def test_values_no_field_can_take_are_refused_before_out_exists(tmp_path, body):
    spec = write(tmp_path, TINY + body)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "cluster.commands.cli", "sweep", str(spec), "-o", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "must be a finite number" in proc.stderr and proc.stderr.count("\n") == 1
    assert not out.exists()
