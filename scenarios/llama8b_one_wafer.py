"""Llama3.1-8B on one WSE-3 wafer in Santa Clara."""

import sys

from cluster.commands.cli import ScenarioDefaults, run_scenario_cli

DEFAULTS = ScenarioDefaults(model="llama3.1-8b", wafers=1, sites="santa-clara")


def main(argv: list[str] | None = None) -> int:
    return run_scenario_cli("llama8b_one_wafer", DEFAULTS, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
