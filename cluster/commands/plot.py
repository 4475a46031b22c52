"""`wafersim plot PATH -o OUT.png|svg [--kind K] [--x COL --y COL] [--from-ms A --to-ms B]`:
a figure from a sweep's results table (.parquet, .csv) or from a trace (.arrow).

Kinds: from a table `speed-vs-users`, `throughput-vs-replicas`, `ttft-vs-placement`, `xy`
(any `--y` against any `--x`); from a trace `timeline` (default) and `latency`. The
default for a table is the first of its kinds that finds its columns. A user mistake
prints one line `error: ...` and exits with code 2, leaving no OUT behind.
"""

from __future__ import annotations

import argparse

from cluster.commands.common import Parser, guarded


def parser() -> argparse.ArgumentParser:
    from cluster.results.plots import KINDS, MAX_ROWS

    p = Parser(prog="wafersim plot", description="Plot a sweep's results table or a trace.")
    p.add_argument("path", metavar="PATH", help="a sweep table (.parquet, .csv) or a trace (.arrow)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help=".png or .svg")
    p.add_argument("--kind", choices=KINDS, default=None, help="what to draw (default: by the input)")
    p.add_argument("--x", default=None, metavar="COLUMN", help="a table's column for the x axis")
    p.add_argument("--y", default=None, metavar="COLUMN", help="a table's column for the y axis")
    p.add_argument("--from-ms", type=float, default=None, help="timeline: window start (simulated ms)")
    p.add_argument("--to-ms", type=float, default=None, help="timeline: window end (simulated ms)")
    p.add_argument("--lp", default=None, metavar="GLOB", help="timeline: only LPs matching this glob")
    p.add_argument("--max-rows", type=int, default=MAX_ROWS, help="timeline: at most this many LP rows")
    return p


def main(argv: list[str]) -> int:
    """Exit codes: 0 written, 2 bad input (nothing written)."""
    return guarded("plot", lambda: _plot(argv))


def _plot(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from cluster.results.plots import plot

    drawn = plot(args.path, args.output, kind=args.kind, x=args.x, y=args.y, from_ms=args.from_ms,
                 to_ms=args.to_ms, lp=args.lp, max_rows=args.max_rows)
    what = drawn["kind"]
    if "x" in drawn:
        what += f" ({drawn['y']} vs {drawn['x']}, {drawn['points']} points)"
    notes = "".join(f"; {n}" for n in drawn.get("notes", []))
    print(f"wrote {what} to {args.output}{notes}")
    return 0
