"""`wafersim validate`: every published point, simulated, with its error.

Calibration rows reproduce the points the constants were fitted on; prediction rows
are everything else, reported as they come out. An "at most" row (a published upper
bound) has zero error inside the bound and its overshoot in percent outside it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass

from cluster.commands.calibrate import (
    H100_70B_HBM_UTIL,
    WSE3_8B_TOKENS_PER_S,
    gpu_point,
    hbm_utilization,
    run_point,
    wafer_point,
)

HOT_CHIPS = "FACTS.md: How Cerebras serves Llama 3.1 (Hot Chips 2024, launch blog Aug 2024)"


@dataclass(frozen=True)
class Row:
    name: str
    role: str  # "calibration" or "prediction"
    published: float
    simulated: float
    unit: str
    error_pct: float
    source: str
    comparison: str = "about"  # or "at_most"


def row(name: str, role: str, published: float, simulated: float, unit: str, source: str,
        comparison: str = "about") -> Row:
    if comparison == "at_most":
        error = max(0.0, (simulated - published) / published * 100)
    else:
        error = (simulated - published) / published * 100
    return Row(name, role, published, simulated, unit, round(error, 2), source, comparison)


def validation_rows(overrides: tuple = ()) -> list[Row]:
    rows = []
    wse_8b = run_point(wafer_point("llama3.1-8b", 1, overrides=overrides))
    rows.append(row("llama3.1-8b, 1 WSE-3, 1 user", "calibration", WSE3_8B_TOKENS_PER_S,
                    wse_8b["tokens_per_s_per_user"], "tokens/s/user", HOT_CHIPS))
    wse_70b = run_point(wafer_point("llama3.1-70b", 4, overrides=overrides))
    rows.append(row("llama3.1-70b, 4 WSE-3 in one site, 1 user", "prediction", 450.0,
                    wse_70b["tokens_per_s_per_user"], "tokens/s/user", HOT_CHIPS))
    rows.append(row("llama3.1-70b, 4 WSE-3: inter-wafer hops share of a token's latency", "prediction", 1.0,
                    100 * wse_70b["link_share_of_tpot"], "%", HOT_CHIPS, "at_most"))
    wse_70b_32 = run_point(wafer_point("llama3.1-70b", 4, users=32, overrides=overrides))
    slowdown = 100 * (1 - wse_70b_32["tokens_per_s_per_user"] / wse_70b["tokens_per_s_per_user"])
    rows.append(row("llama3.1-70b, 4 WSE-3: per-user slowdown at 32 users vs 1", "prediction", 10.0,
                    slowdown, "%", HOT_CHIPS + ': "up to 32 users without harming the latency"', "at_most"))
    h100_8b = run_point(gpu_point("llama3.1-8b", gpus=1))
    rows.append(row("llama3.1-8b, 1 user: WSE-3 over one cloud H100, per-user speed", "prediction", 20.0,
                    wse_8b["tokens_per_s_per_user"] / h100_8b["tokens_per_s_per_user"], "x",
                    HOT_CHIPS + ": 20x faster than cloud H100 (Azure)"))
    for gpus, util in H100_70B_HBM_UTIL.items():
        cfg = gpu_point("llama3.1-70b", gpus=gpus)
        rows.append(row(f"llama-70b on DGX H100, {gpus} GPUs, 1 user: HBM bandwidth used", "calibration",
                        100 * util, 100 * hbm_utilization(cfg, run_point(cfg)), "%",
                        "FACTS.md: NVIDIA H100 (Hot Chips 2024)"))
    return rows


def format_rows(rows: list[Row]) -> str:
    lines = [f"{'point':<72} {'role':<11} {'published':>10} {'simulated':>10} {'unit':<14} {'error %':>8}"]
    for r in rows:
        bound = "<= " if r.comparison == "at_most" else ""
        lines.append(f"{r.name:<72} {r.role:<11} {bound + format(r.published, '.4g'):>10} "
                     f"{r.simulated:>10.4g} {r.unit:<14} {r.error_pct:>8.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rows = validation_rows()
    print(format_rows(rows))
    if "--json" in argv:
        print(json.dumps({"rows": [asdict(r) for r in rows]}, sort_keys=True))
    return 0
