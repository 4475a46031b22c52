"""`wafersim sweep SPEC.toml`: run a grid of cluster descriptions, one row per point in
`OUT/results.parquet`. A rerun runs only the points not yet done; a failed point is a row
with its error (exit 0); bad input is one line `error: ...` (exit 2)."""

from __future__ import annotations

import sys
from pathlib import Path

from cluster.commands.common import Parser, check_output_folder, guarded
from common.errors import ConfigError


def sweep_parser():
    from cluster.sweep.spec import FIDELITIES

    p = Parser(prog="wafersim sweep", description=__doc__)
    p.add_argument("spec", help="the sweep, in TOML (see scenarios/sweeps/)")
    p.add_argument("-o", "--out", default=None, help="results folder (default: sweeps/SPEC_NAME)")
    p.add_argument("--fidelity", choices=FIDELITIES, default=None, help="override the file's fidelity")
    p.add_argument("--refine", type=int, default=None,
                   help="analytic: re-run in full the N best and N most surprising points")
    p.add_argument("--max-points", type=int, default=None, help="stop after running N points (rerun to go on)")
    p.add_argument("--address", default=None, help="Ray cluster to join (default: $RAY_ADDRESS or a local Ray)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr (none either when it is not a terminal)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return guarded("sweep", lambda: _sweep(argv), interrupted="interrupted; finished points are kept, rerun to go on")


def _sweep(argv: list[str]) -> int:
    from cluster.sweep import load_sweep, run_sweep

    args = sweep_parser().parse_args(argv)
    if args.max_points is not None and args.max_points < 0:
        raise ConfigError(f"--max-points: must be >= 0, got {args.max_points}")
    out = Path(args.out) if args.out else Path("sweeps") / Path(args.spec).stem
    check_output_folder("-o", str(out))
    sweep = load_sweep(args.spec)
    result = run_sweep(sweep, out, fidelity=args.fidelity, refine=args.refine, address=args.address,
                       progress=not args.quiet, max_points=args.max_points, handle_sigterm=True)
    more = "; stopped at --max-points, rerun to go on" if result.stopped else ""
    print(f"sweep: {result.points} points: {len(result.ran)} run, {result.skipped} skipped (done before), "
          f"{result.failed} failed, {result.wall_s:.1f} s -> {result.table}{more}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
