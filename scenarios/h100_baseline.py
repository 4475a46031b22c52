"""The GPU baseline: a model on DGX H100 nodes, tensor parallel over NVLink inside a node,
pipelined across nodes when it does not fit one."""

import sys

from cluster.commands.cli import ScenarioDefaults, run_scenario_cli

DEFAULTS = ScenarioDefaults(model="llama3.1-70b", wafers=1, sites="santa-clara", device="h100", gpus=8)


def main(argv: list[str] | None = None) -> int:
    return run_scenario_cli("h100_baseline", DEFAULTS, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
