"""Sweeps: a grid over a cluster description's fields, each point one run (event points as
Ray tasks, analytic points in a loop), the results one Parquet table, resumable."""

from cluster.sweep.runner import SweepResult, run_sweep
from cluster.sweep.spec import Point, SweepSpec, load_sweep, sweep_from_dict

__all__ = ["Point", "SweepResult", "SweepSpec", "load_sweep", "run_sweep", "sweep_from_dict"]
