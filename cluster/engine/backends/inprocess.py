"""All partitions in the driver process, advanced one after another: the reference."""

from __future__ import annotations

from cluster.engine.graph import Graph
from cluster.engine.messages import Message, StepResult
from cluster.engine.partition import Partition
from cluster.results.trace import TraceVocab
from cluster.results.writer import TraceWriter


class InProcessBackend:
    def __init__(self, graph: Graph, groups: list[list[str]], vocab: TraceVocab,
                 writer: TraceWriter, progress=None) -> None:
        self.partitions = [Partition(graph, group, vocab, trace_sink=writer.add, progress=progress)
                           for group in groups]

    def advance(self, calls: dict[int, tuple[float, list[Message]]]) -> dict[int, StepResult]:
        return {p: self.partitions[p].advance(until, inbox) for p, (until, inbox) in sorted(calls.items())}

    def finish(self, end_ps: int) -> dict[int, StepResult]:
        return {p: part.finish(end_ps) for p, part in enumerate(self.partitions)}

    def shutdown(self) -> None:
        pass
