"""A sweep's results: one table row per finished point (its parameters, status, time and what its summary
reports), written as CSV and Parquet, read back with :func:`load_sweep`, and plotted against each swept
parameter with error bars over seeds (:func:`plot_sweep`). Views only: nothing here runs a notebook."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from moa_lab.runs._files import read_results
from moa_lab.sweeps._grid import SWEEP_FILE, Sweep, read_status


def _cell(value):
    """A parameter's value as a table cell: scalars as they are, lists and dicts as compact JSON."""
    return value if value is None or isinstance(value, (str, int, float, bool)) else json.dumps(value)


def _summary_metrics(path: Path) -> dict:
    """What a run summary (a notebook's ``output_path``: JSON of one run, or a batch's JSONL) reports."""

    if path.suffix == ".jsonl":
        lines = read_results(path)
        finals = [len(line.get("final") or "") for line in lines if line.get("status") == "ok"]
        return {
            "prompts": len(lines),
            "failed_prompts": sum(line.get("status") != "ok" for line in lines),
            "calls": sum(line["calls"] for line in lines),
            "cached_calls": sum(line["cached_calls"] for line in lines),
            "tokens": sum(line["prompt_tokens"] + line["completion_tokens"] for line in lines),
            "cost": sum(line["cost"] for line in lines),
            "final_length": sum(finals) / len(finals) if finals else math.nan,
        }
    run = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(run, dict) and isinstance(run.get("metrics"), dict):  # a notebook's own table (08: benchmarks)
        return {str(k): _cell(v) for k, v in run["metrics"].items()}
    if not isinstance(run, dict) or "calls" not in run:
        return {}
    return {
        "calls": run["calls"],
        "failed_calls": run.get("failed_calls"),
        "cached_calls": run.get("cached_calls"),
        "prompt_tokens": run.get("prompt_tokens"),
        "completion_tokens": run.get("completion_tokens"),
        "tokens": (run.get("prompt_tokens") or 0) + (run.get("completion_tokens") or 0),
        "cost": run.get("cost"),
        "run_seconds": run.get("seconds"),
        "final_length": len(run.get("final") or ""),
    }


def _evaluation_metrics(path: Path) -> dict:
    """What an evaluation's ``results.csv`` (notebook 05's ``output_dir``) reports, per configuration."""
    import csv

    out: dict[str, Any] = {}
    with path.open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            for column, name in (("win_rate", "win_rate"), ("lc_win_rate", "lc_win_rate"), ("accuracy", "exact_match")):
                out[f"{name}[{row['config']}]"] = float(row[column]) if row.get(column) else math.nan
            for column in ("calls", "tokens", "cost"):
                out[column] = out.get(column, 0) + float(row[column] or 0)
    return out


def _row(folder: Path, point_id: str, parameters: dict, state: dict) -> dict:
    row = {
        "point": point_id,
        **{k: _cell(v) for k, v in parameters.items()},
        "status": state["status"],
        "error": state["error"],
        "seconds": state["seconds"],
    }
    values = {**parameters, **state.get("outputs", {})}
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        if isinstance(values.get("output_path"), str) and (folder / values["output_path"]).is_file():
            row.update(_summary_metrics(folder / values["output_path"]))
        if isinstance(values.get("output_dir"), str) and (folder / values["output_dir"] / "results.csv").is_file():
            row.update(_evaluation_metrics(folder / values["output_dir"] / "results.csv"))
    return row


def table_of(outdir: Path, points) -> Any:
    """One row per finished point of ``points`` ((id, parameters) pairs, in order): see :func:`sweep_table`."""
    import pandas as pd

    rows = []
    for point_id, parameters in points:
        folder = Path(outdir) / "points" / point_id
        if (state := read_status(folder)) is not None:
            rows.append(_row(folder, point_id, parameters, state))
    return pd.DataFrame(rows)


def sweep_table(sweep: Sweep):
    """One row per finished point (ok or failed), in the spec's order: ``point`` (its folder's name), every
    parameter the sweep gave (lists as JSON), ``status``, ``error``, ``seconds`` (the notebook's wall time),
    then what its summary reports: ``calls``, ``failed_calls``, ``cached_calls``, ``prompt_tokens``,
    ``completion_tokens``, ``tokens``, ``cost``, ``run_seconds``, ``final_length`` (a run's JSON summary); for a
    batch's JSONL ``prompts``, ``failed_prompts`` and the mean ``final_length``; for an evaluation's
    ``results.csv`` ``win_rate[<config>]``, ``lc_win_rate[<config>]`` and ``exact_match[<config>]``."""
    return table_of(sweep.outdir, [(p.id, p.parameters) for p in sweep.points])


def write_table(sweep: Sweep):
    """:func:`sweep_table`, written as ``results.csv`` (and ``results.parquet`` when pyarrow is installed)."""
    import importlib.util

    table = sweep_table(sweep)
    table.to_csv(sweep.outdir / "results.csv", index=False)
    if importlib.util.find_spec("pyarrow") is not None:
        table.to_parquet(sweep.outdir / "results.parquet", index=False)
    return table


def load_sweep(outdir):
    """The table of the sweep in ``outdir`` (:func:`sweep_table`), read from its points' folders alone (the
    notebook need not be there, nor unchanged): what finished is there, also after a sweep was killed."""
    outdir = Path(outdir)
    try:
        saved = json.loads((outdir / SWEEP_FILE).read_text(encoding="utf-8"))
        points = dict(saved["points"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"{str(outdir)!r} holds no sweep ({SWEEP_FILE} is missing or damaged)") from None
    return table_of(outdir, points.items())


def parameter_columns(table) -> list[str]:
    """The table's parameter columns (between ``point`` and ``status``)."""
    columns = list(table.columns)
    return columns[columns.index("point") + 1 : columns.index("status")] if "status" in columns else []


def plot_sweep(table, by: str, metrics: Sequence[str] = ("seconds", "tokens", "cost"), over: str = "seed"):
    """One panel per metric: its mean over ``over`` (the seeds) against the swept parameter ``by``, with the
    standard deviation as error bars, one line per combination of the other swept parameters. Points that
    failed are left out. Returns the matplotlib Figure (a pyplot one: a notebook shows it)."""
    import matplotlib.pyplot as plt

    if by not in parameter_columns(table):
        raise ValueError(
            f"{by!r} is not a parameter of this sweep; its parameters: {', '.join(parameter_columns(table))}"
        )
    ok = table[table["status"] == "ok"]
    metrics = [m for m in metrics if m in ok and ok[m].notna().any()]
    others = [c for c in parameter_columns(ok) if c not in (by, over) and ok[c].nunique() > 1]
    order = list(dict.fromkeys(ok[by]))  # the spec's order
    figure, axes = plt.subplots(
        1, max(len(metrics), 1), squeeze=False, figsize=(4.2 * max(len(metrics), 1), 3.6), layout="constrained"
    )
    axes = axes[0]
    groups = ok.groupby(others, sort=False) if others else [((), ok)]
    for number, (key, group) in enumerate(groups):
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{c}={v}" for c, v in zip(others, key)) or "all points"
        stats = group.groupby(by, sort=False)
        for ax, metric in zip(axes, metrics):
            mean, std = stats[metric].mean(), stats[metric].std().fillna(0.0)
            xs = [order.index(v) + 0.05 * number for v in mean.index]
            ax.errorbar(xs, mean.values, yerr=std.values, marker="o", capsize=4, label=label, color=f"C{number % 10}")
    for ax, metric in zip(axes, metrics):
        ax.set_xticks(range(len(order)), [str(v) for v in order], fontsize=8)
        ax.set_xlabel(by)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} vs {by}" + (f" (mean ± sd over {over}s)" if over in ok else ""), fontsize=9)
    if metrics:
        axes[0].legend(fontsize=7)
    return figure


def quality_columns(table) -> list[str]:
    """The columns that measure quality: ``win_rate[...]``, ``lc_win_rate[...]``, ``exact_match[...]``."""
    return [c for c in table.columns if c.startswith(("win_rate[", "lc_win_rate[", "exact_match["))]


def plot_quality_vs_cost(table, cost: str = "tokens"):
    """Each quality column against ``cost`` (tokens, or dollars: ``cost="cost"``), one point per finished point;
    None when the notebook's summaries report no quality figure."""
    import matplotlib.pyplot as plt

    quality = quality_columns(table)
    if not quality:
        return None
    ok = table[table["status"] == "ok"]
    figure, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for number, column in enumerate(quality):
        ax.scatter(ok[cost], ok[column], label=column, color=f"C{number % 10}")
    ax.set_xlabel(cost)
    ax.set_ylabel("quality, %")
    ax.legend(fontsize=7)
    ax.set_title("Quality vs cost, one point per run", fontsize=9)
    return figure
