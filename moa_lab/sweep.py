"""Sweeps: a notebook run once per point of a grid of its parameters, several at once, collected into one table.

A spec (a dict, or a YAML or JSON file) gives fixed ``parameters``, a ``grid`` (every combination of its lists),
a ``zip`` (lists walked together) and ``seeds`` (repeats, for variance: the notebook's ``seed`` parameter)::

    parameters: {max_tokens: 16}
    grid: {layers: [2, 3], proposers: [[smollm2-135m, gemma3-270m], [smollm2-135m, smollm2-135m]]}
    seeds: [0, 1]

Each point runs the notebook under papermill in its own folder, ``OUTDIR/points/<slug>-<hash>/`` (the hash is of
the notebook's content and the point's parameters): the executed ``notebook.ipynb``, the notebook's JSON summary
(its ``output_path``, set to ``summary.json`` there), optionally ``notebook.html``, and ``status.json``, written
last. A point with a ``status.json`` is finished: a rerun of the same sweep skips it (``retry_failed`` runs the
failed ones again); a point killed mid-way has none and runs again from scratch, so each point is in the table
once. The kernels share one embedded server (started here, when the backend is the local one) and the answers
cache, so points that make the same calls make them once. Everything is checked before any kernel starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Mapping

from .jsonl import dumps
from .logs import log
from .sweep_plan import OUTPUTS, Point, Sweep, SweepSummary, outputs, plan_sweep, read_spec
from .sweep_results import (STATUS_FILE, SWEEP_FILE, load_sweep, plot_quality_vs_cost, plot_sweep, quality_columns,
                            sweep_table, write_table)

__all__ = ["Point", "Sweep", "SweepSummary", "load_sweep", "plan_sweep", "plot_quality_vs_cost", "plot_sweep",
           "quality_columns", "read_spec", "run_sweep", "run_sweep_sync", "sweep_table", "write_table"]


#: A parameter so named is a path (``prompts_path``, ``tasks_path``...).
PATH_SUFFIXES = ("_path", "_dir", "_file")


def _inputs(parameters: dict) -> dict:
    """Parameters as a point's kernel gets them: a path parameter (named ``*_path``, ``*_dir`` or ``*_file``) that
    is relative and names a file or folder that exists where the sweep runs is made absolute, since each kernel
    runs in its point's folder. Other values (a prompt that happens to name a file) are passed as they are."""
    out = {}
    for name, value in parameters.items():
        if (isinstance(value, str) and value and not os.path.isabs(value) and name not in OUTPUTS
                and name.endswith(PATH_SUFFIXES)):
            with contextlib.suppress(OSError, ValueError):
                if Path(value).exists():
                    value = str(Path(value).resolve())
        out[name] = value
    return out


def _execute(sweep: Sweep, point: Point, html: bool) -> dict:
    """Run one point's notebook (blocking: in a thread); write its status last; return the status."""
    import papermill

    folder = sweep.folder(point)
    shutil.rmtree(folder, ignore_errors=True)  # killed mid-way, or failed and retried: it starts clean
    folder.mkdir(parents=True)
    parameters = {**_inputs(point.parameters), **outputs(sweep, point)}
    executed = folder / "notebook.ipynb"
    t0 = time.perf_counter()
    error = None
    try:  # the kernel runs in the point's folder (papermill's cwd= would chdir this whole process: not per thread)
        papermill.execute_notebook(str(sweep.notebook), str(executed), parameters=parameters, progress_bar=False,
                                   resources={"metadata": {"path": str(folder)}},
                                   extra_arguments=["--IPKernelApp.log_level=ERROR"])  # no start-up chatter
    except papermill.PapermillExecutionError as exc:
        error = f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}"
    except Exception as exc:  # noqa: BLE001 - a kernel that died, a notebook that cannot be written...
        error = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - t0
    if html and executed.exists():
        with contextlib.suppress(Exception):  # an export that fails costs the HTML only
            from nbconvert import HTMLExporter

            body, _ = HTMLExporter().from_filename(str(executed))
            (folder / "notebook.html").write_text(body, encoding="utf-8")
    status = {"id": point.id, "status": "ok" if error is None else "failed", "error": error,
              "seconds": round(seconds, 3), "finished": time.time(), "parameters": point.parameters,
              "outputs": outputs(sweep, point)}
    tmp = folder / (STATUS_FILE + ".tmp")
    tmp.write_text(dumps(status, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, folder / STATUS_FILE)  # the point is finished when this file exists, whole
    return status


@contextlib.contextmanager
def _kernel_environment():
    """What every kernel of the sweep inherits: the embedded server, started here once (``MOA_LAB_LOCAL_URL``
    names it) when the environment chooses the local backend, and the answers cache and model folder as absolute
    paths (each kernel runs in its point's folder)."""
    from .backends import get_backend

    changes = {}
    for name in ("MOA_LAB_CACHE", "MOA_LAB_MODEL_DIR"):
        value = os.environ.get(name)
        if value and value.strip().lower() not in ("off", "0", "false", "no", "none") and not os.path.isabs(value):
            changes[name] = str(Path(value).expanduser().resolve())
    saved = {name: os.environ.get(name) for name in ("MOA_LAB_CACHE", "MOA_LAB_MODEL_DIR", "MOA_LAB_LOCAL_URL")}
    os.environ.update(changes)
    try:
        backend = get_backend()
        if backend.kind == "local" and not backend.server.attached:
            os.environ["MOA_LAB_LOCAL_URL"] = backend.server.start()  # started already: see run_sweep
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _write_sweep_file(sweep: Sweep) -> None:
    sweep.outdir.mkdir(parents=True, exist_ok=True)
    record = {"moa_lab_sweep": 1, "notebook": str(sweep.notebook), "notebook_hash": sweep.notebook_hash,
              "spec": sweep.spec, "points": {p.id: p.parameters for p in sweep.points}}
    tmp = sweep.outdir / (SWEEP_FILE + ".tmp")
    tmp.write_text(dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, sweep.outdir / SWEEP_FILE)


async def run_sweep(
    notebook: str | os.PathLike,
    spec: Mapping | str | os.PathLike,
    outdir: str | os.PathLike,
    *,
    jobs: int = 2,
    retry_failed: bool = False,
    html: bool = False,
    progress: bool = True,
) -> SweepSummary:
    """Run every point of the sweep that has not finished, ``jobs`` kernels at once, then write the table
    (``results.csv``, and ``results.parquet`` when pyarrow is installed) and return it in the summary.

    Checked first (:func:`plan_sweep`): nothing runs or is written for a bad spec. Cost: one notebook run per
    point not finished before (failed ones too with ``retry_failed``); every model call the notebook makes,
    none for answers in the answers cache (shared by the kernels with the embedded server)."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1 (kernels at once), got {jobs!r}")
    sweep = plan_sweep(notebook, spec, outdir)
    if sweep.changed:
        log.warning("%s", sweep.changed)
    summary = SweepSummary(sweep.outdir, len(sweep.points))
    todo = []
    for point in sweep.points:
        state = sweep.status(point)
        if state is None or retry_failed and state["status"] != "ok":
            todo.append(point)
    summary.skipped = len(sweep.points) - len(todo)
    t0 = time.perf_counter()
    _write_sweep_file(sweep)
    from .display import progress_bar

    bar = progress_bar(len(sweep.points), summary.skipped, progress and bool(todo), "sweep", "point")
    running = 0
    limit = asyncio.Semaphore(jobs)

    async def one(point: Point) -> None:
        nonlocal running
        async with limit:
            running += 1
            if bar is not None:
                bar.set_postfix(done=summary.done, failed=summary.failed, running=running)
            try:
                state = await asyncio.to_thread(_execute, sweep, point, html)
            finally:
                running -= 1
            summary.done += state["status"] == "ok"
            summary.failed += state["status"] != "ok"
            if bar is not None:
                bar.set_postfix(done=summary.done, failed=summary.failed, running=running, refresh=False)
                bar.update(1)

    try:
        if todo:
            from .backends import get_backend

            await get_backend().ready()  # the embedded server, if the kernels use it: started once, here
            with _kernel_environment():
                await asyncio.gather(*(one(point) for point in todo))
    finally:
        if bar is not None:
            bar.close()
        summary.seconds = time.perf_counter() - t0
    summary.table = write_table(sweep)
    return summary


def run_sweep_sync(*args, **kwargs) -> SweepSummary:
    """:func:`run_sweep` from synchronous code (a script, or a cell without ``await``)."""
    from ._sync import run_sync

    return run_sync(run_sweep(*args, **kwargs))
