"""The trace's region column: which of a wafer's regions did the work of a span."""

import random

import pytest

from cluster.results.trace import KINDS
from common.units import NULL
from llm import Pass
from tests.wafer.test_colocation import B8, decode, eight_b, make
from wafer.tenants import spread


def traced(tracer):
    """(start, end, kind, name, layer, region) per span."""
    out = []
    for s, e, t, _, _ in tracer.spans():
        kind, name, layer, _, _, _, region = tracer.templates[t]
        out.append((s, e, KINDS[kind], tracer.seen_names[name], layer, region))
    return out


def busy_run(detail, co_tenants=(), passes=60, seed=0):
    """A wafer fed a random mix of prefill and decode passes of every model it holds."""
    env, stage, _, tracer = make(co_tenants, detail)
    rng = random.Random(seed)
    models = 1 + len(co_tenants)

    def feed():
        for rid in range(passes):
            yield env.timeout(rng.choice([0, 0, 10**5, 10**7]))
            model = rng.randrange(models)
            if rng.random() < 0.3:
                stage.receive(Pass(rid, 0, "prefill", rng.choice([8, 32]), 0, True, 0, False, model))
            else:
                stage.receive(decode(rid, model, ctx=rng.randrange(1, 500)))

    env.process(feed())
    env.run()
    stage.finish(env.now)
    return stage, traced(tracer)


@pytest.mark.parametrize("detail", ["layer", "op"])
@pytest.mark.parametrize("shared", [False, True])
def test_every_region_span_has_a_region_and_a_region_never_overlaps(detail, shared):
    """Below stage detail every compute and fabric span names its region; a region serves
    one pass at a time, whichever model it belongs to, so its spans never overlap."""
    stage, spans = busy_run(detail, (eight_b(),) if shared else ())
    work = [s for s in spans if s[2] in ("compute", "fabric")]
    assert work and all(0 <= s[5] < len(stage.regions) for s in work)
    assert all(s[5] == NULL for s in spans if s[2] not in ("compute", "fabric"))  # SRAM spans
    by_region: dict[int, list[tuple[int, int]]] = {}
    for s, e, *_, region in work:
        by_region.setdefault(region, []).append((s, e))
    assert len(by_region) == len(stage.regions)
    for intervals in by_region.values():
        intervals.sort()
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(intervals, intervals[1:]))


def test_the_primary_units_region_is_its_index():
    _, spans = busy_run("layer", passes=5)
    assert {(s[4], s[5]) for s in spans if s[2] == "compute"} == {(i, i) for i in range(20)}


@pytest.mark.parametrize("n_layers", [3, 8, 20])
def test_a_co_tenants_unit_reports_the_region_it_shares(n_layers):
    """Its spans carry the primary's region its unit sits on, as `spread` placed it."""
    _, spans = busy_run("op", (eight_b(n_layers),), passes=20, seed=n_layers)
    placed = spread(n_layers, 20)
    mine = [s for s in spans if s[3].startswith(f"{B8.name}:") and s[2] in ("compute", "fabric")]
    assert {s[4] for s in mine} == set(range(n_layers))
    assert all(region == placed[layer] for *_, layer, region in mine)


def test_stage_detail_has_no_region():
    _, spans = busy_run("stage", (eight_b(),), passes=10)
    assert spans and all(s[5] == NULL for s in spans)
