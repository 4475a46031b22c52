"""Reading a span trace for the timeline views (Perfetto, the timeline plot): the spans of a
time window, a record batch at a time (memory bounded however big the trace), and the
lanes that keep spans overlapping on one LP apart."""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from cluster.results.trace import int_values
from common.errors import ConfigError
from common.units import PS_PER_MS

MAX_LANES = 256  # threads per (LP, kind); spans that need more are left out, and counted
_DICT_COLUMNS = ("lp", "datacenter", "kind", "name", "phase")
_INT_COLUMNS = ("request_id", "token", "layer", "bytes", "region")
OPEN_END = np.iinfo(np.int64).max


@dataclass
class Spans:
    """Spans as numpy columns; dictionary columns as codes into `vocab[column]` (-1: null);
    integer columns with -1 for null (ids, tokens, layers and sizes are never negative)."""

    cols: dict[str, np.ndarray]
    vocab: dict[str, list[str]]
    first_ps: int = 0  # the whole file's extent, for error messages
    last_ps: int = 0
    cut_ps: int | None = None  # set when `max_spans` cut the window short
    meta: dict = field(default_factory=dict)
    lps: list[int] = field(default_factory=list)  # codes of every LP with spans of the kinds asked, in any window

    def __len__(self) -> int:
        return len(self.cols["start_ps"])

    def take(self, idx: np.ndarray) -> Spans:
        return Spans({k: v[idx] for k, v in self.cols.items()}, self.vocab, self.first_ps, self.last_ps,
                     self.cut_ps, self.meta, self.lps)


def ms_window(from_ms: float | None, to_ms: float | None) -> tuple[int, int]:
    """A window in ms as [from_ps, to_ps); open ends are the whole trace."""
    for flag, v in (("--from-ms", from_ms), ("--to-ms", to_ms)):
        if v is not None and not (np.isfinite(v) and v >= 0):
            raise ConfigError(f"{flag}: must be a number of ms, 0 or more, got {v}")
    lo = 0 if from_ms is None else int(round(from_ms * PS_PER_MS))
    hi = OPEN_END if to_ms is None else int(round(to_ms * PS_PER_MS))
    if hi <= lo:
        raise ConfigError(f"--to-ms ({to_ms}) must be after --from-ms ({from_ms})")
    return lo, hi


def _open(path: Path) -> pa.ipc.RecordBatchFileReader:
    if not path.is_file():
        raise ConfigError(f"{path}: no such trace file")
    try:
        return pa.ipc.open_file(pa.memory_map(str(path)))
    except (pa.ArrowInvalid, OSError) as exc:
        raise ConfigError(f"{path}: not an Arrow trace file ({exc})") from None


def trace_meta(reader: pa.ipc.RecordBatchFileReader) -> dict:
    try:
        return json.loads((reader.schema.metadata or {}).get(b"wafersim", b"{}"))
    except ValueError:
        return {}


def read_spans(path: str | Path, from_ps: int = 0, to_ps: int = OPEN_END, kinds: tuple[str, ...] | None = None,
               max_spans: int | None = None) -> Spans:
    """The spans of a trace that overlap [from_ps, to_ps) (a zero-length span at from_ps
    counts), optionally only of `kinds`, read a batch at a time. With `max_spans`, only the
    earliest-starting ones are kept and `cut_ps` says where the kept window ends."""
    path = Path(path)
    reader = _open(path)
    names = reader.schema.names
    if "start_ps" not in names or "end_ps" not in names or "lp" not in names:
        raise ConfigError(f"{path}: not a span trace (no start_ps, end_ps and lp columns)")
    vocab: dict[str, list[str]] = {c: [] for c in _DICT_COLUMNS}
    index: dict[str, dict[str, int]] = {c: {} for c in _DICT_COLUMNS}
    maps: dict[str, tuple[pa.Array, np.ndarray]] = {}

    def codes(batch: pa.RecordBatch, col: str) -> np.ndarray:
        if col not in names:
            return np.full(batch.num_rows, -1, np.int64)
        arr = batch.column(col)
        prev = maps.get(col)
        if prev is None or not prev[0].equals(arr.dictionary):
            lookup = []
            for s in arr.dictionary.to_pylist():
                if s not in index[col]:
                    index[col][s] = len(vocab[col])
                    vocab[col].append(s)
                lookup.append(index[col][s])
            prev = maps[col] = (arr.dictionary, np.array(lookup + [-1], np.int64))
        raw = int_values(arr.indices).astype(np.int64)
        return prev[1][raw]  # -1 (null) picks the trailing -1

    chunks: list[dict[str, np.ndarray]] = []
    held = 0
    first, last = OPEN_END, 0
    lps: set[int] = set()
    for i in range(reader.num_record_batches):
        batch = reader.get_batch(i)
        if not batch.num_rows:
            continue
        start = int_values(batch.column("start_ps")).astype(np.int64)
        end = int_values(batch.column("end_ps")).astype(np.int64)
        first, last = min(first, int(start.min())), max(last, int(end.max()))
        keep = (start < to_ps) & ((end > from_ps) | (start >= from_ps))
        lp = codes(batch, "lp")
        if kinds is not None:
            kind = codes(batch, "kind")
            wanted = np.array([index["kind"].get(k, -2) for k in kinds], np.int64)
            of_kind = np.isin(kind, wanted)
            keep &= of_kind
            lps.update(np.unique(lp[of_kind]).tolist())
        else:
            lps.update(np.unique(lp).tolist())
        if not keep.any():
            continue
        sel = np.flatnonzero(keep)
        cols = {"start_ps": start[sel], "end_ps": end[sel]}
        for c in _DICT_COLUMNS:
            cols[c] = codes(batch, c)[sel]
        for c in _INT_COLUMNS:
            cols[c] = int_values(batch.column(c)).astype(np.int64)[sel] if c in names \
                else np.full(len(sel), -1, np.int64)
        chunks.append(cols)
        held += len(sel)
        if max_spans is not None and held > 2 * max_spans:
            chunks = [_earliest(_concat(chunks), max_spans)]
            held = len(chunks[0]["start_ps"])
    cols = _concat(chunks) if chunks else {c: np.zeros(0, np.int64) for c in
                                            ("start_ps", "end_ps", *_DICT_COLUMNS, *_INT_COLUMNS)}
    spans = Spans(cols, vocab, first if first != OPEN_END else 0, last, meta=trace_meta(reader),
                  lps=sorted(lps - {-1}))
    if max_spans is not None and len(spans) > max_spans:
        order = np.lexsort((np.arange(len(spans)), spans.cols["start_ps"]))
        cut = int(spans.cols["start_ps"][order[max_spans]])
        if cut <= int(spans.cols["start_ps"][order[0]]):
            raise ConfigError(f"{path}: more than {max_spans:,} spans start at {cut / PS_PER_MS:.6g} ms; "
                              f"allow more (--max-events) or leave some kinds out")
        spans = spans.take(np.sort(order[:max_spans][spans.cols["start_ps"][order[:max_spans]] < cut]))
        spans.cut_ps = cut
    return spans


def _concat(chunks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def _earliest(cols: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The n earliest-starting spans plus every span starting at the same time as the
    n-th (so the final cut sees every tie), in file order."""
    start = cols["start_ps"]
    if len(start) <= n:
        return cols
    nth = np.partition(start, n)[n]
    return {k: v[start <= nth] for k, v in cols.items()}


def assign_lanes(start: np.ndarray, end: np.ndarray, max_lanes: int = MAX_LANES) -> np.ndarray:
    """A lane per interval so that intervals in one lane never overlap (end <= next start):
    each goes to the lowest-numbered free lane, so lane 0 is the busiest. -1: it would need
    more than `max_lanes`."""
    lanes = np.full(len(start), -1, np.int64)
    busy: list[tuple[int, int]] = []  # (end, lane)
    free: list[int] = []
    opened = 0
    for i in np.lexsort((end, start)).tolist():
        s = int(start[i])
        while busy and busy[0][0] <= s:
            heapq.heappush(free, heapq.heappop(busy)[1])
        if free:
            lane = heapq.heappop(free)
        elif opened < max_lanes:
            lane, opened = opened, opened + 1
        else:
            continue
        lanes[i] = lane
        heapq.heappush(busy, (int(end[i]), lane))
    return lanes


def region_lanes(region: np.ndarray, start: np.ndarray, end: np.ndarray) -> list[int] | None:
    """The regions present, when every region's spans follow one another without
    overlapping (a region serves one pass at a time) and there are few enough to give each
    a thread; None otherwise (spans without a region are left to `assign_lanes`)."""
    has = region >= 0
    regions = np.unique(region[has])
    if not len(regions) or len(regions) > MAX_LANES:
        return None
    r, s, e = region[has], start[has], end[has]
    order = np.lexsort((e, s, r))
    r, s, e = r[order], s[order], e[order]
    same = r[1:] == r[:-1]
    if (same & (s[1:] < e[:-1])).any():
        return None
    return regions.tolist()


def run_name(meta: dict) -> str | None:
    """What ran, from a trace's metadata: the scenario's or the cluster's name."""
    for key in ("scenario", "cluster"):
        value = meta.get(key)
        if isinstance(value, dict):
            value = value.get("scenario") or value.get("name")
        if isinstance(value, str):
            return value
    return None
