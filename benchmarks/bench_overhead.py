"""Overhead: a 3-layer MoA with 4 proposers; wall time ÷ the ideal, the sum over layers of the slowest call.

Every call takes the server's ``latency`` seconds, so the ideal is ``3 × latency``; what is left over is
moa_lab's own time (building messages, the SDK, HTTP, scheduling). Target: ≤ 1.03.
"""

from __future__ import annotations

import statistics

from harness import Row, fault_server, no_cache, time_runs

from moa_lab import run_moa


def run(latency: float = 0.5, repeats: int = 5) -> list[Row]:
    with no_cache(), fault_server(latency) as server:
        walls = time_runs(
            repeats,
            lambda i: run_moa("What is MoA?", ["a", "b", "c", "d"], "agg", layers=3, seed=i, backend=server.url),
            warm_up=True,
        )
    ideal = 3 * latency
    ratio = statistics.mean(walls) / ideal
    detail = (
        f"3 layers × 4 proposers, every call {latency:g} s: mean wall {statistics.mean(walls):.3f} s over "
        f"{repeats} runs (min {min(walls):.3f}, max {max(walls):.3f}) vs ideal {ideal:.3f} s"
    )
    return [Row("overhead: MoA wall ÷ ideal", ratio, "≤ 1.03", ratio <= 1.03, detail)]
