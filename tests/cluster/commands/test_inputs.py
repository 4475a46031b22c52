"""The one number check, the output paths checked before a command works, and the limits
that keep a run from silently taking forever: each refusal one line naming the field."""

import contextlib
import io
import math

import pyarrow as pa
import pytest

from cluster.commands.cli import main
from cluster.commands.common import check_output_file, check_output_folder
from common.checks import MAX_REQUESTS, check_number
from common.errors import ConfigError


def cli(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, err.getvalue()


@pytest.mark.parametrize("value,kwargs,message", [
    (math.nan, {}, "x: must be a finite number, got nan"),
    (math.inf, {"low": 0}, "x: must be a finite number, got inf"),
    (True, {"integer": True}, "x: must be an integer, got True"),
    (4.0, {"integer": True}, "x: must be an integer, got 4.0"),
    ("4", {}, "x: must be a number, got '4'"),
    (0, {"low": 0, "above": True}, "x: must be > 0, got 0"),
    (-1, {"low": 0}, "x: must be >= 0, got -1"),
    (MAX_REQUESTS + 1, {"integer": True, "high": MAX_REQUESTS, "unit": "requests", "why": "made up front"},
     "x: must be at most 10,000,000 requests (made up front), got 10000001"),
    (2e6, {"high": 1e6, "unit": "requests/s"}, "x: must be at most 1e+06 requests/s, got 2000000.0"),
])
def test_check_number_names_the_field_and_the_bound(value, kwargs, message):
    with pytest.raises(ConfigError) as err:
        check_number("x", value, **kwargs)
    assert str(err.value) == message


def test_check_number_returns_what_it_accepts():
    assert check_number("x", 3, integer=True, low=1, high=3) == 3
    assert check_number("x", 0.0, low=0) == 0.0


def test_output_paths_are_checked_before_any_work(tmp_path):
    (tmp_path / "file").write_text("")
    (tmp_path / "dir").mkdir()
    for path, message in ((tmp_path / "dir", "is a folder"), (f"{tmp_path}/new/", "is a folder"),
                          (tmp_path / "nodir" / "x.csv", "no such folder"),
                          (tmp_path / "file" / "x.csv", "no such folder")):
        with pytest.raises(ConfigError, match=message):
            check_output_file("-o", str(path))
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_output_file("--trace", str(tmp_path / "file" / "deep" / "x.arrow"), make_parents=True)
    with pytest.raises(ConfigError, match="-o: .* is a file, not a folder"):
        check_output_folder("-o", str(tmp_path / "file"))
    assert check_output_file("-o", str(tmp_path / "ok.csv")).name == "ok.csv"


def test_convert_refuses_an_output_in_a_missing_folder_before_reading(tmp_path):
    code, err = cli("convert", "azure", str(tmp_path / "missing.csv"), "-o", str(tmp_path / "no" / "r.csv"))
    assert code == 2 and err.splitlines() == [f"error: -o: no such folder {tmp_path / 'no'}"]


def test_summary_of_arrow_files_of_another_schema_is_one_line(tmp_path):
    table = pa.table({"a": [1]})
    for name in ("run.arrow", "run.requests.arrow", "run.tokens.arrow", "run.energy.arrow"):
        with pa.OSFile(str(tmp_path / name), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
    code, err = cli("summary", str(tmp_path / "run.arrow"))
    assert code == 2 and len(err.splitlines()) == 1 and "not a wafersim trace" in err


@pytest.mark.parametrize("argv,message", [
    (["--requests", "20000000"], "--requests: must be at most 10,000,000 requests"),
    (["--rate", "1e7"], "--rate: must be at most 1e+06 requests/s"),
    (["--output-tokens", "20000000"], "--output-tokens: must be at most 10,000,000 tokens"),
    (["--link", "latency_ps=1e13"], "--link latency_ps: must be at most 1,000,000,000,000 ps (one second)"),
    (["--spec", "clock_hz=1"], "--spec: WaferSpec.clock_hz: must be >= 1e+06"),
    (["--max-window-ps", "0"], "--max-window-ps: must be >= 1"),
])
def test_limits_that_keep_a_run_finite_are_named(tmp_path, argv, message):
    code, err = cli("run", "llama8b_one_wafer", *argv, "--trace", str(tmp_path / "t.arrow"))
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not list(tmp_path.iterdir())
