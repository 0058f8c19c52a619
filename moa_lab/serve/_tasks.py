"""The asyncio of a request: stopping a run's tasks, and noticing that its client left."""

from __future__ import annotations

import asyncio

from starlette.requests import Request


async def stop(*tasks: asyncio.Future) -> None:
    """Cancel what is still running of ``tasks`` and wait for them to end (their exceptions are theirs)."""
    for task in tasks:
        if not task.done():
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def client_gone(request: Request) -> None:
    """Return when the client disconnects (the body was read already: the next message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
