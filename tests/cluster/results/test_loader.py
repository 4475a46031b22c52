"""open_trace: exact integers with nulls, categories used and in natural order."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from cluster.commands.scenario import RunOptions, ScenarioConfig, run_scenario
from cluster.results.loader import natural_key, open_trace
from cluster.results.trace import REQUEST_SCHEMA, SPAN_SCHEMA, requests_path, table_batch
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("loader") / "t.arrow"
    cfg = ScenarioConfig("t", "llama3.1-70b", 4, ("santa-clara", "santa-clara", "stockton", "dallas"), 2, 64, 4)
    run_scenario(cfg, RunOptions(trace=str(path)))
    return str(path)


def test_natural_key_sorts_numbers_as_numbers():
    names = ["layer10", "embed", "layer2", "r10.wafer0", "lm_head", "r9.wafer1", "layer1.qkv_proj", "layer1"]
    assert sorted(names, key=natural_key) == ["embed", "layer1", "layer1.qkv_proj", "layer2", "layer10",
                                              "lm_head", "r9.wafer1", "r10.wafer0"]


def test_integer_columns_with_nulls_are_nullable_ints(run):
    t = open_trace(run)
    s, r = t.spans, t.requests
    assert s.dtypes["start_ps"] == np.int64 and s.dtypes["end_ps"] == np.int64
    for column, dtype in (("request_id", "Int64"), ("token", "Int32"), ("layer", "Int16"), ("bytes", "Int64"),
                          ("flops", "Int64"), ("region", "Int16")):
        assert str(s.dtypes[column]) == dtype, column
        assert s[column].isna().any() and s[column].notna().any(), column  # nulls, kept as <NA>
    assert str(r.dtypes["tpot_ps"]) == "Int64" and r.dtypes["request_id"] == np.int64
    assert str(t.tokens.dtypes["time_ps"]) == "int64" and t.energy.dtypes["devices"] == np.int32
    raw = pa.ipc.open_file(run).read_all()
    for column in ("request_id", "token", "layer", "region", "bytes"):
        assert [None if v is pd.NA else int(v) for v in s[column]] == raw.column(column).to_pylist()


def test_categories_are_the_used_values_in_natural_order(run):
    t = open_trace(run)
    raw = pa.ipc.open_file(run).read_all()
    for column in ("lp", "datacenter", "kind", "name", "phase"):
        cats = list(t.spans[column].cat.categories)
        assert cats == sorted(set(t.spans[column].dropna()), key=natural_key), column
        assert (t.spans[column].value_counts() > 0).all(), column  # no empty groups
    dictionary = raw.column("name").chunk(0).dictionary.to_pylist()
    names = list(t.spans["name"].cat.categories)
    assert len(names) < len(dictionary)  # the file's vocabulary has names this run never used
    assert names.index("layer2") < names.index("layer10")
    per_layer = t.spans[t.spans.kind == "compute"].groupby("name", observed=True).size()
    assert list(per_layer.index[:3]) == ["embed", "layer0", "layer1"]
    assert list(t.requests["status"].cat.categories) == ["completed"]


def test_exact_past_two_to_the_53(tmp_path):
    """read_feather would make these float64 and lose the last digit; open_trace keeps them."""
    big = 2**60 + 1
    path = tmp_path / "h.arrow"
    spans = [[0, big], [1, big + 2], ["a", "a"], ["s", "s"], ["compute", "link"], ["layer10", "layer2"],
             [None, big], [None, 3], [None, 10], [None, big], [None, None], [None, "decode"], [None, 7]]
    with pa.ipc.new_file(str(path), SPAN_SCHEMA) as w:
        w.write_batch(table_batch(SPAN_SCHEMA, spans))
    with pa.ipc.new_file(str(requests_path(path)), REQUEST_SCHEMA) as w:
        w.write_batch(table_batch(REQUEST_SCHEMA, [[] for _ in REQUEST_SCHEMA]))
    t = open_trace(tmp_path / "h.requests.arrow")  # any of the files names the trace
    assert t.spans["request_id"].tolist() == [pd.NA, big]
    assert t.spans["bytes"].tolist() == [pd.NA, big] and t.spans["end_ps"].tolist() == [1, big + 2]
    assert list(t.spans["name"].cat.categories) == ["layer2", "layer10"]
    assert t.requests is not None and len(t.requests) == 0
    assert t.tokens is None and t.energy is None and t.meta == {}
    assert t.ms(t.spans["end_ps"]).tolist() == [1e-9, (big + 2) / 1e9]
    assert np.isnan(t.ms(t.spans["token"])[0])


def test_wafersim_package_exports_open_trace_without_importing_pandas():
    code = ("import sys, wafersim\n"
            "before = 'pandas' in sys.modules\n"
            "from wafersim import open_trace, ms\n"
            "print(before, open_trace.__module__, 'pandas' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "cluster.results.loader", "True"]
