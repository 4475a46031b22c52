"""A sweep described as a TOML file: a base cluster, fixed changes to it, and the grid.

    base = "fleet"                    # a scenario name, a cluster TOML path, or a [base] table
    fidelity = "event"                # or "analytic"
    keep_traces = false
    refine = 0                        # analytic: re-run the N best and N most surprising in full

    [set]                             # changes made to the base for every point
    "users[*].requests" = 20

    [grid]                            # the product of these lists
    "replicas[0].count" = [1, 2, 4]
    "routers[*].policy" = ["round-robin", "nearest-site"]
    seed = [0, 1]

    [[zip]]                           # lists that vary together (equal lengths), crossed with the grid
    "users[*].rate_per_s" = [2.0, 8.0]
    "users[*].requests" = [10, 40]

A path names a field of `ClusterSpec` as the cluster TOML lays it out: `seed`,
`links.wan.lane_bits_per_s`, `pipelines[0].wafers`, `users[*].rate_per_s` (`[*]`: every
element). A table value is merged into the table there. Unknown keys, paths that do not
exist and malformed lists are `ConfigError`s naming them, raised before anything runs. A
point whose description does not read or does not validate is kept with its error: the
runner records it as failed and runs the others.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib
import itertools
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.fleet.spec import ClusterSpec
from cluster.fleet.toml import cluster_from_dict, load_cluster
from cluster.fleet.validate import validate_cluster
from common.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = ["FIDELITIES", "Point", "SweepSpec", "apply_path", "load_sweep", "point_id", "sweep_from_dict"]

FIDELITIES = ("event", "analytic")
_KEYS = ("base", "fidelity", "keep_traces", "refine", "set", "grid", "zip")
_SEGMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[(?:\d+|\*)\])*)")
_INDEX = re.compile(r"\[(\d+|\*)\]")


@dataclass(frozen=True)
class Point:
    """One point: its id, its parameters (path -> value, in the sweep's order), and its
    description, or the reason it has none (`error`)."""

    id: str
    params: dict[str, Any]
    spec: ClusterSpec | None
    error: str | None = None


@dataclass(frozen=True)
class SweepSpec:
    source: str
    base: ClusterSpec  # with `set` applied
    fidelity: str
    keep_traces: bool
    refine: int
    axes: tuple[tuple[tuple[str, ...], tuple[tuple[Any, ...], ...]], ...]  # (paths, rows of values)
    points: tuple[Point, ...]

    @property
    def params(self) -> list[str]:
        return [p for paths, _ in self.axes for p in paths]

    def fingerprint(self) -> str:
        """The base description's hash: a results table from another base is not resumed."""
        return _sha(dataclasses.asdict(self.base))


def _sha(obj: Any) -> str:
    try:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=True)
    except (ValueError, TypeError) as exc:  # nan, inf, a TOML date: not a value a field can take
        raise ConfigError(f"a [grid] or [set] value must be a finite number, a string, a boolean, an array "
                          f"or a table ({exc})") from None
    return hashlib.sha256(text.encode()).hexdigest()


def point_id(params: dict[str, Any]) -> str:
    """A stable id: the first 16 hex digits of sha256 over the parameters as canonical JSON."""
    return _sha(params)[:16]


# ---------------------------------------------------------------------------- paths


def _as_tree(spec: ClusterSpec) -> dict[str, Any]:
    """The description as the cluster TOML's nested tables and arrays, every field present."""
    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value
    return plain(dataclasses.asdict(spec))


def _merge(old: Any, new: Any) -> Any:
    if isinstance(old, dict) and isinstance(new, dict):
        return {**old, **{k: _merge(old.get(k), v) for k, v in new.items()}}
    return copy.deepcopy(new)


def apply_path(tree: dict[str, Any], path: str, value: Any) -> None:
    """Set `path` to `value` in a description tree (in place). Raises ConfigError naming
    the path and the key that does not exist."""
    segments = path.split(".")
    parsed = []
    for seg in segments:
        m = _SEGMENT.fullmatch(seg)
        if not m:
            raise ConfigError(f"{path}: malformed path segment {seg!r} (expected NAME, NAME[i] or NAME[*])")
        parsed.append((m.group(1), _INDEX.findall(m.group(2))))

    def walk(node: Any, i: int, at: str) -> None:
        key, indices = parsed[i]
        if not isinstance(node, dict):
            raise ConfigError(f"{path}: {at or 'the cluster'} is not a table")
        if key not in node:
            raise ConfigError(f"{path}: unknown key {key!r} in {at or 'the cluster'}; known: {', '.join(sorted(node))}")
        here = f"{at}.{key}" if at else key
        targets: list[tuple[Any, Any, str]] = [(node, key, here)]  # (container, key or index, where)
        for index in indices:
            nxt = []
            for container, k, where in targets:
                seq = container[k]
                if not isinstance(seq, list):
                    raise ConfigError(f"{path}: {where} is not an array")
                if index == "*":
                    if not seq:
                        raise ConfigError(f"{path}: {where} is empty: [*] matches nothing")
                    nxt += [(seq, j, f"{where}[{j}]") for j in range(len(seq))]
                elif int(index) < len(seq):
                    nxt.append((seq, int(index), f"{where}[{index}]"))
                else:
                    raise ConfigError(f"{path}: {where} has {len(seq)} element(s), no [{index}]")
            targets = nxt
        for container, k, where in targets:
            if i + 1 < len(parsed):
                walk(container[k], i + 1, where)
            else:
                container[k] = _merge(container[k], value)

    walk(tree, 0, "")


# ---------------------------------------------------------------------------- reading


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted TOML keys (`links.wan.lanes = [..]`) read as nested tables; flat paths again."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(_flatten(value, path))
        else:
            out[path] = value
    return out


def _base(value: Any, source: str, here: Path) -> ClusterSpec:
    if isinstance(value, dict):
        return cluster_from_dict(value, f"{source}: base")
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{source}: base: expected a scenario name, a cluster TOML path or a table")
    if value.endswith(".toml") or "/" in value:
        path = Path(value)
        if not path.is_absolute() and (here / path).is_file():
            path = here / path  # relative to the sweep file first, then to the working directory
        return load_cluster(path)
    try:
        module = importlib.import_module(f"scenarios.{value}")
    except ModuleNotFoundError:
        raise ConfigError(f"{source}: base: unknown scenario {value!r} (see `wafersim list`), "
                          f"and not a .toml path") from None
    if isinstance(getattr(module, "DEFAULT", None), ClusterSpec):
        return module.DEFAULT
    defaults = getattr(module, "DEFAULTS", None)
    if defaults is None:
        raise ConfigError(f"{source}: base: scenario {value!r} has no default description to sweep")
    from cluster.commands.cli import parse_sites
    from cluster.commands.scenario import ScenarioConfig

    gpu = {} if defaults.gpus is None else {"gpus": defaults.gpus}
    cfg = ScenarioConfig(scenario=value, model=defaults.model, wafers=defaults.wafers,
                         sites=parse_sites(defaults.sites), users=defaults.users,
                         prompt_tokens=defaults.prompt_tokens, output_tokens=defaults.output_tokens,
                         device=defaults.device, **gpu)
    cfg.validate()
    return cfg.to_cluster()


def sweep_from_dict(data: dict[str, Any], source: str, here: Path | None = None) -> SweepSpec:
    """A sweep from parsed TOML; every error names `source` and the key."""
    here = here or Path.cwd()
    for key in data:
        if key not in _KEYS:
            raise ConfigError(f"{source}: {key}: unknown key; known: {', '.join(sorted(_KEYS))}")
    if "base" not in data:
        raise ConfigError(f"{source}: base: missing required key (a scenario name, a cluster TOML or a table)")
    fidelity = data.get("fidelity", "event")
    if fidelity not in FIDELITIES:
        raise ConfigError(f"{source}: fidelity: must be one of {', '.join(FIDELITIES)}, got {fidelity!r}")
    keep = data.get("keep_traces", False)
    if not isinstance(keep, bool):
        raise ConfigError(f"{source}: keep_traces: expected a boolean, got {keep!r}")
    refine = data.get("refine", 0)
    if not isinstance(refine, int) or isinstance(refine, bool) or refine < 0:
        raise ConfigError(f"{source}: refine: expected an integer >= 0, got {refine!r}")

    tree = _as_tree(_base(data["base"], source, here))
    settings = data.get("set", {})
    if not isinstance(settings, dict):
        raise ConfigError(f"{source}: set: expected a table of PATH = value")
    for path, value in _flatten(settings).items():
        try:
            apply_path(tree, path, value)
        except ConfigError as exc:
            raise ConfigError(f"{source}: set: {exc}") from None
    base = cluster_from_dict(copy.deepcopy(tree), f"{source}: set")

    axes: list[tuple[tuple[str, ...], tuple[tuple[Any, ...], ...]]] = []
    if "grid" in data:
        grid = data["grid"]
        if not isinstance(grid, dict):
            raise ConfigError(f"{source}: grid: expected a table of PATH = [values]")
        for path, values in _flatten(grid).items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{source}: grid: {path}: expected a non-empty array of values")
            axes.append(((path,), tuple((v,) for v in values)))
    zips = data.get("zip", [])
    if not isinstance(zips, list):
        raise ConfigError(f"{source}: zip: expected an array of tables ([[zip]])")
    for i, table in enumerate(zips):
        axes.append(_zip(table, f"{source}: zip[{i}]"))
    varied = [p for paths, _ in axes for p in paths]
    for p in varied:
        if varied.count(p) > 1:
            raise ConfigError(f"{source}: {p}: varied twice (in the grid and a zip, or two zips)")
    points = _points(tree, tuple(axes), source)
    return SweepSpec(source, base, fidelity, keep, refine, tuple(axes), points)


def _zip(table: Any, where: str) -> tuple[tuple[str, ...], tuple[tuple[Any, ...], ...]]:
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"{where}: expected a table of PATH = [values]")
    flat = _flatten(table)
    for path, values in flat.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: {path}: expected a non-empty array of values")
    if len({len(v) for v in flat.values()}) != 1:
        raise ConfigError(f"{where}: its arrays must have one length, got "
                          + ", ".join(f"{p}: {len(v)}" for p, v in flat.items()))
    return tuple(flat), tuple(zip(*flat.values()))


def _points(tree: dict[str, Any], axes: tuple, source: str) -> tuple[Point, ...]:
    """Every point in order (the first axis outermost). A path that does not exist is a
    ConfigError for the sweep; a description that does not read or validate is a point
    with its error."""
    points: list[Point] = []
    ids: dict[str, dict[str, Any]] = {}
    for combo in itertools.product(*(rows for _, rows in axes)):
        params = {p: v for (paths, _), row in zip(axes, combo) for p, v in zip(paths, row)}
        pid = point_id(params)
        if pid in ids:
            raise ConfigError(f"{source}: the point {json.dumps(params, sort_keys=True)} comes twice "
                              f"(a value listed twice?)")
        ids[pid] = params
        point_tree = copy.deepcopy(tree)
        for path, value in params.items():
            try:
                apply_path(point_tree, path, value)
            except ConfigError as exc:
                raise ConfigError(f"{source}: grid: {exc}") from None
        try:
            spec = cluster_from_dict(point_tree, "point")
            validate_cluster(spec)
        except ConfigError as exc:
            points.append(Point(pid, params, None, str(exc).removeprefix("point: ")))
            continue
        points.append(Point(pid, params, spec))
    return tuple(points)


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check a sweep file, building every point's description."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {' '.join(str(exc).split())}") from None
    return sweep_from_dict(data, str(path), path.resolve().parent)
