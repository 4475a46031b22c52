"""Stopping a run from outside, cleanly: SIGINT and SIGTERM, and the watchdog.

Models a run's end when told to stop: the signal becomes an exception in the main thread,
the run's `finally` blocks remove the spool and stop Ray, and the command exits with one
line on stderr and the shell's code for that signal (130 for SIGINT, 143 for SIGTERM).
Ignores a second signal while the first one's cleanup runs (SIGKILL still ends it).

The watchdog ends a run that makes no simulated progress for a bounded wall time (an LP
in a zero-time loop, an event that never returns, an actor that hangs): a thread that
interrupts the main thread, whose handler turns that into a `HangError` naming the
partitions that were due and their next event times.
"""

from __future__ import annotations

import _thread
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from common.errors import HangError

SIGNAL_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}
WATCHDOG_S = 120.0  # default: wall seconds without simulated progress before a run is ended


class Stopped(SystemExit):
    """A run stopped by a signal. A SystemExit, so that `except Exception` in a model or a
    library passes it on and, uncaught, the interpreter exits with `code` (128 + the signal
    number) without a traceback. `stop_on_signals` raises it, the line on stderr printed,
    once the run's cleanup is done."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)  # args stay (signum,): a SimPy process that caught it re-raises a copy from them
        self.code = 128 + signum
        self.signum = signum
        self.message = f"stopped by {SIGNAL_NAMES.get(signum, signum)}; no trace written"


class Watchdog:
    """Ends a run that makes no simulated progress for `limit_s` wall seconds.

    Told of progress through `poke(now_ps, events)` (the engine's and the partitions'
    `progress` callback) and of each round through `watch_backend` (which partitions are
    due, to what time, and their next event times). Ignores how fast simulated time goes:
    only that it moves. `limit_s` 0 or None: never fires.
    """

    def __init__(self, limit_s: float | None, groups: list[list[str]]) -> None:
        self.limit_s = limit_s or None
        self.groups = groups
        self.fired = False
        self.now_ps = 0
        self.due: dict[int, float] = {}  # partition -> the window it was last asked to run to
        self.next_ps: dict[int, int | None] = {}  # partition -> its next event, after its last call
        self.running: tuple[list[str], int] | None = None  # the partition interrupted mid-events, its now
        self.paused = False  # while the backend finishes: simulated time is over, not stuck
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poke(self, now_ps: int, events: int) -> None:
        if now_ps > self.now_ps:
            self.now_ps = now_ps
            self._last = time.monotonic()

    def watch_backend(self, backend) -> None:
        """Record each round's calls and results by wrapping `backend.advance` (every
        backend tells `poke` of progress while a call runs: in-process partitions directly,
        Ray actors over the wire), and pause while `backend.finish` gathers the tables."""
        advance = backend.advance

        def watched(calls):
            self.due = {p: until for p, (until, _) in calls.items()}
            results = advance(calls)
            self.next_ps.update({p: r.next_event_ps for p, r in results.items()})
            self.due = {}
            return results
        backend.advance = watched
        finish = backend.finish

        def finishing(end_ps):  # simulated time is over: gathering the tables and spools is not a stall
            self.paused = True
            try:
                return finish(end_ps)
            finally:
                self.paused, self._last = False, time.monotonic()
        backend.finish = finishing

    def start(self) -> None:
        if self.limit_s is None or threading.current_thread() is not threading.main_thread():
            return  # interrupt_main reaches only the main thread
        self._last = time.monotonic()
        self._thread = threading.Thread(target=self._watch, name="wafersim-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.limit_s / 4)):
            if not self.paused and time.monotonic() - self._last >= self.limit_s:
                self.fired = True
                _thread.interrupt_main(signal.SIGINT)
                return

    def caught_in(self, frame) -> None:
        """Where the main thread was when the watchdog fired: the partition (in this process)
        whose events were running, found by walking up the stack from the interrupted frame."""
        while frame is not None:
            part = frame.f_locals.get("self")
            if hasattr(part, "_names") and hasattr(part, "env"):
                self.running = (list(part._names), part.env.now)
                return
            frame = frame.f_back

    def error(self) -> HangError:
        """What was stuck: the partitions due (their LPs, window and next event)."""
        def label(p: int) -> str:
            lps = self.groups[p]
            return "+".join(lps) if len(lps) <= 4 else f"{'+'.join(lps[:4])}+{len(lps) - 4} more"
        due = self.due or {p: None for p in self.next_ps}
        parts = []
        for p in sorted(due):
            window = "" if due[p] is None else f", window to {_ps(due[p])}"
            parts.append(f"partition {p} ({label(p)}: next event at {_ps(self.next_ps.get(p))}{window})")
        stuck = "; ".join(parts[:6]) + (f" and {len(parts) - 6} more" if len(parts) > 6 else "")
        running = ""
        if self.running is not None:
            lps, now = self.running
            shown = "+".join(lps[:4]) + (f"+{len(lps) - 4} more" if len(lps) > 4 else "")
            running = f"; stuck in the events of {shown} at {_ps(now)}"
        return HangError(f"watchdog: no simulated progress in {self.limit_s:g} s of wall time at simulated "
                         f"{_ps(self.now_ps)}{running}; due: {stuck or 'none'} (raise --watchdog-s if the run "
                         f"is just slow)")


def _ps(t) -> str:
    return "none" if t is None else "inf" if t == float("inf") else f"{int(t)} ps"


@contextmanager
def stop_on_signals(watchdog: Watchdog | None = None, label: str = "") -> Iterator[Callable[[], None]]:
    """SIGINT and SIGTERM raise `Stopped` in the main thread while the block runs (the
    watchdog's interrupt raises its `HangError` instead); on the way out the line is
    printed and the old handlers are back. Installs nothing off the main thread, nor where
    someone else already handles these signals (a sweep, a Ray worker): their policy holds,
    and a watchdog interrupt arriving as KeyboardInterrupt is still turned into its error.

    Yields `rearm()`: installs the handlers again, for after a library that takes signals
    over (ray.init puts its own SIGTERM handler, which dumps a stack and dies, in place)."""
    main = threading.current_thread() is threading.main_thread()
    owned = main and signal.getsignal(signal.SIGINT) is signal.default_int_handler \
        and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None)
    stopping = []

    def handler(signum: int, frame) -> None:
        if stopping:
            return  # the first signal's cleanup is running: let it finish
        stopping.append(signum)
        if watchdog is not None and watchdog.fired:
            watchdog.caught_in(frame)
        # KeyboardInterrupt, whatever the signal: what a library blocked in C (ray.get) expects
        # and passes on cleanly; it becomes `Stopped` (or the watchdog's error) on the way out
        raise KeyboardInterrupt

    old: dict[int, Callable] = {}
    if owned:
        for signum in SIGNAL_NAMES:
            old[signum] = signal.signal(signum, handler)

    def rearm() -> None:
        for signum in old:
            signal.signal(signum, handler)
    stop_with: BaseException | None = None
    try:
        yield rearm
    except Stopped:
        raise
    except SystemExit as exc:
        if not (owned and exc.code == signal.SIGTERM):
            raise
        stopping.append(signal.SIGTERM)  # ray.init's own handler (sys.exit(15)), in place until rearm()
        stop_with = Stopped(signal.SIGTERM)
        print((f"error: {label}: " if label else "error: ") + stop_with.message, file=sys.stderr, flush=True)
    except KeyboardInterrupt as exc:
        if watchdog is not None and watchdog.fired:
            if watchdog.running is None:  # the default handler raised it: find the partition from its traceback
                tb = exc.__traceback__
                while tb is not None and tb.tb_next is not None:
                    tb = tb.tb_next
                watchdog.caught_in(tb.tb_frame if tb is not None else None)
            stop_with = watchdog.error()
        elif not stopping:
            raise  # not ours: the default handler's, where someone else owns the signals
        else:
            stop_with = Stopped(stopping[0])
            prefix = f"error: {label}: " if label else "error: "
            print(prefix + stop_with.message, file=sys.stderr, flush=True)
    finally:
        for signum, previous in old.items():
            signal.signal(signum, previous)
    if stop_with is not None:
        # raised outside the except block: no __context__ holding the interrupted frames (and the
        # Ray objects in them) alive until the interpreter's exit, where freeing them crashes
        raise stop_with
