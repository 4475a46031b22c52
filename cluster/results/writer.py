"""The crash-safe trace writer. Each LP's rows are streamed to a spool file as they come,
then laid out LP by LP (in graph order, each in the order it emitted them) in fixed-size
batches, so the file does not depend on round boundaries or on which process ran the LP.
The requests, tokens and energy tables are sorted by their keys, so they do not depend on
which LP or process produced which row. Files appear only by rename at the end: a failed
run leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from cluster.results.trace import (
    BATCH_ROWS,
    ENERGY_SCHEMA,
    REQUEST_SCHEMA,
    SPAN_SCHEMA,
    TOKEN_SCHEMA,
    energy_path,
    float_array,
    float_values,
    int_array,
    int_values,
    requests_path,
    string_array,
    tokens_path,
)
from common.units import NULL


def _column_values(batches: list[pa.RecordBatch], i: int, f: pa.Field) -> np.ndarray:
    """Column `i` of every batch as one numpy array: ints (NULL for nulls), or objects
    (str or None) for a dictionary column, whose batches each have their own dictionary."""
    if f.type == pa.float64():
        return np.concatenate([float_values(b.column(i)) for b in batches] or [np.zeros(0)])
    if not pa.types.is_dictionary(f.type):
        return np.concatenate([int_values(b.column(i)) for b in batches] or [np.zeros(0, np.int64)])
    parts = []
    for b in batches:
        column = b.column(i)
        words = np.array(column.dictionary.to_pylist() + [None], object)
        parts.append(words[int_values(column.indices)])  # NULL (-1) picks the None at the end
    return np.concatenate(parts) if parts else np.zeros(0, object)


class TraceWriter:
    """Spools span batches per LP, then writes both tables and renames them into place."""

    def __init__(self, path: str | Path, lps: list[str], metadata: dict) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._meta = {b"wafersim": json.dumps(metadata, sort_keys=True).encode()}
        self._spool_dir = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        self._order = list(lps)
        self._spools: dict[str, pa.RecordBatchStreamWriter] = {}
        self._adopted: set[str] = set()  # LPs whose spool another process wrote (a Ray actor)
        self._requests: list[pa.RecordBatch] = []
        self._tokens: list[pa.RecordBatch] = []
        self.rows = 0

    def spool_path(self, lp: str) -> Path:
        """Where `lp`'s rows are spooled: an actor on this machine writes there itself."""
        return self._spool_dir / f"{self._order.index(lp)}.arrows"

    def adopt(self, lp: str, rows: int) -> None:
        """`lp`'s spool, a closed Arrow stream of `rows` rows, is at `spool_path(lp)`."""
        if lp in self._spools or lp in self._adopted:
            raise ValueError(f"trace writer: {lp} spooled twice")
        self._adopted.add(lp)
        self.rows += rows

    def add(self, lp: str, batch: pa.RecordBatch) -> None:
        try:
            if lp not in self._spools:
                sink = pa.OSFile(str(self.spool_path(lp)), "wb")
                self._spools[lp] = pa.ipc.new_stream(sink, SPAN_SCHEMA)
            self._spools[lp].write_batch(batch)
        except OSError as exc:  # a full disk: name the trace, not a spool file about to vanish
            raise self._named(exc) from None
        self.rows += batch.num_rows

    def _named(self, exc: OSError) -> OSError:
        return OSError(exc.errno, exc.strerror or str(exc), str(self.path))

    def add_requests(self, batch: pa.RecordBatch) -> None:
        self._requests.append(batch)

    def add_tokens(self, batch: pa.RecordBatch) -> None:
        self._tokens.append(batch)

    def _write_spans(self, out: Path) -> None:
        """LP by LP, each LP's batches as they came: RowEncoder already cut them to size."""
        schema = SPAN_SCHEMA.with_metadata(self._meta)
        with pa.ipc.new_file(str(out), schema) as writer:
            for lp in self._order:
                if lp in self._spools:
                    self._spools[lp].close()
                elif lp not in self._adopted:
                    continue
                # read, not memory-mapped: a mapped spool stays resident as it is read, so the
                # driver's RSS would grow with the trace (about 80 bytes a row at op detail)
                with pa.ipc.open_stream(pa.OSFile(str(self.spool_path(lp)), "rb")) as reader:
                    for batch in reader:
                        writer.write_batch(batch)

    def _write_table(self, out: Path, schema: pa.Schema, batches: list[pa.RecordBatch],
                     order_by: tuple[str, ...], energy_j: dict[int, float] | None = None) -> None:
        """One table from the LPs' batches, in the order of `order_by` (request id first):
        independent of which LP or process produced which row. Numpy only: pyarrow.compute
        costs a run a thirtieth of a second to import."""
        columns = [_column_values(batches, i, f) for i, f in enumerate(schema)]
        names = schema.names
        if energy_j is not None:
            columns[names.index("energy_j")] = np.array([energy_j.get(int(r), 0.0) for r in columns[0]], np.float64)
        order = np.lexsort([columns[names.index(k)] for k in reversed(order_by)]) \
            if len(columns[0]) and order_by else np.arange(len(columns[0]))
        arrays = []
        for values, f in zip(columns, schema):
            values = values[order]
            if pa.types.is_dictionary(f.type):
                present = values[values != None]  # noqa: E711 (element-wise)
                vocab = sorted(set(present.tolist()))
                codes = np.full(len(values), NULL, np.int32)
                if vocab:
                    codes[values != None] = np.searchsorted(np.array(vocab, object), present)  # noqa: E711
                arrays.append(pa.DictionaryArray.from_arrays(int_array(codes, pa.int32()), string_array(tuple(vocab))))
            elif f.type == pa.float64():
                arrays.append(float_array(values))
            else:
                arrays.append(int_array(values, f.type))
        table = pa.Table.from_arrays(arrays, schema=schema.with_metadata(self._meta))
        with pa.ipc.new_file(str(out), table.schema) as writer:
            writer.write_table(table, max_chunksize=BATCH_ROWS)

    def commit(self, energy: pa.RecordBatch | None = None, request_energy_j: dict[int, float] | None = None) -> None:
        """Write every file under a temporary name, then rename them into place. `energy`:
        the per-device table; `request_energy_j` fills the requests' `energy_j` column."""
        spans_tmp = self._spool_dir / "spans.arrow"
        req_tmp = self._spool_dir / "requests.arrow"
        tok_tmp = self._spool_dir / "tokens.arrow"
        energy_tmp = self._spool_dir / "energy.arrow"
        placed: list[Path] = []
        try:
            self._write_spans(spans_tmp)
            self._write_table(req_tmp, REQUEST_SCHEMA, self._requests, ("request_id",), request_energy_j)
            self._write_table(tok_tmp, TOKEN_SCHEMA, self._tokens, ("request_id", "token"))
            moves = [(tok_tmp, tokens_path(self.path)), (req_tmp, requests_path(self.path)), (spans_tmp, self.path)]
            if energy is not None:
                self._write_table(energy_tmp, ENERGY_SCHEMA, [energy], ())
                moves.insert(0, (energy_tmp, energy_path(self.path)))
            for tmp, final in moves:
                os.replace(tmp, final)
                placed.append(Path(final))
        except BaseException as exc:  # all four files or none: take back what was already placed
            for final in placed:
                final.unlink(missing_ok=True)
            self.abort()
            if isinstance(exc, OSError):
                raise self._named(exc) from None
            raise
        self.abort()

    def abort(self) -> None:
        for spool in self._spools.values():
            try:
                spool.close()
            except (OSError, pa.ArrowException):
                pass
        self._spools.clear()
        shutil.rmtree(self._spool_dir, ignore_errors=True)
