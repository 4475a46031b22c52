"""The one check for a number a user gives (a flag, a `--spec`/`--link` field, a TOML key,
a cell of a request file, a `config.json` field): finite, an integer where the model needs
one, inside its range. The message is one line naming the field.

The upper bounds are deliberate: past them a run would not end in any useful time, or its
picosecond clock (int64, about 106 days) would overflow. Each is named in the message.
"""

from __future__ import annotations

import math
import numbers

from common.errors import ConfigError

# Requests a population (or a pipeline scenario) sends: each is made before the run.
MAX_REQUESTS = 10_000_000
# Tokens of one request's prompt or output: the longest context any model claims (Llama 4
# Scout's 10M; Llama 3.1's is 131,072).
MAX_TOKENS = 10_000_000
# Arrivals per second: one a microsecond.
MAX_RATE_PER_S = 1e6
# A link's latency: one second (a geostationary hop is about a quarter of one).
MAX_LATENCY_PS = 10**12
# Times a user gives in seconds (arrivals in a request file, think times): about 11.6 days.
MAX_TIME_S = 1e6
# Stretching arrival times (`time_scale`): the arrivals it makes are bounded where they are made.
MAX_TIME_SCALE = 1e12
# Wafers in a pipeline, and replicas of one: each is simulated.
MAX_WAFERS = 1024
MAX_REPLICAS = 10_000
# Seeds, sessions and other ids: what an int64 column holds.
MAX_INT64 = 2**63 - 1


def check_number(where: str, value: object, *, integer: bool = False, low: float | None = None,
                 high: float | None = None, above: bool = False, unit: str = "", why: str = "",
                 error: type[Exception] = ConfigError) -> int | float:
    """`value` if it is a finite number (an int, never a bool or 4.0, where `integer`) with
    `low <= value` (`low < value` if `above`) and `value <= high`; else `error` with one
    line `where: must be ..., got VALUE`; `unit` and `why` follow a broken upper bound.

    Examples:
        >>> check_number("--users", 4, integer=True, low=1)
        4
        >>> check_number("--rate", float("nan"), low=0)
        Traceback (most recent call last):
        ...
        common.errors.ConfigError: --rate: must be a finite number, got nan
    """
    def fail(problem: str) -> Exception:
        return error(f"{where}: must be {problem}, got {value!r}")

    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise fail("an integer" if integer else "a number")
    if integer and not isinstance(value, numbers.Integral):
        raise fail("an integer")
    if not integer and not math.isfinite(value):
        raise fail("a finite number")
    if low is not None and (value <= low if above else value < low):
        raise fail(f"{'>' if above else '>='} {low:g}")
    if high is not None and value > high:
        bound = f"{high:,}" if isinstance(high, int) else f"{high:g}"
        raise fail(f"at most {bound}{' ' + unit if unit else ''}{f' ({why})' if why else ''}")
    return value
