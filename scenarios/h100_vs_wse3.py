"""The same workload on WSE-3 wafers (as few as hold the model, one site) and on DGX H100
(tensor parallel over --gpus, pipelined across nodes if needed), side by side."""

from __future__ import annotations

import json
import sys
import tempfile

from cluster.commands.common import Parser
from cluster.commands.scenario import RunOptions, ScenarioConfig, run_scenario
from cluster.results.energy import Prices
from cluster.serving.plan import plan_pipeline
from common.errors import ConfigError, SimError
from llm.config import resolve_model
from wafer import WSE3

KEYS = ("tokens_per_s_per_user", "aggregate_tokens_per_s", "ttft_ms_p50", "tpot_ms_p50", "requests_completed",
        "sim_time_s", "joules_per_token", "avg_power_kw", "usd_per_million_tokens")


def fewest_wafers(model: str, kv_tokens: int) -> int:
    """The smallest pipeline of WSE-3 wafers the planner accepts."""
    config = resolve_model(model)
    for wafers in range(1, config.num_hidden_layers + 3):
        try:
            plan_pipeline(config, WSE3, wafers, kv_tokens)
            return wafers
        except ConfigError:
            continue
    raise ConfigError(f"--model: {model} fits no pipeline of WSE-3 wafers")


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="wafersim run h100_vs_wse3", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="llama3.1-8b")
    p.add_argument("--users", type=int, default=1)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--output-tokens", type=int, default=128)
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--price-kwh", type=float, default=None, help="USD per kWh")
    p.add_argument("--price-hour-wafer", type=float, default=None, help="USD per CS-3 system-hour")
    p.add_argument("--price-hour-gpu", type=float, default=None, help="USD per H100-hour")
    p.add_argument("--json", action="store_true")
    try:
        args = p.parse_args(argv)
        prices = [Prices(args.price_kwh, args.price_hour_wafer), Prices(args.price_kwh, args.price_hour_gpu)]
        wafers = fewest_wafers(args.model, args.users * (args.prompt_tokens + args.output_tokens))
        common = dict(model=args.model, users=args.users, prompt_tokens=args.prompt_tokens,
                      output_tokens=args.output_tokens, detail="stage")
        runs = {
            f"wse-3 x{wafers}": ScenarioConfig("h100_vs_wse3", wafers=wafers, sites=("santa-clara",) * wafers,
                                               **common),
            f"h100 x{args.gpus}": ScenarioConfig("h100_vs_wse3", wafers=1, sites=("santa-clara",), device="h100",
                                                gpus=args.gpus, **common),
        }
        with tempfile.TemporaryDirectory() as d:
            out = {name: run_scenario(cfg, RunOptions(trace=f"{d}/{i}.arrow", prices=prices[i]))
                   for i, (name, cfg) in enumerate(runs.items())}
    except (ConfigError, SimError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    names = list(out)
    speedup = out[names[0]]["tokens_per_s_per_user"] / out[names[1]]["tokens_per_s_per_user"]
    print(f"{args.model}, {args.users} user(s), {args.prompt_tokens} prompt + {args.output_tokens} output tokens")
    print(f"  {'':<24}" + "".join(f"{n:>16}" for n in names))
    for key in KEYS:
        print(f"  {key:<24}" + "".join(f"{out[n][key]:>16.4g}" if out[n][key] is not None else f"{'-':>16}"
                                       for n in names))
    energy = out[names[0]]["joules_per_token"] / out[names[1]]["joules_per_token"]
    print(f"  per-user speed, wafer over GPU: {speedup:.2f}x; energy per token, wafer over GPU: {energy:.2f}x")
    if args.json:
        print(json.dumps({"runs": {n: {k: out[n][k] for k in KEYS} for n in names},
                          "wse3_over_h100_per_user": speedup, "wse3_over_h100_joules_per_token": energy},
                         sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
