"""A trace as pandas frames, typed for analysis: `open_trace(PATH)`.

`pd.read_feather` turns an integer column with nulls into float64 (inexact past 2**53 ps,
about an hour) and a dictionary column into a Categorical holding every name the run
could have emitted, sorted as text (layer10 before layer2). Here:

- an integer column that can hold nulls is a pandas nullable integer (Int64, Int32,
  Int16), exact, nulls as <NA>; one that never does (`NOT_NULL`) stays a numpy integer;
- a string column is a Categorical of only the values present, in natural order
  (layer2 before layer10, wafer9 before wafer10);
- `meta` is the run's description from the schema metadata (`resolved` holds every
  constant it used).

Times stay integer picoseconds; `ms(values)` gives float milliseconds (NaN for nulls).
This module imports pandas: a simulation run never imports it (tests check that).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from cluster.results.trace import energy_path, requests_path, tokens_path
from common.units import PS_PER_MS

# Integer columns that are never null, per table: plain numpy integers.
NOT_NULL = {
    "spans": {"start_ps", "end_ps"},
    "requests": {"request_id", "arrival_ps", "prompt_tokens", "output_tokens", "tokens"},
    "tokens": {"request_id", "token", "time_ps"},
    "energy": {"devices"},
}
_NULLABLE = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype(), pa.int16(): pd.Int16Dtype()}
_TABLE_SUFFIXES = (".requests", ".tokens", ".energy")


def natural_key(text: str) -> list:
    """Sort key putting digit runs in numeric order: layer2 < layer10 < lm_head."""
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", text))]


def ms(values):
    """Picoseconds as float milliseconds: a Series or DataFrame of ints (nullable or not;
    <NA> becomes NaN), an array or a number."""
    if isinstance(values, (pd.Series, pd.DataFrame)):
        return values.astype("float64") / PS_PER_MS
    return np.asarray(values, dtype=np.float64) / PS_PER_MS


@dataclass
class Trace:
    """The tables of one run (None: a table that run did not write) and its description."""

    path: Path
    spans: pd.DataFrame
    requests: pd.DataFrame | None
    tokens: pd.DataFrame | None
    energy: pd.DataFrame | None
    meta: dict

    ms = staticmethod(ms)


def _base(path: Path) -> Path:
    """The spans file of a trace, given any of its files."""
    stem = path.stem
    for suffix in _TABLE_SUFFIXES:
        if stem.endswith(suffix):
            return path.with_name(stem[: -len(suffix)] + path.suffix)
    return path


def _read(path: Path) -> tuple[pa.Table, dict]:
    with pa.memory_map(str(path)) as src:
        reader = pa.ipc.open_file(src)
        table = reader.read_all()
    meta = json.loads((table.schema.metadata or {}).get(b"wafersim", b"{}"))
    return table, meta


def _frame(table: pa.Table, not_null: set[str]) -> pd.DataFrame:
    frame = table.to_pandas(types_mapper=_NULLABLE.get)  # every integer column nullable, exact
    for name, column in zip(table.column_names, table.columns):
        if pa.types.is_dictionary(column.type):
            cat = frame[name].cat.remove_unused_categories()
            frame[name] = cat.cat.reorder_categories(sorted(cat.cat.categories, key=natural_key))
        elif column.type in _NULLABLE and name in not_null and column.null_count == 0:
            frame[name] = frame[name].to_numpy(_NULLABLE[column.type].numpy_dtype)
    return frame


def _table(path: Path, key: str) -> pd.DataFrame | None:
    if not path.exists():
        return None
    return _frame(_read(path)[0], NOT_NULL[key])


def open_trace(path: str | Path) -> Trace:
    """The trace at `path` (its spans file, or any of its other files) as pandas frames."""
    spans_path = _base(Path(path))
    table, meta = _read(spans_path)
    return Trace(spans_path, _frame(table, NOT_NULL["spans"]),
                 _table(requests_path(spans_path), "requests"), _table(tokens_path(spans_path), "tokens"),
                 _table(energy_path(spans_path), "energy"), meta)
