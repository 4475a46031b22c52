"""Joining a Ray cluster, or starting a Ray of the run's own: for a run's actors and a
sweep's tasks alike. A user's mistake (nothing listens at the address, a token the
cluster refuses) is one line and fails in seconds, where ray.init
would retry for tens of seconds printing a line a second."""

from __future__ import annotations

import os
import socket

import ray

from common.errors import ConfigError

NAMESPACE = "wafersim"
CONNECT_TIMEOUT_S = 3.0


def connect(address: str | None, num_cpus: int) -> bool:
    """Join `address`, or start a local Ray with `num_cpus` (`address="local"`: its own,
    even when another Ray runs on this machine). Returns whether this call connected (and
    so the caller must disconnect, or stop the Ray it started, at the end); a Ray the
    caller already initialized (a test session) is left alone."""
    if ray.is_initialized():
        return False
    if address:
        _check_reachable(address)
        _check_token(address)
        try:
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level="ERROR")
        except ConnectionError as exc:
            raise ConfigError(f"--address: the Ray at {address} did not accept this driver (if it uses token "
                              f"authentication: {_token_hint()}; Ray said: {' '.join(str(exc).split())})") from None
        return True
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, object_store_memory=200 * 1024 * 1024,
             namespace=NAMESPACE, log_to_driver=False, logging_level="ERROR", _node_ip_address="127.0.0.1")
    return True


def _host_port(address: str) -> tuple[str, int] | None:
    """A plain HOST:PORT, or None (ray:// and "auto" are Ray's to resolve)."""
    host, sep, port = address.rpartition(":")
    return (host, int(port)) if sep and port.isdigit() and "/" not in address else None


def _check_reachable(address: str) -> None:
    """Fail in seconds, naming the address, when nothing listens there."""
    host_port = _host_port(address)
    if host_port is None:
        return
    try:
        socket.create_connection(host_port, timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ConfigError(f"--address: no Ray answers at {address} ({exc.strerror or exc})") from None


def _check_token(address: str) -> None:
    """Fail at once when the Ray at `address` refuses this driver's token. One GCS client,
    stderr muted (Ray's C++ logs there); anything but an authentication error is left to
    ray.init to report."""
    if _host_port(address) is None:
        return
    try:
        from ray._raylet import GcsClient  # private, so only a probe: ray.init connects for real
        from ray.exceptions import AuthenticationError
    except ImportError:
        return
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        GcsClient(address=address)
        refused = False
    except AuthenticationError:
        refused = True
    except Exception:  # not ours to judge
        refused = False
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    if refused:
        raise ConfigError(f"--address: the Ray at {address} uses token authentication and refused this driver: "
                          f"{_token_hint()}")


def _token_hint() -> str:
    """Ray >= 2.5x: `ray start --head` turns token authentication on when a token exists
    (~/.ray/auth_token, which any local ray.init() writes), and a driver joining by address
    only sends one with RAY_AUTH_MODE=token."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        return "check RAY_AUTH_TOKEN or ~/.ray/auth_token holds the head's token"
    return "set RAY_AUTH_MODE=token and give the head's token in RAY_AUTH_TOKEN or ~/.ray/auth_token"
