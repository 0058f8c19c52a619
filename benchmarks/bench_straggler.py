"""Stragglers: one of 4 proposers is 10× slow in 10% of the runs. p95 latency of a 2-layer MoA with quorum 3 of
4, ÷ p95 waiting for all four. Target ≤ 0.5."""

from __future__ import annotations

import random

from harness import Row, fault_server, no_cache, percentile, time_runs

from moa_lab import run_moa


def run(latency: float = 0.1, runs: int = 60, slow_factor: int = 10, slow_share: float = 0.1) -> list[Row]:
    slow_runs = set(random.Random(0).sample(range(runs), round(runs * slow_share)))
    p95 = {}
    with no_cache(), fault_server(latency) as server:
        for quorum in (None, 3):
            server.reset()
            server.script(
                "d", *[f"delay:{latency * (slow_factor - 1):g}" if i in slow_runs else "ok" for i in range(runs)]
            )
            seconds = time_runs(
                runs,
                lambda i, quorum=quorum: run_moa(
                    "What is MoA?", ["a", "b", "c", "d"], "agg", quorum=quorum, seed=i, backend=server.url
                ),
            )
            p95[quorum] = percentile(seconds, 95)
    ratio = p95[3] / p95[None]
    detail = (
        f"{runs} runs, calls of {latency:g} s, proposer d {slow_factor}× slow in {len(slow_runs)} of them: "
        f"p95 {p95[3]:.3f} s with quorum 3/4 vs {p95[None]:.3f} s waiting for all"
    )
    return [Row("straggler: p95 with quorum 3/4 ÷ p95 waiting for all", ratio, "≤ 0.5", ratio <= 0.5, detail)]
