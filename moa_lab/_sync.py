"""Running moa_lab's coroutines from synchronous code: a plain script, or a cell in a running Jupyter kernel.

Jupyter cells already run inside an event loop, where ``asyncio.run`` refuses to start another; there
(and only there) nest-asyncio lets the loop be re-entered. This module is the one place that uses it.
A loop made here closes the SDK clients (and their connections) made on it before it ends; an interrupted
call (Ctrl-C, Jupyter's Interrupt) is cancelled and waited for, so nothing of it runs on in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, ParamSpec, TypeVar

from moa_lab._backends import close_clients

T = TypeVar("T")
P = ParamSpec("P")


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
        return asyncio.run(_closing(awaitable))
    task = loop.create_task(_as_coroutine(awaitable))
    try:
        return loop.run_until_complete(task)
    except BaseException:  # KeyboardInterrupt (the kernel's Interrupt): the task would go on in the kernel's loop
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):  # a second interrupt while it winds down: leave it
                loop.run_until_complete(asyncio.wait([task]))
        raise


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable


async def _closing(awaitable: Awaitable[T]) -> T:
    """``awaitable``'s result; then the SDK clients of this loop (about to end) are closed."""
    try:
        return await awaitable
    finally:
        await close_clients()


def iterate(agen: AsyncGenerator[T, None]) -> Iterator[T]:
    """Iterate an async generator from synchronous code, one item per request, like ``async for``.

    One task drives the generator (an HTTP stream must be opened and closed in the same task) and takes
    the next item only when asked. Stopping early cancels that task, which closes the generator at once.
    """
    running = _running_loop()
    own = running is None
    loop = asyncio.new_event_loop() if running is None else running
    asks: asyncio.Queue = asyncio.Queue()
    items: asyncio.Queue = asyncio.Queue()
    end = object()

    async def pump() -> None:
        async with contextlib.aclosing(agen):
            try:
                while True:
                    await asks.get()
                    items.put_nowait(await agen.__anext__())
            except StopAsyncIteration:
                items.put_nowait(end)
            except Exception as exc:  # noqa: BLE001 - handed to the reader, raised there
                items.put_nowait(exc)

    task = loop.create_task(pump())
    try:
        while True:
            asks.put_nowait(None)
            item = loop.run_until_complete(items.get())
            if item is end:
                return
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(task)
        if own:  # as asyncio.run does: finish the async generators this loop started, then close it
            loop.run_until_complete(close_clients())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


def synced(coroutine_function: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """The synchronous form of an ``async def`` (``run_moa`` → ``run_moa_sync``): the same parameters, types and
    docstring (``help()`` and the API reference show them), run by :func:`run_sync`. It costs what the coroutine
    costs."""

    @functools.wraps(coroutine_function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return run_sync(coroutine_function(*args, **kwargs))

    wrapper.__name__ = wrapper.__qualname__ = f"{coroutine_function.__name__}_sync"
    wrapper.__doc__ = (
        f"The synchronous form of :func:`{coroutine_function.__name__}` (a script, or a cell without ``await``): "
        f"the same parameters, the same cost.\n\n{coroutine_function.__doc__ or ''}"
    )
    return wrapper
