"""The front's worker processes (:mod:`moa_lab.engine._worker`, one per model): started, watched, restarted when they
die (at most MAX_RESTARTS times in a row, then given up on: the model answers 503), stopped."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from moa_lab.engine._local import LocalServerError, tail
from moa_lab.engine._models import ModelSpec
from moa_lab.engine._policy import Engine

log = logging.getLogger("moa_lab.serve._front")

#: Times a dead worker is started again before the front gives up on it (its model then answers 503).
MAX_RESTARTS = 3


def die_with_parent() -> None:
    """Linux: this process gets SIGTERM when its parent dies, even by SIGKILL."""
    if sys.platform == "linux":
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class _Placed:
    """What a worker (started, or :class:`Dormant`) is: its place in the pool and on the board, and its model."""

    index: int
    spec: ModelSpec
    log_dir: Path
    board: Path
    slots: int
    cells: int
    model: str
    generation: int
    first_cell: int
    restarting: bool
    failed_starts: int  # restarts that failed in a row
    failed: str | None  # why it could not be restarted (it is given up on)
    dormant = False  # a lazy model's worker before its first call (Dormant)

    def _place(self, index: int, spec: ModelSpec, log_dir: Path, board: Path, slots: int, cells: int, generation: int):
        self.index, self.spec, self.log_dir, self.board = index, spec, log_dir, board
        self.slots, self.cells = slots, cells
        self.model, self.generation, self.first_cell = spec.name, generation, index * slots
        self.restarting, self.failed_starts, self.failed = False, 0, None


class Worker(_Placed):
    """One llama.cpp worker process (:mod:`moa_lab.engine._worker`): one model, loaded once, up to ``slots`` calls at
    once in cells ``first_cell ..`` of the board. ``generation`` counts its restarts."""

    def __init__(
        self, index: int, spec: ModelSpec, log_dir: Path, board: Path, slots: int, cells: int, generation: int = 0
    ) -> None:
        self._place(index, spec, log_dir, board=board, slots=slots, cells=cells, generation=generation)
        self.port = _free_port("127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port}"
        name = f"worker{index}" + (f".{generation}" if generation else "")
        self.log = log_dir / f"{name}.log"
        config = {
            "name": spec.name,
            "path": str(spec.path),
            "chat_format": spec.chat_format,
            "n_ctx": 4096,
            "port": self.port,
            "slots": slots,
            "board": str(board),
            "cells": cells,
            "first_cell": self.first_cell,
        }
        cfg = log_dir / f"{name}.json"
        cfg.write_text(json.dumps(config))
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moa_lab.engine._worker", str(cfg)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )

    def __repr__(self) -> str:
        return f"llama.cpp worker {self.index} ({self.model}, pid {self.proc.pid})"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    async def died(self) -> bool:
        """After a failed request: whether the process has ended (its exit is seen within half a second)."""
        for _ in range(10):
            if not self.alive:
                return True
            await asyncio.sleep(0.05)
        return False

    def wait_ready(self, deadline: float) -> None:
        """Until the worker has loaded its model and made its first call (a warm-up, in the worker)."""
        while True:
            if self.proc.poll() is not None:
                raise LocalServerError(f"{self} exited; log {self.log}:\n{tail(self.log)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise LocalServerError(f"{self} did not answer; log {self.log}:\n{tail(self.log)}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Dormant(_Placed):
    """The worker of a lazy model (:class:`~moa_lab.engine._models.ModelSpec`'s ``lazy``: the pack's) before its
    first call: no process, no memory. :func:`supervise` starts it (as a :class:`Worker`) when a call for its model
    waits."""

    dormant = True
    proc = None
    alive = False

    def __init__(self, index: int, spec: ModelSpec, log_dir: Path, board: Path, slots: int, cells: int) -> None:
        self._place(index, spec, log_dir, board=board, slots=slots, cells=cells, generation=-1)
        self.log = log_dir / f"worker{index}.log"

    def __repr__(self) -> str:
        return f"llama.cpp worker {self.index} ({self.model}, not started: loaded on its first call)"

    def stop(self) -> None:
        pass


def start_worker(index: int, spec: ModelSpec, log_dir: Path, board: Path, slots: int, cells: int) -> Worker | Dormant:
    """A worker for ``spec``: started now, or :class:`Dormant` until its first call for a lazy model."""
    return (Dormant if spec.lazy else Worker)(index, spec, log_dir, board, slots, cells)


#: Seconds a worker may take to answer its health check before it is taken for hung and killed (then started
#: again, and its cores come back); ``MOA_LAB_WORKER_TIMEOUT`` changes it.
WORKER_TIMEOUT = 60.0


def worker_timeout() -> float:
    value = os.environ.get("MOA_LAB_WORKER_TIMEOUT")
    try:
        seconds = float(value) if value else WORKER_TIMEOUT
    except ValueError:
        raise LocalServerError(f"MOA_LAB_WORKER_TIMEOUT must be a number of seconds, got {value!r}") from None
    if not seconds > 0:
        raise LocalServerError(f"MOA_LAB_WORKER_TIMEOUT must be a positive number of seconds, got {value!r}")
    return seconds


async def watchdog(engine: Engine, timeout: float, every: float = 1.0) -> None:
    """Forever: every worker that is up is asked ``/health``; one that does not answer within ``timeout`` seconds
    (hung: stopped, deadlocked, no longer reading its socket) is killed, so that :func:`supervise` starts it again
    and the cores its calls held come back. (The front sends a worker calls without a timeout of their own: a
    long answer is no fault; a worker that answers nothing is.) A busy worker answers its health check: the
    calls run in threads that let go of the GIL while llama.cpp computes."""
    async with httpx.AsyncClient(timeout=timeout) as http:
        while True:
            await asyncio.sleep(every)
            up = [w for w in engine.workers if w.alive and not w.restarting and not w.failed]
            answered = await asyncio.gather(*(_answers(http, w) for w in up))
            for worker, ok in zip(up, answered):
                if not ok and worker.alive and worker in engine.workers:
                    log.error(
                        "%s did not answer its health check in %gs (hung?); killing it, to start it again",
                        worker,
                        timeout,
                    )
                    worker.proc.kill()


async def _answers(http: httpx.AsyncClient, worker: Worker) -> bool:
    try:
        return (await http.get(worker.url + "/health")).status_code == 200
    except httpx.HTTPError:
        return not worker.alive  # a worker that died meanwhile is supervise's, not a hang


async def supervise(engine: Engine, every: float = 0.5) -> None:
    """Forever: a worker whose process ended is logged (exit code and the end of its log) and started again, at
    most MAX_RESTARTS times in a row; its model's requests wait for it meanwhile."""
    restarts: set[asyncio.Task] = set()  # held here: the loop keeps only weak references to tasks
    while True:
        await asyncio.sleep(every)
        wanted = set(engine.waiting.values())
        for position, worker in enumerate(engine.workers):
            if worker.dormant and worker.model not in wanted:
                continue  # started by its model's first call
            if not worker.alive and not worker.restarting and not worker.failed:
                worker.restarting = True
                engine.forget(worker)
                task = asyncio.ensure_future(_restart(engine, position, worker))
                restarts.add(task)
                task.add_done_callback(restarts.discard)


async def _restart(engine: Engine, position: int, dead: Worker | Dormant) -> None:
    if dead.proc is None:
        log.info("%s: its first call is waiting; loading it", dead)
    else:
        log.warning(
            "%s exited with code %s; starting it again. The end of its log:\n%s",
            dead,
            dead.proc.returncode,
            tail(dead.log, 10),
        )
    try:
        fresh = await asyncio.to_thread(
            Worker,
            dead.index,
            spec=dead.spec,
            log_dir=dead.log_dir,
            board=dead.board,
            slots=dead.slots,
            cells=dead.cells,
            generation=dead.generation + 1,
        )
        try:
            await asyncio.to_thread(fresh.wait_ready, time.monotonic() + 180)
        except LocalServerError:
            fresh.stop()
            raise
    except (LocalServerError, OSError) as exc:
        dead.failed_starts += 1
        if dead.failed_starts >= MAX_RESTARTS:
            dead.failed = f"{dead} died and could not be started again ({dead.failed_starts} tries): {exc}"
            log.error("%s", dead.failed)
        else:
            log.warning("%s could not be started again (%s); trying again", dead, exc)
            dead.restarting = False
        engine._wake()
        return
    log.log(
        logging.WARNING if dead.proc else logging.INFO, "%s started %sas %s", dead, "again " * bool(dead.proc), fresh
    )
    engine.workers[position] = fresh
    engine._wake()


def status(engine: Engine) -> dict:
    """What ``/moa_lab/status`` says: calls running and waiting, threads granted and in use, each worker."""
    return {
        "threads": engine.threads,
        "busy": len(engine.active()),
        "waiting": len(engine.waiting),
        "threads_in_use": engine.in_use(),
        "threads_peak": engine.peak,
        "calls": [
            {
                "model": lease.worker.model,
                "slot": lease.slot,
                "granted": lease.granted,
                "using": engine.board.using(lease.cell),
                "released": lease.released,
            }
            for lease in engine.leases
        ],
        "workers": [
            {
                "index": w.index,
                "model": w.model,
                "pid": w.proc.pid if w.proc else None,  # None: a lazy model's, not started yet
                "alive": w.alive,
                "busy": sum(lease.worker is w for lease in engine.active()),
                "generation": w.generation,
                "failed": w.failed,
            }
            for w in engine.workers
        ],
    }
