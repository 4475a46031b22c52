"""The command line: `wafersim run NAME ...`, `wafersim summary PATH`, and the flags every
scenario shares. A user mistake prints one line `error: ...` and exits with code 2."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cluster.commands.common import EXIT_USAGE, Parser, check_output_file
from cluster.engine.backends import BACKENDS
from common.checks import MAX_WAFERS, check_number
from common.errors import ConfigError, SimError
from wafer import DETAILS

SITE_GROUPS = 10**9  # `--lps-per-actor site`: as many as a datacenter has


def _lps_per_actor(text: str) -> int:
    if text == "site":
        return SITE_GROUPS
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'site', got {text!r}") from None


def parse_sites(text: str) -> tuple[str, ...]:
    """A comma list of sites, one per wafer; `NAME*N` stands for N wafers in NAME."""
    sites: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        name, star, count = item.partition("*")
        if not star:
            sites += [item] if item else []
        elif count.strip().isascii() and count.strip().isdigit() and 0 < int(count) <= MAX_WAFERS:
            sites += [name.strip()] * int(count)
        elif count.strip().isascii() and count.strip().isdigit() and int(count) > MAX_WAFERS:
            raise ConfigError(f"--sites: {item!r}: at most {MAX_WAFERS:,} wafers")
        else:
            raise ConfigError(f"--sites: {item!r}: expected NAME or NAME*COUNT")
    return tuple(sites)


def parse_fault(text: str):
    """`KIND:TARGET:at_ms=A[:for_ms=D][:bandwidth=B][:period_ms=P]`, e.g.
    `link-down:link:wafer1->wafer2:at_ms=5:for_ms=50`, `link-flap:LINK:at_ms=5:for_ms=50:period_ms=2`,
    `wafer-lost:llama70b-0.wafer1:at_ms=20`, `site-lost:dallas:at_ms=20` (a link's own name
    has a colon: every field without `=` belongs to the target). A link fault needs `for_ms`;
    a lost device stays lost, which `validate_cluster` says if `for_ms` is given."""
    from cluster.fleet.spec import FaultSpec

    kind, _, rest = text.partition(":")
    fields = rest.split(":")
    target = ":".join(f for f in fields if "=" not in f)
    values: dict[str, float] = {}
    known = ("at_ms", "for_ms", "bandwidth", "period_ms")
    for item in (f for f in fields if "=" in f):
        key, _, value = item.partition("=")
        if key not in known:
            raise argparse.ArgumentTypeError(f"unknown field {key!r} in {text!r}; known: {', '.join(known)}")
        try:
            values[key] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{key}: expected a number, got {value!r}") from None
    if kind in ("wafer-lost", "site-lost"):
        if not target or "at_ms" not in values:
            raise argparse.ArgumentTypeError(f"expected {kind}:{'WAFER' if kind == 'wafer-lost' else 'SITE'}:"
                                             f"at_ms=A, got {text!r}")
    elif not target or any(k not in values for k in ("at_ms", "for_ms")):
        usage = ":period_ms=P" if kind == "link-flap" else "[:bandwidth=B]"
        raise argparse.ArgumentTypeError(f"expected KIND:LINK:at_ms=A:for_ms=D{usage}, got {text!r}")
    return FaultSpec(kind, target, values["at_ms"], values.get("for_ms", 0.0), values.get("bandwidth", 1.0),
                     values.get("period_ms", 0.0))


FAULT_HELP = ("link-down|link-degraded|link-flap:LINK:at_ms=A:for_ms=D[:bandwidth=B|:period_ms=P], "
              "wafer-lost:DEVICE:at_ms=A, site-lost:SITE:at_ms=A (repeatable)")


def _spec_override(text: str) -> tuple[str, float]:
    key, sep, value = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return key.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FIELD=NUMBER, got {text!r}") from None


@dataclass(frozen=True)
class ScenarioDefaults:
    model: str
    wafers: int
    sites: str
    users: int = 64
    prompt_tokens: int = 512
    output_tokens: int = 256
    device: str = "wse-3"
    gpus: int | None = None  # set for a GPU scenario: adds --gpus and --dtype


def scenario_parser(name: str, defaults: ScenarioDefaults, description: str) -> argparse.ArgumentParser:
    p = Parser(prog=f"wafersim run {name}", description=description)
    p.add_argument("--model", default=defaults.model, help="preset name or path to a HF config.json")
    if defaults.gpus is None:
        p.add_argument("--wafers", type=int, default=defaults.wafers)
        p.add_argument("--sites", default=defaults.sites,
                       help="comma list, one datacenter per wafer; NAME*N for N wafers in NAME")
        p.add_argument("--wafer", default=defaults.device, help="wafer preset (wse-3, wse-2)")
        # a GPU step is one span whatever the detail: GPU scenarios take no --detail (an unknown flag)
        p.add_argument("--detail", choices=DETAILS, default="layer",
                       help="trace one span per wafer stage, per layer or per op")
    else:
        p.add_argument("--gpus", type=int, default=defaults.gpus, help="tensor-parallel GPUs per DGX: 1, 2, 4, 8")
        p.add_argument("--dtype", choices=("fp16", "fp8"), default="fp16", help="weight precision")
        p.add_argument("--sites", default=defaults.sites, help="the datacenter of the GPU nodes")
    p.add_argument("--users", type=int, default=defaults.users, help="requests served at once")
    p.add_argument("--requests", type=int, default=None, help="requests in all (default: --users)")
    p.add_argument("--rate", type=float, default=0.0, help="Poisson arrivals per second (0: all at t=0)")
    p.add_argument("--prompt-tokens", type=int, default=defaults.prompt_tokens)
    p.add_argument("--output-tokens", type=int, default=defaults.output_tokens)
    p.add_argument("--prefill-chunk", type=int, default=128, help="prompt tokens per prefill pass")
    p.add_argument("--spec", action="append", default=[], type=_spec_override, metavar="FIELD=VALUE",
                   help="change a device constant, e.g. clock_hz=1.2e9 (repeatable)")
    p.add_argument("--link", action="append", default=[], type=_spec_override, metavar="FIELD=VALUE",
                   help="change the inter-device link: lanes, lane_bits_per_s, latency_ps (repeatable)")
    p.add_argument("--fault", action="append", default=[], type=parse_fault, metavar="SPEC",
                   help=FAULT_HELP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fidelity", choices=("event", "analytic"), default="event",
                   help="event: simulate (the default); analytic: a closed-form steady-state estimate, no trace")
    add_run_flags(p)
    return p


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """How a run is carried out and reported: the same for every scenario."""
    p.add_argument("--backend", choices=BACKENDS, default="inprocess")
    p.add_argument("--lps-per-actor", type=_lps_per_actor, default=None,
                   help="LPs per Ray actor, never across sites; 'site': one actor per datacenter "
                        "(ray default: site; in-process default: one partition for all)")
    p.add_argument("--max-window-ps", type=int, default=None, help="debug: cap on a round's window")
    p.add_argument("--address", default=None, help="Ray cluster to join (default: $RAY_ADDRESS or a local Ray)")
    p.add_argument("--placement", choices=("pack", "spread", "by-site"), default=None,
                   help="where Ray actors go (default pack)")
    p.add_argument("--trace", default=None, help="trace path (default: traces/NAME-seedN.arrow)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr (none either when it is not a terminal)")
    p.add_argument("--watchdog-s", type=float, default=120.0,
                   help="end a run whose simulated time stalls this many wall seconds, naming what was due (0: off)")
    add_price_flags(p)


def add_price_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--price-kwh", type=float, default=None, help="USD per kWh of electricity (cost per token)")
    p.add_argument("--price-hour", type=float, default=None,
                   help="USD of capital per device-hour (a wafer system, a GPU)")


def check_trace_path(trace: str | None) -> None:
    """A trace path a run can write its four files at, checked before the run: not a
    folder, its own and its companions' folders not files."""
    if trace is None:
        return
    from cluster.results.trace import energy_path, requests_path, tokens_path

    path = Path(trace)
    if not trace.strip() or path.is_dir() or trace.endswith(("/", os.sep)):
        raise ConfigError(f"--trace: {trace} is a folder; give a file path such as {path / 'run.arrow'}")
    for companion in (Path(requests_path(trace)), Path(tokens_path(trace)), Path(energy_path(trace))):
        if companion.is_dir():
            raise ConfigError(f"--trace: {companion} is a folder, where the trace writes a file")
    check_output_file("--trace", trace, make_parents=True)


def run_options(args: argparse.Namespace, name: str, seed: int):
    """RunOptions from the flags `add_run_flags` declared."""
    from cluster.commands.scenario import RunOptions
    from cluster.results.energy import Prices

    backend_options = {}
    if args.backend == "ray":
        backend_options = {"address": args.address or os.environ.get("RAY_ADDRESS"),
                           "placement": args.placement or "pack"}
    else:  # no silent no-ops: these only mean something on Ray
        for flag, value in (("--address", args.address), ("--placement", args.placement)):
            if value is not None:
                raise ConfigError(f"{flag}: only the ray backend uses it; add --backend ray")
    if args.max_window_ps is not None:
        check_number("--max-window-ps", args.max_window_ps, integer=True, low=1)
    check_trace_path(args.trace)
    trace = Path(args.trace) if args.trace else None
    lps = args.lps_per_actor if args.lps_per_actor is not None else (SITE_GROUPS if args.backend == "ray" else None)
    return RunOptions(trace=str(trace) if trace else f"traces/{name}-seed{seed}.arrow", backend=args.backend,
                      lps_per_partition=lps, max_window_ps=args.max_window_ps, backend_options=backend_options,
                      prices=Prices(args.price_kwh, args.price_hour), progress=not args.quiet,
                      watchdog_s=args.watchdog_s)


def report(run: Callable[[], tuple[dict | None, bool]]) -> int:
    """Run, print the summary (JSON on the last line when asked; None: `run` printed what
    it had to). Exit codes: 0 ok, 2 bad input or a failed run, with one line `error: ...`
    and no traceback."""
    from cluster.results.summary import format_summary

    try:
        summary, as_json = run()
    except (ConfigError, SimError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # the trace cannot be written where asked
        print(f"error: --trace: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_USAGE
    if summary is not None:
        print(json.dumps(summary, sort_keys=True) if as_json else format_summary(summary))
    return 0


def run_scenario_cli(name: str, defaults: ScenarioDefaults, description: str,
                     argv: list[str] | None = None) -> int:
    """Parse, run, print: a pipeline ring scenario."""
    from cluster.commands.scenario import ScenarioConfig, run_scenario

    def run() -> tuple[dict, bool]:
        args = scenario_parser(name, defaults, description).parse_args(argv)
        gpu = {} if defaults.gpus is None else {"gpus": args.gpus, "dtype": args.dtype}
        cfg = ScenarioConfig(
            scenario=name, model=args.model, wafers=getattr(args, "wafers", 1),
            sites=parse_sites(args.sites),
            users=args.users, prompt_tokens=args.prompt_tokens, output_tokens=args.output_tokens,
            seed=args.seed, detail=getattr(args, "detail", "layer"), device=getattr(args, "wafer", defaults.device),
            requests=args.requests, rate_per_s=args.rate, prefill_chunk_tokens=args.prefill_chunk,
            spec_overrides=tuple(args.spec), link_overrides=tuple(args.link), faults=tuple(args.fault), **gpu)
        if args.fidelity == "analytic":  # no trace: the ring as a cluster, as `prepare` builds it
            from cluster.analytic import estimate
            from cluster.analytic.report import format_estimate

            if args.price_kwh is not None or args.price_hour is not None:
                raise ConfigError("--price-kwh/--price-hour: the analytic tier estimates no energy; "
                                  "use --fidelity event")

            cfg.validate()
            summary = estimate(cfg.to_cluster(), {cfg.device: cfg.device_spec()})
            if args.json:
                return summary, True
            print(format_estimate(summary))
            return None, False
        return run_scenario(cfg, run_options(args, name, args.seed)), args.json

    return report(run)


EXIT_BROKEN_PIPE = 141  # what a shell reports for a command whose reader went away (128 + SIGPIPE)


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # `wafersim run ... | head`: the reader left; say nothing more, and let the
        # interpreter's final flush go to /dev/null instead of raising again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = ("usage: wafersim run NAME [flags] | wafersim summary PATH [--json] | wafersim list | "
             "wafersim calibrate [--dry-run] | wafersim validate [--json] | "
             "wafersim convert azure|sharegpt IN -o OUT [flags] | "
             "wafersim sweep SPEC.toml [-o OUT] [--fidelity event|analytic] [--refine N] [--quiet] | "
             "wafersim plot PATH -o OUT.png|svg [--kind K] [--x COL --y COL] [--from-ms A --to-ms B] | "
             "wafersim perfetto TRACE -o OUT.json [--from-ms A --to-ms B]")
    if not argv:
        print(f"error: give a command; {usage}", file=sys.stderr)
        return EXIT_USAGE
    if argv[0] in ("-h", "--help"):
        print(usage)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "list":
        if rest:
            print(f"error: list: takes no arguments, got {' '.join(rest)!r}", file=sys.stderr)
            return EXIT_USAGE
        for path in sorted(Path(__file__).resolve().parents[2].joinpath("scenarios").glob("*.py")):
            if not path.name.startswith("_"):
                print(path.stem)
        return 0
    if command == "run":
        if not rest or rest[0].startswith("-"):
            print("error: run: give a scenario name (see `wafersim list`)", file=sys.stderr)
            return EXIT_USAGE
        try:
            module = importlib.import_module(f"scenarios.{rest[0]}")
        except ModuleNotFoundError:
            print(f"error: run: unknown scenario {rest[0]!r} (see `wafersim list`)", file=sys.stderr)
            return EXIT_USAGE
        return module.main(rest[1:])
    if command == "calibrate":
        from cluster.commands.calibrate import main as calibrate
        return calibrate(rest)
    if command == "sweep":
        from cluster.commands.sweep import main as sweep
        return sweep(rest)
    if command == "convert":
        from cluster.commands.convert import main as convert
        return convert(rest)
    if command == "validate":
        from cluster.commands.validate import main as validate
        return validate(rest)
    if command == "plot":
        from cluster.commands.plot import main as plot
        return plot(rest)
    if command == "perfetto":
        from cluster.commands.perfetto import main as perfetto
        return perfetto(rest)
    if command == "summary":
        from pyarrow import ArrowException

        from cluster.results.summary import format_summary, summarize
        parser = Parser(prog="wafersim summary", add_help=False)
        parser.add_argument("paths", nargs="*")
        parser.add_argument("--json", action="store_true")
        # None: the SLOs the run recorded in the trace, if any; 0: no SLO.
        parser.add_argument("--slo-ttft-ms", type=float, default=None)
        parser.add_argument("--slo-tpot-ms", type=float, default=None)
        add_price_flags(parser)
        try:
            args = parser.parse_args(rest)  # an unknown flag is an error, not a silent no-op
            if len(args.paths) != 1:
                raise ConfigError("give one trace path")
            for flag, value in (("--slo-ttft-ms", args.slo_ttft_ms), ("--slo-tpot-ms", args.slo_tpot_ms)):
                if value is not None:
                    check_number(flag, value, low=0)
            from cluster.results.energy import Prices
            prices = Prices(args.price_kwh, args.price_hour) \
                if args.price_kwh is not None or args.price_hour is not None else None
        except ConfigError as exc:
            print(f"error: summary: {exc}", file=sys.stderr)
            return EXIT_USAGE
        try:
            summary = summarize(args.paths[0], args.slo_ttft_ms, args.slo_tpot_ms, prices)
        except (OSError, ValueError) as exc:
            print(f"error: summary: cannot read {args.paths[0]}: {' '.join(str(exc).split())}", file=sys.stderr)
            return EXIT_USAGE
        except (KeyError, TypeError, ArrowException) as exc:  # Arrow files of another schema
            print(f"error: summary: {args.paths[0]}: not a wafersim trace: {' '.join(str(exc).split())}",
                  file=sys.stderr)
            return EXIT_USAGE
        print(json.dumps(summary, sort_keys=True) if args.json else format_summary(summary))
        return 0
    print(f"error: unknown command {command!r}; {usage}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
