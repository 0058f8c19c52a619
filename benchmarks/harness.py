"""What the benchmarks share: the fault-injecting server in its own process, and one result row.

Each benchmark measures in one run and reports a ratio next to its target. The server runs in a separate
process so that its threads do not compete with the client for the interpreter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAULT_SERVER = ROOT / "tests" / "fault_server.py"


@dataclass
class Row:
    """One measured ratio: what it is, the numbers it came from, its target and whether it met it."""

    name: str
    ratio: float
    target: str
    met: bool | None  # None: no target (shown for information)
    detail: str


class Server:
    """``tests/fault_server.py`` in a subprocess: ``url``, ``script(model, *faults)``, ``stats()``, ``reset()``."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _post(self, path: str, body: dict) -> None:
        request = urllib.request.Request(
            self.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        urllib.request.urlopen(request, timeout=10).read()

    def script(self, model: str, *faults: str) -> None:
        self._post("/_script", {"model": model, "faults": list(faults)})

    def reset(self) -> None:
        self._post("/_reset", {})

    def stats(self) -> dict:
        return json.loads(urllib.request.urlopen(self.url + "/_stats", timeout=10).read())


@contextlib.contextmanager
def fault_server(latency: float) -> Iterator[Server]:
    """A fault server answering after ``latency`` seconds, in its own process, stopped on exit."""
    proc = subprocess.Popen(
        [sys.executable, str(FAULT_SERVER), "--latency", str(latency)], stdout=subprocess.PIPE, text=True
    )
    try:
        url = proc.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"the fault server did not start (said {url!r})")
        yield Server(url)
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def no_cache() -> Iterator[None]:
    """Benchmarks measure calls, not the cache (except the cache benchmark, which names its own file)."""
    old = os.environ.get("MOA_LAB_CACHE")
    os.environ["MOA_LAB_CACHE"] = "off"
    try:
        yield
    finally:
        if old is None:
            del os.environ["MOA_LAB_CACHE"]
        else:
            os.environ["MOA_LAB_CACHE"] = old


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def time_runs(runs: int, one: Callable[[int], Awaitable], warm_up: bool = False) -> list[float]:
    """Wall seconds of ``await one(i)`` for i in 0..runs-1, one after another in one event loop (after one
    uncounted warm-up run, if asked: the first run opens the connections)."""

    async def main() -> list[float]:
        seconds = []
        for i in range(-1 if warm_up else 0, runs):
            t0 = time.perf_counter()
            await one(i)
            if i >= 0:
                seconds.append(time.perf_counter() - t0)
        return seconds

    return asyncio.run(main())
