"""Batch: 200 prompts (4 proposers + aggregator each) at concurrency 32.

- throughput ÷ ideal, where ideal = all calls × latency ÷ concurrency (every slot busy all the time). Target ≥ 0.9.
- speed-up over the reference script's loop (one prompt after another, its 4 proposers at once, then the
  aggregator). Target ≥ 20×. The loop is sequential, so it is timed on ``seed_prompts`` prompts and scaled to 200.
  Note the ceiling: the reference script's loop spends 2 latencies per prompt, the batch 5 calls ÷ concurrency, so
  at most 2 × concurrency ÷ 5 = 12.8× at concurrency 32; hence also a row at concurrency 64 (ceiling 25.6×).

Each call takes 1 s at the server: shorter than a real 512-token answer (several seconds), so the fixed cost
of each call (HTTP, the SDK, a new connection per request to the test server) weighs more here than in real use.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from harness import Row, fault_server, no_cache
from together import AsyncTogether, Together

from moa_lab import run_batch

PROPOSERS, AGGREGATOR = ["a", "b", "c", "d"], "agg"


def seed_loop(url: str, prompts: list[str]) -> float:
    """The reference script's 2-layer recipe (its own code, its clients pointed at ``url``), one prompt at a time."""
    client, async_client = Together(api_key="x", base_url=url), AsyncTogether(api_key="x", base_url=url)

    async def run_llm(model, user_prompt):
        response = await async_client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": user_prompt}], temperature=0.7, max_tokens=512
        )
        return response.choices[0].message.content

    async def main(user_prompt):
        results = await asyncio.gather(*[run_llm(model, user_prompt) for model in PROPOSERS])
        final = client.chat.completions.create(
            model=AGGREGATOR,
            messages=[{"role": "system", "content": "Synthesize:"}, {"role": "user", "content": ",".join(results)}],
            stream=True,
        )
        for _chunk in final:
            pass

    async def loop():
        for prompt in prompts:
            await main(prompt)

    t0 = time.perf_counter()
    asyncio.run(loop())
    return time.perf_counter() - t0


def run(latency: float = 1.0, n: int = 200, concurrency: int = 32, seed_prompts: int = 5) -> list[Row]:
    prompts = [f"Write example number {i}." for i in range(n)]
    rows = []
    with no_cache(), fault_server(latency) as server, tempfile.TemporaryDirectory() as tmp:
        seed_seconds = seed_loop(server.url, prompts[:seed_prompts]) * n / seed_prompts
        for limit in (concurrency, 2 * concurrency):
            server.reset()
            t0 = time.perf_counter()
            summary = asyncio.run(
                run_batch(
                    prompts,
                    Path(tmp) / f"out{limit}.jsonl",
                    PROPOSERS,
                    AGGREGATOR,
                    concurrency=limit,
                    backend=server.url,
                    progress=False,
                )
            )
            wall = time.perf_counter() - t0
            stats = server.stats()
            assert summary.done == n and stats["requests"] == 5 * n and stats["peak"] <= limit, (summary, stats)
            ideal = 5 * n * latency / limit
            if limit == concurrency:
                rows.append(
                    Row(
                        f"batch: throughput ÷ ideal (concurrency {limit})",
                        ideal / wall,
                        "≥ 0.9",
                        ideal / wall >= 0.9,
                        f"{n} prompts × 5 calls of {latency:g} s: {wall:.1f} s vs ideal "
                        f"{ideal:.1f} s; peak {stats['peak']} calls at once",
                    )
                )
            ceiling = 2 * limit / 5
            rows.append(
                Row(
                    f"batch: speed-up over the reference script's loop (concurrency {limit})",
                    seed_seconds / wall,
                    "≥ 20×",
                    seed_seconds / wall >= 20,
                    f"seed loop {seed_seconds:.0f} s for {n} prompts (timed on {seed_prompts}, scaled) vs "
                    f"{wall:.1f} s; the most possible at this concurrency is {ceiling:.1f}×",
                )
            )
    return rows
