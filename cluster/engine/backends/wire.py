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

import pickle
import secrets
import socket
import struct
from collections.abc import Callable

from common.errors import LPFailure, SimError

_LENGTH = struct.Struct("!Q")
_OK, _ERROR = b"\x00", b"\x01"
ACCEPT_TIMEOUT_S = 120.0  # every actor connects back within this, or the start fails


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


def _dumps(value: object) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


class Hub:
    """The driver's end: a listening socket the actors connect back to, then one socket
    each. `labels` name the actors in errors."""

    def __init__(self, host: str, labels: list[str], call_timeout_s: float) -> None:
        self.labels = labels
        self.token = secrets.token_hex(16)  # an actor proves it is this run's
        self._server = socket.create_server((host, 0))
        self.address = (host, self._server.getsockname()[1])
        self._socks: list[socket.socket | None] = [None] * len(labels)
        self._call_timeout_s = call_timeout_s

    def accept(self, still_starting: Callable[[], None]) -> None:
        """Wait for every actor to connect; `still_starting` raises if one died first."""
        self._server.settimeout(1.0)
        waited = 0.0
        while any(s is None for s in self._socks):
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                waited += 1.0
                still_starting()
                if waited >= ACCEPT_TIMEOUT_S:
                    missing = [lb for lb, s in zip(self.labels, self._socks) if s is None]
                    raise LPFailure(f"ray actor for {missing[0]} never connected back to the driver "
                                    f"({self.address[0]}:{self.address[1]})") from None
                continue
            conn.settimeout(self._call_timeout_s)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            index, token = pickle.loads(recv_frame(conn))
            if token != self.token or not 0 <= index < len(self._socks) or self._socks[index] is not None:
                conn.close()
                continue
            self._socks[index] = conn

    def round(self, calls: dict[int, bytes]) -> dict[int, object]:
        """Send each called actor its pickled call; gather the replies (the round lasts
        as long as the slowest)."""
        for p, blob in calls.items():
            self._io(p, send_frame, blob)
        return {p: self._reply(p) for p in calls}

    def _reply(self, p: int) -> object:
        frame = self._io(p, recv_frame)
        if frame[:1] == _ERROR:
            raise pickle.loads(frame[1:])
        return pickle.loads(frame[1:])

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
        for sock in self._socks:
            if sock is not None:
                sock.close()
        self._socks = [None] * len(self._socks)
        self._server.close()


def serve(address: tuple[str, int], index: int, token: str, step: Callable[[object], tuple[bool, object]]) -> None:
    """The actor's end: connect back, then answer calls until `step` says it was the last.
    `step(call) -> (last, result)`. A model error goes back to the driver as itself."""
    sock = socket.create_connection(address, timeout=30.0)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    send_frame(sock, _dumps((index, token)))
    try:
        last = False
        while not last:
            try:
                call = pickle.loads(recv_frame(sock))
            except ConnectionResetError:  # the driver closed first: the run is over, failed or stopped
                return
            try:
                last, result = step(call)
                reply = _OK + _dumps(result)
            except SimError as exc:
                last, reply = True, _ERROR + _dumps(exc)
            except Exception as exc:  # not every exception pickles: its type and text do
                last, reply = True, _ERROR + _dumps(LPFailure(f"actor {index}: {type(exc).__name__}: {exc}"))
            send_frame(sock, reply)
    finally:
        sock.close()
