"""Partitions in Ray actors: `WaferActor` for a partition that holds a wafer,
`InterconnectActor` for one that holds only links (and the frontend).

Ray places, starts and stops the actors; the rounds go over one socket per actor
(cluster.engine.backends.wire): each called actor gets its pickled call and returns its
StepResult, only messages, promises and counts; idle ones are not called. Trace rows
never travel in a round: each actor spools its LPs' rows where it runs (into the trace
writer's own spool folder when it shares the driver's node), and the driver adopts or
pulls the spools at the end.
With ray_connect, the only modules of the engine that import ray.
"""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow as pa
import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cluster.engine.backends import wire
from cluster.engine.backends.ray_connect import connect
from cluster.engine.graph import Graph
from cluster.engine.messages import Message, StepResult
from cluster.engine.partition import Partition
from cluster.results.trace import SPAN_SCHEMA, TraceVocab
from cluster.results.writer import TraceWriter
from common.errors import ConfigError, LPFailure

CALL_TIMEOUT_S = 600.0  # a round that takes longer is a hung actor, not a slow one
PING_TIMEOUT_S = 5.0
PLACEMENTS = ("pack", "spread", "by-site")
PULL_CHUNK_BYTES = 32 * 1024 * 1024  # a spool on another node comes back in pieces this big


class _Spool:
    """One actor's span rows, an Arrow stream per LP at the path it was given."""

    def __init__(self, paths: dict[str, str]) -> None:
        self.paths = paths
        self._writers: dict[str, pa.RecordBatchStreamWriter] = {}
        self.rows: dict[str, int] = {}

    def add(self, lp: str, batch: pa.RecordBatch) -> None:
        if lp not in self._writers:
            self._writers[lp] = pa.ipc.new_stream(pa.OSFile(self.paths[lp], "wb"), SPAN_SCHEMA)
            self.rows[lp] = 0
        self._writers[lp].write_batch(batch)
        self.rows[lp] += batch.num_rows

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


class PartitionHost:
    """What runs inside an actor: one Partition, its spool, and the serving loop."""

    def __init__(self, graph: Graph, lp_names: list[str], vocab: TraceVocab,
                 spool_paths: dict[str, str], driver_node: str, own_dir_name: str) -> None:
        self.on_driver_node = self.node_id() == driver_node
        if not self.on_driver_node:  # the driver's folder is not on this machine; the driver removes this one
            own_dir = _own_spool_dir(own_dir_name)
            os.makedirs(own_dir)
            spool_paths = {lp: os.path.join(own_dir, os.path.basename(p)) for lp, p in spool_paths.items()}
        self.spool = _Spool(spool_paths)
        self._report = None  # during a call: tells the driver the simulated time (wire.serve)
        self.partition = Partition(graph, lp_names, vocab, trace_sink=self.spool.add, progress=self._progress)
        self.busy_s = 0.0  # simulating, in the rounds: the actor's share of their wall time

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def serve(self, address: tuple[str, int], index: int, token: str, label: str) -> None:
        """Answer the driver's calls over the wire until the finish call (cluster.engine.backends.wire)."""
        wire.serve(address, index, token, label, self._step)

    def _step(self, call: tuple, report) -> tuple[bool, StepResult]:
        """("advance", until_ps, inbox) or ("finish", end_ps): (whether it was the last, result)."""
        t0 = time.perf_counter()
        self._report = report
        try:
            if call[0] == "advance":
                result, last = self.partition.advance(call[1], call[2]), False
            else:
                result, last = self.partition.finish(call[1]), True
                self.spool.close()
        finally:
            self._report = None
        self.busy_s += time.perf_counter() - t0
        return last, result

    def _progress(self, now_ps: int, events: int) -> None:
        if self._report is not None:
            self._report(now_ps)

    def spooled(self) -> tuple[bool, dict[str, int], float, int, float]:
        """After finish: whether the spools are already in the driver's folder, rows per LP,
        seconds spent stepping, events run, the actor process's peak memory (MB)."""
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KB
        return self.on_driver_node, dict(self.spool.rows), self.busy_s, self.partition.events, peak_mb

    def read_spool(self, lp: str, offset: int, size: int) -> bytes:
        with open(self.spool.paths[lp], "rb") as f:
            f.seek(offset)
            return f.read(size)


def _own_spool_dir(name: str) -> str:
    """Where an actor on another node than the driver's spools: named by the driver, so
    that the folder of an actor that died can still be found and removed."""
    return os.path.join(tempfile.gettempdir(), name)


@ray.remote(num_cpus=0)
def _remove_spool_dir(name: str) -> None:
    shutil.rmtree(_own_spool_dir(name), ignore_errors=True)


@ray.remote(num_cpus=0)
class WaferActor(PartitionHost):
    """A partition holding at least one wafer."""


@ray.remote(num_cpus=0)
class InterconnectActor(PartitionHost):
    """A partition holding links (and possibly the frontend), no wafer."""


class RayBackend:
    def __init__(self, graph: Graph, groups: list[list[str]], vocab: TraceVocab, writer: TraceWriter,
                 address: str | None = None, placement: str = "pack", progress=None) -> None:
        """`progress(now_ps, events)`: told the simulated time during long calls (events 0:
        the engine counts them after each round)."""
        if placement not in PLACEMENTS:
            raise ConfigError(f"--placement: must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
        if address and address.startswith("ray://"):  # the actors could not call back to a client driver
            raise ConfigError(f"--address: Ray Client addresses (ray://) are not supported, got {address!r}: "
                              "run on a node of the cluster and give its HOST:PORT")
        t0 = time.perf_counter()
        self._writer = writer
        self._started = connect(address, num_cpus=max(1, min(os.cpu_count() or 1, 4)))  # actors take 0 CPUs
        self._actors: list = []
        self._labels: list[str] = []
        self._hub: wire.Hub | None = None
        self._serving: list = []
        self.pulled_bytes = 0
        self.actor_busy_s: list[float] = []
        self.actor_events: list[int] = []
        self.actor_peak_rss_mb: list[float] = []
        try:
            sites = {lp.name: lp.datacenter for lp in graph.lps}
            devices = {lp.name for lp in graph.lps if getattr(lp.config, "is_device", False)}
            options = self._placement_options(placement, groups, sites)
            driver_node = ray.get_runtime_context().get_node_id()
            run_id = uuid.uuid4().hex[:8]
            graph_ref = ray.put(graph)  # pickled once, not once per actor
            self._driver_node = driver_node
            self._dir_names = [f"wafersim-spool-{run_id}-{p}" for p in range(len(groups))]
            for group, opts, dir_name in zip(groups, options, self._dir_names):
                cls = WaferActor if devices.intersection(group) else InterconnectActor
                label = "+".join(group)
                paths = {lp: str(writer.spool_path(lp)) for lp in group}
                actor = cls.options(name=f"{run_id}:{label}", **opts).remote(graph_ref, group, vocab, paths,
                                                                             driver_node, dir_name)
                self._actors.append(actor)
                self._labels.append(label)
            self._nodes = self._get({i: a.node_id.remote() for i, a in enumerate(self._actors)})
            tell = None if progress is None else (lambda now_ps: progress(now_ps, 0))
            self._hub = wire.Hub(ray.util.get_node_ip_address(), self._labels, CALL_TIMEOUT_S, tell)
            self._serving = [a.serve.remote(self._hub.address, i, self._hub.token, self._labels[i])
                             for i, a in enumerate(self._actors)]
            self._hub.accept(self._check_serving)
        except BaseException:
            self.shutdown()
            raise
        self.startup_s = time.perf_counter() - t0

    def _check_serving(self) -> None:
        """While the actors connect back: one whose serve call already ended failed to start
        (named with Ray's reason: the others, serving, could not answer a ping)."""
        done, _ = ray.wait(self._serving, num_returns=len(self._serving), timeout=0)
        if not done:
            return
        p = self._serving.index(done[0])
        try:
            ray.get(done[0], timeout=0)
            why = "it stopped"
        except RayTaskError as exc:
            why = f"{type(exc.cause).__name__}: {exc.cause}"
        except RayError as exc:
            why = type(exc).__name__
        raise LPFailure(f"ray actor for {self._labels[p]} could not serve the driver at "
                        f"{self._hub.address[0]}:{self._hub.address[1]} ({' '.join(why.split())})")

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
            site_resource = f"site:{group_sites[0]}"
            if site_resource not in available:
                raise ConfigError(f"--placement by-site: no Ray node has the resource {site_resource} "
                                  f"(start one with: ray start --resources='{{\"{site_resource}\": 1}}')")
            options.append({"resources": {site_resource: 0.001}})
        return options

    def _get(self, refs: dict[int, ray.ObjectRef], timeout_s: float = CALL_TIMEOUT_S) -> dict[int, object]:
        """Wait for plain actor calls (keyed by actor); a dead actor ends the run with its name."""
        try:
            values = ray.get(list(refs.values()), timeout=timeout_s)
        except (RayActorError, RayTaskError, GetTimeoutError) as exc:
            for p, ref in refs.items():  # the failed call names its actor
                try:
                    ray.get(ref, timeout=0)
                except (RayActorError, RayTaskError) as failed:
                    raise LPFailure(f"ray actor for {self._labels[p]} failed: {type(failed).__name__}") from None
                except GetTimeoutError:
                    continue
            raise self._failure(exc) from None
        return dict(zip(refs, values))

    def _failure(self, exc: Exception) -> LPFailure:
        """Name the actor behind a failed plain call: the first whose ping fails."""
        pings = [actor.node_id.remote() for actor in self._actors]
        dead, silent = [], []
        deadline = time.monotonic() + PING_TIMEOUT_S
        for ref, label in zip(pings, self._labels):
            try:
                ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
            except RayActorError:
                dead.append(label)
            except GetTimeoutError:
                silent.append(label)
        if dead:
            named = dead[0]
        elif silent:
            named = f"{silent[0]} (not answering)"
        else:
            named = "an LP (timed out)" if isinstance(exc, GetTimeoutError) else "an LP"
        return LPFailure(f"ray actor for {named} failed: {type(exc).__name__}")

    def advance(self, calls: dict[int, tuple[float, list[Message]]]) -> dict[int, StepResult]:
        return self._hub.round({p: wire.dumps(("advance", until, inbox)) for p, (until, inbox) in calls.items()})

    def finish(self, end_ps: int) -> dict[int, StepResult]:
        call = wire.dumps(("finish", end_ps))
        results = self._hub.round({p: call for p in range(len(self._actors))}, last=True)
        self._get(dict(enumerate(self._serving)))  # each serve call has returned
        self._hub.close()
        self._collect_spools()
        return results

    def _collect_spools(self) -> None:
        """Hand every actor's spool to the writer: adopted in place when the actor wrote it
        into the writer's folder, else pulled over in chunks."""
        reports = self._get({p: a.spooled.remote() for p, a in enumerate(self._actors)})
        self.actor_busy_s = [reports[p][2] for p in range(len(self._actors))]
        self.actor_events = [reports[p][3] for p in range(len(self._actors))]
        self.actor_peak_rss_mb = [round(reports[p][4], 1) for p in range(len(self._actors))]
        for p, (on_driver_node, rows, *_) in reports.items():
            for lp, count in sorted(rows.items()):
                if not on_driver_node:
                    self._pull(p, lp, self._writer.spool_path(lp))
                self._writer.adopt(lp, count)

    def _pull(self, p: int, lp: str, path: Path) -> None:
        actor = self._actors[p]
        offset = 0
        with open(path, "wb") as out:
            while chunk := self._get({p: actor.read_spool.remote(lp, offset, PULL_CHUNK_BYTES)})[p]:
                out.write(chunk)
                offset += len(chunk)
        self.pulled_bytes += offset

    def summary_extra(self) -> dict:
        return {"ray_nodes": len(set(self._nodes.values())), "ray_startup_s": self.startup_s,
                "ray_shutdown_s": getattr(self, "shutdown_s", 0.0), "ray_actors": len(self._labels),
                "ray_transport": "socket", "trace_pulled_bytes": self.pulled_bytes,
                "actor_busy_s": [round(t, 3) for t in self.actor_busy_s],
                "actor_events": self.actor_events, "actor_peak_rss_mb": self.actor_peak_rss_mb}

    def shutdown(self) -> None:
        """Stop the actors (and the Ray this run started); a second call does nothing."""
        if getattr(self, "_shut", False):
            return
        self._shut = True
        t0 = time.perf_counter()
        if self._hub is not None:
            self._hub.close()  # an actor still serving reads the end of its connection and stops
        for actor in self._actors:
            try:
                ray.kill(actor)
            except Exception:  # already dead: nothing to clean
                pass
        self._actors = []
        # the spool folders of actors on other nodes, dead or alive: a task on each such node
        nodes = getattr(self, "_nodes", {})
        removals = [_remove_spool_dir.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                    .remote(self._dir_names[p]) for p, node in sorted(nodes.items()) if node != self._driver_node]
        if removals:
            ray.wait(removals, num_returns=len(removals), timeout=PING_TIMEOUT_S)
        if self._started and ray.is_initialized():
            ray.shutdown()
        self.shutdown_s = time.perf_counter() - t0
