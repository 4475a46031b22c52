"""Reading the constants `wafersim calibrate` fits, for any device package."""

from __future__ import annotations

import json
import math
from pathlib import Path

from common.errors import CalibrationError


def read_calibrated(path: Path, key: str, default: float) -> float:
    """A fitted constant from a calibration file written by `wafersim calibrate`; the
    default only while no file exists (a fresh fit, before the first `wafersim calibrate`).

    Raises:
        CalibrationError: the file exists but cannot be read, is not JSON, has no
            `constants.KEY`, or holds no finite number there; the message names the file.
            Never a silent fallback to the default: a run would use other constants than
            the file says it was calibrated with.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return default
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot read the calibration file: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CalibrationError(f"{path}: not a JSON calibration file ({exc}); rerun `wafersim calibrate` "
                               f"or restore it") from None
    constants = data.get("constants") if isinstance(data, dict) else None
    if not isinstance(constants, dict) or key not in constants:
        raise CalibrationError(f"{path}: no constants.{key} in the calibration file; rerun `wafersim calibrate`")
    value = constants[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CalibrationError(f"{path}: constants.{key} must be a finite number, got {value!r}")
    return float(value)
