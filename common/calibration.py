"""Reading the constants `wafersim calibrate` fits, for any device package."""

from __future__ import annotations

import json
from pathlib import Path


def read_calibrated(path: Path, key: str, default: float) -> float:
    """A fitted constant from a calibration file written by `wafersim calibrate`; the
    default only while no file exists (a fresh fit)."""
    try:
        return float(json.loads(path.read_text())["constants"][key])
    except (OSError, KeyError, ValueError):
        return default
