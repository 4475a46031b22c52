"""The trace: the Arrow schemas of its four tables, and rows to record batches (the
crash-safe writer is cluster.results.writer).

Spans go to `PATH`, requests to `PATH` with `.requests` before the suffix, output tokens
to `PATH` with `.tokens`, energy to `PATH` with `.energy`.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
import pyarrow as pa

from common.units import NULL

# A span's kind. Codes are positions here: append, never reorder. A link's transfer is two
# spans: "link" while the wire is busy serialising it, "flight" while it propagates.
KINDS = ("compute", "sram", "fabric", "link", "queue", "request", "flight", "fault")
PHASES = ("prefill", "decode")
BATCH_ROWS = 65_536
_DICT = pa.dictionary(pa.int32(), pa.string())

SPAN_SCHEMA = pa.schema([
    ("start_ps", pa.int64()), ("end_ps", pa.int64()), ("lp", _DICT), ("datacenter", _DICT),
    ("kind", _DICT), ("name", _DICT), ("request_id", pa.int64()), ("token", pa.int32()),
    ("layer", pa.int16()), ("bytes", pa.int64()), ("flops", pa.int64()), ("phase", _DICT),
    ("region", pa.int16()),  # a wafer's region (its unit j) for compute and fabric spans below stage detail
])

# One row per request. Times are where the user is: `arrival_ps` when it sent the request,
# `first_token_ps` and `finish_ps` when the first and last token reached it (the WAN both
# ways included); `admitted_ps` when a replica took it. `queue_ps` is time spent waiting for
# admission (at the router and at the replica), network transit excluded. A rejected
# request has `status` "rejected", a `reason`, its `finish_ps` (when the user heard) and
# nulls for what never happened; a "failed" one lost its replica to a device fault and had
# no other (`reason` says which fault). `attempts`: replicas it was sent to (a router
# retries a lost request elsewhere); `tokens_lost`: tokens streamed by attempts a loss cut
# short (generated again; the tokens table keeps only the last attempt's).
REQUEST_SCHEMA = pa.schema([
    ("request_id", pa.int64()), ("arrival_ps", pa.int64()), ("admitted_ps", pa.int64()),
    ("first_token_ps", pa.int64()), ("finish_ps", pa.int64()), ("prompt_tokens", pa.int32()),
    ("output_tokens", pa.int32()), ("ttft_ps", pa.int64()), ("tpot_ps", pa.int64()),
    ("model", _DICT), ("user_site", _DICT), ("replica", _DICT), ("replica_site", _DICT),
    ("session", pa.int64()), ("queue_ps", pa.int64()), ("e2e_ps", pa.int64()), ("tokens", pa.int32()),
    ("status", _DICT), ("reason", _DICT), ("energy_j", pa.float64()),
    ("attempts", pa.int32()), ("tokens_lost", pa.int32()),
])

# One row per output token, when it reached the user: inter-token latencies come from here.
TOKEN_SCHEMA = pa.schema([("request_id", pa.int64()), ("token", pa.int32()), ("time_ps", pa.int64())])

# One row per device LP (wafer, GPU group, link): its energy over the run, split into the
# idle floor and what its work added; `idle_w` and `peak_w` bound its average power.
ENERGY_SCHEMA = pa.schema([
    ("lp", _DICT), ("datacenter", _DICT), ("device", _DICT), ("devices", pa.int32()), ("idle_w", pa.float64()),
    ("peak_w", pa.float64()), ("idle_j", pa.float64()), ("dynamic_j", pa.float64()), ("energy_j", pa.float64()),
])


def requests_path(spans_path: str | Path) -> Path:
    p = Path(spans_path)
    return p.with_name(f"{p.stem}.requests{p.suffix}")


def tokens_path(spans_path: str | Path) -> Path:
    p = Path(spans_path)
    return p.with_name(f"{p.stem}.tokens{p.suffix}")


def energy_path(spans_path: str | Path) -> Path:
    p = Path(spans_path)
    return p.with_name(f"{p.stem}.energy{p.suffix}")


def float_values(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A float64 column as numpy, from its buffers (to_numpy would import pandas)."""
    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    return np.concatenate([np.frombuffer(c.buffers()[1], np.float64, len(c), c.offset * 8) for c in chunks]
                          or [np.zeros(0)])


def float_array(values: np.ndarray) -> pa.Array:
    values = np.ascontiguousarray(values, np.float64)
    return pa.Array.from_buffers(pa.float64(), len(values), [None, pa.py_buffer(values)])


_KIND_CODES = {kind: i for i, kind in enumerate(KINDS)}
_PHASE_CODES = {None: NULL, **{phase: i for i, phase in enumerate(PHASES)}}
NUMPY_TYPES = {pa.int64(): np.int64, pa.int32(): np.int32, pa.int16(): np.int16}


# Arrays are built from buffers, not with pa.array: pyarrow imports pandas the first time
# it converts anything (about 0.16 s a run), and a run never needs pandas.
def int_array(values: np.ndarray, typ: pa.DataType, nullable: bool = True) -> pa.Array:
    """An integer array sharing `values`' memory; with `nullable`, NULL values are nulls."""
    values = np.ascontiguousarray(values, NUMPY_TYPES[typ])
    validity, nulls = None, 0
    if nullable:
        missing = values == NULL
        nulls = int(np.count_nonzero(missing))
        if nulls:
            validity = pa.py_buffer(np.packbits(~missing, bitorder="little"))
    return pa.Array.from_buffers(typ, len(values), [validity, pa.py_buffer(values)], null_count=nulls)


def int_values(arr: pa.Array) -> np.ndarray:
    """An integer array as numpy, nulls as NULL: a view of its buffers when it has none."""
    dtype = NUMPY_TYPES[arr.type]
    validity, data = arr.buffers()[:2]
    values = np.frombuffer(data, dtype, len(arr), arr.offset * dtype().itemsize)
    if not arr.null_count:
        return values
    bits = np.unpackbits(np.frombuffer(validity, np.uint8), bitorder="little")[arr.offset:arr.offset + len(arr)]
    return np.where(bits.astype(bool), values, NULL)


def string_array(values: tuple[str, ...]) -> pa.Array:
    data = [v.encode() for v in values]
    offsets = np.zeros(len(data) + 1, np.int32)
    np.cumsum([len(d) for d in data], out=offsets[1:])
    return pa.StringArray.from_buffers(len(data), pa.py_buffer(offsets), pa.py_buffer(b"".join(data)))


def table_batch(schema: pa.Schema, columns: list[list]) -> pa.RecordBatch:
    """A record batch of `schema` from Python lists, one per column (None is null; strings
    for dictionary columns). Built from buffers: pa.array would import pandas."""
    arrays = []
    for values, f in zip(columns, schema):
        if pa.types.is_dictionary(f.type):
            vocab = sorted({v for v in values if v is not None})
            code = {v: i for i, v in enumerate(vocab)}
            codes = np.array([NULL if v is None else code[v] for v in values], np.int32)
            arrays.append(pa.DictionaryArray.from_arrays(int_array(codes, pa.int32()), string_array(tuple(vocab))))
        elif f.type == pa.float64():
            arrays.append(float_array(np.array([np.nan if v is None else v for v in values], np.float64)))
        else:
            arrays.append(int_array(np.array([NULL if v is None else v for v in values], np.int64), f.type))
    return pa.record_batch(arrays, schema=schema)


@dataclass(frozen=True)
class TraceVocab:
    """The dictionaries of the trace's string columns, fixed before the run starts."""

    lps: tuple[str, ...]
    datacenters: tuple[str, ...]
    names: tuple[str, ...]


class Tracer:
    """What a component traces into.

    A span is `rows.append((start_ps, end_ps, template, request_id, token))`; the template
    (from `template(...)`, called once per distinct shape of span and cached by the
    caller) holds what many spans share: kind, name, layer, bytes, FLOPs, phase, region. Five
    ints a span is what keeps tracing cheap next to the simulation itself.

    A pass whose whole schedule is known (a wafer's FIFO regions) traces as one record,
    `rows.append((shape, request_id, token, *times))`, `shape` from `pass_shape(...)`
    saying how many times follow and where its spans sit relative to them. Shape ids are
    negative, so a record's first int tells it from a span's start. One record a pass
    instead of a row a layer; numpy expands it to the very same spans (`spans()` in
    Python, `RowEncoder` in bulk). A flat tuple of ints, not a list inside a tuple: the
    garbage collector stops tracking such tuples, and keeps scanning lists.

    With no vocabulary it is a probe: it hands out fresh name codes and remembers the
    names, which is how the graph learns every name a component can emit.
    """

    def __init__(self, vocab: TraceVocab | None = None) -> None:
        self.rows: list[tuple] = []
        self.templates: list[tuple[int, int, int, int, int, int, int]] = []
        self._template_ids: dict[tuple, int] = {}
        self.shapes: list[tuple[int, int, int]] = []  # (first span, number of spans, number of times)
        self.shape_spans: list[tuple[int, int, int, int]] = []  # (end index, start off, end off, template)
        self._shape_ids: dict[tuple, int] = {}
        self.spans_per_row = 1  # at most, for a pass record: what bounds buffered spans
        self._names = {n: i for i, n in enumerate(vocab.names)} if vocab else None
        self.seen_names: list[str] = []

    def name(self, name: str) -> int:
        if self._names is None:
            if name not in self.seen_names:
                self.seen_names.append(name)
            return self.seen_names.index(name)
        try:
            return self._names[name]
        except KeyError:
            raise ValueError(f"trace: name {name!r} is not in the vocabulary") from None

    def template(self, kind: str, name: int, layer: int | None = None, nbytes: int | None = None,
                 flops: int | None = None, phase: str | None = None, region: int | None = None) -> int:
        """The id of a span shape; `name` is a code from `name()`."""
        try:
            key = (_KIND_CODES[kind], name, NULL if layer is None else layer, NULL if nbytes is None else nbytes,
                   NULL if flops is None else flops, _PHASE_CODES[phase], NULL if region is None else region)
        except KeyError as exc:
            raise ValueError(f"trace: unknown kind or phase {exc.args[0]!r}") from None
        tid = self._template_ids.get(key)
        if tid is None:
            tid = self._template_ids[key] = len(self.templates)
            self.templates.append(key)
        return tid

    def pass_shape(self, width: int, spans: tuple[tuple[int, int, int, int], ...]) -> int:
        """The id of a pass record's layout: `width` times, and per span (index i into
        them, start offset, end offset, template); the span is [t[i] + start, t[i] + end)."""
        key = (width, spans)
        sid = self._shape_ids.get(key)
        if sid is None:
            sid = self._shape_ids[key] = -1 - len(self.shapes)
            self.shapes.append((len(self.shape_spans), len(spans), width))
            self.spans_per_row = max(self.spans_per_row, len(spans))
            self.shape_spans.extend(spans)
        return sid

    def spans(self) -> list[tuple[int, int, int, int, int]]:
        """Every row as a five-int span, pass records expanded (for tests and debugging)."""
        out = []
        for row in self.rows:
            if row[0] >= 0:
                out.append(row)
                continue
            first, count, _ = self.shapes[-1 - row[0]]
            rid, token, ends = row[1], row[2], row[3:]
            out += [(ends[i] + s, ends[i] + e, t, rid, token)
                    for i, s, e, t in self.shape_spans[first:first + count]]
        return out


class _Grown:
    """A numpy copy of a list of equal-length int tuples that only ever grows: each call
    converts only what is new, so a table that grows all run long costs O(total)."""

    def __init__(self, width: int) -> None:
        self._array = np.empty((64, width), np.int64)
        self._n = 0

    def of(self, items: list) -> np.ndarray:
        n = len(items)
        if n > self._n:
            if n > len(self._array):
                grown = np.empty((max(n, 2 * len(self._array)), self._array.shape[1]), np.int64)
                grown[:self._n] = self._array[:self._n]
                self._array = grown
            self._array[self._n:n] = items[self._n:n]
            self._n = n
        return self._array[:n]


class RowEncoder:
    """Turns one LP's rows into record batches of SPAN_SCHEMA, without a Python loop per span.

    Batches hold exactly BATCH_ROWS rows (the rest waits for more rows, or `flush`), so an
    LP's batches depend only on its rows, not on when they were handed over: the writer
    can copy them to the file as they are.
    """

    def __init__(self, vocab: TraceVocab, lp: str, datacenter: str, tracer: Tracer) -> None:
        self._dicts = {k: string_array(v) for k, v in
                       (("lp", vocab.lps), ("datacenter", vocab.datacenters), ("kind", KINDS),
                        ("name", vocab.names), ("phase", PHASES))}
        self._lp_code = vocab.lps.index(lp)
        self._dc_code = vocab.datacenters.index(datacenter)
        self._tracer = tracer
        self._templates, self._shapes, self._spans = _Grown(7), _Grown(3), _Grown(4)
        self._carry = np.empty((5, 0), np.int64)
        self._template_rows, self._template_cols = -1, []
        self._constants: dict[tuple[str, int], pa.DictionaryArray] = {}

    def encode(self) -> list[pa.RecordBatch]:
        """Take the tracer's rows; return the full batches they complete, keep the rest."""
        rows = self._tracer.rows
        cols = self._columns(rows)
        rows.clear()
        batches = []
        carried = self._carry.shape[1]
        if carried + cols.shape[1] < BATCH_ROWS:
            self._carry = np.concatenate([self._carry, cols], axis=1)
            return batches
        if carried:  # complete the carried batch; the rest is cut straight from `cols`
            batches.append(self._batch(np.concatenate([self._carry, cols[:, :BATCH_ROWS - carried]], axis=1)))
            cols = cols[:, BATCH_ROWS - carried:]
        full = cols.shape[1] - cols.shape[1] % BATCH_ROWS
        batches += [self._batch(cols[:, i:i + BATCH_ROWS]) for i in range(0, full, BATCH_ROWS)]
        self._carry = cols[:, full:].copy()
        return batches

    def flush(self) -> list[pa.RecordBatch]:
        """The last, partial batch."""
        cols, self._carry = self._carry, np.empty((5, 0), np.int64)
        return [self._batch(cols)] if cols.shape[1] else []

    def _columns(self, rows: list[tuple]) -> np.ndarray:
        """(5, n) int64: start, end, template, request_id, token; pass records expanded in place."""
        n = len(rows)
        lengths = np.fromiter(map(len, rows), np.int64, n)
        flat = np.fromiter(chain.from_iterable(rows), np.int64, int(lengths.sum()))
        at = np.cumsum(lengths) - lengths  # where each row starts in `flat`
        is_pass = flat[at] < 0
        if not is_pass.any():
            return flat[at + np.arange(5)[:, None]]
        pass_at = at[is_pass]
        first, count, width = self._shapes.of(self._tracer.shapes)[-1 - flat[pass_at]].T
        if (lengths[is_pass] != width + 3).any():
            raise ValueError("trace: a pass record's times do not match its shape")
        spanned = int(count.sum())
        span_first = np.cumsum(count) - count  # where each pass's spans start in the output
        spans = self._spans.of(self._tracer.shape_spans)[np.repeat(first - span_first, count) + np.arange(spanned)]
        times = flat[np.repeat(pass_at + 3, count) + spans[:, 0]]
        out = np.empty((5, spanned), np.int64)
        np.add(times, spans[:, 1], out=out[0])
        np.add(times, spans[:, 2], out=out[1])
        out[2] = spans[:, 3]
        out[3] = np.repeat(flat[pass_at + 1], count)
        out[4] = np.repeat(flat[pass_at + 2], count)
        if len(pass_at) == n:
            return out
        # Put the plain rows back where they were. A wafer has a few (its KV-cache spans)
        # among many passes: slices around them copy once, a scatter over all rows more.
        per_pass = np.zeros(n, np.int64)
        per_pass[is_pass] = count
        spans_before = (np.cumsum(per_pass) - per_pass)[~is_pass]
        plain_cols = flat[at[~is_pass] + np.arange(5)[:, None]]
        if len(spans_before) > 256:
            cols = np.empty((5, spanned + len(spans_before)), np.int64)
            plain_at = spans_before + np.arange(len(spans_before))
            cols[:, plain_at] = plain_cols
            cols[:, np.setdiff1d(np.arange(cols.shape[1]), plain_at, assume_unique=True)] = out
            return cols
        pieces, done = [], 0
        for i, cut in enumerate(spans_before.tolist()):
            pieces += [out[:, done:cut], plain_cols[:, i:i + 1]]
            done = cut
        pieces.append(out[:, done:])
        return np.concatenate(pieces, axis=1)

    def _dict(self, key: str, codes: np.ndarray) -> pa.DictionaryArray:
        return pa.DictionaryArray.from_arrays(int_array(codes, pa.int32()), self._dicts[key])

    def _template_columns(self) -> list[np.ndarray]:
        """The template table by column, each in its Arrow column's width: one contiguous
        gather a column per batch, no strided copies or casts."""
        table = self._templates.of(self._tracer.templates)
        if len(table) != self._template_rows:
            self._template_rows = len(table)
            self._template_cols = [table[:, k].astype(t) for k, t in
                                   enumerate((np.int32, np.int32, np.int16, np.int64, np.int64, np.int32, np.int16))]
        return self._template_cols

    def _constant(self, key: str, code: int, n: int) -> pa.DictionaryArray:
        if (key, n) not in self._constants:  # lp and datacenter: the same array for every full batch
            self._constants[key, n] = self._dict(key, np.full(n, code, np.int32))
        return self._constants[key, n]

    def _batch(self, cols: np.ndarray) -> pa.RecordBatch:
        n = cols.shape[1]
        kind, name, layer, nbytes, flops, phase, region = (c.take(cols[2]) for c in self._template_columns())
        col = int_array
        return pa.record_batch([
            col(cols[0], pa.int64(), False), col(cols[1], pa.int64(), False),
            self._constant("lp", self._lp_code, n), self._constant("datacenter", self._dc_code, n),
            self._dict("kind", kind), self._dict("name", name),
            col(cols[3], pa.int64()), col(cols[4], pa.int32()), col(layer, pa.int16()),
            col(nbytes, pa.int64()), col(flops, pa.int64()), self._dict("phase", phase), col(region, pa.int16()),
        ], schema=SPAN_SCHEMA)
