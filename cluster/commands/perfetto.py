"""`wafersim perfetto TRACE -o OUT.json [--from-ms A --to-ms B]`: a span trace as Chrome
trace-event JSON that ui.perfetto.dev and chrome://tracing open: a process per
datacenter, a thread per LP (and lane: spans that overlap on one LP go to separate
threads), flow arrows that follow a few requests across LPs. A window keeps big traces
openable; past `--max-events` spans the export stops early and says where.

A user mistake prints one line `error: ...` and exits with code 2, leaving no OUT behind.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cluster.commands.common import Parser, guarded
from common.errors import ConfigError


def parser() -> argparse.ArgumentParser:
    from cluster.results.perfetto import DEFAULT_FLOW_REQUESTS, DEFAULT_MAX_EVENTS

    p = Parser(prog="wafersim perfetto", description="Export a trace as Chrome trace-event JSON for Perfetto.")
    p.add_argument("trace", metavar="TRACE", help="a span trace (.arrow)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="the JSON file to write (.json)")
    p.add_argument("--from-ms", type=float, default=None, help="window start (simulated ms)")
    p.add_argument("--to-ms", type=float, default=None, help="window end (simulated ms)")
    p.add_argument("--max-events", type=int, default=DEFAULT_MAX_EVENTS,
                   help="at most this many spans (the earliest); the window is cut short past it")
    p.add_argument("--flow-requests", type=int, default=DEFAULT_FLOW_REQUESTS,
                   help="draw flow arrows for this many requests (0: none)")
    p.add_argument("--kinds", default=None, metavar="LIST",
                   help="only spans of these kinds, a comma list (e.g. compute,link,flight: no SRAM reservations)")
    return p


def main(argv: list[str]) -> int:
    """Exit codes: 0 written, 2 bad input (nothing written)."""
    return guarded("perfetto", lambda: _export(argv))


def _export(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    out = Path(args.output)
    if out.suffix.lower() != ".json":
        raise ConfigError(f"-o {out}: the output must end in .json")
    if not out.parent.is_dir():
        raise ConfigError(f"-o {out}: no such directory {out.parent}")
    from cluster.results.perfetto import export_perfetto

    kinds = None if args.kinds is None else tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    if kinds is not None and not kinds:
        raise ConfigError("--kinds: give at least one span kind")
    stats = export_perfetto(args.trace, out, args.from_ms, args.to_ms, args.max_events, args.flow_requests,
                            kinds)
    notes = ""
    if stats["cut_at_ms"] is not None:
        notes += (f"; more than {args.max_events:,} spans: cut at {stats['cut_at_ms']:.6g} ms "
                  f"(narrow --from-ms/--to-ms or raise --max-events)")
    if stats["left_out"]:
        notes += f"; {stats['left_out']} spans left out (too many at once on one LP)"
    print(f"wrote {stats['spans']:,} spans on {len(stats['threads'])} threads in {len(stats['processes'])} sites "
          f"and {stats['flows']:,} flows, {stats['from_ms']:.6g}-{stats['to_ms']:.6g} ms, to {out}{notes}")
    return 0
