"""A limit on concurrent model calls (and optionally on requests per second), shared by every run in a context.

``run_batch`` sets one for all its prompts; ``with call_limits(8): ...`` sets one for any code. When a slot
frees, the waiting call of the latest layer goes first (then first come, first served), so that runs already
under way finish before new ones start: fewer prompts are in flight, and fewer are lost if a batch is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Iterator
from contextvars import ContextVar


class CallLimiter:
    """At most ``concurrency`` calls at once, and at most ``rps`` request starts per second (None: no limit).

    ``active`` is the number of calls running now, ``peak`` the most there ever were.
    """

    def __init__(self, concurrency: int, rps: float | None = None) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        if rps is not None and (isinstance(rps, bool) or not isinstance(rps, (int, float)) or not rps > 0):
            raise ValueError(f"rps (requests per second) must be a positive number or None, got {rps!r}")
        self.concurrency, self.rps = concurrency, rps
        self.active = self.peak = 0
        self._waiting: list[tuple[int, int, asyncio.Future]] = []
        self._order = itertools.count()
        self._next_start = 0.0

    def __repr__(self) -> str:
        return f"CallLimiter(concurrency={self.concurrency}, rps={self.rps}, active={self.active}, peak={self.peak})"

    async def acquire(self, priority: int = 0) -> None:
        """Wait for a slot; a lower ``priority`` goes first."""
        if self.active < self.concurrency and not self._waiting:
            self.active += 1
        else:
            slot = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (priority, next(self._order), slot))
            try:
                await slot  # handed over by release(): ``active`` already counts this call
            except asyncio.CancelledError:
                if slot.done() and not slot.cancelled():  # handed over, then cancelled before it ran
                    self.release()
                raise
        self.peak = max(self.peak, self.active)
        if self.rps:
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + 1 / self.rps
            if start > now:
                try:
                    await asyncio.sleep(start - now)
                except asyncio.CancelledError:
                    self.release()
                    raise

    def release(self) -> None:
        while self._waiting:
            *_, slot = heapq.heappop(self._waiting)
            if not slot.done():
                slot.set_result(None)
                return
        self.active -= 1

    @contextlib.asynccontextmanager
    async def slot(self, priority: int = 0):
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()


current: ContextVar[CallLimiter | None] = ContextVar("moa_lab_call_limiter", default=None)


@contextlib.contextmanager
def call_limits(concurrency: int, rps: float | None = None) -> Iterator[CallLimiter]:
    """Limit the model calls made inside the block (tasks started in it included)."""
    limiter = CallLimiter(concurrency, rps)
    token = current.set(limiter)
    try:
        yield limiter
    finally:
        current.reset(token)
