"""The trace: one Arrow schema, rows to record batches, and the crash-safe file writer.

Spans go to `PATH`, requests to `PATH` with `.requests` before the suffix. Each LP's
rows are streamed to a spool file as they come, then laid out LP by LP (in graph order,
each in the order it emitted them) in fixed-size batches, so the file does not depend
on round boundaries or on which process ran the LP. Files appear only by rename at the
end: a failed run leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
import pyarrow as pa

KINDS = ("compute", "sram", "fabric", "link", "queue", "request")
PHASES = ("prefill", "decode")
BATCH_ROWS = 65_536
_DICT = pa.dictionary(pa.int32(), pa.string())

SPAN_SCHEMA = pa.schema([
    ("start_ps", pa.int64()), ("end_ps", pa.int64()), ("lp", _DICT), ("datacenter", _DICT),
    ("kind", _DICT), ("name", _DICT), ("request_id", pa.int64()), ("token", pa.int32()),
    ("layer", pa.int16()), ("bytes", pa.int64()), ("flops", pa.int64()), ("phase", _DICT),
])

REQUEST_SCHEMA = pa.schema([
    ("request_id", pa.int64()), ("arrival_ps", pa.int64()), ("admitted_ps", pa.int64()),
    ("first_token_ps", pa.int64()), ("finish_ps", pa.int64()), ("prompt_tokens", pa.int32()),
    ("output_tokens", pa.int32()), ("ttft_ps", pa.int64()), ("tpot_ps", pa.int64()),
])


def requests_path(spans_path: str | Path) -> Path:
    p = Path(spans_path)
    return p.with_name(f"{p.stem}.requests{p.suffix}")


NULL = -1  # nullable columns hold -1 for "none": ids, counts and layers are never negative


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
    caller) holds what many spans share: kind, name, layer, bytes, FLOPs, phase. Five
    ints a span is what keeps tracing cheap next to the simulation itself.

    With no vocabulary it is a probe: it hands out fresh name codes and remembers the
    names, which is how the graph learns every name a component can emit.
    """

    def __init__(self, vocab: TraceVocab | None = None) -> None:
        self.rows: list[tuple[int, int, int, int, int]] = []
        self.templates: list[tuple[int, int, int, int, int, int]] = []
        self._template_ids: dict[tuple, int] = {}
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
                 flops: int | None = None, phase: str | None = None) -> int:
        """The id of a span shape; `name` is a code from `name()`."""
        key = (KINDS.index(kind), name, NULL if layer is None else layer, NULL if nbytes is None else nbytes,
               NULL if flops is None else flops, NULL if phase is None else PHASES.index(phase))
        tid = self._template_ids.get(key)
        if tid is None:
            tid = self._template_ids[key] = len(self.templates)
            self.templates.append(key)
        return tid


class RowEncoder:
    """Turns one LP's rows into a record batch of SPAN_SCHEMA, without a Python loop."""

    def __init__(self, vocab: TraceVocab, lp: str, datacenter: str, tracer: Tracer) -> None:
        self._dicts = {k: pa.array(v, pa.string()) for k, v in
                       (("lp", vocab.lps), ("datacenter", vocab.datacenters), ("kind", KINDS),
                        ("name", vocab.names), ("phase", PHASES))}
        self._lp_code = vocab.lps.index(lp)
        self._dc_code = vocab.datacenters.index(datacenter)
        self._tracer = tracer

    def _dict(self, key: str, codes: np.ndarray) -> pa.DictionaryArray:
        indices = pa.array(codes.astype(np.int32), mask=codes == NULL)
        return pa.DictionaryArray.from_arrays(indices, self._dicts[key])

    def encode(self, rows: list[tuple]) -> pa.RecordBatch:
        n = len(rows)
        table = np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=5 * n).reshape(n, 5)
        shapes = np.array(self._tracer.templates, dtype=np.int64)[table[:, 2]]

        def col(values: np.ndarray, typ: pa.DataType, nullable: bool = True) -> pa.Array:
            values = np.ascontiguousarray(values)
            return pa.array(values, typ, mask=(values == NULL) if nullable else None)

        return pa.record_batch([
            col(table[:, 0], pa.int64(), False), col(table[:, 1], pa.int64(), False),
            self._dict("lp", np.full(n, self._lp_code)), self._dict("datacenter", np.full(n, self._dc_code)),
            self._dict("kind", shapes[:, 0]), self._dict("name", shapes[:, 1]),
            col(table[:, 3], pa.int64()), col(table[:, 4], pa.int32()), col(shapes[:, 2], pa.int16()),
            col(shapes[:, 3], pa.int64()), col(shapes[:, 4], pa.int64()),
            self._dict("phase", shapes[:, 5]),
        ], schema=SPAN_SCHEMA)


class TraceWriter:
    """Spools span batches per LP, then writes both tables and renames them into place."""

    def __init__(self, path: str | Path, lps: list[str], metadata: dict) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._meta = {b"wafersim": json.dumps(metadata, sort_keys=True).encode()}
        self._spool_dir = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        self._order = list(lps)
        self._spools: dict[str, pa.RecordBatchStreamWriter] = {}
        self._requests: list[pa.RecordBatch] = []
        self.rows = 0

    def add(self, lp: str, batch: pa.RecordBatch) -> None:
        if lp not in self._spools:
            sink = pa.OSFile(str(self._spool_dir / f"{self._order.index(lp)}.arrows"), "wb")
            self._spools[lp] = pa.ipc.new_stream(sink, SPAN_SCHEMA)
        self._spools[lp].write_batch(batch)
        self.rows += batch.num_rows

    def add_requests(self, batch: pa.RecordBatch) -> None:
        self._requests.append(batch)

    def _write_spans(self, out: Path) -> None:
        schema = SPAN_SCHEMA.with_metadata(self._meta)
        with pa.ipc.new_file(str(out), schema) as writer:
            pending: list[pa.RecordBatch] = []
            pending_rows = 0

            def flush(final: bool) -> None:
                nonlocal pending, pending_rows
                if not pending:
                    return
                table = pa.Table.from_batches(pending, SPAN_SCHEMA)
                keep = pending_rows if final else pending_rows - pending_rows % BATCH_ROWS
                for batch in table.slice(0, keep).combine_chunks().to_batches(BATCH_ROWS):
                    writer.write_batch(batch)
                rest = table.slice(keep).combine_chunks().to_batches()
                pending, pending_rows = [b for b in rest if b.num_rows], pending_rows - keep

            for index, lp in enumerate(self._order):
                if lp not in self._spools:
                    continue
                self._spools[lp].close()
                with pa.ipc.open_stream(pa.memory_map(str(self._spool_dir / f"{index}.arrows"))) as reader:
                    for batch in reader:
                        pending.append(batch)
                        pending_rows += batch.num_rows
                        if pending_rows >= BATCH_ROWS:
                            flush(final=False)
                flush(final=True)  # an LP's rows never share a batch with the next LP's

    def _write_requests(self, out: Path) -> None:
        table = pa.Table.from_batches(self._requests, REQUEST_SCHEMA).sort_by("request_id")
        table = table.replace_schema_metadata(self._meta)
        with pa.ipc.new_file(str(out), table.schema) as writer:
            writer.write_table(table, max_chunksize=BATCH_ROWS)

    def commit(self) -> None:
        """Write both files under temporary names, then rename them into place."""
        spans_tmp = self._spool_dir / "spans.arrow"
        req_tmp = self._spool_dir / "requests.arrow"
        self._write_spans(spans_tmp)
        self._write_requests(req_tmp)
        os.replace(req_tmp, requests_path(self.path))
        os.replace(spans_tmp, self.path)
        self.abort()

    def abort(self) -> None:
        for spool in self._spools.values():
            try:
                spool.close()
            except (OSError, pa.ArrowException):
                pass
        self._spools.clear()
        shutil.rmtree(self._spool_dir, ignore_errors=True)
