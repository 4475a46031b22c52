"""Input refused at the door, fuzzed: every number a user can give (flags, `--spec`/`--link`,
a cluster TOML, a `config.json`, a request file).

Rules: an invalid input exits 2 with exactly one line on stderr, `error: ...`, naming the
field; never a traceback, never a hang, never a file left behind (hidden spool folders
included). A valid small input runs: exit 0, a trace `wafersim.open_trace` reads, every
request with the tokens it asked for.

Commands run in-process (`cluster.commands.cli.main`, an alarm as the hang guard); a few
run as subprocesses to check exit codes end to end.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wafersim
from cluster.commands.cli import main
from common.checks import MAX_LATENCY_PS, MAX_RATE_PER_S, MAX_REPLICAS, MAX_REQUESTS, MAX_TOKENS, MAX_WAFERS
from gpu.spec import GPU_LIMITS
from wafer.spec import WAFER_LIMITS

ROOT = Path(__file__).resolve().parents[2]
HANG_S = 30  # an in-process command taking longer than this is a hang
# FUZZ_EXAMPLES=N: explore N fresh examples a test instead of the suite's fixed ones.
EXPLORE = int(os.environ.get("FUZZ_EXAMPLES", 0))
FUZZ = settings(max_examples=EXPLORE or 100, deadline=None, derandomize=not EXPLORE,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
RUNS = settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

SMALL = ["--users", "1", "--prompt-tokens", "8", "--output-tokens", "2", "--detail", "stage", "--quiet"]
SMALL_GPU = [a for a in SMALL if a not in ("--detail", "stage")]  # a GPU scenario takes no --detail


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"no answer in {HANG_S} s")


def cli(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    """`wafersim ARGV` in-process, in `cwd`: (exit code, stdout, stderr). A traceback or a
    hang fails the test."""
    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HANG_S)
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse's own exit: must not happen, but say how
                code = exc.code
    except Exception:
        pytest.fail(f"wafersim {' '.join(argv)} raised:\n{traceback.format_exc()}\nstderr: {err.getvalue()}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        os.chdir(here)
    return code, out.getvalue(), err.getvalue()


def tree(folder: Path) -> set[str]:
    """Every path under `folder`, hidden ones included."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def refused(argv: list[str], *names: str, folder: Path | None = None) -> str:
    """Run ARGV (in a fresh folder unless given): exit 2, one line `error: ...` naming one of
    `names`, nothing written. Returns the line."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = folder or Path(tmp)
        before = tree(folder)
        code, _, err = cli(argv, folder)
        lines = err.splitlines()
        assert code == 2, f"wafersim {' '.join(argv)}: exit {code}, stderr {err!r}"
        assert len(lines) == 1 and lines[0].startswith("error: "), f"wafersim {' '.join(argv)}: {err!r}"
        assert "Traceback" not in err
        assert not names or any(n in lines[0] for n in names), f"{lines[0]!r} names none of {names}"
        assert tree(folder) == before, f"wafersim {' '.join(argv)} left {tree(folder) - before}"
        return lines[0]


def ran(argv: list[str], folder: Path, requests: list[tuple[int, int]] | None = None) -> wafersim.Trace:
    """Run ARGV with `--trace folder/run.arrow`: exit 0, a readable trace, each request
    completed with its output tokens (`requests`: (prompt, output) per request, in id order)."""
    trace = folder / "run.arrow"
    code, _, err = cli([*argv, "--trace", str(trace)], folder)
    assert code == 0, f"wafersim {' '.join(argv)}: exit {code}: {err}"
    t = wafersim.open_trace(trace)
    reqs = t.requests.sort_values("request_id")
    assert (reqs.status == "completed").all()
    assert (reqs.tokens == reqs.output_tokens).all()
    per_request = t.tokens.groupby("request_id").size()
    assert per_request.reindex(reqs.request_id).tolist() == reqs.output_tokens.tolist()
    if requests is not None:
        assert list(zip(reqs.prompt_tokens, reqs.output_tokens)) == requests
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], "a spool folder was left"
    return t


# ---------------------------------------------------------------------------- numbers

NON_FINITE = st.sampled_from(["nan", "inf", "-inf", "NaN", "1e999"])
TEXT = st.sampled_from(["", "abc", "1,000", "0x10", "1.2.3", "--", " "])


def _fmt(x: float | int) -> str:
    return repr(x) if isinstance(x, float) else str(x)


def outside(integer: bool, low: float | None, high: float | None, above: bool = False) -> st.SearchStrategy[str]:
    """Text of a value a field of this kind refuses: below `low` (at it when `above`),
    above `high`, not finite, not a number, or (for an integer) a fraction."""
    bad = [NON_FINITE, TEXT]
    if low is not None:
        bad.append(st.floats(max_value=low, exclude_max=not above, allow_nan=False, allow_infinity=False,
                             min_value=-1e30).map(lambda x: _fmt(int(x)) if integer and x.is_integer() else _fmt(x)))
    if high is not None:
        bad.append(st.integers(min_value=int(high) + 1, max_value=4 * int(high) + 10).map(str) if integer else
                   st.floats(min_value=high, exclude_min=True, max_value=1e300).map(_fmt))
    if integer:
        bad.append(st.floats(min_value=1.01, max_value=1e6).filter(lambda x: not x.is_integer()).map(_fmt))
    return st.one_of(bad)


# Each pipeline scenario flag: (integer, lowest, highest, names an error may give it by).
FLAGS = {
    "--users": (True, 1, MAX_REQUESTS),
    "--requests": (True, 1, MAX_REQUESTS),
    "--prompt-tokens": (True, 1, MAX_TOKENS),
    "--output-tokens": (True, 1, MAX_TOKENS),
    "--prefill-chunk": (True, 1, MAX_TOKENS),
    "--wafers": (True, 1, MAX_WAFERS),
    "--seed": (True, 0, 2**63 - 1),
    "--rate": (False, 0, MAX_RATE_PER_S),
    "--price-kwh": (False, 0, None),
    "--price-hour": (False, 0, None),
    "--max-window-ps": (True, 1, None),
    "--lps-per-actor": (True, 1, None),
}


@st.composite
def bad_flag(draw) -> tuple[str, str]:
    flag = draw(st.sampled_from(sorted(FLAGS)))
    integer, low, high = FLAGS[flag]
    return flag, draw(outside(integer, low, high))


@FUZZ
@given(bad_flag())
def test_a_bad_number_in_a_flag_is_one_line_naming_it(flag_value):
    flag, value = flag_value
    if flag == "--lps-per-actor" and value == "site":
        return
    refused(["run", "llama8b_one_wafer", *SMALL, flag, value, "--trace", "t/run.arrow"], flag)


WORDS = {"--sites": ("santa-clara", "stockton", "dallas"), "--model": ("llama3.1-8b", "llama3.1-70b", "llama3.1-405b"),
         "--detail": ("stage", "layer", "op"), "--backend": ("inprocess", "ray"), "--fidelity": ("event", "analytic"),
         "--wafer": ("wse-3", "wse-2", "h100")}


@FUZZ
@given(st.sampled_from(sorted(WORDS)), st.text(min_size=0, max_size=16))
def test_a_bad_word_in_a_flag_is_one_line_naming_it(flag, value):
    if any(word in value for word in WORDS[flag]) or "\x00" in value:  # maybe valid; argv holds no NUL
        return
    refused(["run", "llama8b_one_wafer", *SMALL, flag, value, "--trace", "t/run.arrow"], flag)


@FUZZ
@given(st.sampled_from(["wafer", "gpu", "link"]), st.data())
def test_a_bad_spec_or_link_field_is_one_line_naming_it(kind, data):
    if kind == "link":
        limits = {"lanes": (True, 0, 1024, True), "lane_bits_per_s": (False, 1.0, None, False),
                  "latency_ps": (True, 0, MAX_LATENCY_PS, False), "energy_pj_per_bit": (False, 0, 1e6, False)}
        field = data.draw(st.sampled_from(sorted(limits)))
        integer, low, high, above = limits[field]
    else:
        table = WAFER_LIMITS if kind == "wafer" else GPU_LIMITS
        field = data.draw(st.sampled_from(sorted(table)))
        (integer, low, high), above = table[field], field == "nonlinear_cycles_per_element"
    value = data.draw(outside(integer, low, high, above))
    flag = "--link" if kind == "link" else "--spec"
    scenario = ["run", "h100_baseline", "--gpus", "1", "--model", "llama3.1-8b"] if kind == "gpu" else \
        ["run", "llama8b_one_wafer"]
    refused([*scenario, *(SMALL_GPU if kind == "gpu" else SMALL), flag, f"{field}={value}", "--trace", "t/run.arrow"],
            field)


def inside(integer: bool, low: float, high: float) -> st.SearchStrategy[str]:
    """Text of a value inside a field's limits, its bounds included."""
    if integer:
        return st.one_of(st.sampled_from([int(low), int(high)]), st.integers(int(low), int(high))).map(str)
    return st.one_of(st.sampled_from([low, high]), st.floats(low, high)).map(_fmt)


@settings(max_examples=EXPLORE or 12, deadline=None, derandomize=not EXPLORE,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["wafer", "gpu"]), st.data())
def test_a_what_if_inside_the_limits_runs_or_is_one_line(kind, data):
    """Any `--spec` value inside its limits either runs (every token delivered) or is
    refused as one line (the model no longer fits, say): never a traceback, a hang or an
    overflow of the picosecond clock."""
    table = WAFER_LIMITS if kind == "wafer" else GPU_LIMITS
    fields = data.draw(st.lists(st.sampled_from(sorted(table)), min_size=1, max_size=2, unique=True))
    specs = [f"{f}={data.draw(inside(*table[f]))}" for f in fields]
    if kind == "wafer" and "system_busy_w" in fields and "system_idle_w" not in fields:
        specs.append("system_idle_w=0")
    scenario = ["run", "h100_baseline", "--gpus", "1", "--model", "llama3.1-8b"] if kind == "gpu" else \
        ["run", "llama8b_one_wafer"]
    argv = [*scenario, *(SMALL_GPU if kind == "gpu" else SMALL), *(a for spec in specs for a in ("--spec", spec))]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        code, _, err = cli([*argv, "--trace", str(folder / "run.arrow")], folder)
        if code == 0:
            t = wafersim.open_trace(folder / "run.arrow")
            assert (t.requests.tokens == 2).all()
        else:
            assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
            assert not list(folder.iterdir()), f"{argv} left files"


@FUZZ
@given(st.sampled_from(["llama8b_one_wafer", "llama70b_four_wafers", "h100_baseline", "h100_vs_wse3", "fleet"]),
       st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=12))
def test_an_unknown_flag_is_one_line_for_every_scenario(scenario, name):
    flag = f"--zz-{name}"
    refused(["run", scenario, flag], flag)


def test_an_unknown_flag_is_one_line_for_every_command(tmp_path):
    """Each command refuses an unknown flag before doing anything (`calibrate` fits
    nothing, `validate` simulates nothing)."""
    trace, table = tmp_path / "run.arrow", tmp_path / "in.csv"
    table.write_text("arrival_s,prompt_tokens,output_tokens\n0,8,2\n")
    refused([], "give a command")
    for argv in (["list"], ["summary", str(trace)], ["validate"], ["validate", "--analytic"], ["calibrate"],
                 ["calibrate", "--dry-run"], ["sweep", "s.toml"], ["plot", str(trace), "-o", "p.png"],
                 ["perfetto", str(trace), "-o", "p.json"], ["convert", "azure", str(table), "-o", "o.csv"],
                 ["convert", "sharegpt", str(table), "-o", "o.csv", "--rate", "1"]):
        refused([*argv, "--frobnicate"], "--frobnicate")


@pytest.mark.parametrize("where", ["folder", "under-a-file", "slash", "companion-folder"])
def test_a_trace_path_that_cannot_be_written_is_refused_before_the_run(tmp_path, where):
    (tmp_path / "file").write_text("")
    (tmp_path / "dir").mkdir()
    (tmp_path / "x.requests.arrow").mkdir()
    path = {"folder": "dir", "under-a-file": "file/run.arrow", "slash": "new/",
            "companion-folder": "x.arrow"}[where]
    refused(["run", "llama8b_one_wafer", *SMALL, "--trace", path], "--trace", folder=tmp_path)


# ---------------------------------------------------------------------------- cluster TOML

def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value == math.inf else "-inf" if value == -math.inf
                                                else repr(value))
    if isinstance(value, (int, str)):
        return json.dumps(value)
    return "[" + ", ".join(_toml(v) for v in value) + "]"


def cluster_toml(top: dict, tables: dict[str, list[dict]], links: dict[str, dict]) -> str:
    lines = [f"{k} = {_toml(v)}" for k, v in top.items()]
    for name, items in tables.items():
        for item in items:
            lines += ["", f"[[{name}]]", *(f"{k} = {_toml(v)}" for k, v in item.items())]
    for name, table in links.items():
        lines += ["", f"[links.{name}]", *(f"{k} = {_toml(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


def small_cluster(requests: int = 2, prompt: int = 8, output: int = 2, arrivals: str = "poisson") -> dict:
    return {"top": {"name": "fuzz", "detail": "stage", "seed": 1},
            "tables": {"pipelines": [{"name": "p", "models": ["llama3.1-8b"], "wafers": 1}],
                       "replicas": [{"pipeline": "p", "sites": ["dallas"]}],
                       "users": [{"name": "u", "site": "dallas", "model": "llama3.1-8b", "arrivals": arrivals,
                                  "rate_per_s": 1000.0, "requests": requests, "prompt_tokens": prompt,
                                  "output_tokens": output}]},
            "links": {}}


# (where, key, integer, lowest, highest, above): the numbers of a cluster file
CLUSTER_NUMBERS = [
    ("top", "seed", True, 0, 2**63 - 1, False),
    ("top", "prefill_chunk_tokens", True, 1, MAX_TOKENS, False),
    ("top", "max_active", True, 0, MAX_REQUESTS, False),
    ("top", "time_scale", False, 0, 1e12, True),
    ("top", "slo_ttft_ms", False, 0, None, False),
    ("top", "slo_tpot_ms", False, 0, None, False),
    ("users", "rate_per_s", False, 0, MAX_RATE_PER_S, True),
    ("users", "burstiness_cv", False, 0, 100.0, True),
    ("users", "think_time_s", False, 0, 1e6, False),
    ("users", "requests", True, 1, MAX_REQUESTS, False),
    ("users", "prompt_tokens", True, 1, MAX_TOKENS, False),
    ("users", "output_tokens", True, 1, MAX_TOKENS, False),
    ("users", "sessions", True, 0, MAX_REQUESTS, False),
    ("replicas", "count", True, 1, MAX_REPLICAS, False),
    ("pipelines", "wafers", True, 1, MAX_WAFERS, False),
    ("links.wan", "lanes", True, 0, 1024, True),
    ("links.intra_site", "latency_ps", True, 0, MAX_LATENCY_PS, False),
    ("links.wan", "lane_bits_per_s", False, 1.0, None, False),
    ("links.intra_site", "energy_pj_per_bit", False, 0, 1e6, False),
]


def toml_outside(integer: bool, low, high, above: bool) -> st.SearchStrategy:
    """A TOML value the key refuses: out of range, not finite, a float for an integer, a
    string or a boolean for a number."""
    bad = [st.sampled_from([math.nan, math.inf, -math.inf, "1", True])]
    if low is not None:
        bad.append(st.integers(min_value=-10**20, max_value=int(low) - (0 if above else 1)) if integer else
                   st.floats(min_value=-1e300, max_value=low, exclude_max=not above))
    if high is not None:
        bad.append(st.integers(min_value=int(high) + 1, max_value=4 * int(high) + 10) if integer else
                   st.floats(min_value=high, exclude_min=True, max_value=1e300))
    if integer:
        bad.append(st.floats(min_value=-10, max_value=1e6, allow_nan=False))  # 4.0 is no integer either
    return st.one_of(bad)


@FUZZ
@given(st.sampled_from(CLUSTER_NUMBERS), st.data())
def test_a_bad_number_in_a_cluster_file_is_one_line_naming_the_key(entry, data):
    where, key, integer, low, high, above = entry
    value = data.draw(toml_outside(integer, low, high, above))
    c = small_cluster()
    if where == "top":
        c["top"][key] = value
    elif where.startswith("links."):
        c["links"][where.split(".")[1]] = {key: value}
    else:
        c["tables"][where][0][key] = value
    if key in ("rate_per_s",) and c["tables"]["users"][0]["arrivals"] not in ("poisson", "gamma"):
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "c.toml").write_text(cluster_toml(**c))
        refused(["run", "fleet", "--config", "c.toml", "--quiet", "--trace", "out/run.arrow"], key, folder=folder)


@FUZZ
@given(st.sampled_from(["pipelines", "replicas", "users", "routers", "top", "links.wan"]),
       st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=10))
def test_an_unknown_key_in_a_cluster_file_is_one_line_naming_it(where, key):
    key = f"zz_{key}"
    c = small_cluster()
    c["tables"]["routers"] = [{"name": "r", "site": "dallas"}]
    if where == "top":
        c["top"][key] = 1
    elif where == "links.wan":
        c["links"]["wan"] = {key: 1}
    else:
        c["tables"][where][0][key] = 1
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "c.toml").write_text(cluster_toml(**c))
        refused(["run", "fleet", "--config", "c.toml", "--quiet", "--trace", "out/run.arrow"], key, folder=folder)


@RUNS
@given(st.integers(1, 3), st.integers(1, 16), st.integers(1, 3), st.sampled_from(["poisson", "burst", "gamma"]))
def test_a_small_valid_cluster_file_runs_with_every_token(requests, prompt, output, arrivals):
    c = small_cluster(requests, prompt, output, arrivals)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "c.toml").write_text(cluster_toml(**c))
        ran(["run", "fleet", "--config", "c.toml", "--quiet"], folder, [(prompt, output)] * requests)


# ---------------------------------------------------------------------------- config.json

TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 256, "torch_dtype": "bfloat16", "model_type": "llama"}
DIMENSIONS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "vocab_size", "head_dim")


@st.composite
def bad_config(draw) -> tuple[dict, tuple[str, ...]]:
    """A config.json the Hugging Face loader would refuse, and the fields an error may name."""
    cfg = dict(TINY)
    how = draw(st.sampled_from(["value", "missing", "heads", "kv", "dtype", "tie", "name"]))
    if how == "value":
        field = draw(st.sampled_from(DIMENSIONS))
        cfg[field] = draw(st.one_of(st.integers(max_value=0, min_value=-10**6), st.integers(min_value=2**31),
                                    st.floats(min_value=1.5, max_value=1e3).filter(lambda x: not x.is_integer()),
                                    st.sampled_from([True, "64", [64], {}, 64.0])))
        return cfg, (field,)
    if how == "missing":
        field = draw(st.sampled_from([d for d in DIMENSIONS if d not in ("num_key_value_heads", "head_dim")]))
        del cfg[field]
        return cfg, (field,)
    if how == "heads":  # the heads do not divide the hidden size, and no head_dim says otherwise
        heads = draw(st.integers(2, 16))
        cfg.update(num_attention_heads=heads, num_key_value_heads=1,
                   hidden_size=draw(st.integers(1, 4096).filter(lambda h: h % heads)))
        return cfg, ("hidden_size", "num_attention_heads")
    if how == "kv":  # the KV heads do not divide the heads
        kv = draw(st.integers(2, 16))
        heads = draw(st.integers(kv + 1, 64).filter(lambda h: h % kv))
        cfg.update(num_attention_heads=heads, num_key_value_heads=kv, head_dim=16)
        return cfg, ("num_key_value_heads",)
    if how == "dtype":
        cfg["torch_dtype"] = draw(st.sampled_from(["int4", "float8", "", 16, True, ["bfloat16"]]))
        return cfg, ("torch_dtype",)
    if how == "tie":
        cfg["tie_word_embeddings"] = draw(st.sampled_from(["yes", 1, 0, "true"]))
        return cfg, ("tie_word_embeddings",)
    cfg["_name_or_path"] = draw(st.sampled_from([5, ["x"], {"a": 1}, True]))
    return cfg, ("_name_or_path",)


@FUZZ
@given(bad_config())
def test_a_config_json_the_hf_loader_refuses_is_one_line_naming_the_field(case):
    cfg, names = case
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "config.json").write_text(json.dumps(cfg))
        refused(["run", "llama8b_one_wafer", *SMALL, "--model", "config.json", "--trace", "out/run.arrow"],
                *names, folder=folder)


@RUNS
@given(st.sampled_from([1, 2, 4, 8]), st.data())
def test_a_small_valid_config_json_runs_with_every_token(heads, data):
    kv = data.draw(st.sampled_from([d for d in (1, 2, 4, 8) if heads % d == 0]))
    head_dim = data.draw(st.sampled_from([8, 16]))
    cfg = {**TINY, "num_attention_heads": heads, "num_key_value_heads": kv, "hidden_size": heads * head_dim,
           "num_hidden_layers": data.draw(st.integers(1, 3)), "vocab_size": data.draw(st.integers(16, 512))}
    if data.draw(st.booleans()):
        cfg["head_dim"] = head_dim
    output = data.draw(st.integers(1, 3))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "config.json").write_text(json.dumps(cfg))
        ran(["run", "llama8b_one_wafer", "--model", "config.json", "--users", "2", "--prompt-tokens", "8",
             "--output-tokens", str(output), "--detail", "stage", "--quiet"], folder, [(8, output)] * 2)


# ---------------------------------------------------------------------------- request files

def write_requests(path: Path, rows: list[dict], columns: list[str]) -> None:
    if path.suffix == ".csv":
        text = ",".join(columns) + "\n" + "".join(",".join(str(r.get(c, "")) for c in columns) + "\n" for r in rows)
        path.write_text(text)
        return
    table = pa.table({c: pa.array([r.get(c) for r in rows]) for c in columns})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


@st.composite
def bad_request_rows(draw) -> tuple[list[dict], list[str], tuple[str, ...]]:
    rows = [{"arrival_s": 0.0, "prompt_tokens": 8, "output_tokens": 2},
            {"arrival_s": 0.001, "prompt_tokens": 4, "output_tokens": 1}]
    columns = ["arrival_s", "prompt_tokens", "output_tokens"]
    how = draw(st.sampled_from(["arrival_s", "prompt_tokens", "output_tokens", "session", "model", "column",
                                "missing", "decreasing"]))
    n = draw(st.integers(0, 1))
    if how == "arrival_s":
        rows[n]["arrival_s"] = draw(st.one_of(st.sampled_from([math.nan, math.inf, -1.0, "soon"]),
                                              st.floats(min_value=1e6, exclude_min=True, max_value=1e300)))
    elif how in ("prompt_tokens", "output_tokens"):
        rows[n][how] = draw(st.one_of(st.integers(-10**6, 0), st.integers(MAX_TOKENS + 1, 2**62),
                                      st.sampled_from([2.5, "many", math.nan])))
    elif how == "session":
        columns.append("session")
        rows[n]["session"] = draw(st.one_of(st.integers(-10**6, -1), st.integers(2**62, 2**63 - 1),
                                            st.sampled_from([0.5, "s1"])))
    elif how == "model":
        columns.append("model")
        rows[n]["model"] = draw(st.sampled_from(["gpt-5", "llama", "nowhere.json"]))
    elif how == "column":
        name = draw(st.sampled_from(["arrival_ms", "tokens", "user"]))
        columns.append(name)
        rows[0][name] = rows[1][name] = 1
        return rows, columns, (name,)
    elif how == "missing":
        columns.remove(name := draw(st.sampled_from(columns)))
        return rows, columns, (name,)
    else:
        rows[0]["arrival_s"], rows[1]["arrival_s"] = 1.0, 0.5
        return rows, columns, ("arrival_s",)
    return rows, columns, (how,)


@FUZZ
@given(bad_request_rows(), st.sampled_from([".csv", ".arrow"]))
def test_a_bad_request_file_is_one_line_naming_the_column(case, suffix):
    rows, columns, names = case
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / f"requests{suffix}"
        try:
            write_requests(path, rows, columns)
        except (pa.ArrowException, OverflowError):
            return  # Arrow holds no such column (mixed types): nothing to read
        c = small_cluster(arrivals=str(path))
        (folder / "c.toml").write_text(cluster_toml(**c))
        refused(["run", "fleet", "--config", "c.toml", "--quiet", "--trace", "out/run.arrow"], *names,
                folder=folder)


@RUNS
@given(st.lists(st.tuples(st.floats(0, 0.01), st.integers(1, 16), st.integers(1, 3)), min_size=1, max_size=3),
       st.sampled_from([".csv", ".arrow"]))
def test_a_small_valid_request_file_runs_with_every_token(rows, suffix):
    times = sorted(t for t, _, _ in rows)
    records = [{"arrival_s": t, "prompt_tokens": p, "output_tokens": o} for t, (_, p, o) in zip(times, rows)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / f"requests{suffix}"
        write_requests(path, records, ["arrival_s", "prompt_tokens", "output_tokens"])
        (folder / "c.toml").write_text(cluster_toml(**small_cluster(requests=len(rows), arrivals=str(path))))
        (folder / "out").mkdir()
        ran(["run", "fleet", "--config", str(folder / "c.toml"), "--quiet"], folder / "out",
            [(p, o) for _, p, o in rows])


# ---------------------------------------------------------------------------- end to end

@pytest.mark.parametrize("argv", [
    ["-m", "cluster.commands.cli", "run", "llama8b_one_wafer", "--rate", "nan", "--trace", "t.arrow"],
    ["-m", "scenarios.llama8b_one_wafer", "--spec", "sync_cycles_per_hop=inf", "--trace", "t.arrow"],
    ["-m", "cluster.commands.cli", "summary", "--bogus", "x.arrow"],
    ["-m", "cluster.commands.cli", "validate", "--bogus"],
])
def test_exit_codes_end_to_end(tmp_path, argv):
    """The same refusals from a real process: exit 2, one line, nothing written."""
    proc = subprocess.run([sys.executable, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert not list(tmp_path.iterdir())
