"""A run stopped from outside ends cleanly: SIGINT exits 130 and SIGTERM 143 with one line
on stderr, no trace, side table or hidden spool folder left beside the trace, and no Ray
process of a Ray the run started (`--backend ray` without an address) left running; a
dead actor is one line and exit 2, cleaned up the same way; a full disk is one line and
no files."""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import ROOT

BIG = ["--detail", "op", "--users", "64", "--output-tokens", "256"]  # seconds of work: long enough to stop


def _start(trace: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cluster.commands.cli", "run", "llama8b_one_wafer", *args,
                             "--trace", str(trace)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(entry))
    return kids


def _cmdline(pid: int) -> str | None:
    """A live process's command line; None once it is gone or a zombie."""
    try:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return None
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def _descendants(pid: int) -> dict[int, str]:
    kids, out, todo = _children(), {}, [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            cmd = _cmdline(child)
            if cmd is not None:
                out[child] = cmd
                todo.append(child)
    return out


def _wait_for(proc: subprocess.Popen, ready, timeout_s: float = 120.0) -> dict[int, str]:
    """Poll until `ready(descendants)`; returns every descendant seen so far."""
    seen: dict[int, str] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended before it was stopped: {proc.communicate()}"
        seen.update(_descendants(proc.pid))
        if ready(seen):
            return seen
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the run never reached the point to stop it at")


def _spooling(trace: Path):
    return lambda seen: any(p.name.startswith(f".{trace.name}.") for p in trace.parent.iterdir())


def _finish(proc: subprocess.Popen, seen: dict[int, str], trace: Path) -> tuple[int, list[str]]:
    """Wait for the run to end; check nothing is left on disk or in the process table."""
    _, err = proc.communicate(timeout=120)
    leftover = sorted(p.name for p in trace.parent.iterdir())
    assert leftover == [], f"left behind: {leftover}"
    deadline = time.monotonic() + 20
    alive = seen
    while alive and time.monotonic() < deadline:
        alive = {pid: cmd for pid, cmd in seen.items() if _cmdline(pid) == cmd}
        time.sleep(0.2)
    session = re.compile(rf"session_[^/ ]*_{proc.pid}(/| |$)")  # a local Ray's session folder ends with its pid
    for pid in (int(e) for e in os.listdir("/proc") if e.isdigit()):
        cmd = _cmdline(pid)
        if cmd is not None and session.search(cmd):
            alive[pid] = cmd
    assert not alive, f"processes of the run left running: {[c[:120] for c in alive.values()]}"
    return proc.returncode, [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize("signum, code, name", [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")])
def test_signal_in_process_exits_with_one_line_and_no_files(tmp_path, signum, code, name):
    """In-process: the signal's exit code, one line naming it, nothing beside the trace."""
    trace = tmp_path / "run.arrow"
    proc = _start(trace, *BIG)
    seen = _wait_for(proc, _spooling(trace))
    time.sleep(0.5)  # into the engine's rounds
    proc.send_signal(signum)
    rc, lines = _finish(proc, seen, trace)
    assert rc == code
    assert len(lines) == 1 and lines[0].startswith("error: ") and name in lines[0], lines


def test_sigint_during_ray_start_stops_the_ray_it_was_starting(tmp_path):
    """SIGINT while the run's own Ray is starting: 130, and none of its processes left."""
    trace = tmp_path / "run.arrow"
    proc = _start(trace, "--backend", "ray", *BIG)
    seen = _wait_for(proc, lambda seen: _spooling(trace)(seen) and any("gcs_server" in c for c in seen.values()))
    proc.send_signal(signal.SIGINT)
    rc, lines = _finish(proc, seen, trace)
    assert len(lines) == 1 and "SIGINT" in lines[0], lines
    assert rc == 130


def _actors_up(seen: dict[int, str]) -> bool:
    return any(c.startswith(("ray::WaferActor", "ray::InterconnectActor")) for c in seen.values())


def test_sigterm_on_ray_stops_ray_and_its_helpers(tmp_path):
    """SIGTERM while actors run the rounds: 143, one line, Ray and its helpers gone (Ray's
    own SIGTERM handler, which ray.init installs, is replaced again after the start)."""
    trace = tmp_path / "run.arrow"
    proc = _start(trace, "--backend", "ray", *BIG)
    seen = _wait_for(proc, _actors_up)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    rc, lines = _finish(proc, seen, trace)
    assert len(lines) == 1 and "SIGTERM" in lines[0], lines
    assert rc == 143  # not -11: the signal waited for the round (a Ray compiled graph read cut short
    # crashes the interpreter's exit)


def test_dead_ray_actor_is_one_line_and_exit_2(tmp_path):
    """An actor killed under the run: LPFailure naming it, exit 2, no files, Ray stopped."""
    trace = tmp_path / "run.arrow"
    proc = _start(trace, "--backend", "ray", *BIG)
    seen = _wait_for(proc, lambda seen: any(c.startswith("ray::WaferActor") for c in seen.values()))
    time.sleep(0.5)
    victim = next(pid for pid, c in seen.items() if c.startswith("ray::WaferActor"))
    os.kill(victim, signal.SIGKILL)
    rc, lines = _finish(proc, seen, trace)
    # named by its LPs once the rounds run; by Ray's error while the graph is still being built
    assert len(lines) == 1 and lines[0].startswith("error: ") and ("wafer0" in lines[0] or "Actor" in lines[0]), lines
    assert rc == 2


@pytest.mark.parametrize("where", ["spool", "commit"])
def test_full_disk_is_one_line_and_no_files(tmp_path, monkeypatch, capsys, where):
    """ENOSPC while spooling spans or while writing the final files: exit 2, one line
    naming the trace and the cause, nothing left beside the trace."""
    import pyarrow as pa

    from cluster.results import writer
    from scenarios.llama8b_one_wafer import main

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "somewhere")

    if where == "spool":
        monkeypatch.setattr(pa.ipc.RecordBatchStreamWriter, "write_batch", full)
    else:
        monkeypatch.setattr(writer.TraceWriter, "_write_table", full)
    trace = tmp_path / "run.arrow"
    rc = main(["--users", "2", "--prompt-tokens", "64", "--output-tokens", "4", "--quiet", "--trace", str(trace)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2
    assert len(lines) == 1 and "No space left on device" in lines[0] and str(trace) in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _small(tmp_path, **opts):
    from cluster.commands.scenario import RunOptions, ScenarioConfig, run_scenario

    cfg = ScenarioConfig("hang", "llama3.1-8b", 1, ("santa-clara",), 2, 64, 4)
    return run_scenario(cfg, RunOptions(trace=str(tmp_path / "run.arrow"), **opts))


def test_watchdog_ends_a_zero_time_loop_naming_what_was_due(tmp_path, monkeypatch):
    """An LP spinning at one simulated instant (events, but no simulated progress): after
    `watchdog_s` of wall time the run ends with a HangError naming the partition that was
    due, its window and next event; no files are left."""
    from cluster.engine.partition import Partition
    from common.errors import HangError

    built = Partition.__init__

    def with_a_spinner(self, *args, **kwargs):
        built(self, *args, **kwargs)

        def spin(env):
            yield env.timeout(1_000)
            while True:  # a model bug: an event that reschedules itself at the same instant
                yield env.timeout(0)
        self.env.process(spin(self.env))
    monkeypatch.setattr(Partition, "__init__", with_a_spinner)
    t0 = time.monotonic()
    with pytest.raises(HangError) as info:
        _small(tmp_path, watchdog_s=1.0)
    assert time.monotonic() - t0 < 30
    message = str(info.value)
    assert "no simulated progress in 1 s" in message and "partition 0 (" in message and "next event" in message
    assert "window to" in message and "stuck in the events of frontend+wafer0" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_watchdog_ends_an_event_that_never_returns(tmp_path, monkeypatch):
    """A partition stuck inside one call (no progress callbacks at all) is ended too."""
    from cluster.engine.partition import Partition
    from common.errors import HangError

    advance = Partition.advance
    calls = []

    def stuck(self, until_ps, inbox):
        calls.append(until_ps)
        if len(calls) > 1:  # in-process runs one partition: the call after t=0 runs the rest
            while True:
                time.sleep(0.05)
        return advance(self, until_ps, inbox)
    monkeypatch.setattr(Partition, "advance", stuck)
    with pytest.raises(HangError, match="watchdog: no simulated progress"):
        _small(tmp_path, watchdog_s=1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_watchdog_leaves_a_run_that_progresses_alone(tmp_path):
    """A normal run with a short watchdog completes; its thread is gone afterwards."""
    import threading

    summary = _small(tmp_path, watchdog_s=0.5)
    assert summary["requests_completed"] == 2
    assert not any(t.name == "wafersim-watchdog" for t in threading.enumerate())


def test_watchdog_flag_is_refused_below_zero(tmp_path):
    from common.errors import ConfigError

    with pytest.raises(ConfigError, match="--watchdog-s"):
        _small(tmp_path, watchdog_s=-1.0)


def test_a_link_fault_after_the_workload_can_need_is_refused(tmp_path):
    """A link fault starting past the workload's generous end bound would only hold the run
    open (its window traced after the last request): refused up front, naming it, no files."""
    from tests.conftest import run_cli

    trace = tmp_path / "run.arrow"
    proc = run_cli("run", "llama70b_four_wafers", "--users", "2", "--prompt-tokens", "64", "--output-tokens", "4",
                   "--fault", "link-down:link:wafer1->wafer2:at_ms=1e6:for_ms=5", "--trace", str(trace), check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "--fault[0].at_ms" in proc.stderr and "would only lengthen the run" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_end_bound_covers_what_a_run_takes(tmp_path):
    """The bound is generous: above the simulated end of runs of both shapes (a burst, Poisson
    arrivals), and the fault-free estimate plus every window the faults may add."""
    from cluster.commands.horizon import workload_end_bound_ps
    from cluster.commands.scenario import RunOptions, ScenarioConfig, run_scenario
    from cluster.fleet.spec import FaultSpec

    for rate in (0.0, 50.0):
        cfg = ScenarioConfig("bound", "llama3.1-8b", 2, ("santa-clara", "dallas"), 4, 64, 8, rate_per_s=rate,
                             requests=8, detail="stage")
        summary = run_scenario(cfg, RunOptions(trace=str(tmp_path / f"{rate}.arrow")))
        bound = workload_end_bound_ps(cfg.to_cluster(), {cfg.device: cfg.device_spec()})
        assert summary["sim_time_s"] * 1e12 < bound
    fault = FaultSpec("link-degraded", "link:wafer0->wafer1", 1.0, 100.0, 0.5)
    faulty = ScenarioConfig("bound", "llama3.1-8b", 2, ("santa-clara", "dallas"), 4, 64, 8, faults=(fault,))
    clean = replace(faulty, faults=())
    # 100 ms at half the bandwidth can stretch what crosses it to 200 ms
    assert workload_end_bound_ps(faulty.to_cluster()) == workload_end_bound_ps(clean.to_cluster()) + 200 * 10**9


def test_the_watchdog_does_not_count_the_finish_as_a_stall():
    """Gathering the tables and pulling spools at the end moves no simulated time: however
    long it takes, it is not a hang."""
    from cluster.commands.signals import Watchdog

    class SlowFinish:
        def advance(self, calls):
            return {}

        def finish(self, end_ps):
            assert dog.paused  # while it runs, the watchdog does not judge
            return {}
    dog = Watchdog(0.1, [["a"]])
    backend = SlowFinish()
    dog.watch_backend(backend)
    backend.finish(0)
    assert not dog.paused
