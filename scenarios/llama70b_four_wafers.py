"""The headline: Llama3.1-70B pipelined over four WSE-3 wafers in three datacenters."""

import sys

from cluster.commands.cli import ScenarioDefaults, run_scenario_cli

DEFAULTS = ScenarioDefaults(model="llama3.1-70b", wafers=4,
                            sites="santa-clara,santa-clara,stockton,dallas")


def main(argv: list[str] | None = None) -> int:
    return run_scenario_cli("llama70b_four_wafers", DEFAULTS, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
