"""Request files: a recorded workload to replay, and converters from public LLM traces.

A request file has one row per request: `arrival_s` (seconds from the start of the run,
non-decreasing), `prompt_tokens`, `output_tokens` and, optionally, `user_site`, `model` and
`session`. It is CSV, Arrow IPC (.arrow, .feather) or Parquet, as its suffix says. Every row
is checked as it is read; a bad one is refused naming the file, its row number (1-based,
data rows only: neither the header nor blank CSV lines count), the column and the problem.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cluster.serving.workload import arrival_times_ps, rng_for
from common.checks import MAX_INT64, MAX_TIME_S, MAX_TOKENS
from common.errors import ConfigError
from common.units import PS_PER_S

REQUIRED = ("arrival_s", "prompt_tokens", "output_tokens")
OPTIONAL = ("user_site", "model", "session")
COLUMNS = REQUIRED + OPTIONAL
FORMATS = {".csv": "csv", ".arrow": "arrow", ".feather": "arrow", ".parquet": "parquet"}
TYPES = {"arrival_s": pa.float64(), "prompt_tokens": pa.int64(), "output_tokens": pa.int64(),
         "user_site": pa.string(), "model": pa.string(), "session": pa.int64()}
MAX_SESSION = MAX_INT64 // 2  # ids are offset per population and stored as int64
CHARS_PER_TOKEN = 4  # OpenAI's rule of thumb for English text; no tokenizer is at hand


@dataclass(frozen=True)
class RequestRow:
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    user_site: str | None = None
    model: str | None = None
    session: int | None = None


def request_file_format(path: str | Path) -> str:
    """"csv", "arrow" or "parquet", from the suffix; a ConfigError for any other."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ConfigError(f"{path}: unknown request file type; name it .csv, .arrow, .feather or .parquet")
    return fmt


def _number(value: object) -> float | None:
    """Text (CSV) or a number (Arrow) as a float, else None; a bool is an int to Python, not to a user."""
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        with contextlib.suppress(ValueError, OverflowError):
            return float(value)
    return None


def _integer(value: object) -> int | None:
    """A whole number (3, 3.0, "3") as an int, else None: Parquet may hold counts as floats."""
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        with contextlib.suppress(ValueError):
            return int(value)  # exact, beyond a float's 53 bits
    number = _number(value)
    return int(number) if number is not None and number.is_integer() else None


def _check_row(where: str, values: dict, previous_s: float) -> RequestRow:
    """One row's values (text from CSV, Python values from Arrow) checked and converted."""
    def bad(column: str, problem: str) -> ConfigError:
        return ConfigError(f"{where}: {column}: {problem}, got {values.get(column)!r}")

    arrival = _number(values["arrival_s"])
    if arrival is None or not math.isfinite(arrival) or arrival < 0:
        raise bad("arrival_s", "must be a finite number >= 0")
    if arrival > MAX_TIME_S:
        raise bad("arrival_s", f"must be at most {MAX_TIME_S:g} s (about 11.6 days)")
    if arrival < previous_s:
        raise bad("arrival_s", f"must not decrease from row to row (the row before is at {previous_s!r})")
    counts = []
    for column in ("prompt_tokens", "output_tokens"):
        n = _integer(values[column])
        if n is None or n <= 0:
            raise bad(column, "must be a positive integer")
        if n > MAX_TOKENS:
            raise bad(column, f"must be at most {MAX_TOKENS:,} tokens")
        counts.append(n)
    for column in ("user_site", "model"):
        if values.get(column) is not None and not isinstance(values[column], str):
            raise bad(column, "must be text")
    session = values.get("session")
    if session in (None, ""):  # an empty CSV cell means none
        session = None
    elif (session := _integer(session)) is None or session < 0:
        raise bad("session", "must be an integer >= 0")
    elif session > MAX_SESSION:
        raise bad("session", f"must be at most {MAX_SESSION:,}")
    return RequestRow(arrival, *counts, values.get("user_site") or None, values.get("model") or None, session)


def _check_columns(path: str | Path, names: Sequence[str]) -> None:
    known = f"the columns are {', '.join(COLUMNS)}"
    for name in names:
        if name not in COLUMNS or names.count(name) > 1:
            raise ConfigError(f"{path}: {'unknown' if name not in COLUMNS else 'repeated'} column {name!r}; {known}")
    if missing := [name for name in REQUIRED if name not in names]:
        raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}; {known}")


def _need_file(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path}: {'not a file' if p.exists() else 'no such ' + what}")
    return p


def _csv_rows(path: str | Path, check_columns: bool) -> Iterator[tuple[list[str], list[str]]]:
    """(header, cells) for each non-blank data row, the header checked if asked."""
    with Path(path).open(newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's BOM
        reader = csv.reader(f)
        names = [name.strip() for name in next(reader, [])]
        if check_columns:
            if not names:
                raise ConfigError(f"{path}: empty file: no header, no requests")
            _check_columns(path, names)
        for n, cells in enumerate((c for c in reader if any(cell.strip() for cell in c)), 1):
            if len(cells) != len(names):
                raise ConfigError(f"{path}: row {n}: {len(cells)} cells under a header of {len(names)}")
            yield names, cells


def _records(path: Path, fmt: str) -> Iterator[dict]:
    if fmt == "csv":
        for names, cells in _csv_rows(path, True):
            yield dict(zip(names, cells))
        return
    if fmt == "parquet":
        table = pq.read_table(path)
    else:
        data = path.read_bytes()
        try:
            table = pa.ipc.open_file(data).read_all()
        except pa.ArrowInvalid:  # not the file format: maybe the stream format
            table = pa.ipc.open_stream(data).read_all()
    _check_columns(path, table.column_names)
    for batch in table.to_batches():
        yield from batch.to_pylist()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def read_request_file(path: str | Path) -> list[RequestRow]:
    """Every row of a request file, checked; see the module docstring for the format."""
    fmt, p = request_file_format(path), _need_file(path, "request file")
    rows: list[RequestRow] = []
    try:
        for n, values in enumerate(_records(p, fmt), 1):
            rows.append(_check_row(f"{path}: row {n}", values, rows[-1].arrival_s if rows else 0.0))
    except (OSError, UnicodeDecodeError, csv.Error, pa.ArrowException) as exc:
        raise ConfigError(f"{path}: cannot read as {fmt}: {_first_line(exc)}") from None
    if not rows:
        raise ConfigError(f"{path}: no requests in the file")
    _check_names(path, rows)
    return rows


def _check_names(path: str | Path, rows: Sequence[RequestRow]) -> None:
    """Each row's model is a preset or a config.json: refused at the first row naming a bad
    one (its site is checked against the cluster's where it is used)."""
    from llm.config import resolve_model

    seen: set[str] = set()
    for n, row in enumerate(rows, 1):
        if row.model is None or row.model in seen:
            continue
        seen.add(row.model)
        try:
            resolve_model(row.model)
        except ConfigError as exc:
            raise ConfigError(f"{path}: row {n}: model: {str(exc).removeprefix('--model: ')}") from None


def write_request_file(rows: Sequence[RequestRow], path: str | Path) -> None:
    """Rows to a request file, by suffix; optional columns only where a row has them.

    Written under a temporary name beside `path`, then renamed: a failure leaves no
    half-written file (an old file at `path` stays as it was)."""
    fmt, p = request_file_format(path), Path(path)
    if not rows:
        raise ConfigError(f"{path}: no requests to write")
    checked: list[RequestRow] = []  # checked as a reader would, so a written file always reads back
    for n, row in enumerate(rows, 1):
        values = {column: getattr(row, column) for column in COLUMNS}
        checked.append(_check_row(f"{path}: request {n}", values, checked[-1].arrival_s if checked else 0.0))
    columns = REQUIRED + tuple(c for c in OPTIONAL if any(getattr(r, c) is not None for r in checked))
    tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        if fmt == "csv":
            with tmp.open("x", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(columns)
                for row in checked:  # repr: the shortest text that reads back as the same float
                    writer.writerow(repr(v) if isinstance(v, float) else "" if v is None else v
                                    for v in (getattr(row, c) for c in columns))
        else:
            table = pa.table({c: pa.array([getattr(r, c) for r in checked], type=TYPES[c]) for c in columns})
            if fmt == "parquet":
                pq.write_table(table, tmp)
            else:
                with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                    writer.write_table(table)
        os.replace(tmp, p)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"{path}: cannot write: {exc.strerror or _first_line(exc)}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# 2023: "2023-11-16 18:15:46.6805900" (7 digits, no zone); 2024: "2024-05-10 00:00:00.009930+00:00".
_TIMESTAMP = re.compile(r"(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|([+-])(\d\d):?(\d\d))?")


def _timestamp_ns(text: str) -> int | None:
    """Nanoseconds since 0001-01-01 UTC, exact; None if `text` is no timestamp."""
    m = _TIMESTAMP.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    try:
        days = date(year, month, day).toordinal()
    except ValueError:
        return None
    if hour > 23 or minute > 59 or second > 59:
        return None
    seconds = ((days * 24 + hour) * 60 + minute) * 60 + second
    if m[9]:  # local time = UTC + offset
        offset = (int(m[10]) * 60 + int(m[11])) * 60
        seconds -= offset if m[9] == "+" else -offset
    return seconds * 10**9 + int((m[7] or "").ljust(9, "0"))


def convert_azure(path: str | Path) -> tuple[list[RequestRow], int]:
    """The Azure LLM inference trace (AzurePublicDataset, 2023 and 2024 releases) as
    request rows, sorted by time (stably), and how many rows were skipped.

    Columns TIMESTAMP, ContextTokens, GeneratedTokens (others are ignored). A row with zero
    context or generated tokens is skipped and counted: the real traces hold some, and no
    request can be served without both. arrival_s counts from the earliest kept row, so the
    replay starts at once. A malformed row is refused with its row number."""
    need, kept, skipped = ("TIMESTAMP", "ContextTokens", "GeneratedTokens"), [], 0
    try:
        for n, (names, cells) in enumerate(_csv_rows(_need_file(path, "file"), False), 1):
            if n == 1:
                if any(c not in names for c in need):
                    raise ConfigError(f"{path}: not an Azure LLM inference trace: want the columns "
                                      f"{','.join(need)}, got {','.join(names)}")
                at = [names.index(c) for c in need]
            where = f"{path}: row {n}"
            stamp, context, generated = (cells[i].strip() for i in at)
            t = _timestamp_ns(stamp)
            if t is None:
                raise ConfigError(f"{where}: TIMESTAMP: expected YYYY-MM-DD HH:MM:SS[.fraction][+HH:MM], "
                                  f"got {stamp!r}")
            for column, text in (("ContextTokens", context), ("GeneratedTokens", generated)):
                if not (text.isascii() and text.isdigit()):
                    raise ConfigError(f"{where}: {column}: must be an integer >= 0, got {text!r}")
            if int(context) == 0 or int(generated) == 0:
                skipped += 1
            else:
                kept.append((t, int(context), int(generated)))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: cannot read as CSV: {_first_line(exc)}") from None
    if not kept:
        raise ConfigError(f"{path}: no requests with both ContextTokens and GeneratedTokens > 0 "
                          f"({skipped} rows skipped)")
    kept.sort(key=lambda r: r[0])
    start = kept[0][0]
    return [RequestRow((t - start) / 1e9, context, generated) for t, context, generated in kept], skipped


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def _exchange(turns: list) -> tuple[str, str] | None:
    """The first human turn answered by a gpt turn, as (prompt, answer)."""
    def said(turn: object, who: str) -> bool:
        return isinstance(turn, dict) and turn.get("from") == who and isinstance(turn.get("value"), str)

    for asked, answered in zip(turns, turns[1:]):
        if said(asked, "human") and said(answered, "gpt"):
            return asked["value"], answered["value"]
    return None


def convert_sharegpt(path: str | Path, rate_per_s: float, seed: int) -> list[RequestRow]:
    """ShareGPT-style JSON (a list of {"id", "conversations": [{"from", "value"}, ...]}) as
    request rows: each conversation's first human turn answered by a gpt turn is one request;
    a conversation without one is skipped. No tokenizer is at hand, so a text of c characters
    counts as ceil(c/4) tokens, at least 1 (about 4 characters per English token). Arrivals
    are Poisson at `rate_per_s`, drawn from `rng_for(seed, "sharegpt")`."""
    try:
        data = json.loads(_need_file(path, "file").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read as JSON: {_first_line(exc)}") from None
    if not isinstance(data, list):
        raise ConfigError(f"{path}: expected a JSON list of conversations, got a {type(data).__name__}")
    exchanges = []
    for n, conversation in enumerate(data, 1):
        turns = conversation.get("conversations") if isinstance(conversation, dict) else None
        if not isinstance(turns, list):
            raise ConfigError(f"{path}: conversation {n}: expected an object with a 'conversations' list")
        if (exchange := _exchange(turns)) is not None:
            exchanges.append(exchange)
    if not exchanges:
        raise ConfigError(f"{path}: no conversation has a human turn answered by a gpt turn")
    times_ps = arrival_times_ps("poisson", len(exchanges), rate_per_s, 1.0, rng_for(seed, "sharegpt"))
    return [RequestRow(int(t) / PS_PER_S, _tokens(asked), _tokens(answered))
            for t, (asked, answered) in zip(times_ps, exchanges)]
