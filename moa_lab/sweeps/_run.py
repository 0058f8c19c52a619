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

Over 300 lines: running points whole: kernels and their environment, Ctrl-C, the shared server, a full disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import os
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from moa_lab._backends import get_backend
from moa_lab._jsonl import dumps
from moa_lab._logs import log
from moa_lab._rendering import progress_bar
from moa_lab._sync import synced
from moa_lab.engine._local import LocalServerError
from moa_lab.engine._models import absolute_env
from moa_lab.runs._files import FolderLock, OutputError, probe
from moa_lab.sweeps._grid import OUTPUTS, STATUS_FILE, SWEEP_FILE, Point, Sweep, SweepSummary, outputs, plan_sweep
from moa_lab.sweeps._kernel import kernel_manager_class
from moa_lab.sweeps._table import write_table

#: A parameter so named is a path (``prompts_path``, ``tasks_path``...).
PATH_SUFFIXES = ("_path", "_dir", "_file")


def _inputs(parameters: dict) -> dict:
    """Parameters as a point's kernel gets them: a path parameter (named ``*_path``, ``*_dir`` or ``*_file``) that
    is relative and names a file or folder that exists where the sweep runs is made absolute, since each kernel
    runs in its point's folder. Other values (a prompt that happens to name a file) are passed as they are."""
    out = {}
    for name, value in parameters.items():
        if (
            isinstance(value, str)
            and value
            and not os.path.isabs(value)
            and name not in OUTPUTS
            and name.endswith(PATH_SUFFIXES)
        ):
            with contextlib.suppress(OSError, ValueError):
                if Path(value).exists():
                    value = str(Path(value).resolve())
        out[name] = value
    return out


#: Errors of a disk that cannot take more (full, over quota, a file too large, read-only): the sweep stops.
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


class _Kernels:
    """The kernels a sweep's points run in, so that an interrupted sweep can stop them (papermill starts each in
    its own process, and runs it in a thread that cannot be cancelled)."""

    def __init__(self) -> None:
        self.managers: set = set()
        self.stopping = threading.Event()

    def manager_class(self):
        kernels = self

        class Tracked(kernel_manager_class()):  # in this Python, whatever Jupyter finds under "python3"
            async def _async_launch_kernel(self, kernel_cmd, **kw):
                if kernels.stopping.is_set():  # the sweep is ending: no new kernel
                    raise RuntimeError("the sweep is stopping")
                kernels.managers.add(self)
                return await super()._async_launch_kernel(kernel_cmd, **kw)

        return Tracked

    def stop_all(self) -> None:
        """Kill every kernel still running (their points are left unfinished)."""
        self.stopping.set()
        for manager in list(self.managers):
            process = getattr(manager.provisioner, "process", None)
            if process is not None and process.poll() is None:
                with contextlib.suppress(OSError):
                    process.kill()


def _own_loop(function, *args, **kwargs):
    """``function`` (papermill) run with an event loop of its own, closed after. jupyter_core keeps the loop its
    blocking calls run in a context variable, and ``asyncio.to_thread`` copies the caller's context: two points at
    once (or a point after a notebook run in the caller's thread) would be handed the same loop, and all but one
    would fail with "This event loop is already running" (their kernel's start never awaited). An empty context
    makes jupyter_core make a new one here."""
    from jupyter_core.utils import ensure_event_loop

    def run():
        loop = ensure_event_loop()  # new: nothing in this context has one
        try:
            return function(*args, **kwargs)
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    return contextvars.Context().run(run)


def _execute(sweep: Sweep, point: Point, html: bool, kernels: _Kernels) -> dict:
    """Run one point's notebook (blocking: in a thread) and return its status, written by the caller. OSError
    when OUTDIR cannot be written (a full disk); the point is then left unfinished."""
    import papermill

    folder = sweep.folder(point)
    shutil.rmtree(folder, ignore_errors=True)  # killed mid-way, or failed and retried: it starts clean
    folder.mkdir(parents=True)
    parameters = {**_inputs(point.parameters), **outputs(sweep, point)}
    executed = folder / "notebook.ipynb"
    t0 = time.perf_counter()
    error = None
    try:  # the kernel runs in the point's folder (papermill's cwd= would chdir this whole process: not per thread)
        _own_loop(
            papermill.execute_notebook,
            str(sweep.notebook),
            str(executed),
            parameters=parameters,
            progress_bar=False,
            resources={"metadata": {"path": str(folder)}},
            kernel_manager_class=kernels.manager_class(),
            extra_arguments=["--IPKernelApp.log_level=ERROR"],  # no start-up chatter
        )
    except papermill.PapermillExecutionError as exc:
        error = f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}"
    except OSError as exc:
        if exc.errno in DISK_ERRORS:
            raise
        error = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 - a kernel that died, a notebook that cannot be written...
        error = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - t0
    if html and executed.exists():
        with contextlib.suppress(Exception):  # an export that fails costs the HTML only
            from nbconvert import HTMLExporter

            body, _ = HTMLExporter().from_filename(str(executed))
            (folder / "notebook.html").write_text(body, encoding="utf-8")
    return {
        "id": point.id,
        "status": "ok" if error is None else "failed",
        "error": error,
        "seconds": round(seconds, 3),
        "finished": time.time(),
        "parameters": point.parameters,
        "outputs": outputs(sweep, point),
    }


def _write_status(folder: Path, status: dict) -> None:
    """The point is finished when ``status.json`` exists, whole: written to a temporary file, then renamed; a
    write that fails leaves neither."""
    tmp = folder / (STATUS_FILE + ".tmp")
    try:
        tmp.write_text(dumps(status, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, folder / STATUS_FILE)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _kernel_environment(server):
    """What every kernel of the sweep inherits: the embedded ``server`` (started already; None when the backend is
    another) named by ``MOA_LAB_LOCAL_URL``, and the answers cache, the model folder and your models' files as
    absolute paths (each kernel runs in its point's folder)."""

    changes = absolute_env()
    if server is not None:
        changes["MOA_LAB_LOCAL_URL"] = server.url
    saved = {name: os.environ.get(name) for name in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _write_sweep_file(sweep: Sweep) -> None:
    sweep.outdir.mkdir(parents=True, exist_ok=True)
    record = {
        "moa_lab_sweep": 1,
        "notebook": str(sweep.notebook),
        "notebook_hash": sweep.notebook_hash,
        "spec": sweep.spec,
        "points": {p.id: p.parameters for p in sweep.points},
    }
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

    Checked first (:func:`plan_sweep`): nothing runs or is written for a bad spec. One sweep at a time in an
    OUTDIR (a second is refused while the first holds its lock). Cost: one notebook run per point not finished
    before (failed ones too with ``retry_failed``); every model call the notebook makes, none for answers in the
    answers cache (shared by the kernels with the embedded server). A point is finished only when its notebook
    ran to its end or failed in a cell of its own: one interrupted (Ctrl-C: its kernel is stopped), or cut short
    by the shared embedded server dying (it is started again, and the point run again once), or by OUTDIR's disk
    (:class:`~moa_lab.runs._files.OutputError`: the sweep stops, no new kernel starts) is left unfinished, and a rerun
    runs it."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1 (kernels at once), got {jobs!r}")
    sweep = plan_sweep(notebook, spec, outdir)
    if sweep.changed:
        log.warning("%s", sweep.changed)
    summary = SweepSummary(sweep.outdir, len(sweep.points))
    probe(sweep.outdir / SWEEP_FILE)  # a disk that cannot take a point's files: refused before any kernel
    sweep.outdir.mkdir(parents=True, exist_ok=True)
    lock = FolderLock(sweep.outdir, "sweep")
    try:
        todo = []
        for point in sweep.points:
            state = sweep.status(point)
            if state is None or retry_failed and state["status"] != "ok":
                todo.append(point)
        summary.skipped = len(sweep.points) - len(todo)
        _write_sweep_file(sweep)
        if todo:
            await _run_points(sweep, todo, summary, jobs, html, progress)
    finally:
        lock.close()
    summary.table = write_table(sweep)
    return summary


async def _run_points(
    sweep: Sweep, todo: list[Point], summary: SweepSummary, jobs: int, html: bool, progress: bool
) -> None:

    bar = progress_bar(len(sweep.points), summary.skipped, progress, "sweep", "point")
    running, limit, kernels = 0, asyncio.Semaphore(jobs), _Kernels()
    disk: list[OSError] = []
    backend = get_backend()
    server = backend.server if backend.server is not None and not backend.server.attached else None

    async def one(point: Point) -> None:
        nonlocal running
        async with limit:
            for attempt in (1, 2):
                if disk:  # OUTDIR's disk failed: no new kernel
                    return
                restarts = server.restarts if server is not None else 0
                if server is not None:  # a shared server that died is started again (on its port) before a point
                    await backend.ready()
                    os.environ["MOA_LAB_LOCAL_URL"] = server.url or ""  # the same, unless its port was taken meanwhile
                running += 1
                if bar is not None:
                    bar.set_postfix(done=summary.done, failed=summary.failed, running=running)
                try:
                    state = await asyncio.to_thread(_execute, sweep, point, html, kernels)
                except OSError as exc:  # OUTDIR's disk: the point stays unfinished, the sweep stops
                    disk.append(exc)
                    return
                finally:
                    running -= 1
                died = server is not None and (not server.running or server.restarts != restarts)
                if state["status"] != "ok" and died:
                    log.warning(
                        "point %s: the shared embedded server died during it; %s",
                        point.id,
                        "running it again" if attempt == 1 else "it is left unfinished",
                    )
                    continue
                break
            else:
                raise LocalServerError(
                    f"the shared embedded server died twice while point {point.id} ran; it is left "
                    f"unfinished (run the sweep again to go on); server log: {server.log_path if server else None}"
                )
            try:
                _write_status(sweep.folder(point), state)
            except OSError as exc:
                disk.append(exc)
                return
            summary.done += state["status"] == "ok"
            summary.failed += state["status"] != "ok"
            if bar is not None:
                bar.set_postfix(done=summary.done, failed=summary.failed, running=running, refresh=False)
                bar.update(1)

    t0 = time.perf_counter()
    try:
        await backend.ready()  # the embedded server, if the kernels use it: started once, here
        with _kernel_environment(server), contextlib.ExitStack() as stack:
            if server is not None:
                stack.enter_context(server.watch())  # restarted on its own port if it dies mid-sweep
            await asyncio.gather(*(one(point) for point in todo))
    except BaseException:  # Ctrl-C (cancelled), or a point that failed for good: the kernels still running stop
        kernels.stop_all()
        raise
    finally:
        if bar is not None:
            bar.close()
        summary.seconds = time.perf_counter() - t0
    if disk:
        exc = disk[0]
        raise OutputError(
            exc.errno,
            f"cannot write to {str(sweep.outdir)!r}: {exc.strerror}; the sweep stopped "
            f"({summary.done} points done, {summary.failed} failed in this run; the points cut short "
            "are left unfinished); free some space and run it again to go on",
        )


run_sweep_sync = synced(run_sweep)
