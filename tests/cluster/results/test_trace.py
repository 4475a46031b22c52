"""Trace encoding: pass records expand to exact spans, batches do not depend on hand-over."""

import random
import subprocess
import sys

import pytest

from cluster.results import trace
from cluster.results.trace import RowEncoder, Tracer, TraceVocab
from common.units import NULL
from tests.conftest import ROOT

VOCAB = TraceVocab(("lp",), ("site",), tuple(f"n{i}" for i in range(6)))


def random_rows(rng: random.Random, tracer: Tracer, plain_share: float, n: int) -> list[tuple]:
    templates = [tracer.template("compute", tracer.name(f"n{i}"), i, 10 * i or None, None, "decode")
                 for i in range(6)]
    shapes = []
    for _ in range(3):
        width = rng.randint(1, 5)
        spans = tuple((rng.randrange(width), -rng.randint(0, 50), rng.randint(0, 5), rng.choice(templates))
                      for _ in range(rng.randint(0, 6)))
        shapes.append((tracer.pass_shape(width, spans), width))
    rows = []
    for _ in range(n):
        if rng.random() < plain_share:
            rows.append((rng.randint(0, 10**12), rng.randint(0, 10**12), rng.choice(templates),
                         rng.choice([NULL, rng.randint(0, 9)]), rng.choice([NULL, rng.randint(0, 9)])))
        else:
            shape, width = rng.choice(shapes)
            rows.append((shape, rng.randint(0, 99), rng.randint(0, 99),
                         *(rng.randint(10**6, 10**12) for _ in range(width))))
    return rows


def encoded(tracer: Tracer, rows: list[tuple], cuts: list[int]) -> list:
    encoder, batches, done = RowEncoder(VOCAB, "lp", "site", tracer), [], 0
    for cut in [*cuts, len(rows)]:
        tracer.rows[:] = rows[done:cut]
        done = cut
        batches += encoder.encode() if tracer.rows else []
    return batches + encoder.flush()


@pytest.mark.parametrize("plain_share", [0.0, 0.02, 0.6, 1.0])
def test_pass_records_expand_to_their_spans(plain_share):
    """Whatever the mix of spans and pass records, the batches hold Tracer.spans(), in order."""
    rng = random.Random(plain_share)
    for _ in range(20):
        tracer = Tracer(VOCAB)
        rows = random_rows(rng, tracer, plain_share, rng.randint(1, 700))
        tracer.rows[:] = rows
        expected = tracer.spans()
        columns = {name: [] for name in ("start_ps", "end_ps", "name", "request_id", "token")}
        for batch in encoded(tracer, rows, []):
            for name in columns:
                columns[name] += batch.column(name).to_pylist()
        names = [f"n{tracer.templates[t][1]}" for _, _, t, _, _ in expected]
        assert columns["start_ps"] == [s for s, _, _, _, _ in expected]
        assert columns["end_ps"] == [e for _, e, _, _, _ in expected]
        assert columns["name"] == names
        assert columns["request_id"] == [None if r == NULL else r for _, _, _, r, _ in expected]
        assert columns["token"] == [None if k == NULL else k for _, _, _, _, k in expected]


def test_batches_do_not_depend_on_when_rows_are_handed_over(monkeypatch):
    """Every batch but an LP's last holds BATCH_ROWS rows, however the rows were drained."""
    monkeypatch.setattr(trace, "BATCH_ROWS", 7)
    rng = random.Random(3)
    tracer = Tracer(VOCAB)
    rows = random_rows(rng, tracer, 0.3, 400)
    reference = encoded(tracer, rows, [])
    assert {b.num_rows for b in reference[:-1]} == {7}
    for _ in range(30):
        cuts = sorted(rng.sample(range(1, len(rows)), rng.randint(1, 40)))
        batches = encoded(tracer, rows, cuts)
        assert len(batches) == len(reference)
        assert all(a.equals(b) for a, b in zip(batches, reference))


def test_a_run_imports_neither_pandas_nor_arrow_compute():
    """pyarrow imports pandas on its first numpy conversion and compute on a sort: a fifth
    of a second a run that needs neither."""
    code = ("import sys, tempfile\n"
            "from cluster.commands.scenario import RunOptions, ScenarioConfig, run_scenario\n"
            "cfg = ScenarioConfig('t', 'llama3.1-70b', 4, ('santa-clara',) * 4, 2, 64, 4)\n"
            "with tempfile.TemporaryDirectory() as d:\n"
            "    run_scenario(cfg, RunOptions(trace=d + '/t.arrow'))\n"
            "print(sorted(m for m in ('pandas', 'pyarrow.compute') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
