"""Co-located models: a co-tenant's units share the primary's regions, one pass at a time."""

import random

import pytest
import simpy

from cluster.results.trace import KINDS, Tracer
from common.errors import CapacityError
from llm import Pass
from llm.config import resolve_model
from llm.ops import decoder_layer_ops
from llm.passes import TOKEN_ID_BYTES
from tests.wafer.test_model import lindley
from wafer import WSE3, CoTenant, Unit, WaferStage
from wafer.costs import Region, handoff_ps, op_cost

B70, B8 = resolve_model("llama3.1-70b"), resolve_model("llama3.1-8b")
S70, S8 = B70.layer_shape, B8.layer_shape
PER_CORE = WSE3.sram_bytes_per_core


def layers(shape, n):
    return [Unit("layer", i, shape.weight_bytes) for i in range(n)]


def eight_b(n_layers=8, last=False, kv_tokens=0, units=None):
    return CoTenant(B8.name, S8, B8.vocab_size, tuple(units or layers(S8, n_layers)), last, kv_tokens)


def make(co_tenants=(), detail="layer", units=None, last=False, kv_tokens=0):
    env, sent, tracer = simpy.Environment(), [], Tracer()
    stage = WaferStage(env, WSE3, S70, B70.vocab_size, units or layers(S70, 20), detail=detail, last_stage=last,
                       send=lambda p, t, size: sent.append((t, p, size)), tracer=tracer,
                       kv_tokens_reserved=kv_tokens, co_tenants=co_tenants)
    return env, stage, sent, tracer


def decode(rid, model=0, ctx=64, emits=True):
    return Pass(rid, 1, "decode", 1, ctx, emits, 0, False, model)


def layer_ps(shape, cores, ctx=64):
    """A decode pass's time through one layer on a region of `cores`, from wafer.costs alone."""
    region = Region(cores)
    return (sum(op_cost(w, region, WSE3).total_ps for w in decoder_layer_ops(shape, 1, ctx))
            + handoff_ps(shape.activation_bytes_per_token, region, WSE3))


def exit_of(co_tenants, passes, detail="layer"):
    env, stage, sent, _ = make(co_tenants, detail)
    for p in passes:
        stage.receive(p)
    env.run()
    return stage, {p.request_id: t for t, p, _ in sent}


def test_no_co_tenants_matches_the_model_before_them():
    """Send times and sizes recorded from the wafer model before co-tenants existed."""
    units = [Unit("embed", None, B70.embedding_bytes)] + layers(S70, 19)
    for detail in ("stage", "layer", "op"):
        env, stage, sent, _ = make((), detail, units, kv_tokens=576)
        for rid in range(3):
            stage.receive(Pass(rid, 0, "prefill", 32, 0, False, 72, False))
        env.run(until=50_000_000)
        for rid in range(3):
            stage.receive(Pass(rid, 1, "decode", 1, 64 + rid, True, 0, rid == 1))
        env.run()
        assert stage.transit_ps == 581060123
        assert [(t, p.request_id, size) for t, p, size in sent] == [
            (2434513837, 0, 524288), (2562496688, 1, 524288), (2690479539, 2, 524288),
            (2720945534, 0, 16384), (2751411587, 1, 16384), (2781877700, 2, 16384)]


def test_co_tenant_units_spread_in_order_over_the_regions():
    _, stage, _, _ = make((eight_b(),))
    assert stage._tenants[1].regions == (0, 2, 5, 7, 10, 12, 15, 17)  # i x 20 // 8
    assert len(stage.regions) == 20  # no regions of its own


def test_lone_70b_pass_is_slower_only_by_the_resized_regions():
    """(a) The regions hosting an 8B layer grow to hold both layers' weights, past the 70B
    layer's fastest size, so on those 8 regions a 70B layer takes exactly the extra
    fabric time of the bigger region, and nowhere else."""
    lone, alone = exit_of((), [decode(0)])
    stage, shared = exit_of((eight_b(),), [decode(0)])
    small = lone.regions[0].cores  # the 70B layer's fastest region, more than its weights need
    big = stage.regions[0].cores
    need = -(-(S70.weight_bytes + S8.weight_bytes) // PER_CORE)
    assert -(-S70.weight_bytes // PER_CORE) < small < need <= big <= WSE3.cores // 20
    assert [r.cores for r in stage.regions] == [big if j in stage._tenants[1].regions else small for j in range(20)]
    assert alone[0] == 20 * layer_ps(S70, small)
    assert shared[0] - alone[0] == 8 * (layer_ps(S70, big) - layer_ps(S70, small)) > 0


def test_70b_behind_an_8b_waits_for_the_8b_on_shared_regions():
    """(b) Both enter at 0, the 8B first. The 70B waits at region 0 for the 8B's layer there;
    after that it never catches up (a 70B layer is slower than the 8B's gaps between
    its layers), so it leaves exactly the 8B's service on region 0 later, between 0
    and the 8B's whole service on the shared regions."""
    stage, alone = exit_of((eight_b(),), [decode(0)])
    _, behind = exit_of((eight_b(),), [decode(1, model=1), decode(0)])
    big = stage.regions[0].cores
    eight_b_on_region = layer_ps(S8, big)  # an 8B layer on a shared region
    assert behind[0] - alone[0] == eight_b_on_region
    assert 0 < behind[0] - alone[0] <= 8 * eight_b_on_region
    assert behind[1] == 8 * eight_b_on_region  # the 8B itself crosses unhindered


@pytest.mark.parametrize("detail", ["stage", "layer", "op"])
def test_details_agree_with_several_co_tenant_units_per_region(detail):
    """Ten 70B layers and the whole 8B (34 units, 3 or 4 a region): every detail gives the
    same send times, and the 8B's spans tile its region's service."""
    units8 = ([Unit("embed", None, B8.embedding_bytes)] + layers(S8, 32) + [Unit("lm_head", None, B8.lm_head_bytes)])
    passes = [decode(0), decode(1, model=1), Pass(2, 0, "prefill", 16, 0, True, 0, False, 1), decode(3, ctx=9)]
    times = {}
    for d in ("stage", "layer", "op"):
        env, stage, sent, tracer = make((eight_b(units=units8, last=True),), d, layers(S70, 10))
        for p in passes:
            stage.receive(p)
        env.run()
        times[d] = [(t, p.request_id) for t, p, _ in sent]
    assert stage._tenants[1].regions[:5] == (0, 0, 0, 0, 1)
    assert times[detail] == times["stage"]
    assert [rid for _, rid in times["stage"]] == [0, 1, 2, 3]


def test_random_mixes_leave_in_order_at_the_lindley_times():
    """Passes of both models, at random gaps: every detail sends at the times the textbook
    recursion over the regions gives (each pass with its own model's service), in the
    order they entered, ties included."""
    rng = random.Random(3)
    kinds = [(m, n, emits) for m in (0, 1) for n in (1, 8) for emits in (False, True)]
    passes, entries, t = [], [], 0
    for rid in range(60):
        m, n, emits = rng.choice(kinds)
        t += rng.choice((0, 0, 5_000_000, 40_000_000, 700_000_000))
        passes.append(Pass(rid, 0, "prefill", n, rid % 3, emits, 0, False, m))
        entries.append(t)
    times = {}
    for detail in ("stage", "layer", "op"):
        env, stage, sent, _ = make((eight_b(last=True),), detail)
        for at, p in zip(entries, passes):
            if at > env.now:
                env.run(until=at)
            stage.receive(p)
        env.run()
        times[detail] = [(t, p.request_id) for t, p, _ in sent]
    free, expected = [0] * 20, []
    for at, p in zip(entries, passes):
        ends = lindley(free, at, stage._profile(p.n_tokens, p.ctx_tokens, p.emits, p.phase, p.model).service_ps)
        if p.model == 0 or p.emits:  # the 8B ends its pipeline here
            expected.append((ends[-1], p.request_id))
    assert times["stage"] == times["layer"] == times["op"] == expected


def test_layer_spans_of_a_co_tenant_tile_its_regions():
    units8 = layers(S8, 30)
    env, stage, _, tracer = make((eight_b(units=units8),), "layer", layers(S70, 10))
    stage.receive(decode(5, model=1))
    env.run()
    spans = sorted((s, e) for s, e, _, rid, _ in tracer.spans() if rid == 5)
    assert len(spans) == 30
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # back to back


def test_weights_over_sram_raise():
    """(c) 20 layers of the 70B fit; adding the whole 8B (weights and all) does not."""
    whole_8b = [Unit("embed", None, B8.embedding_bytes)] + layers(S8, 32) + [Unit("lm_head", None, B8.lm_head_bytes)]
    assert 20 * S70.weight_bytes <= WSE3.sram_bytes < 20 * S70.weight_bytes + B8.weight_bytes
    with pytest.raises(CapacityError, match="SRAM"):
        make((eight_b(units=whole_8b),))


def test_regions_over_the_wafers_cores_raise():
    """Weights within the SRAM figure but over what the cores hold (48 KiB each): the
    regions hosting them cannot shrink below their weights."""
    in_cores = WSE3.cores * PER_CORE
    heavy = (in_cores + (WSE3.sram_bytes - in_cores) // 2 - 20 * S70.weight_bytes) // 8
    assert in_cores < 20 * S70.weight_bytes + 8 * heavy <= WSE3.sram_bytes
    with pytest.raises(CapacityError, match=f"{WSE3.cores} cores"):
        make((eight_b(units=[Unit("layer", i, heavy) for i in range(8)]),))


def test_kv_reservations_over_the_share_are_trimmed_not_refused():
    """A KV reservation filling the SRAM (as admission by bytes does) sizes no region past
    its share: the regions still fit the wafer, as they always have for the primary."""
    free = WSE3.sram_bytes - 20 * S70.weight_bytes - 8 * S8.weight_bytes
    tokens = free // (20 * S70.kv_bytes_per_token + 8 * S8.kv_bytes_per_token)
    _, stage, _, _ = make((eight_b(kv_tokens=tokens),), kv_tokens=tokens)
    assert sum(r.cores for r in stage.regions) <= WSE3.cores
    both = -(-(S70.weight_bytes + S8.weight_bytes) // PER_CORE)
    assert all(stage.regions[j].cores >= both for j in stage._tenants[1].regions)


def test_kv_reservation_uses_each_models_bytes_per_token():
    """(d) The 70B holds 20 layers here, the 8B 8: their bytes per token differ."""
    env, stage, _, tracer = make((eight_b(),), "stage")
    stage.receive(Pass(0, 0, "prefill", 1, 0, True, 100, False, 0))
    assert stage._kv_bytes_in_use == 100 * 20 * S70.kv_bytes_per_token
    stage.receive(Pass(1, 0, "prefill", 1, 0, True, 100, True, 1))
    assert stage._kv_bytes_in_use == 100 * (20 * S70.kv_bytes_per_token + 8 * S8.kv_bytes_per_token)
    env.run()
    kv_spans = [nbytes for _, _, t, _, _ in tracer.spans() if (nbytes := tracer.templates[t][3]) and
                tracer.seen_names[tracer.templates[t][1]] == "kv_cache"]
    assert kv_spans == [100 * 8 * S8.kv_bytes_per_token]  # the 8B's request was final
    # The cap counts every model's weights and KV.
    free = WSE3.sram_bytes - stage.weight_bytes - stage._kv_bytes_in_use
    stage.receive(Pass(2, 0, "prefill", 1, 0, True, free // (8 * S8.kv_bytes_per_token), False, 1))
    with pytest.raises(CapacityError, match="KV cache"):
        stage.receive(Pass(3, 0, "prefill", 1, 0, True, 1, False, 1))


@pytest.mark.parametrize("detail", ["stage", "layer"])
def test_passes_send_by_their_own_models_last_stage(detail):
    """(e) The 8B ends its pipeline here, the 70B does not: a 70B pass always sends its
    activations; an 8B pass sends a token id, and only if it emits."""
    env, stage, sent, _ = make((eight_b(last=True),), detail)
    stage.receive(decode(0, emits=False))
    stage.receive(decode(1, model=1, emits=False))
    stage.receive(decode(2, model=1))
    env.run()
    assert [(p.request_id, size) for _, p, size in sent] == [(0, S70.activation_bytes_per_token),
                                                            (2, TOKEN_ID_BYTES)]
    # And the other way round: the 8B sends its own activations on.
    env, stage, sent, _ = make((eight_b(last=False),), detail, last=True)
    stage.receive(Pass(0, 0, "prefill", 16, 0, False, 0, False, 0))
    stage.receive(Pass(1, 0, "prefill", 16, 0, False, 0, False, 1))
    env.run()
    assert [(p.request_id, size) for _, p, size in sent] == [(1, 16 * S8.activation_bytes_per_token)]


@pytest.mark.parametrize("detail", ["stage", "layer", "op"])
def test_horizon_and_transit_hold_for_every_model(detail):
    """An 8B pass behind a 70B one has no work on the last two regions, yet leaves after
    the 70B (FIFO), when the horizon said; no pass crosses faster than transit_ps."""
    env, stage, sent, _ = make((eight_b(),), detail)
    _, lone = make((), detail)[:2]
    assert stage.transit_ps < lone.transit_ps  # the 8B crosses faster than the 70B
    assert stage.transit_ps == stage._profile(1, 0, False, "decode", 1).cum_end_ps[-1]
    stage.receive(decode(0))
    stage.receive(decode(1, model=1))
    promised = stage.horizon_ps()
    env.run()
    (t0, p0, _), (t1, p1, _) = sent
    assert (p0.request_id, p1.request_id) == (0, 1)
    assert (promised if detail != "stage" else t0) == t0 == stage._profile(1, 64, True, "decode").cum_end_ps[-1]
    assert t1 == t0  # held back behind the 70B on the regions where it has no work
    assert all(t >= stage.transit_ps for t, _, _ in sent)


def test_trace_names_of_the_co_tenant_are_prefixed():
    """(f) Its layers never collide with the primary's layer3; its weights get a span of their own."""
    env, stage, _, tracer = make((eight_b(),), "layer")
    names = tracer.seen_names
    assert {"layer3", f"{B8.name}:layer3", f"{B8.name}:layer3.qkv_proj", f"{B8.name}:weights",
            f"{B8.name}:stage"} <= set(names)
    assert not any(n.startswith(f"{B8.name}:layer") and n.endswith(":") for n in names)
    stage.receive(decode(0, model=1))
    env.run()
    stage.finish(env.now)
    spans = [(names[tracer.templates[t][1]], KINDS[tracer.templates[t][0]], tracer.templates[t][3])
             for _, _, t, _, _ in tracer.spans()]
    assert [n for n, kind, _ in spans if kind == "compute"] == [f"{B8.name}:layer{i}" for i in range(8)]
    assert ("weights", "sram", 20 * S70.weight_bytes) in spans
    assert (f"{B8.name}:weights", "sram", 8 * S8.weight_bytes) in spans


def test_co_tenants_need_units_and_distinct_names():
    with pytest.raises(ValueError, match="co_tenants"):
        make((eight_b(), eight_b()))
    with pytest.raises(ValueError, match="co_tenants"):
        make((CoTenant("x", S8, B8.vocab_size, (), False),))
