"""`wafersim convert azure|sharegpt IN -o OUT`: a public LLM trace as a request file
(CSV, Arrow or Parquet, by OUT's suffix) for a simulation to replay.

A user mistake prints one line `error: ...` and exits with code 2, leaving no OUT behind.
"""

from __future__ import annotations

import argparse

from cluster.commands.common import Parser, check_output_file, guarded
from cluster.serving.requestfile import convert_azure, convert_sharegpt, request_file_format, write_request_file
from common.checks import MAX_INT64, MAX_RATE_PER_S, check_number
from common.errors import ConfigError


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="wafersim convert", description="Convert a public LLM trace into a request file.")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="{azure,sharegpt}")  # subparsers share Parser
    azure = kinds.add_parser("azure", help="Azure LLM inference trace CSV (AzurePublicDataset 2023, 2024)")
    sharegpt = kinds.add_parser("sharegpt", help="ShareGPT-style conversations JSON; arrivals drawn Poisson")
    for sub in (azure, sharegpt):
        sub.add_argument("input", metavar="IN")
        sub.add_argument("-o", "--output", required=True, metavar="OUT", help=".csv, .arrow, .feather or .parquet")
        sub.add_argument("--limit", type=int, default=None, help="write the first N requests only")
    sharegpt.add_argument("--rate", type=float, required=True, help="Poisson arrivals per second")
    sharegpt.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str]) -> int:
    """Exit codes: 0 written, 2 bad input (nothing written)."""
    return guarded("", lambda: _convert(argv))


def _convert(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    request_file_format(args.output)  # refused before a long conversion, not after
    check_output_file("-o", args.output)
    if args.limit is not None and args.limit <= 0:
        raise ConfigError(f"--limit: must be > 0, got {args.limit}")
    if args.kind == "azure":
        rows, skipped = convert_azure(args.input)
        note = f" ({skipped} skipped: zero context or generated tokens)"
    else:
        check_number("--rate", args.rate, low=0, above=True, high=MAX_RATE_PER_S, unit="requests/s")
        check_number("--seed", args.seed, integer=True, low=0, high=MAX_INT64)
        rows, note = convert_sharegpt(args.input, args.rate, args.seed), ""
    rows = rows[:args.limit]
    write_request_file(rows, args.output)
    print(f"wrote {len(rows)} request{'' if len(rows) == 1 else 's'} to {args.output}{note}")
    return 0
