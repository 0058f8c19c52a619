"""Running moa_lab's coroutines from synchronous code: a plain script, or a cell in a running Jupyter kernel.

Jupyter cells already run inside an event loop, where ``asyncio.run`` refuses to start another; there
(and only there) nest-asyncio lets the loop be re-entered. This module is the one place that uses it.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Awaitable, Iterator, TypeVar

T = TypeVar("T")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    import nest_asyncio

    nest_asyncio.apply(loop)
    return loop


def run_sync(awaitable: Awaitable[T]) -> T:
    """Wait for ``awaitable`` from synchronous code, inside a running loop or not."""
    loop = _running_loop()
    if loop is None:
        return asyncio.run(_as_coroutine(awaitable))
    return loop.run_until_complete(_as_coroutine(awaitable))


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable


def iterate(agen: AsyncIterator[T]) -> Iterator[T]:
    """Iterate an async iterator from synchronous code, one item at a time."""
    loop = _running_loop()
    own = loop is None
    if own:
        loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(agen.__anext__())
            except StopAsyncIteration:
                return
    finally:
        if own:
            loop.run_until_complete(agen.aclose())
            loop.close()
