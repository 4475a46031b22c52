"""Progress of a long run on stderr: simulated time done, events and events/s (tqdm).
Silent when stderr is not a terminal, or with --quiet, so logs and pipes stay clean."""

from __future__ import annotations

import sys

from common.units import PS_PER_S


class RunProgress:
    """Call it with (simulated now in ps, events so far); close it at the end."""

    def __init__(self, label: str, enabled: bool = True) -> None:
        self._bar = None
        self._events = 0
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(desc=label, unit=" sim s", file=sys.stderr, leave=False,
                             bar_format="{desc}: {n:.3f} sim s [{elapsed}{postfix}]")

    def __call__(self, now_ps: int, events: int) -> None:
        if self._bar is None:
            return
        self._events += events
        rate = self._bar.format_dict["elapsed"] or 1e-9
        self._bar.n = now_ps / PS_PER_S
        self._bar.set_postfix_str(f"{self._events:,} events, {self._events / rate:,.0f} events/s", refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
