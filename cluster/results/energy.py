"""Energy: what each device drew over the run, from what the simulation had it do.

Models: a wafer system draws its idle power the whole run, plus (busy - idle) / cores per
core for the core-time its regions spent computing (so a wafer whose every core computes
all run draws its busy power); a GPU group draws idle power per GPU and its node's share
of the chassis, plus (busy - idle) per GPU while a step runs; a link costs its energy per
bit for every bit it carries. Each request is charged the dynamic energy it caused, and
each device's idle energy is shared among the requests in proportion to their dynamic
energy on it (a device nobody used keeps its idle energy unattributed).
Ignores: the frontend, router and user hosts, cooling beyond what the system figures
include (PUE), DVFS, and power that depends on what a core computes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from cluster.engine.graph import LPSpec
from cluster.results.trace import ENERGY_SCHEMA, float_values, int_values, table_batch
from cluster.serving.lps import GpuConfig, LinkConfig, WaferConfig
from common.errors import ConfigError
from common.units import NULL, PS_PER_S

BITS_PER_BYTE = 8
J_PER_PJ = 1e-12
J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class Prices:
    """What a user pays: electricity, and capital per device-hour (a wafer system or a GPU)."""

    usd_per_kwh: float | None = None
    usd_per_device_hour: float | None = None

    def __post_init__(self) -> None:
        for flag, value in (("--price-kwh", self.usd_per_kwh), ("--price-hour", self.usd_per_device_hour)):
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"{flag}: must be a finite number >= 0, got {value}")


@dataclass(frozen=True)
class LpEnergy:
    lp: str
    datacenter: str
    device: str  # "wafer", "gpu" or "link"
    devices: int  # what a price per device-hour counts: a wafer system, a GPU; a link: 0
    idle_w: float  # its floor: drawn the whole run
    peak_w: float  # its ceiling: every core (GPU, lane) busy all run
    idle_j: float
    dynamic_j: float
    by_request_j: dict[int, float]  # dynamic energy each request caused

    @property
    def energy_j(self) -> float:
        return self.idle_j + self.dynamic_j


def lp_energy(lp: LPSpec, activity: dict, end_ps: int) -> LpEnergy | None:
    """One LP's energy over [0, end_ps], or None for an LP that is not a device."""
    run_s = end_ps / PS_PER_S
    config = lp.config
    if isinstance(config, WaferConfig):
        spec = config.spec
        per_core_ps_j = (spec.system_busy_w - spec.system_idle_w) / spec.cores / PS_PER_S
        by_request = {r: ps * per_core_ps_j for r, ps in activity.get("core_ps_by_request", {}).items()}
        return LpEnergy(lp.name, lp.datacenter, "wafer", 1, spec.system_idle_w, spec.system_busy_w,
                        spec.system_idle_w * run_s, sum(by_request.values()), by_request)
    if isinstance(config, GpuConfig):
        spec, gpus = config.spec, config.plan.tp
        chassis_w = spec.node_overhead_w * gpus / spec.gpus_per_node  # its share of the DGX
        per_ps_j = (spec.busy_w - spec.idle_w) * gpus / PS_PER_S
        by_request = {r: ps * per_ps_j for r, ps in activity.get("busy_ps_by_request", {}).items()}
        idle_w = spec.idle_w * gpus + chassis_w
        return LpEnergy(lp.name, lp.datacenter, "gpu", gpus, idle_w, spec.busy_w * gpus + chassis_w,
                        idle_w * run_s, sum(by_request.values()), by_request)
    if isinstance(config, LinkConfig):
        spec = config.spec
        per_byte_j = spec.energy_pj_per_bit * BITS_PER_BYTE * J_PER_PJ
        by_request = {r: b * per_byte_j for r, b in activity.get("bytes_by_request", {}).items()}
        return LpEnergy(lp.name, lp.datacenter, "link", 0, 0.0, spec.bits_per_s * spec.energy_pj_per_bit * J_PER_PJ,
                        0.0, sum(by_request.values()), by_request)
    return None


def energy_by_lp(lps: Iterable[LPSpec], activity: dict[str, dict], end_ps: int) -> list[LpEnergy]:
    return [e for lp in lps if (e := lp_energy(lp, activity.get(lp.name, {}), end_ps)) is not None]


def request_energy_j(energies: list[LpEnergy]) -> dict[int, float]:
    """Each request's energy: what it caused, plus its share of every device's idle energy."""
    out: dict[int, float] = {}
    for e in energies:
        caused = sum(j for r, j in e.by_request_j.items() if r != NULL)
        for r, j in e.by_request_j.items():
            if r == NULL:
                continue
            share = e.idle_j * j / caused if caused else 0.0
            out[r] = out.get(r, 0.0) + j + share
    return out


def energy_batch(energies: list[LpEnergy]) -> pa.RecordBatch:
    rows = [(e.lp, e.datacenter, e.device, e.devices, e.idle_w, e.peak_w, e.idle_j, e.dynamic_j, e.energy_j)
            for e in energies]
    columns = [list(c) for c in zip(*rows)] if rows else [[] for _ in ENERGY_SCHEMA]
    return table_batch(ENERGY_SCHEMA, columns)


def energy_summary(path: Path, output_tokens: int, run_s: float, meta: dict,
                   prices: Prices | None = None) -> dict:
    """The summary's energy and cost figures from the energy table at `path` (absent: a
    trace from before energy was modelled, and no figures). Prices: given, else the run's."""
    if not path.exists():
        return {}
    with pa.memory_map(str(path)) as src:
        table = pa.ipc.open_file(src).read_all()
    energy_j = float_values(table.column("energy_j"))
    total_j = float(energy_j.sum())
    sites = table.column("datacenter").to_pylist()
    kinds = table.column("device").to_pylist()
    ran = meta.get("prices", {})
    given = prices or Prices()
    prices = Prices(given.usd_per_kwh if given.usd_per_kwh is not None else ran.get("usd_per_kwh"),
                    given.usd_per_device_hour if given.usd_per_device_hour is not None
                    else ran.get("usd_per_device_hour"))
    device_hours = int(int_values(table.column("devices").combine_chunks()).sum()) * run_s / 3600
    cost = None
    if prices != Prices() and output_tokens:
        usd = (prices.usd_per_kwh or 0.0) * total_j / J_PER_KWH + (prices.usd_per_device_hour or 0.0) * device_hours
        cost = usd / output_tokens * 1e6
    return {
        "energy_j": total_j,
        "joules_per_token": total_j / output_tokens if output_tokens else None,
        "avg_power_kw": total_j / run_s / 1e3 if run_s else None,
        "energy_j_by_site": {s: float(energy_j[[x == s for x in sites]].sum()) for s in sorted(set(sites))},
        "energy_j_by_device": {k: float(energy_j[[x == k for x in kinds]].sum()) for k in sorted(set(kinds))},
        "device_hours": device_hours,
        "usd_per_kwh": prices.usd_per_kwh,
        "usd_per_device_hour": prices.usd_per_device_hour,
        "usd_per_million_tokens": cost,
    }
