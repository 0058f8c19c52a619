"""Promise 2: nothing the user produced is lost.

An aggregator that fails keeps the proposers' layers, and aggregating again calls no proposer: checked in every
aggregator cell of the fault table (test_fault_table.py). Here: a batch killed with SIGKILL again and again,
a damaged cache file, a disk that is full before the run or fills during it, a read-only output folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MOA, run, write_jsonl
from fault_server import FaultServer

from moa_lab import run_batch, run_moa
from moa_lab._cache import CacheWarning, ResponseCache
from moa_lab.runs._files import PROBE_BYTES

P = "What is MoA?"
ARGS = ["--proposers", "a,b,c,d", "--aggregator", "agg", "--no-progress", "--retries", "0"]


def lines_of(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").split("\n") if line] if path.exists() else []


def batch_cli(prompts: Path, out: Path, server: FaultServer, tmp_path: Path, *extra: str, **popen):
    env = {**os.environ, "MOA_LAB_CACHE": str(tmp_path / "cache.sqlite")}
    cmd = MOA + ["batch", str(prompts), str(out), *ARGS, "--backend", server.url, *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_a_batch_killed_again_and_again_resumes_to_exactly_one_line_per_prompt(tmp_path):
    """The CLI in a subprocess, killed with SIGKILL at random moments (some while it starts, most while it writes),
    then run to the end: every prompt exactly once, every line whole JSON. The prompts are what users have: a text
    file without ids (ids are line numbers), CJK, emoji and U+2028 inside a line, and the file grows between two
    runs (prompts appended). A prompt inserted at the top afterwards renumbers the lines: refused, nothing run."""
    n, more, out = 120, 30, tmp_path / "out.jsonl"
    texts = [f"问题 {i} 🚀: what is {i}\u2028times {i}?" for i in range(n + more)]
    prompts = tmp_path / "in.txt"
    prompts.write_text("\n".join(texts[:n]) + "\n", encoding="utf-8")
    rng = random.Random(5)
    counts = [0]
    with FaultServer(latency=0.1) as server:  # about 9 s of work in all
        for round_ in range(7):
            if round_ == 4:
                prompts.write_text("\n".join(texts) + "\n", encoding="utf-8")
            proc = batch_cli(prompts, out, server, tmp_path, "--concurrency", "8")
            if round_ >= 2:  # the first two die at any moment of their start; the others while writing
                deadline = time.monotonic() + 60
                while len(lines_of(out)) == counts[-1] and time.monotonic() < deadline:
                    time.sleep(0.01)
            time.sleep(rng.uniform(0, 0.4 if round_ >= 2 else 1.5))
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            assert all(json.loads(line)["id"] for line in lines_of(out))  # a torn line is only ever the last
            counts.append(len(lines_of(out)))
        done = batch_cli(prompts, out, server, tmp_path, "--concurrency", "8")
        stdout, stderr = done.communicate(timeout=120)
        assert done.returncode == 0, stderr
        rows = [json.loads(line) for line in lines_of(out)]
        assert sorted(int(r["id"]) for r in rows) == list(range(1, n + more + 1))  # each exactly once
        assert all(r["status"] == "ok" and r["prompt"] == texts[int(r["id"]) - 1] for r in rows)
        print("lines after each kill:", counts)
        assert counts == sorted(counts) and 0 < counts[-1] < n + more, counts  # the kills landed mid-run
        assert f"{n + more - counts[-1]} done" in stdout and f"{counts[-1]} already there" in stdout
        before, calls = out.read_bytes(), len(server.requests)
        prompts.write_text("A new first prompt\n" + "\n".join(texts) + "\n", encoding="utf-8")
        refused = batch_cli(prompts, out, server, tmp_path)
        _, stderr = refused.communicate(timeout=60)
        assert refused.returncode == 2 and "holds answers to other prompts under the same ids" in stderr, stderr
        assert out.read_bytes() == before and len(server.requests) == calls


def _damage(path: Path, how: str) -> None:
    good = ResponseCache(path)
    for i in range(300):
        good.put(f"k{i}", "m", "some answer text " * 20, 1, 2)
    good.close()
    data = path.read_bytes()
    assert len(data) > 8192
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(b"this is not a database at all" * 100)
    elif how == "header overwritten":
        path.write_bytes(b"\xff" * 100 + data[100:])
    elif how == "empty file":
        path.write_bytes(b"")
    elif how != "none":
        raise ValueError(how)


@pytest.mark.parametrize("how", ["truncated", "garbage", "header overwritten", "empty file"])
def test_a_damaged_cache_file_is_detected_and_rebuilt(fault, remote, tmp_path, how):
    path = tmp_path / "damaged.sqlite"
    _damage(path, how)
    with pytest.warns(CacheWarning, match="unreadable") if how != "empty file" else contextlib.nullcontext():
        cache = ResponseCache(path)  # an empty file is a new, empty database: nothing to warn about
    assert len(cache) == 0
    if how != "empty file":
        assert list(tmp_path.glob("damaged.sqlite.corrupt-*"))  # kept aside for a look, not deleted
    first = run(run_moa(P, ["a", "b"], "agg", cache=cache, backend=remote))
    assert first.text and len(cache) == 3
    second = run(run_moa(P, ["a", "b"], "agg", cache=cache, backend=remote))
    assert second.text == first.text and len(fault.requests) == 3  # the rebuilt cache answers


def test_two_damaged_caches_set_aside_in_the_same_second_keep_both_originals(tmp_path, monkeypatch):
    """Two processes that find the file damaged in the same second: each original is kept under its own name."""
    import moa_lab._cache

    monkeypatch.setattr(moa_lab._cache.time, "time", lambda: 1_800_000_000.0)  # the same second, twice
    path = tmp_path / "c.sqlite"
    for marker in (b"first", b"second"):
        path.write_bytes(marker * 2000)
        with pytest.warns(CacheWarning, match="unreadable"):
            ResponseCache(path).close()
        path.unlink()  # as the other process found it: damaged again
    kept = sorted(p.read_bytes()[:5] for p in tmp_path.glob("c.sqlite.corrupt-*"))
    assert kept == [b"first", b"secon"], kept


def test_a_damaged_cache_leaves_no_stale_wal_or_shm_file_behind(tmp_path):
    path = tmp_path / "c.sqlite"
    _damage(path, "garbage")
    for suffix in ("-wal", "-shm"):  # left by a process that died while it wrote: they belong to the damaged file
        path.with_name(path.name + suffix).write_bytes(b"stale" * 100)
    with pytest.warns(CacheWarning, match="unreadable"):
        cache = ResponseCache(path)
    cache.put("k", "m", "text", 1, 2)
    cache.close()
    assert sorted(p.name.split(".corrupt-")[0] for p in tmp_path.iterdir()) == ["c.sqlite", "c.sqlite"]
    assert not any(b"stale" in p.read_bytes() for p in tmp_path.iterdir())  # the new file never read them
    assert len(ResponseCache(path)) == 1


def test_a_locked_cache_is_turned_off_and_left_alone(fault, remote, tmp_path, monkeypatch):
    """Another process holds the file's lock longer than the busy timeout: the cache is off for this process, the
    run goes on, and the healthy file is not mistaken for a damaged one."""
    path = tmp_path / "c.sqlite"
    _damage(path, "none")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    monkeypatch.setattr(ResponseCache, "busy_timeout", 0.2)
    try:
        with pytest.warns(
            CacheWarning,
            match=r"could not be opened \(OperationalError: database is locked\); it is "
            r"off for this process.*left as it is",
        ):
            cache = ResponseCache(path)
        result = run(run_moa(P, ["a", "b"], "agg", cache=cache, backend=remote))
    finally:
        holder.rollback()
        holder.close()
    assert result.text and not cache.enabled and not list(tmp_path.glob("*corrupt*"))
    assert len(ResponseCache(path)) == 300  # whole, and usable again once the lock is gone


def test_a_cache_in_a_read_only_folder_is_turned_off_and_left_alone(fault, remote, tmp_path):
    """Opening needs its -wal and -shm files beside it: where they cannot be made, the cache is off (it used to be
    taken for damaged, and moving it aside failed: the error reached the run)."""
    folder = tmp_path / "shared"
    folder.mkdir()
    _damage(folder / "c.sqlite", "none")
    with read_only(folder):
        with pytest.warns(CacheWarning, match="could not be opened"):
            cache = ResponseCache(folder / "c.sqlite")
        result = run(run_moa(P, ["a", "b"], "agg", cache=cache, backend=remote))
    assert result.text and not cache.enabled and sorted(p.name for p in folder.iterdir()) == ["c.sqlite"]
    assert len(ResponseCache(folder / "c.sqlite")) == 300


def test_a_disk_too_full_for_a_new_cache_does_not_stop_a_run(fault, tmp_path):
    """A process that may not write more than 4 KiB to a file (a full disk, a quota): the new cache file cannot be
    made; the run answers all the same, with a warning, and nothing is set aside."""
    script = (
        "import moa_lab, sys\n"
        f"r = moa_lab.run_moa_sync('Hi', ['a', 'b'], 'agg', backend={fault.url!r})\n"
        "print(r.text)\n"
    )
    env = {**os.environ, "MOA_LAB_CACHE": str(tmp_path / "cache.sqlite")}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_file_size_limit(4096),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("agg answers") and "could not be opened" in done.stderr, done.stderr
    assert not list(tmp_path.glob("*corrupt*"))


def test_a_damaged_default_cache_does_not_stop_the_cli(fault, tmp_path):
    prompts = write_jsonl(tmp_path / "in.jsonl", 3)
    (tmp_path / "cache.sqlite").write_bytes(b"garbage" * 1000)
    proc = batch_cli(prompts, tmp_path / "out.jsonl", fault, tmp_path)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "unreadable" in stderr and "3 done" in stdout, stderr
    assert len(lines_of(tmp_path / "out.jsonl")) == 3


def _file_size_limit(limit: int):
    def apply() -> None:  # in the child: a file may not grow past `limit` bytes, as on a disk that is full
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_is_reported_before_any_call(fault, tmp_path):
    out = tmp_path / "out.jsonl"
    proc = batch_cli(
        write_jsonl(tmp_path / "in.jsonl", 5), out, fault, tmp_path, preexec_fn=_file_size_limit(PROBE_BYTES // 2)
    )
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2, stderr
    assert f"cannot write the results to {str(out)!r}: File too large" in stderr and "nothing was run" in stderr
    assert fault.requests == [] and not out.exists()


def test_a_disk_that_fills_mid_run_stops_the_batch_at_once_keeping_whole_lines(tmp_path):
    n, concurrency, out = 80, 4, tmp_path / "out.jsonl"
    prompts = write_jsonl(tmp_path / "in.jsonl", n)
    with FaultServer(latency=0.02) as server:
        proc = batch_cli(
            prompts,
            out,
            server,
            tmp_path,
            "--concurrency",
            str(concurrency),
            "--no-cache",
            preexec_fn=_file_size_limit(PROBE_BYTES + 30_000),
        )
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 1, stderr
        assert f"cannot write to {str(out)!r}: File too large; the batch stopped" in stderr
        kept = lines_of(out)
        assert 0 < len(kept) < n and out.read_text().endswith("\n")  # whole lines only: a short write is undone
        assert all(json.loads(line)["status"] == "ok" for line in kept)
        # No prompt was started after the failure: the calls are the lines kept and those in flight, at most.
        assert len(server.requests) <= (len(kept) + concurrency + 1) * 5, (len(server.requests), len(kept))
        resumed = batch_cli(prompts, out, server, tmp_path, "--concurrency", str(concurrency))
        stdout, stderr = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, stderr
    assert f"{len(kept)} already there" in stdout
    assert sorted(json.loads(line)["id"] for line in lines_of(out)) == sorted(f"p{i}" for i in range(n))


@contextlib.contextmanager
def read_only(folder: Path):
    """A folder nobody may write in: chmod for a user; for root (whom modes do not stop) the immutable flag."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        undo = lambda: folder.chmod(0o755)  # noqa: E731
    else:
        subprocess.run(["chattr", "+i", str(folder)], check=True)  # fails loudly where it cannot be set
        undo = lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)  # noqa: E731
    try:
        yield folder
    finally:
        undo()


REFUSED = "(cannot write the results to .*nothing was run|no write permission)"  # as root | as a user


def test_a_read_only_output_folder_is_refused_before_any_call(fault, remote, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    with read_only(folder):
        with pytest.raises((OSError, ValueError), match=REFUSED):
            run(run_batch(["q1", "q2"], folder / "out.jsonl", ["a"], "agg", backend=remote, progress=False))
        proc = batch_cli(write_jsonl(tmp_path / "in.jsonl", 2), folder / "sub" / "out.jsonl", fault, tmp_path)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 2 and re.search("moa-lab batch: error: .*" + REFUSED, stderr), stderr
    assert fault.requests == [] and list(folder.iterdir()) == []


def test_an_error_in_on_result_stops_the_whole_batch_at_once(tmp_path):
    """In a notebook the loop outlives the call: workers left running would go on calling models unseen."""
    seen = []

    def on_result(line: dict) -> None:
        seen.append(line["id"])
        if len(seen) == 3:
            raise RuntimeError("the user's callback failed")

    async def main(server):
        with pytest.raises(RuntimeError, match="callback failed"):
            await run_batch(
                [f"q{i}" for i in range(40)],
                tmp_path / "out.jsonl",
                ["a", "b"],
                "agg",
                concurrency=4,
                backend=server.url,
                progress=False,
                on_result=on_result,
            )
        await asyncio.sleep(0.2)  # requests sent before the failure reach the server (keep-alive: a little late)
        stopped = len(server.requests)
        await asyncio.sleep(0.5)  # the loop keeps running, as a kernel's does
        return stopped, len(server.requests)

    with FaultServer(latency=0.05) as server:
        stopped, later = run(main(server))
    assert later == stopped and len(lines_of(tmp_path / "out.jsonl")) >= 3  # the lines made are kept
