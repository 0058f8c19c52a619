"""Ray: the price of the Ray engine on one node. The same batch (96 prompts × 2 calls of 1 s: one proposer,
then the aggregator) with the same number of calls at once (16), in-process (``run_batch``) and on a local Ray
cluster (``engine="ray"``: 2 actors × 8 calls at once, blocks of 16).

- throughput of the Ray path ÷ the in-process one, the cluster already running (what a long batch pays);
- the same with the cluster's start counted (what a short batch on a fresh ``ray.init()`` pays).

On N nodes the arithmetic is the engine's: with ``actors`` per node × ``actor_concurrency`` calls each, N nodes
keep N × actors × actor_concurrency calls in flight, so a batch of P prompts × C calls of latency L takes about
P × C × L ÷ (N × actors × actor_concurrency) ÷ (the ratio measured here), until the model servers or the
provider's rate limit are the bottleneck (then more nodes add nothing: raise the servers, not the cluster).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

from harness import Row, fault_server, no_cache

from moa_lab import run_batch


def run(latency: float = 1.0, n: int = 96) -> list[Row]:
    import ray

    prompts = [f"Write example number {i}." for i in range(n)]
    with no_cache(), fault_server(latency) as server, tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        asyncio.run(
            run_batch(
                prompts, Path(tmp) / "here.jsonl", ["a"], "agg", concurrency=16, backend=server.url, progress=False
            )
        )
        here = time.perf_counter() - t0
        t0 = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), object_store_memory=128 * 2**20, include_dashboard=False, log_to_driver=False)
        start = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            summary = asyncio.run(
                run_batch(
                    prompts,
                    Path(tmp) / "ray",
                    ["a"],
                    "agg",
                    backend=server.url,
                    progress=False,
                    engine="ray",
                    actors=2,
                    actor_concurrency=8,
                    block_size=16,
                )
            )
            on_ray = time.perf_counter() - t0
        finally:
            ray.shutdown()
        assert summary.done == n, summary
    ideal = 2 * n * latency / 16
    detail = (
        f"{n} prompts × 2 calls of {latency:g} s at 16 at once (ideal {ideal:.0f} s): in-process {here:.1f} s, "
        f"Ray {on_ray:.1f} s (2 actors × 8; about {on_ray - here:.0f} s of it fixed: the actors start, the dataset "
        f"is planned), cluster start {start:.1f} s"
    )
    return [
        Row("ray: throughput ÷ in-process run_batch, one node, cluster running", here / on_ray, "—", None, detail),
        Row("ray: the same, the cluster's start counted", here / (on_ray + start), "—", None, detail),
    ]
