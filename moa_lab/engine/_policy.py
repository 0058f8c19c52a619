"""The embedded engine's policy: every core goes to the calls running, and the threads never exceed the cores.

The front runs at most ``threads`` calls at once (one core each at least) over one llama.cpp worker process per
model (:mod:`moa_lab.engine._worker`). A call alone gets every core, for its prompt and its tokens; when more calls run,
the cores are split between them (the costliest first get the odd ones), and when one ends, the others take its
cores. Oversubscribing llama.cpp is ruinous (2 busy calls × 2 threads on 2 cores ran 10× slower here), so a core
changes hands only once the call that held it has let go of it: on the :class:`Board`, the front writes what a
call may use (``granted``) and the worker writes back what it uses (``using``, re-read before every 32 prompt
tokens and every generated token). The sum over calls of ``max(granted, using)`` never exceeds ``threads``.

When a slot frees, the waiting request with the largest expected cost goes first (longest job first keeps a
layer's wall time near sum / threads), among those whose model has a live worker; a request waits 10 ms before
its first turn, so that the calls of a layer are all queued when the first cores are given.
"""

from __future__ import annotations

import asyncio
import itertools
import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Seconds between two looks at the board while a change of threads is under way (a worker acknowledging).
SETTLE_POLL = 0.003
#: Seconds a request waits before its first turn, so that the calls of a layer (sent within a few milliseconds)
#: are all in the queue when the first cores are given: the costliest then go first.
ADMIT_WINDOW = 0.01
#: ``MOA_LAB_THREAD_POLICY``: ``follow`` (the default: the calls running share every core) or ``one`` (the previous
#: policy, one thread per call whatever runs: kept for the benchmarks' before/after comparison).
POLICIES = ("follow", "one")


def thread_policy() -> str:
    value = os.environ.get("MOA_LAB_THREAD_POLICY") or "follow"
    if value not in POLICIES:
        raise ValueError(f"MOA_LAB_THREAD_POLICY must be one of {', '.join(POLICIES)}, got {value!r}")
    return value


def default_threads() -> int:
    """The cores the engine uses: ``MOA_LAB_WORKERS`` if set, else every core this process may run on (its CPU
    affinity: ``taskset`` and container limits count)."""
    value = os.environ.get("MOA_LAB_WORKERS")
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(
                f"MOA_LAB_WORKERS must be a positive integer (the cores the local server uses), got {value!r}"
            )
        return int(value)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class Board:
    """Two int32 per cell (a worker's slot), shared between the front and the workers through a file mapped in
    memory: ``granted`` (written by the front) and ``using`` (written by the worker; 0 when the slot is idle)."""

    def __init__(self, path: Path, cells: int, create: bool) -> None:
        self.path, self.cells = Path(path), cells
        if create:
            self.path.write_bytes(bytes(8 * cells))
        with open(self.path, "r+b") as f:
            self._map = mmap.mmap(f.fileno(), 8 * cells)
        self._ints = memoryview(self._map).cast("i")

    @classmethod
    def create(cls, path: Path, cells: int) -> Board:
        return cls(path, cells, True)

    @classmethod
    def open(cls, path: Path, cells: int) -> Board:
        return cls(path, cells, False)

    def granted(self, cell: int) -> int:
        return self._ints[2 * cell]

    def using(self, cell: int) -> int:
        return self._ints[2 * cell + 1]

    def grant(self, cell: int, threads: int) -> None:
        self._ints[2 * cell] = threads

    def set_using(self, cell: int, threads: int) -> None:
        self._ints[2 * cell + 1] = threads

    def clear(self, cells) -> None:
        for cell in cells:
            self.grant(cell, 0)
            self.set_using(cell, 0)


class ClientGone(Exception):
    """The client disconnected while its request waited for a core (e.g. a straggler cancelled by a quorum)."""


class NoWorker(Exception):
    """The model's worker is dead and could not be started again."""


@dataclass(eq=False)
class Lease:
    """One admitted call: its worker, its slot (a cell of the board), its expected cost and its threads."""

    worker: Any
    slot: int
    cell: int
    cost: float
    order: int
    granted: int = 0
    released: bool = False
    queued: float = 0.0
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class Engine:
    """Admission and threads. ``workers``: objects with ``model``, ``alive``, ``failed`` (why it is given up on,
    or None) and ``first_cell`` (its slots are cells ``first_cell .. first_cell + threads - 1``)."""

    def __init__(self, workers: list, threads: int, board: Board) -> None:
        self.workers, self.threads, self.board = workers, threads, board
        self.policy = thread_policy()
        self.leases: list[Lease] = []  # admitted, running or letting go of their cores
        self.waiting: dict[tuple[float, int], str] = {}  # ticket (-cost, order) -> model
        self.tickets = itertools.count()
        self.peak = 0  # the most threads ever held at once (granted or in use)
        self._changed = asyncio.Event()
        self._wakeups: set[asyncio.Future] = set()

    # -- admission -------------------------------------------------------------------------------------------
    def active(self) -> list[Lease]:
        return [lease for lease in self.leases if not lease.released]

    def _worker(self, model: str):
        return next((w for w in self.workers if w.model == model and w.alive), None)

    def _free_slot(self, worker) -> int | None:
        taken = {lease.slot for lease in self.leases if lease.worker is worker}
        return next((s for s in range(self.threads) if s not in taken), None)

    def _turn(self, ticket):
        """The worker and slot this ticket may take now: none while every core is taken by a call, or while a
        costlier request can go."""
        if len(self.active()) >= self.threads:
            return None
        for other in sorted(self.waiting):
            worker = self._worker(self.waiting[other])
            slot = self._free_slot(worker) if worker is not None else None
            if slot is not None:
                return (worker, slot) if other == ticket else None
        return None

    def _wake(self) -> None:
        for future in self._wakeups:
            if not future.done():
                future.set_result(None)
        self._wakeups.clear()
        self._changed.set()

    async def acquire(self, model: str, cost: float, gone=None) -> Lease:
        """A slot of ``model``'s worker with at least one core; give it back with :meth:`release`. ``gone()``
        (async, polled while waiting) says the client left: the request then leaves the queue (ClientGone).
        NoWorker when the model's worker can never answer again."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        ticket = (-cost, next(self.tickets))
        self.waiting[ticket] = model
        try:
            await asyncio.sleep(ADMIT_WINDOW)
            while (turn := self._turn(ticket)) is None:
                given_up = [w.failed for w in self.workers if w.model == model and w.failed]
                if given_up and len(given_up) == sum(w.model == model for w in self.workers):
                    raise NoWorker(f"{model} cannot answer: {given_up[0]}")
                await self._wait(gone)
            worker, slot = turn
            lease = Lease(worker, slot, worker.first_cell + slot, cost, ticket[1])
            self.leases.append(lease)
        finally:
            del self.waiting[ticket]
            self._wake()  # the head of the queue may have changed
        try:
            self.balance()
            while not lease.ready.is_set():  # its cores are still in use by calls letting go of them
                await self._wait(gone)
        except BaseException:
            self.release(lease)
            raise
        lease.queued = loop.time() - started
        return lease

    async def _wait(self, gone) -> None:
        wakeup = asyncio.get_running_loop().create_future()
        self._wakeups.add(wakeup)
        try:
            await asyncio.wait_for(wakeup, 0.25)
        except TimeoutError:
            if gone is not None and await gone():
                raise ClientGone from None

    def release(self, lease: Lease) -> None:
        """The call is over (or its client left): its cores come back once its worker stopped using them."""
        if not lease.released:
            lease.released, lease.granted = True, 0
            self.board.grant(lease.cell, 0)
        self.balance()

    def forget(self, worker) -> None:
        """A worker died: its calls hold no core any more (its process is gone), and its cells are cleared."""
        for lease in [lease for lease in self.leases if lease.worker is worker]:
            lease.released = True
            self.leases.remove(lease)
            self.board.clear([lease.cell])
            lease.ready.set()
        self.balance()

    # -- threads ---------------------------------------------------------------------------------------------
    def _held(self, lease: Lease) -> int:
        return max(lease.granted, self.board.using(lease.cell))

    def balance(self) -> bool:
        """Move the grants one step towards a fair split; True when nothing is left to settle."""
        for lease in [lease for lease in self.leases if lease.released and self.board.using(lease.cell) == 0]:
            self.leases.remove(lease)  # let go of its cores: its slot is free again
            self._wake()
        active = sorted(self.active(), key=lambda lease: (-lease.cost, lease.order))
        # Requests about to be admitted count already: a core freed for one of them is not lent to a running call
        # for the few milliseconds until it is (that call would have to give it back first).
        coming = sum(self._worker(model) is not None for model in self.waiting.values())
        base, extra = divmod(self.threads, max(1, len(active) + min(coming, self.threads - len(active))))
        if self.policy == "one":
            base, extra = 1, 0
        target = {id(lease): base + (i < extra) for i, lease in enumerate(active)}
        for lease in active:  # fewer first: never more than the cores, even for a moment
            if target[id(lease)] < lease.granted:
                lease.granted = target[id(lease)]
                self.board.grant(lease.cell, lease.granted)
        free = self.threads - sum(self._held(lease) for lease in self.leases)
        for lease in active:
            more = min(target[id(lease)] - lease.granted, free)
            if more > 0:
                lease.granted += more
                free -= more
                self.board.grant(lease.cell, lease.granted)
            if lease.granted >= 1 and not lease.ready.is_set():
                lease.ready.set()
                self._wake()
        self.peak = max(self.peak, self.threads - free)
        draining = len(active) < len(self.leases)
        behind = any(self.board.using(lease.cell) > lease.granted for lease in active)
        return not draining and not behind and all(target[id(lease)] == lease.granted for lease in active)

    async def run(self) -> None:
        """Forever: settle the grants (every few ms while workers are acknowledging a change, else on changes)."""
        while True:
            self._changed.clear()
            settled = self.balance()
            try:
                await asyncio.wait_for(self._changed.wait(), 0.25 if settled else SETTLE_POLL)
            except TimeoutError:
                pass

    def in_use(self) -> int:
        """Threads the workers say they use now."""
        return sum(self.board.using(lease.cell) for lease in self.leases)
