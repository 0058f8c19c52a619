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
from fault_server import FaultServer

DRIVER = Path(__file__).with_name("load_driver.py")
CONCURRENCY = 64

pytestmark = pytest.mark.load


def drive(url: str, n: int, out: Path) -> dict:
    out.mkdir()
    done = subprocess.run([sys.executable, str(DRIVER), url, str(n), str(CONCURRENCY), str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_1000_prompts_at_64_calls_at_once(tmp_path):
    with FaultServer(latency=0.01) as server:
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
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    outputs: list[str] = []
    try:
        code = "import moa_lab\nb = moa_lab.get_backend('local')\nb.server.start()\nprint(b.server._proc.pid)"
        reply = kc.execute_interactive(code, timeout=180, output_hook=lambda m: outputs.append(
            m["content"].get("text", "")))
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
