"""Cache: a second identical 3-layer MoA makes 0 model calls; its wall time ÷ the first's."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from harness import Row, fault_server

from moa_lab import ResponseCache, run_moa


def run(latency: float = 0.5) -> list[Row]:
    with fault_server(latency) as server, tempfile.TemporaryDirectory() as tmp:
        cache = ResponseCache(Path(tmp) / "cache.sqlite")
        walls, calls = [], []
        for _ in range(2):
            before = server.stats()["requests"]
            t0 = time.perf_counter()
            asyncio.run(run_moa("What is MoA?", ["a", "b", "c", "d"], "agg", layers=3, cache=cache, backend=server.url))
            walls.append(time.perf_counter() - t0)
            calls.append(server.stats()["requests"] - before)
    return [
        Row(
            "cache: model calls of a 2nd identical run",
            calls[1],
            "0",
            calls[1] == 0,
            f"first run {calls[0]} calls, second run {calls[1]}",
        ),
        Row(
            "cache: 2nd run wall ÷ 1st",
            walls[1] / walls[0],
            "(none)",
            None,
            f"{walls[0]:.3f} s, then {walls[1] * 1000:.1f} ms from the cache",
        ),
    ]
