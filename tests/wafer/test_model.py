"""The wafer stage: FIFO regions pipeline passes; SRAM is a capacity."""

import random

import pytest
import simpy

from cluster.results.trace import KINDS, Tracer
from common.errors import CapacityError
from llm import LayerShape, Pass
from wafer import WSE3, Unit, WaferStage
from wafer.tandem import FifoTandem

SHAPE = LayerShape(8192, 28672, 64, 8, 128)


def make_stage(detail, layers=4, last=False):
    env = simpy.Environment()
    sent, tracer = [], Tracer()
    units = [Unit("layer", i, SHAPE.weight_bytes) for i in range(layers)]
    stage = WaferStage(env, WSE3, SHAPE, 128256, units, detail=detail, last_stage=last,
                       send=lambda p, t, size: sent.append((t, p, size)), tracer=tracer)
    return env, stage, sent, tracer


def as_rows(tracer):
    """(start, end, kind, layer) per span."""
    return [(s, e, KINDS[tracer.templates[t][0]], tracer.templates[t][2]) for s, e, t, _, _ in tracer.spans()]


def decode(rid, ctx=64):
    return Pass(rid, 1, "decode", 1, ctx, True, 0, False)


@pytest.mark.parametrize("detail", ["stage", "layer", "op"])
def test_passes_pipeline_through_regions(detail):
    """Two passes entering together: the second leaves one bottleneck-service after the first,
    not one whole traversal after it."""
    env, stage, sent, _ = make_stage(detail)
    stage.receive(decode(0))
    stage.receive(decode(1))
    env.run()
    (t0, p0, _), (t1, p1, _) = sorted(sent, key=lambda s: s[0])
    service = stage._profile(1, 64, True, "decode").service_ps
    assert (p0.request_id, p1.request_id) == (0, 1)
    assert t0 == sum(service)
    assert t1 == t0 + max(service)


def test_details_agree_exactly():
    """stage, layer and op detail are one model: identical send times."""
    times = {}
    for detail in ("stage", "layer", "op"):
        env, stage, sent, _ = make_stage(detail)
        for rid in range(5):
            stage.receive(decode(rid, ctx=rid * 100))
        env.run(until=10**9)
        for rid in range(3):
            stage.receive(Pass(10 + rid, 0, "prefill", 32, 0, rid == 2, 0, False))
        env.run()
        times[detail] = [(t, p.request_id) for t, p, _ in sent]
    assert times["stage"] == times["layer"] == times["op"]


def test_layer_detail_traces_every_layer():
    env, stage, _, rows = make_stage("layer", layers=3)
    stage.receive(decode(7))
    env.run()
    rows = as_rows(rows)
    layers = [r[3] for r in rows if r[2] == "compute"]
    assert layers == [0, 1, 2]
    assert all(r[0] < r[1] for r in rows)


def test_horizon_is_the_exact_next_send():
    env, stage, sent, _ = make_stage("layer")
    stage.receive(decode(0))
    promised = stage.horizon_ps()
    env.run()
    assert sent[0][0] == promised
    assert stage.horizon_ps() is None


def test_kv_cache_cannot_exceed_sram():
    env, stage, _, _ = make_stage("stage", layers=20)
    free_tokens = (WSE3.sram_bytes - stage.weight_bytes) // stage.kv_bytes_per_token
    stage.receive(Pass(0, 0, "prefill", 1, 0, True, free_tokens, False))
    with pytest.raises(CapacityError, match="KV cache"):
        stage.receive(Pass(1, 0, "prefill", 1, 0, True, 1, False))


def lindley(free, entry, service):
    """The textbook recursion, one server at a time."""
    t, ends = entry, []
    for j, s in enumerate(service):
        t = max(t, free[j]) + s
        ends.append(t)
        free[j] = t
    return ends


def test_tandem_matches_lindley_recursion():
    """The O(1) path for passes that never wait and the full recursion both equal the
    textbook recursion, whatever the mix of kinds of pass."""
    rng = random.Random(5)
    for _ in range(50):
        services = [tuple(rng.choice((0, 1, 2, 5, 9, 30)) for _ in range(4)) for _ in range(4)]
        tandem, free, entry, waited = FifoTandem(4), [0] * 4, 0, 0
        for _ in range(40):
            kind = rng.randrange(len(services))
            service = services[kind]
            cum = tuple(sum(service[:j + 1]) for j in range(4))
            entry += rng.choice((0, 1, 3, 8, 40))
            expected = lindley(free, entry, service)
            ends = tandem.admit(entry, service, cum, kind)
            assert (ends or [entry + c for c in cum]) == expected
            assert tandem.last_exit_ps == expected[-1]
            waited += ends is not None
        assert 0 < waited < 40
