"""The rounds' wire on its own (no Ray): calls and replies of any size, a model error
coming back as itself, a dead actor named, progress heard during a long call, and
strangers (a port scan, a pickle that would run code) dropped unread."""

from __future__ import annotations

import pickle
import socket
import threading

import pytest

from cluster.engine.backends import wire
from common.errors import CausalityError, LPFailure


def start(labels: list[str], step, on_progress=None) -> tuple[wire.Hub, list[threading.Thread]]:
    hub = wire.Hub("127.0.0.1", labels, call_timeout_s=30.0, on_progress=on_progress)
    threads = [threading.Thread(target=wire.serve, args=(hub.address, i, hub.token, labels[i], step), daemon=True)
               for i in range(len(labels))]
    for t in threads:
        t.start()
    hub.accept(lambda: None)
    return hub, threads


def echo(call, report):
    kind, value = call
    if kind == "boom":
        raise CausalityError(f"late by {value} ps")
    return kind == "last", (kind, value)


def test_calls_and_replies_of_any_size_reach_the_right_actor():
    hub, threads = start(["a", "b"], echo)
    big = bytes(range(256)) * 8192  # 2 MB: several segments each way
    replies = hub.round({0: pickle.dumps(("advance", 1)), 1: pickle.dumps(("advance", big))})
    assert replies == {0: ("advance", 1), 1: ("advance", big)}
    assert hub.round({1: pickle.dumps(("advance", 2))}) == {1: ("advance", 2)}  # an idle actor is not called
    assert hub.round({p: pickle.dumps(("last", p)) for p in (0, 1)}, last=True) == {0: ("last", 0), 1: ("last", 1)}
    for t in threads:
        t.join(timeout=5)
        assert not t.is_alive()  # the last call ends the serving loop
    hub.close()


def test_a_model_error_in_an_actor_comes_back_as_itself():
    hub, _ = start(["a"], echo)
    with pytest.raises(CausalityError, match="late by 7 ps"):
        hub.round({0: pickle.dumps(("boom", 7))})
    hub.close()


def test_an_actor_that_goes_away_is_named():
    hub, threads = start(["frontend+wafer0", "wafer1"], echo)
    hub.round({1: pickle.dumps(("last", 0))})  # wafer1 stops serving and closes its socket
    threads[1].join(timeout=5)
    with pytest.raises(LPFailure, match="ray actor for wafer1 failed"):
        hub.round({0: pickle.dumps(("advance", 1)), 1: pickle.dumps(("advance", 1))})
    hub.close()


def closed(sock: socket.socket) -> bool:
    """The hub closed it: an end of stream, or a reset where it left bytes unread."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


class Boom:
    """Would touch a file if anyone unpickled it."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_strangers_are_dropped_unread_and_the_actors_still_connect(tmp_path):
    hub = wire.Hub("127.0.0.1", ["a"], call_timeout_s=30.0)
    scan = socket.create_connection(hub.address)  # a port scan: connects, says nothing, goes
    scan.close()
    bomb = socket.create_connection(hub.address)
    wire.send_frame(bomb, pickle.dumps(Boom(tmp_path / "pwned")))
    wrong = socket.create_connection(hub.address)
    wrong.sendall(wire._HELLO.pack(0, b"0" * 32))  # the right shape, not the run's token
    actor = threading.Thread(target=wire.serve, args=(hub.address, 0, hub.token, "a", echo), daemon=True)
    actor.start()
    hub.accept(lambda: None)
    assert hub.round({0: pickle.dumps(("last", 3))}) == {0: ("last", 3)}
    assert not (tmp_path / "pwned").exists()
    assert closed(bomb) and closed(wrong)
    with pytest.raises(OSError):  # and nobody else can connect once the actors have
        socket.create_connection(hub.address, timeout=2).recv(1)
    hub.close()


def test_an_actor_in_a_long_call_reports_its_simulated_time(monkeypatch):
    monkeypatch.setattr(wire, "PROGRESS_EVERY_S", 0.0)
    heard = []

    def slow(call, report):
        for now_ps in (10, 20, 30):
            report(now_ps)
        return True, "done"
    hub, _ = start(["a"], slow, on_progress=heard.append)
    assert hub.round({0: pickle.dumps(("last", 0))}) == {0: "done"}
    assert heard == [10, 20, 30]
    hub.close()
