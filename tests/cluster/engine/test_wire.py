"""The rounds' wire on its own (no Ray): calls and replies of any size, a model error
coming back as itself, a dead actor named, a stranger refused."""

from __future__ import annotations

import pickle
import socket
import threading

import pytest

from cluster.engine.backends import wire
from common.errors import CausalityError, LPFailure


def start(labels: list[str], step) -> tuple[wire.Hub, list[threading.Thread]]:
    hub = wire.Hub("127.0.0.1", labels, call_timeout_s=30.0)
    threads = [threading.Thread(target=wire.serve, args=(hub.address, i, hub.token, step), daemon=True)
               for i in range(len(labels))]
    for t in threads:
        t.start()
    hub.accept(lambda: None)
    return hub, threads


def echo(call):
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
    assert hub.round({p: pickle.dumps(("last", p)) for p in (0, 1)}) == {0: ("last", 0), 1: ("last", 1)}
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


def test_a_connection_without_the_run_token_is_refused():
    hub = wire.Hub("127.0.0.1", ["a"], call_timeout_s=30.0)
    stranger = socket.create_connection(hub.address)
    wire.send_frame(stranger, pickle.dumps((0, "not-the-token")))
    actor = threading.Thread(target=wire.serve, args=(hub.address, 0, hub.token, echo), daemon=True)
    actor.start()
    hub.accept(lambda: None)
    assert hub.round({0: pickle.dumps(("last", 3))}) == {0: ("last", 3)}
    assert stranger.recv(1) == b""  # closed by the hub
    hub.close()
