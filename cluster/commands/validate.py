"""`wafersim validate`: every published point, simulated, with its error.

Calibration rows reproduce the points the constants were fitted on; prediction rows
are everything else, reported as they come out. An "at most" row (a published upper
bound) has zero error inside the bound and its overshoot in percent outside it. The
note after the table gives 70B's per-user speed on eight H100s in 16-bit and fp8, and
where a token's time goes.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass

from cluster.commands.calibrate import (
    H100_FACTS,
    H100_FIT_ROW,
    H100_FP8_OVER_FP16,
    H100_MBU_ROWS,
    WSE3_8B_TOKENS_PER_S,
    gpu_point,
    run_point,
    wafer_point,
)
from cluster.commands.common import Parser, guarded
from cluster.serving.plan import plan_gpu_pipeline
from common.errors import ConfigError
from gpu import GpuStepCost
from llm.config import resolve_model
from llm.passes import Pass

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


def validation_rows(overrides: tuple = (), energy: dict | None = None) -> list[Row]:
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
    return rows + h100_rows(overrides) + energy_rows(overrides, energy)


CEREBRAS_POWER = "FACTS.md, Power: Cerebras launch blog, Aug 2024: Llama3.1 inference at about a third of a DGX's power"
ENERGY_USERS = (1, 8, 32, 64, 128, 256)  # where "the users each serves best" is looked for


def joules_per_token(device: str, users: int, overrides: tuple = ()) -> float | None:
    """70B's energy per output token on 4 WSE-3 or 8 H100s (16-bit) at `users`; None where
    the KV cache of that many users does not fit."""
    cfg = wafer_point("llama3.1-70b", 4, users=users, overrides=overrides) if device == "wse-3" else \
        gpu_point("llama3.1-70b", gpus=8, users=users)
    try:
        return run_point(cfg)["joules_per_token"]
    except ConfigError:
        return None


def energy_table(overrides: tuple = ()) -> dict[str, dict[int, float]]:
    return {device: {u: j for u in ENERGY_USERS if (j := joules_per_token(device, u, overrides)) is not None}
            for device in ("wse-3", "h100")}


def energy_rows(overrides: tuple = (), table: dict | None = None) -> list[Row]:
    """Energy per token, WSE-3 over DGX H100, at one user and at the users each serves best."""
    table = table or energy_table(overrides)
    wse, gpu = table["wse-3"], table["h100"]
    return [
        row("llama3.1-70b, 1 user: energy per token, 4 WSE-3 over 8 H100 (16-bit)", "prediction", 1 / 3,
            wse[1] / gpu[1], "x", CEREBRAS_POWER),
        row("llama3.1-70b, each at its best users: energy per token, 4 WSE-3 over 8 H100", "prediction", 1 / 3,
            min(wse.values()) / min(gpu.values()), "x", CEREBRAS_POWER),
    ]


def energy_notes(table: dict) -> list[str]:
    def line(device: str) -> str:
        best = min(table[device], key=table[device].get)
        per_users = ", ".join(f"{u}: {j:.2f}" for u, j in table[device].items())
        return f"{device}: J/token by users {per_users}; best at {best} users"
    return [f"llama3.1-70b energy per token ({line('wse-3')}) ({line('h100')}). A wafer region serves one "
            "pass at a time, so the wafers' throughput (and their energy per token) stops improving once "
            "every region is busy, while a GPU step streams its weights once for the whole batch"]


def h100_rows(overrides: tuple = ()) -> list[Row]:
    """Every documented H100 row at batch 1: the one the constants are fitted on, and the
    rest as predictions, each at its own conditions."""
    fit = H100_FIT_ROW
    rows = [row(fit.label, "calibration", fit.published, fit.simulated(overrides), "ms", fit.source)]
    rows += [row(r.label, "prediction", r.published, r.simulated(overrides), "%", r.source) for r in H100_MBU_ROWS]
    speed = {dtype: run_point(gpu_point("llama3.1-70b", gpus=2, dtype=dtype, overrides=overrides))
             ["tokens_per_s_per_user"] for dtype in ("fp16", "fp8")}
    rows.append(row("llama-70b, 2x H100, 1 user: fp8 over fp16 per-user speed (Databricks 2023)", "prediction",
                    H100_FP8_OVER_FP16, speed["fp8"] / speed["fp16"], "x",
                    H100_FACTS + ": Databricks blog on quantized serving, ~late 2023 (GPU count not "
                    "stated; 2, the fewest that hold 16-bit 70B); medium"))
    return rows


def h100_notes(overrides: tuple = (), gpus: int = 8) -> list[str]:
    """70B on `gpus` H100s, one user: per-user speed against the HBM ceiling, and what a
    token's time is spent on (the step model at mid-generation context)."""
    notes = []
    for dtype in ("fp16", "fp8"):
        cfg = gpu_point("llama3.1-70b", gpus=gpus, dtype=dtype, overrides=overrides)
        speed = run_point(cfg)["tokens_per_s_per_user"]
        model, spec = resolve_model(cfg.model), cfg.device_spec()
        ceiling = gpus * spec.hbm_bytes_per_s / (model.parameters * (1 if dtype == "fp8" else 2))
        ctx = cfg.prompt_tokens + cfg.output_tokens // 2
        decode = [Pass(0, 1, "decode", 1, ctx, True, 0, False)]
        steps = [GpuStepCost(spec, model.layer_shape, model.vocab_size, stage).step(decode)
                 for stage in plan_gpu_pipeline(model, spec, gpus, dtype, cfg.prompt_tokens + cfg.output_tokens)]
        stream, kernels, allreduce = (1e3 * sum(getattr(t, part) for t in steps)
                                      for part in ("stream_s", "kernels_s", "allreduce_s"))
        bound = ("HBM bandwidth" if stream >= kernels + allreduce else
                 "fixed costs: per-kernel launch/sync and all-reduce latency, not HBM")
        notes.append(f"{cfg.model}, {gpus}x H100, 1 user, {dtype}: {speed:.1f} tokens/s per user "
                     f"(HBM ceiling {ceiling:.0f}); a token's {stream + kernels + allreduce:.2f} ms = "
                     f"{stream:.2f} streaming weights and KV + {kernels:.2f} kernel fixed costs + "
                     f"{allreduce:.2f} all-reduces; bound by {bound}")
    return notes


def format_rows(rows: list[Row]) -> str:
    w = max(len(r.name) for r in rows)
    lines = [f"{'point':<{w}} {'role':<11} {'published':>10} {'simulated':>10} {'unit':<14} {'error %':>8}"]
    for r in rows:
        bound = "<= " if r.comparison == "at_most" else ""
        lines.append(f"{r.name:<{w}} {r.role:<11} {bound + format(r.published, '.4g'):>10} "
                     f"{r.simulated:>10.4g} {r.unit:<14} {r.error_pct:>8.2f}")
    return "\n".join(lines)


def analytic_validation(as_json: bool) -> int:
    """`wafersim validate --analytic`: the analytic tier against the event model on a grid of
    points (users, wafers, sites, replicas), with the error on per-user speed and aggregate
    throughput and the reason where one is over 10%."""
    from cluster.analytic.grid import format_grid, rows_json, run_grid

    rows = run_grid()
    print(format_grid(rows))
    if as_json:
        print(json.dumps({"rows": rows_json(rows)}, sort_keys=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return guarded("validate", lambda: _validate(argv))


def _validate(argv: list[str]) -> int:
    p = Parser(prog="wafersim validate", description=__doc__.splitlines()[0])
    p.add_argument("--analytic", action="store_true", help="the analytic tier against the event model")
    p.add_argument("--json", action="store_true", help="the rows and notes as one JSON object on the last line")
    args = p.parse_args(argv)  # an unknown flag is an error, not a silent no-op
    if args.analytic:
        return analytic_validation(args.json)
    table = energy_table()
    rows, notes = validation_rows(energy=table), h100_notes() + energy_notes(table)
    print(format_rows(rows))
    print("\n".join(["", "note:", *notes]))
    if args.json:
        print(json.dumps({"rows": [asdict(r) for r in rows], "notes": notes}, sort_keys=True))
    return 0
