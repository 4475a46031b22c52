"""The engine's rounds (cluster/engine/rounds.py): as many as the conservative windows
allow and no more, and every broken promise fails the run loudly, naming the LP."""

from __future__ import annotations

import pytest

from cluster.commands.scenario import RunOptions, ScenarioConfig, prepare, run_scenario
from cluster.engine.graph import Graph, LPSpec
from cluster.engine.messages import Channel, Message, StepResult
from cluster.engine.rounds import Engine
from common.errors import CausalityError, ConservationError, SimError
from interconnect import SITES, fibre_latency_ps
from tests.cluster.engine.toys import EchoConfig, SourceConfig, StuckConfig, lp, run

L_PS, D_PS, P_PS = 10, 5, 24  # channel latency, echo delay, source period


def echo_graph(n: int, echo_transit_ps: int = D_PS, times: tuple[int, ...] | None = None,
               lie_ps: int = 0, delay_ps: int = D_PS) -> tuple[list[LPSpec], list[Channel]]:
    """Source A (partition 0) sends at 0, P, 2P, ... to echo B (partition 1), which answers
    each `delay_ps` after it lands; both channels L."""
    times = tuple(P_PS * k for k in range(n)) if times is None else times
    return ([lp("A", SourceConfig(times, horizon_lie_ps=lie_ps)), lp("B", EchoConfig(delay_ps, echo_transit_ps))],
            [Channel("A", "B", L_PS), Channel("B", "A", L_PS)])


# -- the number of rounds, from the lookahead arithmetic -----------------------------------

def test_echo_rounds_are_what_the_windows_allow():
    """Round 1: B's promise is the ping landing at 10 plus its transit 5 = 15, so A may run
    to 15 + L = 25, past its next send at 24. From then on every round k, B echoes send
    k-1 (its window is A's next send + L) and A takes echo k-2 and makes send k (its
    window is B's promise 24(k-1) + 10 + 5, plus L = 24k + 1 > 24k). The N-1 sends after
    the first take rounds 1..N-1, B echoes the last in round N, A takes it in round N+1."""
    n = 10
    stats, lps = run(*echo_graph(n), [["A"], ["B"]])
    assert stats.rounds == n + 1
    assert [t for t, _ in lps["A"].received] == [P_PS * k + L_PS + D_PS + L_PS for k in range(n)]
    assert stats.messages == stats.delivered == 2 * n


def test_a_looser_transit_costs_exactly_the_rounds_it_should():
    """B declares transit 0 (true, but loose): in round 1 A's window is 10 + 0 + L = 20 <
    24, so A sends only in the next round; each send then takes two rounds (B's, then A's):
    2N. This is what a change that shrinks the windows looks like."""
    n = 10
    stats, _ = run(*echo_graph(n, echo_transit_ps=0), [["A"], ["B"]])
    assert stats.rounds == 2 * n


def test_two_sources_cover_latency_over_period_plus_one_sends_a_round():
    """S0 and S1 send to each other every 10 ps (0..90), latency 30, never answering. Each
    window is the other's next send + 30, and the timers at a window's edge run: a round
    covers 4 sends (10-40, 50-80, 90), then one round delivers the last two: 4 rounds."""
    times = tuple(10 * k for k in range(10))
    lps = [lp("S0", SourceConfig(times)), lp("S1", SourceConfig(times))]
    channels = [Channel("S0", "S1", 30), Channel("S1", "S0", 30)]
    stats, comps = run(lps, channels, [["S0"], ["S1"]])
    assert stats.rounds == 3 + 1
    assert [t for t, _ in comps["S1"].received] == [t + 30 for t in times]


def test_round_boundaries_change_nothing_an_lp_sees():
    """One partition, two, and two with a 3 ps window cap: the same deliveries at the same
    times, in the same order."""
    seen = []
    for groups, cap in (([["A", "B"]], None), ([["A"], ["B"]], None), ([["A"], ["B"]], 3)):
        stats, lps = run(*echo_graph(6), groups, max_window_ps=cap)
        seen.append((stats.rounds, [(t, m.order_key(), m.payload) for c in lps.values() for t, m in c.received]))
    assert seen[0][1] == seen[1][1] == seen[2][1]
    assert (seen[0][0], seen[1][0]) == (1, 6 + 1)
    assert seen[2][0] > seen[1][0]  # the cap is honoured: shorter windows, more rounds


CFG_8B = ScenarioConfig("rounds", "llama3.1-8b", 2, ("santa-clara", "dallas"), users=1, prompt_tokens=16,
                        output_tokens=4, prefill_chunk_tokens=16)


@pytest.mark.parametrize("lps_per_partition,rounds", [
    (None, 1),
    (3, 2 * 4 + 1),  # one partition a site (frontend, wafer0, link out | wafer1, link back)
    (1, 5 * 4),
])
def test_two_site_rounds_follow_the_wan_and_the_token_count(tmp_path, lps_per_partition, rounds):
    """Llama3.1-8B on a wafer in Santa Clara and one in Dallas, one user, a 16-token prompt
    in one chunk and 4 output tokens: 4 passes round the ring (the prefill, then 3 decode
    steps), each through frontend -> wafer0 -> link -> wafer1 -> link -> frontend. A pass
    can only start once the last one is back, so each hop between partitions is a round
    of its own, provided every window outlasts a partition's share of a pass: it does,
    since each window reaches the earliest return over the WAN (> 14 ms one way) and a
    stage's share is under a millisecond.
    - one LP per partition: 5 hops a pass, every one a round: 5 x 4 = 20;
    - one partition a site: 2 crossings a pass, plus the first round, in which Santa Clara
      runs the prefill's first hop (sent at t=0, delivered in a round): 2 x 4 + 1 = 9;
    - one partition: everything in one round."""
    _, graph, _ = prepare(CFG_8B)
    wan_ps = fibre_latency_ps(SITES["santa-clara"], SITES["dallas"])
    assert wan_ps > 14_000_000_000
    assert all(spec.transit_ps < 1_000_000_000 for spec in graph.lps if spec.name.startswith("wafer"))
    summary = run_scenario(CFG_8B, RunOptions(trace=str(tmp_path / "t.arrow"), lps_per_partition=lps_per_partition))
    assert summary["messages"] == 5 * 4
    assert summary["requests_completed"] == 1
    assert summary["rounds"] == rounds
    assert summary["sim_time_s"] * 1e12 > 4 * 2 * wan_ps  # four times there and back


def test_a_window_cap_shorter_than_a_stage_costs_rounds(tmp_path):
    """The control for the count above: capped at a tenth of a wafer's transit, windows no
    longer cover a stage's share of a pass, and the run takes more rounds."""
    _, graph, _ = prepare(CFG_8B)
    cap = min(s.transit_ps for s in graph.lps if s.name.startswith("wafer")) // 10
    summary = run_scenario(CFG_8B, RunOptions(trace=str(tmp_path / "t.arrow"), lps_per_partition=3,
                                              max_window_ps=cap))
    assert summary["rounds"] > 2 * 4 + 1


# -- broken promises, caught -----------------------------------------------------------------

def test_an_lp_that_sends_before_its_horizon_is_named():
    """A reports its next send 7 ps later than it is: the send at 24 breaks the promise of
    31 it gave at the round's start."""
    with pytest.raises(CausalityError, match=r"^A: sent to B at 24 ps, before its promise of 31 ps"):
        run(*echo_graph(3, lie_ps=7), [["A"], ["B"]])


def test_an_lp_that_answers_faster_than_its_transit_is_named_even_when_no_one_is_hurt():
    """B declares transit 5 but answers at once. A is idle until 100, so the answer (at 10,
    landing at 20) is in no one's past: only the check against B's own promise (10 + 5)
    sees it, on the first run, whatever the grouping."""
    with pytest.raises(CausalityError, match=r"^B: sent to A at 10 ps, before its promise of 15 ps"):
        run(*echo_graph(2, times=(0, 100), delay_ps=0), [["A"], ["B"]])


def test_a_promise_that_slides_back_between_rounds_lands_in_the_receivers_past():
    """A first promises its send at 30 is at 60 (a lie it drops once its clock reaches 20).
    Round 1 lets B run to 60 + L = 70 on that promise, while A runs its tick at 20 and now
    tells the truth. In round 2 A's send at 30 keeps the promise of that round (30) but
    lands at 40, in B's past: caught, naming both LPs."""
    lps = [lp("A", SourceConfig((0, 30), horizon_lie_ps=30, lie_until_ps=20, ticks_ps=(20,))),
           lp("B", EchoConfig(D_PS, D_PS))]
    with pytest.raises(CausalityError, match=r"^A -> B: message arrives at 40 ps, but B has already run to 70 ps"):
        run(lps, [Channel("A", "B", L_PS), Channel("B", "A", L_PS)], [["A"], ["B"]])


def test_a_stale_horizon_stalls_the_run_and_the_error_names_it():
    """A never sends but reports a horizon frozen at 0: B, due at 100, may never run past
    0 + 10. The run stops with one line naming what B waits on."""
    lps = [lp("A", StuckConfig(0)), lp("B", SourceConfig((100,)))]
    channels = [Channel("A", "B", 10), Channel("B", "A", 10)]
    with pytest.raises(SimError, match=r"no partition can advance at 100 ps .*partition 1 \(B\) waits on A "
                                       r"\(promise 0 ps\)"):
        run(lps, channels, [["A"], ["B"]])


# -- the engine's own checks, driven by a scripted backend -----------------------------------

AB = Graph((LPSpec("A", "site", None, 0), LPSpec("B", "site", None, 0)),
           (Channel("A", "B", 10), Channel("B", "A", 10)))


class Scripted:
    """A backend that answers each call with the next scripted results, after checking the
    engine asked for exactly the windows the script expects."""

    def __init__(self, script: list[tuple[dict[int, float], dict[int, StepResult]]]) -> None:
        self.script = list(script)

    def advance(self, calls):
        expected, results = self.script.pop(0)
        assert {p: until for p, (until, _) in calls.items()} == expected
        return results

    def finish(self, end_ps):
        return {}


class _Sink:
    def add(self, lp, batch): ...
    def add_requests(self, batch): ...
    def add_tokens(self, batch): ...


def step(now_ps: int, next_ps: int | None, horizons: dict, outbox=(), events: int = 1) -> StepResult:
    return StepResult(list(outbox), next_ps, horizons, now_ps, events=events, messages=len(outbox))


def engine(script) -> Engine:
    return Engine(AB, [["A"], ["B"]], Scripted(script), _Sink())


START = ({0: 0, 1: 0}, {0: step(0, 100, {"A": 100}), 1: step(0, 5, {"B": None})})
# Round 1: EOT[A] = 100 (its horizon), EOT[B] = 100 + 10 + 0 = 110: windows 120 and 110.
ROUND_1 = {0: 120, 1: 110}


def test_a_message_into_a_partitions_past_is_caught_naming_both_lps():
    """A lets its promise slide back (100, then 50) between rounds: its send at 55 keeps
    the promise of the round it is sent in, but lands at 65 in B, which already ran to 110."""
    script = [START,
              (ROUND_1, {0: step(40, 55, {"A": 50}), 1: step(5, None, {"B": None})}),
              ({0: 70}, {0: step(55, None, {"A": None}, [Message("A", "B", 55, 65, 0, "pass", None, 1)])})]
    with pytest.raises(CausalityError, match=r"^A -> B: message arrives at 65 ps, but B has already run to 110 ps"):
        engine(script).run()


def test_simulated_time_that_runs_backwards_is_caught_naming_the_partition():
    script = [START,
              (ROUND_1, {0: step(100, None, {"A": None}), 1: step(5, 8, {"B": None})}),
              ({1: float("inf")}, {1: step(3, None, {"B": None})})]
    with pytest.raises(CausalityError, match=r"^partition 1 \(B\): simulated time went back from 5 ps to 3 ps"):
        engine(script).run()


def test_a_partition_that_runs_past_its_window_is_caught():
    script = [START, (ROUND_1, {0: step(100, None, {"A": None}), 1: step(111, None, {"B": None})})]
    with pytest.raises(CausalityError, match=r"^partition 1 \(B\): ran to 111 ps, past its window 110 ps"):
        engine(script).run()


def test_a_round_in_which_nothing_runs_is_refused():
    script = [START, (ROUND_1, {0: step(0, 100, {"A": 100}, events=0), 1: step(0, 5, {"B": None}, events=0)})]
    with pytest.raises(SimError, match=r"no progress at 5 ps: partitions \[0, 1\] were due but ran nothing"):
        engine(script).run()


def test_a_message_sent_is_a_message_received():
    """The scripted round hands over a message no partition reports receiving."""
    script = [START,
              (ROUND_1, {0: step(100, None, {"A": None}, [Message("A", "B", 100, 110, 0, "pass", None, 1)]),
                         1: step(5, None, {"B": None})}),
              ({1: 130}, {1: step(110, None, {"B": None})})]  # B: 110 + 0 + 10 + 0 + 10
    with pytest.raises(ConservationError, match=r"^conservation: 1 messages sent, 0 received"):
        engine(script).run()
