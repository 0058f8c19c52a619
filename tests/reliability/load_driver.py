"""A batch of N prompts × (4 proposers + aggregator) against a server, in its own process, for the load test.

Prints one JSON object: what the batch did, this process's peak RSS, and its open file descriptors, asyncio
tasks and threads after a warm-up batch and again after the measured one (a leak shows as growth).
Usage: python load_driver.py URL N CONCURRENCY OUT_DIR
"""

import asyncio
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path

from moa_lab import run_batch

PROPOSERS, AGGREGATOR = ["a", "b", "c", "d"], "agg"


def counts() -> dict:
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    return {"fds": len(os.listdir("/proc/self/fd")), "tasks": len(others), "threads": threading.active_count()}


async def main(url: str, n: int, concurrency: int, out: Path) -> dict:
    async def batch(name: str, prompts: list[str]):
        return await run_batch(
            prompts,
            out / name,
            PROPOSERS,
            AGGREGATOR,
            concurrency=concurrency,
            backend=url,
            cache=False,
            retries=0,
            progress=False,
        )

    await batch("warmup.jsonl", [f"Warm-up question {i}?" for i in range(concurrency)])
    before = counts()
    t0 = time.perf_counter()
    summary = await batch("out.jsonl", [f"Question {i}: what is {i} times {i}?" for i in range(n)])
    seconds = time.perf_counter() - t0
    await asyncio.sleep(0)
    return {
        "n": n,
        "done": summary.done,
        "failed": summary.failed,
        "calls": summary.usage.calls,
        "seconds": round(seconds, 2),
        "before": before,
        "after": counts(),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


if __name__ == "__main__":
    url, n, concurrency, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    print(json.dumps(asyncio.run(main(url, n, concurrency, out))))
