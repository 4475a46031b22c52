"""One wafer-scale processor: its spec, the cost of transformer ops on it, its SimPy model."""

from wafer.model import DETAILS, CoTenant, Unit, WaferStage
from wafer.spec import WAFER_PRESETS, WSE2, WSE3, WaferSpec

__all__ = ["CoTenant", "DETAILS", "Unit", "WAFER_PRESETS",
           "WSE2", "WSE3", "WaferSpec", "WaferStage"]
