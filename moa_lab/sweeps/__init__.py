"""Sweeps: a notebook run once per point of a grid of its parameters, several kernels at once, collected into one
table. :mod:`moa_lab.sweeps._grid` checks a spec and lists its points (nothing runs); :mod:`moa_lab.sweeps._run` runs
them (papermill kernels sharing one embedded server and cache); :mod:`moa_lab.sweeps._table` reads the folders
back into a table and plots it. ``moa_lab.sweep`` is the same API under its first name."""

from moa_lab.sweeps._grid import Point, Sweep, SweepSummary, plan_sweep, read_spec
from moa_lab.sweeps._run import run_sweep, run_sweep_sync
from moa_lab.sweeps._table import (
    load_sweep,
    plot_quality_vs_cost,
    plot_sweep,
    quality_columns,
    sweep_table,
    write_table,
)

__all__ = [
    "Point",
    "Sweep",
    "SweepSummary",
    "load_sweep",
    "plan_sweep",
    "plot_quality_vs_cost",
    "plot_sweep",
    "quality_columns",
    "read_spec",
    "run_sweep",
    "run_sweep_sync",
    "sweep_table",
    "write_table",
]
