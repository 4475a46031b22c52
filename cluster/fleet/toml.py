"""A cluster as a TOML file, read strictly and written back.

Layout: the top-level keys are `ClusterSpec`'s fields; `pipelines`, `replicas`, `routers`,
`users` and `sites` are arrays of tables (`[[users]]`); `links` is a table whose
`intra_site` and `wan` sub-tables hold `LinkSpec` fields. A table nested under a default
(like `[links.wan]`) may give only some fields: the rest are the default's.

Reading is generic over the dataclasses in `cluster.fleet.spec` (their fields and type
hints), so a new field there needs no change here. Reading checks structure and types
only; `cluster.fleet.validate` checks meaning (known sites, ranges, references).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import typing
from pathlib import Path
from typing import Any

from cluster.fleet.spec import ClusterSpec
from common.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = ["cluster_from_dict", "cluster_to_toml", "load_cluster"]

_MISSING: Any = dataclasses.MISSING


# ---------------------------------------------------------------------------- types


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """A dataclass's resolved field types (spec.py uses postponed annotations)."""
    return typing.get_type_hints(cls)


def field_default(f: dataclasses.Field) -> Any:
    """A field's default value, or MISSING for a required field."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return _MISSING


def element_type(tp: Any) -> Any | None:
    """X for `tuple[X, ...]`, else None."""
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return args[0]
    return None


def _is_table(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


_NAMES = {bool: ("a boolean", "booleans"), int: ("an integer", "integers"), float: ("a number", "numbers"),
          str: ("a string", "strings")}


def _expected(tp: Any) -> str:
    if _is_table(tp):
        return "a table"
    elem = element_type(tp)
    if elem is not None:
        return f"an array of {'tables' if _is_table(elem) else _NAMES[elem][1]}"
    return _NAMES[tp][0]


def _describe(value: Any) -> str:
    """A TOML value as the user wrote it, for an error message (one line, short)."""
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value!r}"
    if isinstance(value, str):
        text = repr(value)
        return f"string {text if len(text) <= 60 else text[:57] + '...'}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__  # TOML dates and times


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# ---------------------------------------------------------------------------- reading


class _Error(Exception):
    """A problem at a key path; turned into a ConfigError with the source in front."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)


def _convert(value: Any, tp: Any, path: str, base: Any) -> Any:
    """`value` from TOML as the Python value of type `tp`; `base` fills a table's gaps."""
    wrong = _Error(path, f"expected {_expected(tp)}, got {_describe(value)}")
    if _is_table(tp):
        if not isinstance(value, dict):
            raise wrong
        return _build(tp, value, path, base)
    elem = element_type(tp)
    if elem is not None:
        if not isinstance(value, list):
            raise wrong
        return tuple(_convert(v, elem, f"{path}[{i}]", None) for i, v in enumerate(value))
    # bool is an int subclass in Python but never a number in a cluster file.
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        # An integer is a fine number (rate_per_s = 2); a float is never an integer (4.0).
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        try:
            value = float(value) if ok else value
        except OverflowError:  # an integer past the largest float
            ok = False
    elif tp is str:
        ok = isinstance(value, str)
    else:
        raise TypeError(f"{path}: field type {tp!r} is not supported in TOML")
    if not ok:
        raise wrong
    return value


def _build(cls: type, table: dict[str, Any], path: str, base: Any) -> Any:
    """An instance of dataclass `cls` from a TOML table. A field the table lacks takes
    `base`'s value when there is a base, else the field's default; with neither it is
    an error."""
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = {f.name for f in fields}
    for key in table:
        if key not in names:
            raise _Error(_join(path, key), f"unknown key; known: {', '.join(sorted(names))}")
    hints = field_types(cls)
    kwargs: dict[str, Any] = {}
    for f in fields:
        default = getattr(base, f.name) if base is not None else field_default(f)
        if f.name in table:
            sub_base = default if _is_table(hints[f.name]) and default is not _MISSING else None
            kwargs[f.name] = _convert(table[f.name], hints[f.name], _join(path, f.name), sub_base)
        elif default is not _MISSING:
            kwargs[f.name] = default
        else:
            raise _Error(_join(path, f.name), "missing required key")
    try:
        return cls(**kwargs)
    except ValueError as exc:
        # Dataclasses that check themselves (LinkSpec) say "LinkSpec.lanes: ..."; name
        # the key path instead.
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        prefix = f"{cls.__name__}."
        if msg.startswith(prefix):
            field_name, _, rest = msg[len(prefix):].partition(":")
            raise _Error(_join(path, field_name), rest.strip()) from None
        raise _Error(path or cls.__name__, msg) from None


def cluster_from_dict(data: dict[str, Any], source: str) -> ClusterSpec:
    """A ClusterSpec from parsed TOML. `source` (a file name) starts every error message;
    its stem is the cluster's name when `name` is absent."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a table, got {_describe(data)}")
    if "name" not in data:
        # The one required field with a fallback: a file usually names its cluster.
        data = {"name": Path(source).stem, **data}
    try:
        return _build(ClusterSpec, data, "", None)
    except _Error as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_cluster(path: str | Path) -> ClusterSpec:
    """Read a cluster file. Structure and types are checked; call
    `cluster.fleet.validate.validate_cluster` for meaning."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends "(at line L, column C)": keep it, on one line.
        raise ConfigError(f"{path}: invalid TOML: {' '.join(str(exc).split())}") from None
    return cluster_from_dict(data, str(path))


# ---------------------------------------------------------------------------- writing


_SHORT_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _quote(text: str) -> str:
    """A TOML basic string: escape quote, backslash and control characters."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _scalar(value: Any, tp: Any, where: str) -> str:
    if tp is bool:
        return "true" if value else "false"
    if tp is int:
        return str(int(value))
    if tp is float:
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{where}: cannot write a non-finite number ({value!r})")
        return repr(value)  # shortest text that reads back to the same float; TOML-valid
    if tp is str:
        return _quote(value)
    raise TypeError(f"{where}: field type {tp!r} is not supported in TOML")


def _value(value: Any, tp: Any, where: str) -> str:
    elem = element_type(tp)
    if elem is None:
        return _scalar(value, tp, where)
    if _is_table(elem):  # only an empty array of tables is written inline
        return "[]"
    return "[" + ", ".join(_scalar(v, elem, f"{where}[{i}]") for i, v in enumerate(value)) + "]"


def _write(obj: Any, base: Any, header: str | None, dotted: str, where: str, out: list[str]) -> None:
    """Append `obj` as a table: its keys, then its sub-tables and arrays of tables. A key
    equal to `base`'s (or, without a base, the field's default) is left out, mirroring
    how `_build` fills gaps; required keys are always written."""
    hints = field_types(type(obj))
    keys: list[str] = []
    nested: list[tuple[str, Any, Any, Any]] = []
    for f in dataclasses.fields(obj):
        value, tp = getattr(obj, f.name), hints[f.name]
        default = getattr(base, f.name) if base is not None else field_default(f)
        if default is not _MISSING and value == default:
            continue
        elem = element_type(tp)
        if _is_table(tp) or (elem is not None and _is_table(elem) and len(value) > 0):
            nested.append((f.name, value, tp, default))
        else:
            keys.append(f"{f.name} = {_value(value, tp, _join(where, f.name))}")
    # A table with only sub-tables needs no header of its own ([links.wan] is enough);
    # an element of an array of tables always does.
    if header is not None and (keys or not nested or header.startswith("[[")):
        out.extend(["", header])
    out.extend(keys)
    # Sub-tables after every plain key: a key after a header would belong to that table.
    for name, value, tp, default in nested:
        sub = _join(dotted, name)
        if _is_table(tp):
            _write(value, None if default is _MISSING else default, f"[{sub}]", sub, _join(where, name), out)
        else:
            for i, item in enumerate(value):
                _write(item, None, f"[[{sub}]]", sub, f"{_join(where, name)}[{i}]", out)


def cluster_to_toml(spec: ClusterSpec) -> str:
    """`spec` as TOML text that `load_cluster` reads back equal."""
    out: list[str] = []
    _write(spec, None, None, "", "", out)
    return "\n".join(out).lstrip("\n") + "\n"
