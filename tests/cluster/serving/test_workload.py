"""Workloads: arrival processes, request files, trace converters and `wafersim convert`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cluster.serving.requestfile import (
    RequestRow,
    convert_azure,
    convert_sharegpt,
    read_request_file,
    write_request_file,
)
from cluster.serving.workload import Request, arrival_times_ps, rng_for
from common.errors import ConfigError
from common.units import PS_PER_S

ROOT = Path(__file__).resolve().parents[3]


# --- the arrivals the pipeline scenarios draw, and Request: unchanged --------------------

def test_poisson_arrivals_unchanged_for_a_fixed_seed():
    t = arrival_times_ps("poisson", 5, 100.0, 1.0, rng_for(7, "arrivals"))
    gaps = rng_for(7, "arrivals").exponential(1.0 / 100.0, 5)
    expected = np.cumsum(np.ceil(gaps * PS_PER_S).astype(np.int64)).tolist()
    assert t.tolist() == expected
    # Pinned: traces recorded before this file changed hold these very times.
    assert expected == [5812229558, 10369361414, 15763174301, 19630769626, 42516134848]


def test_request_positional_and_new_fields():
    r = Request(3, 10, 4, 2)
    assert (r.request_id, r.arrival_ps, r.prompt_tokens, r.output_tokens) == (3, 10, 4, 2)
    assert (r.model, r.user_site, r.session) == ("", "", -1)
    assert Request(0, 0, 1, 1, model="m", user_site="sc", session=5).session == 5


# --- arrival_times_ps ----------------------------------------------------------------

def _gaps_s(kind: str, rate: float, cv: float, n: int = 20_000) -> np.ndarray:
    t = arrival_times_ps(kind, n, rate, cv, rng_for(1, "test"))
    assert t.dtype == np.int64 and len(t) == n and (np.diff(t) >= 0).all() and t[0] > 0
    return np.diff(t, prepend=0) / PS_PER_S


@pytest.mark.parametrize("kind, cv", [("poisson", 1.0), ("gamma", 1.0), ("gamma", 3.0), ("gamma", 0.5)])
def test_arrival_gaps_have_the_asked_mean_and_cv(kind, cv):
    gaps = _gaps_s(kind, 50.0, cv)
    assert gaps.mean() == pytest.approx(1 / 50.0, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.05)


@pytest.mark.parametrize("args, field", [
    (("poisson", 10, float("nan"), 1.0), "rate_per_s"),
    (("poisson", 10, 0.0, 1.0), "rate_per_s"),
    (("poisson", 10, -1.0, 1.0), "rate_per_s"),
    (("poisson", 10, float("inf"), 1.0), "rate_per_s"),
    (("gamma", 10, 1.0, 0.0), "burstiness_cv"),
    (("gamma", 10, 1.0, float("inf")), "burstiness_cv"),
    (("poisson", 0, 1.0, 1.0), "n"),
    (("weibull", 10, 1.0, 1.0), "kind"),
    (("poisson", 10, 1e-9, 1.0), "rate_per_s"),  # runs past the int64 picosecond clock
])
def test_arrival_times_refuse_bad_args(args, field):
    with pytest.raises(ConfigError, match=rf"^{field}: ") as info:
        arrival_times_ps(*args, rng_for(0, "test"))
    assert "\n" not in str(info.value)


# --- request files -------------------------------------------------------------------

PLAIN = [RequestRow(0.0, 10, 5), RequestRow(0.25, 3, 1), RequestRow(0.25, 700, 20)]
TAGGED = [RequestRow(0.0, 10, 5, "dc-east", "llama3.1-8b", 0), RequestRow(0.1, 3, 1),
          RequestRow(1.0 / 3, 7, 2, None, "llama3.1-70b", 4)]


@pytest.mark.parametrize("suffix", [".csv", ".arrow", ".feather", ".parquet"])
@pytest.mark.parametrize("rows", [PLAIN, TAGGED], ids=["plain", "tagged"])
def test_request_file_round_trip(tmp_path, suffix, rows):
    path = tmp_path / f"requests{suffix}"
    write_request_file(rows, path)
    assert read_request_file(path) == rows
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left beside it


def test_optional_columns_written_only_when_used(tmp_path):
    write_request_file(PLAIN, tmp_path / "a.csv")
    assert (tmp_path / "a.csv").read_text().splitlines()[0] == "arrival_s,prompt_tokens,output_tokens"
    write_request_file([RequestRow(0.0, 1, 1, model="m")], tmp_path / "b.parquet")
    assert pq.read_table(tmp_path / "b.parquet").column_names == ["arrival_s", "prompt_tokens",
                                                                   "output_tokens", "model"]


def test_arrow_stream_format_and_parquet_float_counts_read(tmp_path):
    table = pa.table({"arrival_s": [0.0, 1.5], "prompt_tokens": [3.0, 4.0], "output_tokens": [1, 2]})
    pq.write_table(table, tmp_path / "f.parquet")
    assert read_request_file(tmp_path / "f.parquet") == [RequestRow(0.0, 3, 1), RequestRow(1.5, 4, 2)]
    with pa.OSFile(str(tmp_path / "s.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    assert read_request_file(tmp_path / "s.arrow")[1] == RequestRow(1.5, 4, 2)


HEADER = "arrival_s,prompt_tokens,output_tokens,session"


@pytest.mark.parametrize("bad_row, column, problem", [
    ("x,5,5,", "arrival_s", "must be a finite number >= 0, got 'x'"),
    ("nan,5,5,", "arrival_s", "must be a finite number >= 0"),
    ("-1,5,5,", "arrival_s", "must be a finite number >= 0"),
    ("0.5,5,5,", "arrival_s", "must not decrease from row to row"),
    (",5,5,", "arrival_s", "must be a finite number >= 0, got ''"),
    ("2,0,5,", "prompt_tokens", "must be a positive integer, got '0'"),
    ("2,5,2.5,", "output_tokens", "must be a positive integer, got '2.5'"),
    ("2,5,-3,", "output_tokens", "must be a positive integer"),
    ("2,5,,", "output_tokens", "must be a positive integer, got ''"),
    ("2,5,5,-1", "session", "must be an integer >= 0, got '-1'"),
    ("2,5,5,a", "session", "must be an integer >= 0"),
])
def test_bad_csv_row_refused_with_its_number(tmp_path, bad_row, column, problem):
    path = tmp_path / "requests.csv"
    path.write_text(f"{HEADER}\n0,5,5,\n\n1,5,5,1\n{bad_row}\n3,5,5,\n")  # the blank line is no row
    with pytest.raises(ConfigError) as info:
        read_request_file(path)
    assert str(info.value).startswith(f"{path}: row 3: {column}: {problem}")


@pytest.mark.parametrize("column, values, row, problem", [
    ("output_tokens", [1, 2.5], 2, "must be a positive integer, got 2.5"),
    ("output_tokens", [True, True], 1, "must be a positive integer, got True"),
    ("arrival_s", [1.0, 0.5], 2, "must not decrease from row to row"),
    ("session", [0, -2], 2, "must be an integer >= 0, got -2"),
])
def test_bad_parquet_row_refused_with_its_number(tmp_path, column, values, row, problem):
    data = {"arrival_s": [0.0, 1.0], "prompt_tokens": [1, 1], "output_tokens": [1, 1], column: values}
    pq.write_table(pa.table(data), tmp_path / "r.parquet")
    with pytest.raises(ConfigError, match=rf"r\.parquet: row {row}: {column}: {problem}"):
        read_request_file(tmp_path / "r.parquet")


@pytest.mark.parametrize("text, message", [
    (f"{HEADER},tenant\n0,1,1,,a\n", "unknown column 'tenant'; the columns are arrival_s, prompt_tokens"),
    ("arrival_s,prompt_tokens\n0,1\n", "missing column(s) output_tokens"),
    ("", "empty file"),
    (f"{HEADER}\n", "no requests"),
    (f"{HEADER}\n0,1,1\n", "row 1: 3 cells under a header of 4"),
])
def test_bad_csv_file_refused(tmp_path, text, message):
    path = tmp_path / "r.csv"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_request_file(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_missing_or_unknown_request_file_refused(tmp_path):
    with pytest.raises(ConfigError, match="no such request file"):
        read_request_file(tmp_path / "nope.csv")
    with pytest.raises(ConfigError, match="unknown request file type"):
        read_request_file(tmp_path / "r.json")
    (tmp_path / "junk.arrow").write_bytes(b"not arrow at all")
    with pytest.raises(ConfigError, match="cannot read as arrow"):
        read_request_file(tmp_path / "junk.arrow")


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "out.parquet"
    with pytest.raises(ConfigError, match="request 2: output_tokens"):
        write_request_file([RequestRow(0.0, 1, 1), RequestRow(1.0, 1, 0)], path)
    with pytest.raises(ConfigError, match="cannot write"):
        write_request_file(PLAIN, tmp_path / "no-such-dir" / "out.csv")
    assert list(tmp_path.iterdir()) == []


def test_write_failing_midway_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.parquet"
    write_request_file(PLAIN, path)

    def broken(table, where, **kwargs):
        Path(where).write_bytes(b"half")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(RuntimeError):
        write_request_file(TAGGED, path)
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"] and read_request_file(path) == PLAIN


# --- converters ----------------------------------------------------------------------

AZURE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,396,0
2023-11-16 18:15:45.1805900,100,7
2023-11-16 18:15:47.1805900,2,3
"""


def test_convert_azure_sorts_skips_and_counts(tmp_path):
    (tmp_path / "azure.csv").write_text(AZURE)
    rows, skipped = convert_azure(tmp_path / "azure.csv")
    assert skipped == 1
    assert rows == [RequestRow(0.0, 100, 7), RequestRow(1.5, 374, 44), RequestRow(2.0, 2, 3)]


def test_convert_azure_2024_timestamps(tmp_path):
    (tmp_path / "a.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                                    "2024-05-10 00:00:00.009930+00:00,10,2\n"
                                    "2024-05-10 02:00:01+02:00,10,2\n")  # 1 s before the first, in UTC
    assert [r.arrival_s for r in convert_azure(tmp_path / "a.csv")[0]] == [0.0, pytest.approx(0.99007)]


@pytest.mark.parametrize("bad_row, message", [
    ("2023-11-16 18:15:47,ten,3", "row 2: ContextTokens: must be an integer >= 0, got 'ten'"),
    ("2023-11-16 25:15:47,10,3", "row 2: TIMESTAMP: expected YYYY-MM-DD HH:MM:SS"),
    ("16/11/2023 18:15,10,3", "row 2: TIMESTAMP"),
    ("2023-11-16 18:15:47,10,-3", "row 2: GeneratedTokens"),
])
def test_convert_azure_refuses_malformed_rows(tmp_path, bad_row, message):
    (tmp_path / "a.csv").write_text(f"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,1,1\n{bad_row}\n")
    with pytest.raises(ConfigError, match=message):
        convert_azure(tmp_path / "a.csv")


def test_convert_sharegpt(tmp_path):
    data = [
        {"id": "a", "conversations": [{"from": "human", "value": "x" * 9}, {"from": "gpt", "value": "yyyy"}]},
        {"id": "b", "conversations": [{"from": "gpt", "value": "hello"}]},  # no exchange: skipped
        {"id": "c", "conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": ""},
                                      {"from": "gpt", "value": "z" * 401}, {"from": "human", "value": "more"}]},
    ]
    (tmp_path / "sg.json").write_text(json.dumps(data))
    rows = convert_sharegpt(tmp_path / "sg.json", rate_per_s=2.0, seed=3)
    assert [(r.prompt_tokens, r.output_tokens) for r in rows] == [(3, 1), (1, 101)]
    times = arrival_times_ps("poisson", 2, 2.0, 1.0, rng_for(3, "sharegpt"))
    assert [r.arrival_s for r in rows] == [t / PS_PER_S for t in times.tolist()]
    assert convert_sharegpt(tmp_path / "sg.json", 2.0, 3) == rows  # seeded
    other = convert_sharegpt(tmp_path / "sg.json", 2.0, 4)  # the control: another seed, other arrivals
    assert [r.arrival_s for r in other] != [r.arrival_s for r in rows]
    assert [(r.prompt_tokens, r.output_tokens) for r in other] == [(3, 1), (1, 101)]
    (tmp_path / "bad.json").write_text('{"conversations": []}')
    with pytest.raises(ConfigError, match="expected a JSON list"):
        convert_sharegpt(tmp_path / "bad.json", 2.0, 3)


# --- wafersim convert ----------------------------------------------------------------

def _wafersim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster.commands.cli", "convert", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_convert_command_writes_the_file(tmp_path):
    (tmp_path / "azure.csv").write_text(AZURE)
    out = tmp_path / "out.parquet"
    proc = _wafersim("azure", str(tmp_path / "azure.csv"), "-o", str(out), "--limit", "2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wrote 2 requests to {out} (1 skipped: zero context or generated tokens)"
    assert read_request_file(out) == [RequestRow(0.0, 100, 7), RequestRow(1.5, 374, 44)]


@pytest.mark.parametrize("args", [
    ["azure", "{dir}/azure.csv", "-o", "{dir}/out.csv", "--rate", "3"],  # unknown flag for azure
    ["sharegpt", "{dir}/azure.csv", "-o", "{dir}/out.csv", "--rate", "3"],  # not JSON
    ["sharegpt", "{dir}/missing.json", "-o", "{dir}/out.csv", "--rate", "nan"],
    ["azure", "{dir}/azure.csv", "-o", "{dir}/out.txt"],
])
def test_convert_command_refuses_bad_input(tmp_path, args):
    (tmp_path / "azure.csv").write_text(AZURE)
    proc = _wafersim(*(a.format(dir=tmp_path) for a in args))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["azure.csv"]

