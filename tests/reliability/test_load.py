"""Promise 3: under load nothing fails, memory stays flat, nothing leaks, no server outlives its user.

The batch runs in its own process (load_driver.py) so that its peak RSS is its own; the fault server answers
in this one. Marked ``load``: part of ``make test`` (CI), and runnable alone with ``pytest -m load``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import start_kernel
from fault_server import FaultServer

DRIVER = Path(__file__).with_name("load_driver.py")
CONCURRENCY = 64

pytestmark = pytest.mark.load


def drive(url: str, n: int, out: Path) -> dict:
    out.mkdir()
    done = subprocess.run(
        [sys.executable, str(DRIVER), url, str(n), str(CONCURRENCY), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_1000_prompts_at_64_calls_at_once(tmp_path):
    with FaultServer(latency=0.05) as server:  # every call 50 ms at least: many are in flight at once
        small = drive(server.url, 100, tmp_path / "small")
        server.peak = 0
        large = drive(server.url, 1000, tmp_path / "large")
        requests, peak = len(server.requests), server.peak
    print(f"\n100 prompts: {small}\n1000 prompts: {large}\nserver: {requests} requests, peak {peak} at once")
    for run in (small, large):
        assert run["done"] == run["n"] and run["failed"] == 0 and run["calls"] == 5 * run["n"]  # no errors
        assert run["after"]["tasks"] == 0  # no task left behind by the batch
        assert run["after"]["fds"] <= run["before"]["fds"]  # no file descriptor leak (the connection pool is warm)
        assert run["after"]["threads"] <= run["before"]["threads"]
    assert requests == 5 * (100 + 1000 + 2 * CONCURRENCY)  # every call made once: no hidden retries
    assert CONCURRENCY / 2 <= peak <= CONCURRENCY  # the limit held, and was used
    assert large["peak_rss_mb"] <= small["peak_rss_mb"] * 1.15, (small, large)  # flat: 10× the prompts
    lines = (tmp_path / "large" / "out.jsonl").read_text().splitlines()
    assert len(lines) == 1000 and len({json.loads(line)["id"] for line in lines}) == 1000


def _server_tree(code_output: str) -> list[psutil.Process]:
    front = psutil.Process(int(code_output.strip().splitlines()[-1]))
    return [front] + front.children(recursive=True)


@pytest.mark.local
@pytest.mark.parametrize("how", ["shutdown", "killed"])
def test_no_server_outlives_a_notebook_kernel(how):
    """A kernel that started the embedded server (and its llama.cpp workers), then shut down politely or killed:
    every one of those processes is gone within seconds."""
    km, kc = start_kernel()
    outputs: list[str] = []
    try:
        code = "import moa_lab\nb = moa_lab.get_backend('local')\nb.server.start()\nprint(b.server._proc.pid)"
        reply = kc.execute_interactive(
            code, timeout=180, output_hook=lambda m: outputs.append(m["content"].get("text", ""))
        )
        assert reply["content"]["status"] == "ok", reply["content"]
        tree = _server_tree("".join(outputs))
        assert len(tree) >= 3  # the front and its workers
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=how == "killed")
    deadline = time.monotonic() + 30
    while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [p.pid for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert left == [], f"still running after the kernel was {how}: {left}"


def test_50_sequential_sync_runs_over_keep_alive_leak_nothing(tmp_path):
    """A script calling run_moa_sync in a loop (each call its own event loop) against a keep-alive server: the
    connections of each loop are closed with it, so file descriptors and threads stay flat."""
    script = (
        "import gc, json, os, sys, threading, moa_lab\n"
        "url = sys.argv[1]\n"
        "def fds(): return len(os.listdir('/proc/self/fd'))\n"
        "moa_lab.run_moa_sync('Warm-up', ['a', 'b'], 'agg', backend=url, cache=False)\n"
        "gc.collect(); before = (fds(), threading.active_count())\n"
        "for i in range(50):\n"
        "    moa_lab.run_moa_sync(f'Question {i}?', ['a', 'b', 'c'], 'agg', backend=url, cache=False)\n"
        "gc.collect(); print(json.dumps({'before': before, 'after': (fds(), threading.active_count())}))\n"
    )
    with FaultServer() as server:
        done = subprocess.run([sys.executable, "-c", script, server.url], capture_output=True, text=True, timeout=120)
        requests = len(server.requests)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    print(counts)
    assert requests == 3 + 50 * 4
    assert counts["after"][0] <= counts["before"][0] + 1, counts  # (it was 2 more per call: 9 -> 109)
    assert counts["after"][1] <= counts["before"][1], counts


def test_an_interrupted_batch_in_a_kernel_stops_and_lets_go_of_its_output(tmp_path):
    """run_batch_sync in a notebook cell, interrupted (Jupyter's Interrupt button is SIGINT to the kernel): the
    batch is cancelled, not left running in the kernel's event loop; its output is no longer locked; and the same
    cell run again finishes it, every prompt exactly once."""
    import fcntl
    import os

    from moa_lab import read_results

    out, n = tmp_path / "out.jsonl", 60
    with FaultServer(latency=0.1) as server:
        km, kc = start_kernel()
        try:
            code = (
                f"import moa_lab\nmoa_lab.run_batch_sync([f'Question {{i}}?' for i in range({n})], {str(out)!r}, "
                f"['a', 'b'], 'agg', backend={server.url!r}, concurrency=4, progress=False, cache=False)"
            )
            msg_id = kc.execute(code)
            deadline = time.monotonic() + 60
            while (not out.exists() or out.read_text().count("\n") < 3) and time.monotonic() < deadline:
                time.sleep(0.05)
            km.interrupt_kernel()
            reply = kc.get_shell_msg(timeout=60)
            while reply["parent_header"].get("msg_id") != msg_id:
                reply = kc.get_shell_msg(timeout=60)
            assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
            time.sleep(0.3)  # requests already sent reach the server
            stopped, kept = len(server.requests), out.read_text().count("\n")
            time.sleep(1.0)
            assert len(server.requests) == stopped and out.read_text().count("\n") == kept  # nothing runs on
            fd = os.open(out, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the batch let go of its output
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
            again = kc.execute_interactive(code, timeout=120)
            assert again["content"]["status"] == "ok", again["content"]
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    ids = [row["id"] for row in read_results(out)]
    assert 3 <= kept < n and sorted(ids, key=int) == [str(i) for i in range(1, n + 1)]
