"""Run the benchmarks (all, or those named) and write their ratios as a markdown table: ``make bench``.

    python benchmarks/run.py [overhead batch straggler cache local sweep ray endpoint] [--out benchmarks/RESULTS.md]

One benchmark alone: name it (e.g. `python benchmarks/run.py straggler --out /tmp/s.md`).

Each ratio is measured in this one run, on this machine; the table says which machine and when.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_batch  # noqa: E402
import bench_cache  # noqa: E402
import bench_endpoint  # noqa: E402
import bench_local  # noqa: E402
import bench_overhead  # noqa: E402
import bench_ray  # noqa: E402
import bench_straggler  # noqa: E402
import bench_sweep  # noqa: E402

BENCHMARKS = {
    "overhead": bench_overhead,
    "batch": bench_batch,
    "straggler": bench_straggler,
    "cache": bench_cache,
    "local": bench_local,
    "sweep": bench_sweep,
    "ray": bench_ray,
    "endpoint": bench_endpoint,
}


def table(rows) -> str:
    lines = ["| benchmark | ratio | target | met | measured |", "|---|---|---|---|---|"]
    for row in rows:
        met = "—" if row.met is None else ("yes" if row.met else "**no**")
        ratio = f"{row.ratio:.3g}" if isinstance(row.ratio, float) else str(row.ratio)
        lines.append(f"| {row.name} | {ratio} | {row.target} | {met} | {row.detail} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "names",
        nargs="*",
        choices=[[], *BENCHMARKS],
        default=[],
        metavar="NAME",
        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "RESULTS.md"), help="the markdown file to write")
    args = parser.parse_args()
    rows, t0 = [], time.perf_counter()
    for name in args.names or BENCHMARKS:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        new = BENCHMARKS[name].run()
        rows += new
        for row in new:
            print(f"[bench]   {row.name}: {row.ratio:.3g} (target {row.target}) — {row.detail}", file=sys.stderr)
        print(f"[bench] {name} took {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    text = table(rows)
    print(text)
    machine = (
        f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )
    Path(args.out).write_text(
        "# Benchmark results\n\n"
        f"Written by `make bench` (`python benchmarks/run.py`) on {datetime.date.today()}, {machine}; "
        f"{time.perf_counter() - t0:.0f} s in all. Every ratio below was measured in that one run. "
        "The first four run against the fault-injecting server (`tests/fault_server.py`, in its own process) "
        "with a fixed latency per call; `local` and `sweep` run the bundled models. What each one measures and why: "
        "the docstring of its `benchmarks/bench_*.py`.\n\n" + text + "\n",
        encoding="utf-8",
    )
    missed = [row.name for row in rows if row.met is False]
    print(
        f"\nwritten to {args.out}; " + (f"targets missed: {'; '.join(missed)}" if missed else "every target met"),
        file=sys.stderr,
    )
    return 0  # a benchmark reports; it does not fail a build (the tests do that)


if __name__ == "__main__":
    sys.exit(main())
