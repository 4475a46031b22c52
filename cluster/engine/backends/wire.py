"""The rounds' wire: one TCP socket between the driver and each partition's actor, carrying
length-prefixed pickles (a call in, a StepResult out). Ray places, starts and stops the
actors; the rounds themselves do not go through Ray.

Why not Ray's calls or its compiled graphs: a remote-call barrier costs about 2.7 ms a
round on two cores (raybench), and a compiled graph's reader spins while it waits: the
driver burned a core per round waiting on three actors (4.7 ms of CPU in a 5.7 ms round,
measured here), which on a machine with fewer cores than actors is the core the busiest
actor needs. A blocking socket read costs nothing while it waits, and a dead actor is a
closed socket: the driver knows at once which one.
"""

from __future__ import annotations

import hmac
import pickle
import secrets
import selectors
import socket
import struct
import time
from collections.abc import Callable

from common.errors import LPFailure, SimError

_LENGTH = struct.Struct("!Q")
_HELLO = struct.Struct("!I32s")  # an actor's first bytes: its index and the run's token, raw (never unpickled)
_OK, _ERROR, _PROGRESS = b"\x00", b"\x01", b"\x02"
ACCEPT_TIMEOUT_S = 120.0  # every actor connects back within this, or the start fails
HELLO_TIMEOUT_S = 5.0  # a connection that does not say who it is in this long is dropped
PROGRESS_EVERY_S = 0.5  # an actor in a long call tells the driver its simulated time this often


def send_frame(sock: socket.socket, blob: bytes) -> None:
    header = _LENGTH.pack(len(blob))
    if len(blob) < 65_536:
        sock.sendall(header + blob)  # one write, one segment
    else:  # a big one goes as is, not copied behind its length
        sock.sendall(header)
        sock.sendall(blob)


def recv_frame(sock: socket.socket) -> bytearray:
    (size,) = _LENGTH.unpack(_recv_exact(sock, _LENGTH.size))
    return _recv_exact(sock, size)


def _recv_exact(sock: socket.socket, size: int) -> bytearray:
    buf = bytearray(size)
    view, got = memoryview(buf), 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            raise ConnectionResetError("the other end closed the connection")
        got += n
    return buf


def dumps(value: object) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


class Hub:
    """The driver's end: a listening socket the actors connect back to, then one socket
    each. `labels` name the actors in errors; `on_progress(now_ps)` hears an actor's
    simulated time during a long call (the progress bar and the watchdog)."""

    def __init__(self, host: str, labels: list[str], call_timeout_s: float,
                 on_progress: Callable[[int], None] | None = None) -> None:
        self.labels = labels
        self.token = secrets.token_hex(16)  # 32 characters: an actor proves it is this run's
        self._server: socket.socket | None = socket.create_server((host, 0))
        self.address = (host, self._server.getsockname()[1])
        self._socks: list[socket.socket | None] = [None] * len(labels)
        self._call_timeout_s = call_timeout_s
        self._on_progress = on_progress
        self._selector = selectors.DefaultSelector()  # every actor's socket, registered once

    def accept(self, still_starting: Callable[[], None]) -> None:
        """Wait for every actor to connect; `still_starting` raises if one died first.
        Whatever else connects (a port scan, a stranger) is dropped without a word."""
        self._server.settimeout(1.0)
        deadline = time.monotonic() + ACCEPT_TIMEOUT_S
        while any(s is None for s in self._socks):
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                still_starting()
                if time.monotonic() > deadline:
                    missing = [lb for lb, s in zip(self.labels, self._socks) if s is None]
                    raise LPFailure(f"ray actor for {missing[0]} never connected back to the driver "
                                    f"({self.address[0]}:{self.address[1]})") from None
                continue
            index = self._hello(conn)
            if index is None:
                conn.close()
                continue
            conn.settimeout(self._call_timeout_s)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._socks[index] = conn
            self._selector.register(conn, selectors.EVENT_READ, index)
        self._server.close()  # nobody else connects to this run
        self._server = None

    def _hello(self, conn: socket.socket) -> int | None:
        try:
            conn.settimeout(HELLO_TIMEOUT_S)
            index, token = _HELLO.unpack(_recv_exact(conn, _HELLO.size))
        except (OSError, struct.error):
            return None
        if not hmac.compare_digest(token, self.token.encode()) or not 0 <= index < len(self._socks) \
                or self._socks[index] is not None:
            return None
        return index

    def round(self, calls: dict[int, bytes], last: bool = False) -> dict[int, object]:
        """Send each called actor its pickled call; gather the replies as they come (a
        dead actor, called or idle, is named as soon as its socket closes, not after the
        slow ones). `last`: the actors close their end once they have replied."""
        for p, blob in calls.items():
            self._io(p, send_frame, blob)
        replies: dict[int, object] = {}
        while len(replies) < len(calls):  # an idle actor sends nothing: only called ones are ready
            ready = self._selector.select(timeout=self._call_timeout_s)
            if not ready:
                waiting = [self.labels[p] for p in calls if p not in replies]
                raise LPFailure(f"ray actor for {waiting[0]} failed: no reply in {self._call_timeout_s:.0f} s")
            for key, _ in ready:
                p = key.data
                frame = self._io(p, recv_frame)
                if frame[:1] == _PROGRESS:
                    if self._on_progress is not None:
                        self._on_progress(_LENGTH.unpack(frame[1:])[0])
                    continue
                if frame[:1] == _ERROR:
                    raise pickle.loads(frame[1:])
                replies[p] = pickle.loads(frame[1:])
                if last:  # its end closes next: no more to hear
                    self._selector.unregister(key.fileobj)
        return replies

    def _io(self, p: int, op, *args):
        try:
            return op(self._socks[p], *args)
        except TimeoutError:
            raise LPFailure(f"ray actor for {self.labels[p]} failed: no reply in {self._call_timeout_s:.0f} s") \
                from None
        except OSError as exc:
            raise LPFailure(f"ray actor for {self.labels[p]} failed: {type(exc).__name__} (the actor died?)") \
                from None

    def close(self) -> None:
        self._selector.close()
        for sock in self._socks:
            if sock is not None:
                sock.close()
        self._socks = [None] * len(self._socks)
        if self._server is not None:
            self._server.close()
            self._server = None


def serve(address: tuple[str, int], index: int, token: str, label: str,
          step: Callable[[object, Callable[[int], None]], tuple[bool, object]]) -> None:
    """The actor's end: connect back, then answer calls until `step` says it was the last
    or the driver goes away. `step(call, report) -> (last, result)`; `report(now_ps)`
    tells the driver the simulated time during a long call (sent at most every
    PROGRESS_EVERY_S). A model error goes back to the driver as itself."""
    sock = socket.create_connection(address, timeout=30.0)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(_HELLO.pack(index, token.encode()))
    last_report = [time.monotonic()]

    def report(now_ps: int) -> None:
        if time.monotonic() - last_report[0] >= PROGRESS_EVERY_S:
            last_report[0] = time.monotonic()
            send_frame(sock, _PROGRESS + _LENGTH.pack(now_ps))

    try:
        last = False
        while not last:
            call = pickle.loads(recv_frame(sock))
            try:
                last, result = step(call, report)
                reply = _OK + dumps(result)
            except SimError as exc:
                last, reply = True, _error(exc, label)
            except (ConnectionError, BrokenPipeError):
                raise
            except Exception as exc:
                last, reply = True, _error(LPFailure(f"ray actor for {label} failed: {type(exc).__name__}: {exc}"),
                                           label)
            send_frame(sock, reply)
    except (ConnectionError, BrokenPipeError):  # the driver went first: the run is over, failed or stopped
        return
    finally:
        sock.close()


def _error(exc: Exception, label: str) -> bytes:
    """An error frame: the exception itself, or (if it does not pickle) an LPFailure with its text."""
    try:
        return _ERROR + dumps(exc)
    except Exception:
        return _ERROR + dumps(LPFailure(f"ray actor for {label} failed: {type(exc).__name__}: {exc}"))
