"""Endpoint: an MoA through ``moa/NAME`` (``moa-lab serve --recipe``) against the same run in-process.

The recipe's calls go to the fault server (every call ``latency`` seconds, in its own process), so both arms do the
same work and what differs is the endpoint's own: the extra HTTP hop, the SSE relay, the run record.
- **Overhead**: wall time of a streamed request (first byte to ``[DONE]``, as a client sees it) ÷ ``run_plan`` of
  the same recipe in-process; medians of ``repeats``, the two timed in turn. Target ≤ 1.05.
- **First byte while the proposers run**: the slowest time to the first SSE event over the repeats (the proposers
  take ``latency`` seconds; keep-alive comments follow every second). Target ≤ 1 s.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml
from harness import Row, fault_server, no_cache

from moa_lab import Recipe, run_plan
from moa_lab.moa import run_sync

MOA = str(Path(sys.executable).parent / "moa-lab")


def run(latency: float = 1.5, repeats: int = 5) -> list[Row]:
    folder = Path(tempfile.mkdtemp(prefix="bench_endpoint_"))
    with no_cache(), fault_server(latency) as upstream:
        path = folder / "bench.yaml"
        recipe = {"backend": upstream.url, "proposers": ["a", "b", "c", "d"], "aggregator": "g", "cache": False}
        path.write_text(yaml.safe_dump(recipe))
        ready = folder / "ready"
        proc = subprocess.Popen(
            [MOA, "serve", "--port", "0", "--ready-file", str(ready), "--recipe", f"bench={path}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 180
            while not ready.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            url = ready.read_text()
            local = Recipe.from_file(path)
            through, inside, first = [], [], []
            with httpx.Client(timeout=120) as client:
                for i in range(-1, repeats):  # -1: a warm-up of each (connections, imports)
                    body = {
                        "model": "moa/bench",
                        "messages": [{"role": "user", "content": f"({i}) What is MoA?"}],
                        "stream": True,
                    }
                    t0 = time.perf_counter()
                    with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
                        lines = r.iter_lines()
                        next(lines)
                        t_first = time.perf_counter() - t0
                        for _ in lines:
                            pass
                    t_through = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    run_sync(run_plan(local.plan(f"({i}) What is MoA?")))
                    t_inside = time.perf_counter() - t0
                    if i >= 0:
                        through.append(t_through)
                        inside.append(t_inside)
                        first.append(t_first)
        finally:
            proc.terminate()
            proc.wait(30)
    ratio = statistics.median(through) / statistics.median(inside)
    detail = (
        f"4 proposers + aggregator, every call {latency:g} s: median {statistics.median(through):.3f} s through "
        f"moa/NAME vs {statistics.median(inside):.3f} s in-process, {repeats} runs each"
    )
    return [
        Row("endpoint: MoA through moa/NAME ÷ in-process", ratio, "≤ 1.05", ratio <= 1.05, detail),
        Row(
            "endpoint: first byte while the proposers run (s)",
            max(first),
            "≤ 1 s",
            max(first) <= 1.0,
            f"slowest of {repeats}; the proposers take {latency:g} s "
            f"(median first byte {statistics.median(first):.3f} s)",
        ),
    ]


if __name__ == "__main__":
    os.environ.setdefault("MOA_LAB_CACHE", "off")
    for row in run():
        print(row)
