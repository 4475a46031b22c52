"""Partitions in Ray actors: `WaferActor` for a partition that holds a wafer,
`InterconnectActor` for one that holds only links (and the frontend).

One call per active partition per round carries the whole inbox and returns the whole
StepResult (outbox, horizons, trace batches as Arrow record batches); idle partitions are
not called. The driver keeps nothing of the trace but what the writer spools to disk.
This is the only module that imports ray.
"""

from __future__ import annotations

import os
import socket
import time
import uuid

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from cluster.engine.graph import Graph
from cluster.engine.messages import Message, StepResult
from cluster.engine.partition import Partition
from cluster.results.trace import TraceVocab
from common.errors import ConfigError, LPFailure

NAMESPACE = "wafersim"
CALL_TIMEOUT_S = 600.0  # a round that takes longer is a hung actor, not a slow one
PLACEMENTS = ("pack", "spread", "by-site")


class PartitionHost:
    """What runs inside an actor: one Partition and its stepping calls."""

    def __init__(self, graph: Graph, lp_names: list[str], vocab: TraceVocab) -> None:
        self.partition = Partition(graph, lp_names, vocab)

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def advance(self, until_ps: float, inbox: list[Message]) -> StepResult:
        return self.partition.advance(until_ps, inbox)

    def finish(self, end_ps: int) -> StepResult:
        return self.partition.finish(end_ps)


@ray.remote(num_cpus=0)
class WaferActor(PartitionHost):
    """A partition holding at least one wafer."""


@ray.remote(num_cpus=0)
class InterconnectActor(PartitionHost):
    """A partition holding links (and possibly the frontend), no wafer."""


def _start_ray(address: str | None) -> bool:
    """Join `address`, or start a local Ray for this run. Returns whether this run
    connected (and so must disconnect, or stop the Ray it started, at the end); a Ray
    the caller already initialized (a test session) is left alone."""
    if ray.is_initialized():
        return False
    if address:
        _check_reachable(address)
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level="ERROR")
        return True
    # address="local": a Ray of this run's own, even when another runs on this machine
    ray.init(address="local", num_cpus=max(1, min(os.cpu_count() or 1, 4)), include_dashboard=False,
             object_store_memory=200 * 1024 * 1024, namespace=NAMESPACE, log_to_driver=False,
             logging_level="ERROR", _node_ip_address="127.0.0.1")
    return True


CONNECT_TIMEOUT_S = 3.0


def _check_reachable(address: str) -> None:
    """Fail in seconds, naming the address, when nothing listens there (ray.init would
    retry for minutes). Only a plain HOST:PORT is checked; ray:// and "auto" go to Ray."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in address:
        return
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ConfigError(f"--address: no Ray answers at {address} ({exc.strerror or exc})") from None


class RayBackend:
    def __init__(self, graph: Graph, groups: list[list[str]], vocab: TraceVocab,
                 address: str | None = None, placement: str = "pack") -> None:
        if placement not in PLACEMENTS:
            raise ConfigError(f"--placement: must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
        t0 = time.perf_counter()
        self._started = _start_ray(address)
        self._actors: list = []
        self._labels: list[str] = []
        try:
            sites = {lp.name: lp.datacenter for lp in graph.lps}
            devices = {lp.name for lp in graph.lps if getattr(lp.config, "is_device", False)}
            options = self._placement_options(placement, groups, sites)
            run_id = uuid.uuid4().hex[:8]
            for group, opts in zip(groups, options):
                cls = WaferActor if devices.intersection(group) else InterconnectActor
                label = "+".join(group)
                actor = cls.options(name=f"{run_id}:{label}", **opts).remote(graph, group, vocab)
                self._actors.append(actor)
                self._labels.append(label)
            self._nodes = self._get({i: a.node_id.remote() for i, a in enumerate(self._actors)})
        except BaseException:
            self.shutdown()
            raise
        self.startup_s = time.perf_counter() - t0

    @staticmethod
    def _placement_options(placement: str, groups: list[list[str]], sites: dict[str, str]) -> list[dict]:
        if placement == "pack":
            return [{} for _ in groups]
        if placement == "spread":
            return [{"scheduling_strategy": "SPREAD"} for _ in groups]
        available = set()
        for node in ray.nodes():
            if node.get("Alive"):
                available |= {k for k in node.get("Resources", {}) if k.startswith("site:")}
        options = []
        for group in groups:
            group_sites = sorted({sites[n] for n in group})
            if len(group_sites) != 1:
                raise ConfigError(f"--placement by-site: actor {'+'.join(group)} spans sites {group_sites}")
            resource = f"site:{group_sites[0]}"
            if resource not in available:
                raise ConfigError(f"--placement by-site: no Ray node has the resource {resource} "
                                  f"(start one with: ray start --resources='{{\"{resource}\": 1}}')")
            options.append({"resources": {resource: 0.001}})
        return options

    def _get(self, refs: dict[int, ray.ObjectRef]) -> dict[int, object]:
        """Wait for every call; a dead actor ends the run with its name."""
        try:
            values = ray.get(list(refs.values()), timeout=CALL_TIMEOUT_S)
        except (RayActorError, RayTaskError, GetTimeoutError) as exc:
            dead = self._dead_actor(refs, exc)
            raise LPFailure(f"ray actor for {dead} failed: {type(exc).__name__}") from None
        return dict(zip(refs, values))

    def _dead_actor(self, refs: dict[int, ray.ObjectRef], exc: Exception) -> str:
        for p, ref in refs.items():
            try:
                ray.get(ref, timeout=0)
            except (RayActorError, RayTaskError):
                return self._labels[p]
            except GetTimeoutError:
                continue
        return "an LP" if not isinstance(exc, GetTimeoutError) else "an LP (timed out)"

    def advance(self, calls: dict[int, tuple[float, list[Message]]]) -> dict[int, StepResult]:
        return self._get({p: self._actors[p].advance.remote(until, inbox) for p, (until, inbox) in calls.items()})

    def finish(self, end_ps: int) -> dict[int, StepResult]:
        return self._get({p: a.finish.remote(end_ps) for p, a in enumerate(self._actors)})

    def summary_extra(self) -> dict:
        return {"ray_nodes": len(set(self._nodes.values())), "ray_startup_s": self.startup_s,
                "ray_shutdown_s": getattr(self, "shutdown_s", 0.0), "ray_actors": len(self._labels)}

    def shutdown(self) -> None:
        t0 = time.perf_counter()
        for actor in self._actors:
            try:
                ray.kill(actor)
            except Exception:  # already dead: nothing to clean
                pass
        self._actors = []
        if self._started and ray.is_initialized():
            ray.shutdown()
        self.shutdown_s = time.perf_counter() - t0
