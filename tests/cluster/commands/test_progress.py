"""Progress on stderr: simulated time and events/s on a terminal, nothing otherwise."""

from __future__ import annotations

import io
import sys

from cluster.commands.progress import RunProgress
from tests.conftest import SMALL, run_cli


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_simulated_time_and_events_on_a_terminal(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    progress = RunProgress("fleet")
    progress(1_500_000_000_000, 4096)
    progress(3_000_000_000_000, 4096)
    progress.close()
    out = terminal.getvalue()
    assert "fleet: 1.500 sim s" in out and "fleet: 3.000 sim s" in out and "8,192 events" in out


def test_no_progress_when_quiet_or_not_a_terminal(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    quiet = RunProgress("x", enabled=False)
    quiet(10**12, 5)
    quiet.close()
    assert terminal.getvalue() == ""
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a pipe or a file: not a terminal
    piped = RunProgress("x")
    piped(10**12, 5)
    piped.close()
    assert sys.stderr.getvalue() == ""


def test_a_run_into_a_pipe_writes_nothing_on_stderr(tmp_path):
    proc = run_cli("run", "llama70b_four_wafers", *SMALL, "--trace", str(tmp_path / "t.arrow"))
    assert proc.stderr == ""
