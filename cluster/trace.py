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
from pathlib import Path

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


@dataclass(frozen=True)
class TraceVocab:
    """The dictionaries of the trace's string columns, fixed before the run starts."""

    lps: tuple[str, ...]
    datacenters: tuple[str, ...]
    names: tuple[str, ...]

    def encoder(self, lp: str, datacenter: str) -> RowEncoder:
        return RowEncoder(self, lp, datacenter)


class RowEncoder:
    """Turns one LP's row tuples into record batches of SPAN_SCHEMA."""

    def __init__(self, vocab: TraceVocab, lp: str, datacenter: str) -> None:
        self._dicts = {k: pa.array(v, pa.string()) for k, v in
                       (("lp", vocab.lps), ("datacenter", vocab.datacenters), ("kind", KINDS),
                        ("name", vocab.names), ("phase", PHASES))}
        self._lp_code = vocab.lps.index(lp)
        self._dc_code = vocab.datacenters.index(datacenter)
        self._kind = {k: i for i, k in enumerate(KINDS)}
        self._name = {k: i for i, k in enumerate(vocab.names)}
        self._phase = {k: i for i, k in enumerate(PHASES)}
        self._phase[None] = None

    def _dict(self, key: str, codes: list | pa.Array) -> pa.DictionaryArray:
        return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), self._dicts[key])

    def encode(self, rows: list[tuple]) -> pa.RecordBatch:
        n = len(rows)
        start, end, kind, name, rid, token, layer, nbytes, flops, phase = zip(*rows)
        try:
            names = [self._name[x] for x in name]
        except KeyError as exc:
            raise ValueError(f"trace: name {exc.args[0]!r} is not in the vocabulary") from None
        return pa.record_batch([
            pa.array(start, pa.int64()), pa.array(end, pa.int64()),
            self._dict("lp", pa.nulls(n, pa.int32()).fill_null(self._lp_code)),
            self._dict("datacenter", pa.nulls(n, pa.int32()).fill_null(self._dc_code)),
            self._dict("kind", [self._kind[x] for x in kind]), self._dict("name", names),
            pa.array(rid, pa.int64()), pa.array(token, pa.int32()), pa.array(layer, pa.int16()),
            pa.array(nbytes, pa.int64()), pa.array(flops, pa.int64()),
            self._dict("phase", [self._phase[x] for x in phase]),
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
