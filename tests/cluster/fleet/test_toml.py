"""The cluster file: reading it strictly, writing it back, and validating what it means."""

from __future__ import annotations

import dataclasses
import functools
import random
import re
import string
import sys

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

from cluster.fleet.spec import (
    WAN_LINK,
    ClusterSpec,
    LinksSpec,
    PipelineSpec,
    ReplicaSpec,
    RouterSpec,
    SiteSpec,
    UserSpec,
)
from cluster.fleet.toml import cluster_from_dict, cluster_to_toml, load_cluster
from cluster.fleet.validate import validate_cluster
from common.errors import ConfigError
from interconnect import CS3_LINK, LinkSpec

EXAMPLE = """\
name = "three-sites"
seed = 7
detail = "layer"
max_active = 64
slo_ttft_ms = 500
slo_tpot_ms = 25.5

[[sites]]
name = "santa-clara"
wafers = 16

[[sites]]
name = "stockton"

[[sites]]
name = "dallas"
wafers = 8

[[pipelines]]
name = "small"
models = ["llama3.1-8b", "llama3.1-70b"]
wafers = 4

[[pipelines]]
name = "big"
models = ["llama3.1-405b"]
wafers = 2
device = "wse-2"
stage_sites = ["santa-clara", "stockton"]

[[replicas]]
pipeline = "small"
count = 3
sites = ["santa-clara", "stockton", "dallas"]

[[replicas]]
pipeline = "big"
sites = ["santa-clara"]

[[routers]]
name = "west"
site = "santa-clara"
policy = "least-outstanding"

[[routers]]
name = "south"
site = "dallas"
policy = "session-affinity"

[[users]]
name = "chat"
site = "santa-clara"
model = "llama3.1-70b"
rate_per_s = 20
requests = 1000
router = "west"

[[users]]
name = "bursty"
site = "dallas"
model = "llama3.1-8b"
arrivals = "gamma"
rate_per_s = 5.5
burstiness_cv = 3.0
sessions = 10
router = "south"

[[users]]
name = "agents"
site = "stockton"
model = "llama3.1-405b"
arrivals = "closed"
users = 8
think_time_s = 2.5
prompt_tokens = 2048
output_tokens = 64

[links.intra_site]
latency_ps = 1000000

[links.wan]
lanes = 4
"""

EXPECTED = ClusterSpec(
    name="three-sites",
    seed=7,
    detail="layer",
    max_active=64,
    slo_ttft_ms=500.0,
    slo_tpot_ms=25.5,
    sites=(SiteSpec("santa-clara", 16), SiteSpec("stockton"), SiteSpec("dallas", 8)),
    pipelines=(PipelineSpec("small", ("llama3.1-8b", "llama3.1-70b"), wafers=4),
               PipelineSpec("big", ("llama3.1-405b",), wafers=2, device="wse-2",
                            stage_sites=("santa-clara", "stockton"))),
    replicas=(ReplicaSpec("small", count=3, sites=("santa-clara", "stockton", "dallas")),
              ReplicaSpec("big", sites=("santa-clara",))),
    routers=(RouterSpec("west", "santa-clara", "least-outstanding"),
             RouterSpec("south", "dallas", "session-affinity")),
    users=(UserSpec("chat", "santa-clara", "llama3.1-70b", rate_per_s=20.0, requests=1000, router="west"),
           UserSpec("bursty", "dallas", "llama3.1-8b", arrivals="gamma", rate_per_s=5.5, burstiness_cv=3.0,
                    sessions=10, router="south"),
           UserSpec("agents", "stockton", "llama3.1-405b", arrivals="closed", users=8, think_time_s=2.5,
                    prompt_tokens=2048, output_tokens=64)),
    links=LinksSpec(intra_site=CS3_LINK.with_latency(1_000_000),
                    wan=dataclasses.replace(WAN_LINK, lanes=4)),
)


@pytest.fixture
def example_file(tmp_path):
    path = tmp_path / "cluster.toml"
    path.write_text(EXAMPLE)
    return path


def test_example_loads_to_the_expected_spec(example_file):
    spec = load_cluster(example_file)
    assert spec == EXPECTED
    assert isinstance(spec.users[0].rate_per_s, float)  # an integer where a number goes
    assert spec.links.wan.latency_ps == WAN_LINK.latency_ps  # a partial sub-table keeps the rest


def test_name_defaults_to_the_file_stem(tmp_path):
    path = tmp_path / "my-fleet.toml"
    path.write_text(EXAMPLE.replace('name = "three-sites"\n', "", 1))
    assert load_cluster(path).name == "my-fleet"


def test_round_trip_of_the_example(tmp_path):
    path = tmp_path / "again.toml"
    path.write_text(cluster_to_toml(EXPECTED))
    assert load_cluster(path) == EXPECTED


def test_round_trip_of_a_minimal_spec(tmp_path):
    spec = ClusterSpec("x", (PipelineSpec("p", ("llama3.1-8b",)),), (ReplicaSpec("p"),),
                       (UserSpec("u", "dallas", "llama3.1-8b"),))
    text = cluster_to_toml(spec)
    assert "links" not in text and "seed" not in text  # defaults are left out
    assert cluster_from_dict(_parse(text), "x.toml") == spec


def _parse(text: str) -> dict:
    return tomllib.loads(text)


def _word(rng: random.Random) -> str:
    alphabet = string.ascii_letters + string.digits + ' -_."\\\'\n\t\x7féü€'
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))


def _number(rng: random.Random) -> float:
    return rng.choice([0.0, -0.0, 1.0, 0.1, 1e-300, 1.5e300, rng.uniform(-1e6, 1e6), rng.random()])


def _random_spec(rng: random.Random) -> ClusterSpec:
    def words(n: int) -> tuple[str, ...]:
        return tuple(_word(rng) for _ in range(rng.randint(0, n)))
    return ClusterSpec(
        name=_word(rng),
        pipelines=tuple(PipelineSpec(_word(rng), words(3), rng.randint(-5, 5), _word(rng), words(2))
                        for _ in range(rng.randint(0, 3))),
        replicas=tuple(ReplicaSpec(_word(rng), rng.randint(0, 2**40), words(3)) for _ in range(rng.randint(0, 3))),
        users=tuple(UserSpec(_word(rng), _word(rng), _word(rng), rng.choice(["poisson", _word(rng)]),
                             _number(rng), _number(rng), rng.randint(0, 9), _number(rng), rng.randint(0, 9),
                             rng.randint(0, 9), 256, rng.choice(["", _word(rng)]), rng.randint(0, 3))
                    for _ in range(rng.randint(0, 3))),
        routers=tuple(RouterSpec(_word(rng), _word(rng)) for _ in range(rng.randint(0, 2))),
        sites=tuple(SiteSpec(_word(rng), rng.randint(0, 9)) for _ in range(rng.randint(0, 2))),
        links=rng.choice([LinksSpec(), LinksSpec(wan=LinkSpec(rng.randint(1, 99), rng.random() + 1, 0))]),
        seed=rng.randint(-(2**63), 2**63 - 1),
        time_scale=_number(rng),
    )


@pytest.mark.parametrize("seed", range(20))
def test_round_trip_of_random_specs(seed):
    spec = _random_spec(random.Random(seed))
    assert cluster_from_dict(_parse(cluster_to_toml(spec)), "r.toml") == spec


def test_writing_a_non_finite_number_is_refused():
    spec = dataclasses.replace(EXPECTED, time_scale=float("inf"))
    with pytest.raises(ConfigError, match="time_scale"):
        cluster_to_toml(spec)


def _without(table: str, text: str) -> str:
    """The example less its `[[table]]` blocks."""
    return re.sub(rf"\[\[{table}\]\]\n(?:[^\[\n].*\n)*\n?", "", text)


# (what to change in the example, the text the message must hold)
BAD_FILES = [
    (lambda t: "nme = 'x'\n" + t, "cluster.toml: nme: unknown key; known: detail, faults, links,"),
    (lambda t: t.replace("requests = 1000", "requests = 1000\nrate = 3"),
     "users[0].rate: unknown key; known: arrivals, arrivals_stream, burstiness_cv,"),
    (lambda t: t.replace("[links.wan]\n", "[links.wan]\nspeed = 1\n"), "links.wan.speed: unknown key"),
    (lambda t: t + "[links.lan]\nlanes = 1\n", "links.lan: unknown key"),
    (lambda t: t.replace("count = 3", "count = '4'"), "replicas[0].count: expected an integer, got string '4'"),
    (lambda t: t.replace("count = 3", "count = 4.0"), "replicas[0].count: expected an integer, got float 4.0"),
    (lambda t: t.replace("count = 3", "count = true"), "replicas[0].count: expected an integer, got boolean true"),
    (lambda t: t.replace("rate_per_s = 5.5", "rate_per_s = true"),
     "users[1].rate_per_s: expected a number, got boolean true"),
    (lambda t: t.replace('sites = ["santa-clara"]', 'sites = "santa-clara"'),
     "replicas[1].sites: expected an array of strings, got string 'santa-clara'"),
    (lambda t: t.replace('models = ["llama3.1-405b"]', 'models = ["llama3.1-405b", 3]'),
     "pipelines[1].models[1]: expected a string, got integer 3"),
    (lambda t: t.replace("[links.wan]\nlanes = 4", "[links.wan]\nlatency_ps = 1.5"),
     "links.wan.latency_ps: expected an integer, got float 1.5"),
    (lambda t: t.replace("[links.wan]\nlanes = 4", "[links.wan]\nlanes = 0"), "links.wan.lanes: must be > 0, got 0"),
    (lambda t: "links = 3\n" + t.split("[links.intra_site]")[0], "links: expected a table, got integer 3"),
    (lambda t: t.replace('name = "chat"\n', ""), "users[0].name: missing required key"),
    (lambda t: t.replace('models = ["llama3.1-405b"]\n', ""), "pipelines[1].models: missing required key"),
    (lambda t: "pipelines = 1\n" + _without("pipelines", t), "pipelines: expected an array of tables, got integer 1"),
    (lambda t: "pipelines = [1]\n" + _without("pipelines", t), "pipelines[0]: expected a table, got integer 1"),
    (lambda t: t.replace("seed = 7", "seed = 1979-05-27"), "seed: expected an integer, got date"),
]


@pytest.mark.parametrize("change,message", BAD_FILES)
def test_bad_files_name_the_key(tmp_path, change, message):
    path = tmp_path / "cluster.toml"
    path.write_text(change(EXAMPLE))
    with pytest.raises(ConfigError) as err:
        load_cluster(path)
    text = str(err.value)
    assert message in text and "\n" not in text and text.startswith(str(path))


def test_missing_required_array_names_it():
    with pytest.raises(ConfigError, match="^c.toml: users: missing required key$"):
        cluster_from_dict({"pipelines": [], "replicas": []}, "c.toml")


def test_missing_file_and_syntax_error(tmp_path):
    with pytest.raises(ConfigError, match="nope.toml: no such file"):
        load_cluster(tmp_path / "nope.toml")
    path = tmp_path / "broken.toml"
    path.write_text('name = "x"\nseed = = 3\n')
    with pytest.raises(ConfigError, match=r"broken.toml: invalid TOML: .*line 2"):
        load_cluster(path)


def test_validate_accepts_the_example():
    validate_cluster(EXPECTED)


def _item(table: str, i: int, **changes):
    """A change to the i-th element of one of the spec's tuples."""
    return lambda s: dataclasses.replace(s, **{table: tuple(
        dataclasses.replace(x, **changes) if j == i else x for j, x in enumerate(getattr(s, table)))})


_user, _pipeline, _replica = (functools.partial(_item, t) for t in ("users", "pipelines", "replicas"))


def _top(**changes):
    return lambda s: dataclasses.replace(s, **changes)


BAD_SPECS = [
    (_top(pipelines=()), "pipelines: must not be empty"),
    (_top(replicas=()), "replicas: must not be empty"),
    (_top(users=()), "users: must not be empty"),
    (lambda s: dataclasses.replace(s, routers=s.routers + s.routers[:1]), "routers[2].name: duplicate name 'west'"),
    (_user(2, name="chat"), "users[2].name: duplicate name 'chat'"),
    (_pipeline(1, name="small"), "pipelines[1].name: duplicate name 'small'"),
    (lambda s: dataclasses.replace(s, sites=s.sites + (SiteSpec("dallas"),)), "sites[3].name: duplicate name"),
    (_top(time_scale=float("nan")), "time_scale: must be finite"),
    (_top(time_scale=0.0), "time_scale: must be > 0"),
    (_top(slo_ttft_ms=-1.0), "slo_ttft_ms: must be >= 0"),
    (_top(seed=-1), "seed: must be >= 0"),
    (_top(seed=True), "seed: must be an integer, got True"),
    (_top(prefill_chunk_tokens=0), "prefill_chunk_tokens: must be >= 1"),
    (_top(max_active=-1), "max_active: must be >= 0"),
    (_top(detail="cycle"), "detail: unknown detail 'cycle'; known: stage, layer, op"),
    (_top(links=LinksSpec(wan=LinkSpec(4, float("inf"), 0))), "links.wan.lane_bits_per_s: must be finite"),
    (_user(1, site="paris"), "users[1].site: unknown site 'paris'; known: santa-clara, stockton, dallas"),
    (lambda s: dataclasses.replace(s, sites=s.sites[:2]),
     "replicas[0].sites[2]: site 'dallas' is not declared in sites; declared: santa-clara, stockton"),
    (lambda s: dataclasses.replace(s, sites=(SiteSpec("santa-clara", -1),)), "sites[0].wafers: must be >= 0"),
    (_pipeline(0, device="tpu"), "pipelines[0].device: unknown device 'tpu'"),
    (_pipeline(0, gpus=3), "pipelines[0].gpus: unknown GPU count 3"),
    (_pipeline(0, dtype="fp8"), "pipelines[0].dtype: unknown dtype 'fp8'"),
    (_pipeline(0, wafers=0), "pipelines[0].wafers: must be >= 1"),
    (_pipeline(1, stage_sites=("dallas",)), "pipelines[1].stage_sites: must be empty or name one site per wafer"),
    (_pipeline(1, stage_sites=("dallas", "paris")), "pipelines[1].stage_sites[1]: unknown site 'paris'"),
    (_pipeline(0, models=()), "pipelines[0].models: must name at least one model"),
    (_pipeline(0, models=("llama3.1-8b", "gpt-5")), "pipelines[0].models[1]: unknown model 'gpt-5'"),
    (_pipeline(0, models=("llama3.1-8b", "llama3.1-8b")), "pipelines[0].models[1]: model 'llama3.1-8b' is already"),
    (_pipeline(0, models=["llama3.1-8b"]), "pipelines[0].models: must be a tuple"),
    (_replica(0, pipeline="huge"), "replicas[0].pipeline: unknown pipeline 'huge'; known: small, big"),
    (_replica(0, count=0), "replicas[0].count: must be >= 1"),
    (_replica(0, count=4.0), "replicas[0].count: must be an integer, got 4.0"),
    (_replica(1, sites=()), "replicas[1].sites: must name at least one site"),
    (lambda s: dataclasses.replace(s, routers=(RouterSpec("r", "dallas", "random"),)),
     "routers[0].policy: unknown policy 'random'"),
    (_user(0, router="east"), "users[0].router: unknown router 'east'; known: west, south"),
    (_user(0, arrivals="trace.csv"), "users[0].arrivals: 'trace.csv' is neither one of poisson, gamma, closed"),
    (_user(1, rate_per_s=0.0), "users[1].rate_per_s: must be > 0"),
    (_user(1, burstiness_cv=0.0), "users[1].burstiness_cv: must be > 0"),
    (_user(2, users=0), "users[2].users: must be >= 1"),
    (_user(2, think_time_s=-0.5), "users[2].think_time_s: must be >= 0"),
    (_user(0, requests=0), "users[0].requests: must be >= 1"),
    (_user(0, prompt_tokens=0), "users[0].prompt_tokens: must be >= 1"),
    (_user(0, output_tokens=0), "users[0].output_tokens: must be >= 1"),
    (_user(0, sessions=-1), "users[0].sessions: must be >= 0"),
    (_user(0, model="llama3.1-7b"), "users[0].model: unknown model 'llama3.1-7b'"),
    (lambda s: _pipeline(1, models=("llama3.1-70b",))(s), "users[2].model: no pipeline serves 'llama3.1-405b'"),
    # santa-clara: 4 (small #0) + 1 (big's first stage) = 5 wafers.
    (lambda s: dataclasses.replace(s, sites=(SiteSpec("santa-clara", 4),) + s.sites[1:]),
     "sites[0].wafers: site 'santa-clara' has room for 4 wafers but 5 are placed there"),
    # 9 small replicas round-robin: 3 in dallas, 12 wafers.
    (_replica(0, count=9), "sites[2].wafers: site 'dallas' has room for 8 wafers but 12 are placed there"),
]


@pytest.mark.parametrize("change,message", BAD_SPECS)
def test_validate_refuses_with_the_field(change, message):
    with pytest.raises(ConfigError) as err:
        validate_cluster(change(EXPECTED))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_validate_capacity_fits_exactly():
    spec = dataclasses.replace(EXPECTED, sites=(SiteSpec("santa-clara", 5),) + EXPECTED.sites[1:])
    validate_cluster(spec)


def test_arrivals_may_be_an_existing_file(tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text("t,prompt,output\n")
    validate_cluster(_user(0, arrivals=str(trace))(EXPECTED))


def test_capacity_counts_round_robin_over_sites():
    # 5 small replicas over (santa-clara, stockton, dallas): 2 at santa-clara -> 8 + 1 (big) = 9.
    spec = _replica(0, count=5)(EXPECTED)
    spec = dataclasses.replace(spec, sites=(SiteSpec("santa-clara", 8),) + spec.sites[1:])
    with pytest.raises(ConfigError, match="'santa-clara' has room for 8 wafers but 9 are placed"):
        validate_cluster(spec)
