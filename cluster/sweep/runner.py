"""Running a sweep: event points as Ray tasks, analytic points in a plain loop here.

Each event point is one task (`num_cpus=1`) running `run_cluster` with the in-process
backend, its trace in a temporary directory (moved to `OUT/traces/POINT_ID.arrow` with
its three companions when traces are kept; on a multi-node Ray, OUT must then be on a
shared filesystem). A point never starts a Ray of its own. The driver uses the Ray already
initialised (a test session), else joins `address` (or $RAY_ADDRESS), else starts a local
one for the sweep, and stops or leaves it at the end, on error or on Ctrl-C too.

The table is rewritten as points finish (at most once a second, and at the end), so a
stopped sweep keeps what finished; a rerun runs only the points not yet "ok".
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.fleet.spec import ClusterSpec
from cluster.sweep.spec import FIDELITIES, Point, SweepSpec
from cluster.sweep.table import RESULTS, choose_refine, read_rows, summary_scalars, write_rows
from common.errors import ConfigError

__all__ = ["SweepResult", "run_event_point", "run_sweep"]

WRITE_EVERY_S = 1.0


@dataclass
class SweepResult:
    table: Path
    points: int = 0  # points this sweep asked for (refined ones included)
    ran: list[str] = field(default_factory=list)  # "POINT_ID:FIDELITY" run now, in order finished
    skipped: int = 0  # already "ok" in the table
    failed: int = 0  # of those run now
    wall_s: float = 0.0
    stopped: bool = False  # max_points reached before every point ran


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, ConfigError) or not text else text


def run_event_point(spec: ClusterSpec, cwd: str, trace_dest: str | None) -> dict[str, Any]:
    """One event point, in this process (a Ray task runs this): its summary's scalars, or
    its error. Relative paths in the description (request files, model configs) are the
    driver's: run from its directory where this machine has it."""
    from cluster.commands.scenario import RunOptions, run_cluster
    from cluster.results.trace import energy_path, requests_path, tokens_path

    t0 = time.perf_counter()
    here = os.getcwd()
    try:
        if os.path.isdir(cwd):
            os.chdir(cwd)
        with tempfile.TemporaryDirectory(prefix="wafersim-sweep-") as tmp:
            trace = Path(tmp) / "point.arrow"
            summary = run_cluster(spec, RunOptions(trace=str(trace)))
            row = summary_scalars(summary)
            if trace_dest:
                dest = Path(trace_dest)
                dest.parent.mkdir(parents=True, exist_ok=True)
                for make in (requests_path, tokens_path, energy_path):
                    shutil.move(make(trace), make(dest))
                shutil.move(trace, dest)
                row["trace"] = str(dest)
        return {"status": "ok", "error": None, "wall_s": time.perf_counter() - t0, **row}
    except Exception as exc:  # a failed point is a row, never the end of the sweep
        return {"status": "failed", "error": _one_line(exc), "wall_s": time.perf_counter() - t0}
    finally:
        os.chdir(here)


class _Recorder:
    """The rows by (point id, fidelity), written as they change (throttled) and at the end."""

    def __init__(self, sweep: SweepSpec, out: Path) -> None:
        self.path = out / RESULTS
        self.fingerprint = sweep.fingerprint()
        old, old_params = read_rows(self.path, self.fingerprint)
        self.params = [*sweep.params, *(p for p in old_params if p not in sweep.params)]
        self.rows = {(r["point_id"], r["fidelity"]): r for r in old}
        self.order = {p.id: i for i, p in enumerate(sweep.points)}
        self.dirty = False
        self.written = 0.0

    def done(self, pid: str, fidelity: str) -> bool:
        return (self.rows.get((pid, fidelity)) or {}).get("status") == "ok"

    def add(self, point: Point, fidelity: str, result: dict[str, Any], reason: str | None) -> None:
        row = {"point_id": point.id, **point.params, "fidelity": fidelity, "refine_reason": reason}
        row.update({k: v for k, v in result.items() if k not in point.params})
        self.rows[(point.id, fidelity)] = row
        self.dirty = True
        if time.monotonic() - self.written >= WRITE_EVERY_S:
            self.flush()

    def flush(self) -> None:
        if not self.dirty:
            return
        late = len(self.order)
        ordered = sorted(self.rows.values(), key=lambda r: (self.order.get(r["point_id"], late),
                                                            FIDELITIES.index(r["fidelity"])
                                                            if r["fidelity"] in FIDELITIES else 9))
        write_rows(self.path, ordered, self.params, self.fingerprint)
        self.dirty = False
        self.written = time.monotonic()

    def ok_rows(self, fidelity: str, points: tuple[Point, ...]) -> list[dict[str, Any]]:
        return [self.rows[(p.id, fidelity)] for p in points if self.done(p.id, fidelity)]


def _bar(total: int, label: str, show: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=label, unit="point", file=sys.stderr, leave=False,
                disable=not (show and sys.stderr.isatty()))


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _on_sigterm_interrupt() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


@contextmanager
def _sigterm_as_interrupt(enabled: bool) -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, so the table is written and Ray stopped; the
    handler before is back at the end."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _connect(address: str | None) -> bool:
    """Use the Ray already initialised, else join `address` or $RAY_ADDRESS, else start a
    local Ray for the sweep (every CPU: a point is a task of one). Returns whether the sweep
    connected (and must shut down)."""
    from cluster.engine.backends.ray_connect import connect

    return connect(address or os.environ.get("RAY_ADDRESS"), num_cpus=os.cpu_count() or 1)


def _run_event(todo: list[tuple[Point, str | None]], rec: _Recorder, out: Path, keep: bool,
               on_point: Callable[[dict], None] | None, bar, result: SweepResult) -> None:
    import ray

    task = ray.remote(num_cpus=1, max_retries=0)(run_event_point)
    cpus = int(ray.cluster_resources().get("CPU", 1)) or 1
    cwd = os.getcwd()
    queue = iter(todo)
    pending: dict[Any, tuple[Point, str | None]] = {}
    try:
        while True:
            while len(pending) < 2 * cpus:
                item = next(queue, None)
                if item is None:
                    break
                point, reason = item
                dest = str((out / "traces" / f"{point.id}.arrow").resolve()) if keep else None
                pending[task.remote(point.spec, cwd, dest)] = item
            if not pending:
                return
            ready, _ = ray.wait(list(pending), num_returns=1)
            rest = [r for r in pending if r not in ready]
            if rest:
                ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
            for ref in ready:
                point, reason = pending.pop(ref)
                try:
                    res = ray.get(ref)
                except Exception as exc:  # the task's worker died
                    res = {"status": "failed", "error": _one_line(exc), "wall_s": None}
                _record(rec, point, "event", res, reason, on_point, bar, result)
    finally:
        for ref in pending:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # best effort: the task may have just finished
                pass


def _run_analytic(todo: list[tuple[Point, str | None]], rec: _Recorder,
                  on_point: Callable[[dict], None] | None, bar, result: SweepResult) -> None:
    try:
        from cluster.analytic import estimate
    except ImportError as exc:
        raise ConfigError(f"fidelity analytic: the analytic model is not available ({exc})") from None
    for point, reason in todo:
        t0 = time.perf_counter()
        try:
            res = {"status": "ok", "error": None, **summary_scalars(estimate(point.spec))}
        except Exception as exc:
            res = {"status": "failed", "error": _one_line(exc)}
        res["wall_s"] = time.perf_counter() - t0
        _record(rec, point, "analytic", res, reason, on_point, bar, result)


def _record(rec: _Recorder, point: Point, fidelity: str, res: dict[str, Any], reason: str | None,
            on_point: Callable[[dict], None] | None, bar, result: SweepResult) -> None:
    rec.add(point, fidelity, res, reason)
    result.ran.append(f"{point.id}:{fidelity}")
    result.failed += res["status"] != "ok"
    if bar is not None:
        bar.update(1)
    if on_point is not None:
        on_point(rec.rows[(point.id, fidelity)])


def run_sweep(sweep: SweepSpec, out: str | Path, *, fidelity: str | None = None, refine: int | None = None,
              address: str | None = None, progress: bool = False, max_points: int | None = None,
              on_point: Callable[[dict], None] | None = None, handle_sigterm: bool = False) -> SweepResult:
    """Run the points of `sweep` not yet "ok" in `OUT/results.parquet`, then (analytic with
    `refine` N) the N best and N most surprising in full. `max_points`: stop after running
    that many (the rest on a rerun). `on_point(row)` is called as each point is recorded;
    an exception from it (KeyboardInterrupt) stops the sweep, the table kept."""
    t0 = time.perf_counter()
    fidelity = fidelity or sweep.fidelity
    refine = sweep.refine if refine is None else refine
    if fidelity not in FIDELITIES:
        raise ConfigError(f"--fidelity: must be one of {', '.join(FIDELITIES)}, got {fidelity!r}")
    if refine < 0 or (refine and fidelity != "analytic"):
        raise ConfigError(f"--refine: needs fidelity analytic and N >= 0, got {refine} with {fidelity}")
    out = Path(out)
    sweep.fingerprint()  # refuses a base it cannot hash (nan, a date) before OUT exists
    out.mkdir(parents=True, exist_ok=True)
    rec = _Recorder(sweep, out)
    result = SweepResult(table=rec.path)
    budget = [max_points if max_points is not None else len(sweep.points) * 3]
    started = False

    def phase(points: list[tuple[Point, str | None]], fid: str) -> None:
        nonlocal started
        result.points += len(points)
        todo = [(p, r) for p, r in points if not rec.done(p.id, fid)]
        result.skipped += len(points) - len(todo)
        bad = [(p, r) for p, r in todo if p.spec is None]
        todo = [(p, r) for p, r in todo if p.spec is not None]
        for p, r in bad:  # refused by validation: recorded as failed, never run
            _record(rec, p, fid, {"status": "failed", "error": p.error, "wall_s": 0.0}, r, on_point, None, result)
        if len(todo) > budget[0]:
            todo, result.stopped = todo[:budget[0]], True
        budget[0] -= len(todo)
        if not todo:
            return
        with _bar(len(todo), f"sweep {fid}", progress) as bar:
            if fid == "analytic":
                _run_analytic(todo, rec, on_point, bar, result)
            else:
                started = started or _connect(address)
                if handle_sigterm:  # ray.init put in its own handler (sys.exit)
                    _on_sigterm_interrupt()
                _run_event(todo, rec, out, sweep.keep_traces, on_point, bar, result)

    try:
        with _sigterm_as_interrupt(handle_sigterm):
            phase([(p, None) for p in sweep.points], fidelity)
            if refine and not result.stopped:
                by_id = {p.id: p for p in sweep.points}
                picks = choose_refine(rec.ok_rows("analytic", sweep.points), sweep.params, refine)
                phase([(by_id[pid], reason) for pid, reason in picks], "event")
    finally:
        try:
            rec.flush()
        finally:
            if started:
                import ray

                ray.shutdown()
    result.wall_s = time.perf_counter() - t0
    return result
