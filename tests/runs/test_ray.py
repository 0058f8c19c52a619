"""run_batch(engine="ray") and `moa-lab batch --ray` on a real local Ray cluster (`ray start --head`, 2 CPUs),
against the fault server: the same results as run_batch, a killed driver, a killed worker, a budget."""

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import free_port, run, write_jsonl

from moa_lab import read_results, run_batch
from moa_lab._budget import BudgetExceeded
from moa_lab.runs import RayOptions, results_frame

if importlib.util.find_spec("ray") is None:  # not imported here: Ray reads its token settings when first imported
    pytest.skip("Ray is an optional extra: pip install 'moa_lab[ray]' (make test installs it)", allow_module_level=True)
pytestmark = pytest.mark.ray
RAY = str(Path(sys.executable).parent / "ray")
MOA = [sys.executable, "-m", "moa_lab"]
#: Keys in every node's own environment (as a real cluster's nodes have them), never shipped through Ray.
NODE_KEYS = {
    "MOA_LAB_API_KEY": "moa-key-of-the-base-url",
    "THIRD_KEY": "key-of-y-only",
    "TOGETHER_API_KEY": "together-key-never-sent-here",
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A Ray head on this machine for the module (about 10 s to start); stopped after, with all it started and
    nothing else: another Ray cluster on the machine (a user's, a CI runner's) is never touched. The head runs
    under ``ray start --block`` in its own session: stopping that process stops its processes; any left over are
    found by this cluster's own temp folder in their command line. A decoy "gcs_server" (the name ``ray stop``
    looks for) stands in for a user's cluster and must survive."""
    import secrets
    import shutil

    import psutil

    port = free_port()
    temp = tmp_path_factory.mktemp("ray")
    token = temp / "token"
    token.write_text(secrets.token_hex(32))  # token authentication, as Ray does by default: drivers need it
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0"}
    saved = {name: os.environ.get(name) for name in auth}
    os.environ.update(auth)  # this process's drivers and the subprocesses' see the cluster's token
    decoy_program = shutil.copy("/bin/sleep", temp / "gcs_server")
    decoy = subprocess.Popen([decoy_program, "600"])  # "a user's cluster"
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            "--object-store-memory=134217728",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **NODE_KEYS},
        start_new_session=True,
    )

    def ours() -> list:
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if proc.pid != decoy.pid and any(str(temp) in part for part in proc.info["cmdline"] or ()):
                    found.append(proc)
        return found

    try:
        deadline = time.monotonic() + 120
        while not _listening(port) and head.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _listening(port), f"the Ray head did not start (exit code {head.poll()})"
        time.sleep(2)  # the raylet registers with the GCS
        yield f"127.0.0.1:{port}"
    finally:
        head.terminate()  # `ray start --block` stops the processes it started
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=60)
        left = ours()
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(left, timeout=30)
        alive = decoy.poll() is None
        decoy.kill()
        decoy.wait()
        for name, value in saved.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)
        assert alive, "stopping the tests' cluster stopped another Ray process of the machine"
        assert not [p for p in ours() if p.is_running()], "a process of the tests' cluster outlived it"


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def lines_of(outdir: Path) -> list[dict]:
    return read_results(outdir)


def test_a_ray_batch_equals_run_batch_answered_from_the_cache(fault, remote, tmp_path, cluster):
    prompts = write_jsonl(tmp_path / "in.jsonl", 200)
    here = run(run_batch(prompts, tmp_path / "here.jsonl", ["a", "b"], "agg", backend=remote, progress=False))
    made = len(fault.requests)
    outdir = tmp_path / "out"
    summary = run(
        run_batch(
            prompts,
            outdir,
            ["a", "b"],
            "agg",
            backend=remote,
            progress=False,
            engine=RayOptions(address=cluster, block_size=40),
        )
    )
    assert summary.done == 200 and summary.failed == 0 and summary.usage.cached == 600
    assert len(fault.requests) == made  # every answer from the cache, shared by the workers
    ours, theirs = lines_of(outdir), read_results(tmp_path / "here.jsonl")
    assert sorted(v["id"] for v in ours) == sorted(v["id"] for v in theirs)
    assert {v["id"]: v["final"] for v in ours} == {v["id"]: v["final"] for v in theirs}
    assert {v["settings_id"] for v in ours} == {v["settings_id"] for v in theirs}  # the same settings id
    blocks = sorted((outdir / "blocks").glob("*.jsonl"))
    assert len(blocks) == 5 and all(len(read_results(b)) == 40 for b in blocks)
    import pyarrow.parquet as pq

    table = pq.read_table(outdir / "blocks" / blocks[0].with_suffix(".parquet").name)
    assert table.num_rows == 40 and {"id", "final", "trace", "cost"} <= set(table.column_names)
    assert len(results_frame(outdir)) == 200 and here.done == 200
    again = run(
        run_batch(
            prompts,
            outdir,
            ["a", "b"],
            "agg",
            backend=remote,
            progress=False,
            engine=RayOptions(address=cluster, block_size=40),
        )
    )
    assert again.skipped == 200 and again.done == 0  # every block is there: nothing runs, Ray is not even joined
    with pytest.raises(ValueError, match="holds results made with other settings"):
        run(
            run_batch(prompts, outdir, ["a"], "agg", backend=remote, progress=False, engine=RayOptions(address=cluster))
        )
    edited = tmp_path / "edited.jsonl"  # the input edited between runs: an id now holds another prompt (CJK)
    edited.write_text(prompts.read_text().replace('"Question 7?"', '"質問 7? 🙂\\u2028"'))
    with pytest.raises(ValueError, match="holds answers to other prompts under the same ids .* id 'p7'"):
        run(
            run_batch(
                edited,
                outdir,
                ["a", "b"],
                "agg",
                backend=remote,
                progress=False,
                engine=RayOptions(address=cluster, block_size=40),
            )
        )


def test_a_killed_driver_resumes_to_exactly_one_line_per_prompt(tmp_path, cluster):
    from fault_server import FaultServer

    prompts = write_jsonl(tmp_path / "in.jsonl", 80)
    outdir = tmp_path / "out"
    env = {**os.environ, "MOA_LAB_CACHE": str(tmp_path / "cache.sqlite")}
    with FaultServer(latency=0.15) as slow:
        args = MOA + [
            "batch",
            str(prompts),
            str(outdir),
            "--proposers",
            "a",
            "--aggregator",
            "agg",
            "--backend",
            slow.url,
            "--ray",
            cluster,
            "--block-size",
            "10",
            "--actor-concurrency",
            "4",
            "--no-progress",
        ]
        driver = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 120
        while len(list((outdir / "blocks").glob("*.jsonl"))) < 2 and time.monotonic() < deadline:
            assert driver.poll() is None, driver.stdout.read()
            time.sleep(0.05)
        os.kill(driver.pid, signal.SIGKILL)  # mid-run: some blocks written, others in flight
        driver.wait(timeout=30)
        written = {v["id"]: v["prompt"] for v in lines_of(outdir)}
        assert 20 <= len(written) < 80
        made = len(slow.requests)
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    ids = [v["id"] for v in lines_of(outdir)]
    assert len(ids) == 80 and len(set(ids)) == 80  # exactly one line per prompt
    assert f"{len(written)} already there" in done.stdout
    asked = {m["content"] for r in slow.requests[made:] for m in r["messages"] if m["role"] == "user"}
    assert not asked & set(written.values())  # the written blocks are not run again
    assert not list((outdir / "blocks").glob(".*.tmp"))


def test_a_killed_worker_is_retried_by_ray_and_nothing_is_duplicated(tmp_path, cluster):
    from fault_server import FaultServer

    prompts = write_jsonl(tmp_path / "in.jsonl", 60)
    outdir = tmp_path / "out"
    killed = []

    def kill_a_worker_mid_block(server):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            workers = list((outdir / ".workers").glob("*")) if (outdir / ".workers").is_dir() else []
            if workers and len(server.requests) >= 6:  # calls under way: a block is in flight
                pid = int(workers[0].name)
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.02)

    with FaultServer(latency=0.2) as slow:
        watcher = threading.Thread(target=kill_a_worker_mid_block, args=(slow,), daemon=True)
        watcher.start()
        summary = run(
            run_batch(
                prompts,
                outdir,
                ["a"],
                "agg",
                backend=slow.url,
                progress=False,
                engine=RayOptions(address=cluster, block_size=10, actor_concurrency=4),
            )
        )
        watcher.join(timeout=5)
    assert killed, "no worker was killed"
    ids = [v["id"] for v in lines_of(outdir)]
    assert len(ids) == 60 and len(set(ids)) == 60 and summary.done == 60
    assert all(v["status"] == "ok" for v in lines_of(outdir))
    workers = {int(p.name) for p in (outdir / ".workers").iterdir()}
    assert killed[0] in workers and len(workers) >= 3  # the lost actor was started again


def test_a_ray_batch_stops_at_its_shared_budget_and_resumes(fault, remote, tmp_path, cluster):
    from moa_lab import estimate

    prompts = write_jsonl(tmp_path / "in.jsonl", 12)
    fault.script("agg", *["tokens:400"] * 12)
    one = estimate("Question 0?", ["a"], "agg", backend=remote, max_tokens=8)
    budget = 4 * (one.max_prompt_tokens + one.max_completion_tokens)
    outdir = tmp_path / "out"
    settings = dict(
        backend=remote,
        max_tokens=8,
        progress=False,
        engine=RayOptions(address=cluster, block_size=3, actor_concurrency=2),
    )
    with pytest.raises(BudgetExceeded, match="the batch stopped at its budget") as info:
        run(run_batch(prompts, outdir, ["a"], "agg", max_tokens_total=budget, **settings))
    first = lines_of(outdir)
    assert info.value.summary.left == 12 - len(first) > 0 and info.value.summary.done == len(first)
    again = run(run_batch(prompts, outdir, ["a"], "agg", max_tokens_total=100 * budget, **settings))
    ids = [v["id"] for v in lines_of(outdir)]
    assert again.skipped == len(first) and len(ids) == 12 and len(set(ids)) == 12


def test_ray_workers_send_each_key_where_the_driver_sends_it(tmp_path, cluster, monkeypatch):
    """MOA_LAB_BASE_URL with MOA_LAB_API_KEY, and y=URL|THIRD_KEY: in-process and on Ray, each server sees the
    same Authorization headers (the workers resolve the backend as the driver did, keys from their own
    environment); Together's key goes to neither."""
    from fault_server import FaultServer

    from moa_lab import get_backend

    for name, value in NODE_KEYS.items():
        monkeypatch.setenv(name, value)
    prompts = write_jsonl(tmp_path / "in.jsonl", 4)
    seen = {}
    with FaultServer() as base, FaultServer() as third:
        monkeypatch.setenv("MOA_LAB_BASE_URL", base.url)
        monkeypatch.setenv("MOA_LAB_MODEL_URLS", f"y={third.url}|THIRD_KEY")
        for engine, out in (("asyncio", tmp_path / "here.jsonl"), ("ray", tmp_path / "there")):
            extra = dict(engine=RayOptions(address=cluster, block_size=2)) if engine == "ray" else {}
            summary = run(run_batch(prompts, out, ["a", "y"], "a", cache=False, progress=False, **extra))
            assert summary.done == 4 and len(third.requests) == 4 and len(base.requests) == 8
            seen[engine] = (set(base.authorizations()), set(third.authorizations()))
            for server in (base, third):
                server.requests.clear()
                server.headers.clear()
    assert seen["asyncio"] == ({"Bearer moa-key-of-the-base-url"}, {"Bearer key-of-y-only"})
    assert seen["ray"] == seen["asyncio"]
    given = get_backend("http://127.0.0.1:9", api_key="a-key-given-as-a-value")
    with pytest.raises(ValueError, match="keys are never sent to Ray workers"):
        run(run_batch(prompts, tmp_path / "refused", ["a"], "a", backend=given, progress=False, engine="ray"))
    assert not (tmp_path / "refused").exists()


def test_relative_outdir_and_cache_paths_are_the_drivers(fault, remote, tmp_path, cluster, monkeypatch):
    """README's own `runs/big`, a relative cache file and a relative MOA_LAB_CACHE: the workers write where the
    driver's folder says, not in their own working folders."""
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "in.jsonl", 4)
    ray = dict(backend=remote, progress=False, engine=RayOptions(address=cluster, block_size=2))
    summary = run(run_batch("in.jsonl", "runs/big", ["a"], "agg", cache="answers.sqlite", **ray))
    assert summary.done == 4 and len(read_results(tmp_path / "runs" / "big")) == 4
    assert (tmp_path / "answers.sqlite").is_file()
    monkeypatch.setenv("MOA_LAB_CACHE", "env-cache.sqlite")
    again = run(run_batch("in.jsonl", "runs/other", ["a"], "agg", **ray))
    assert again.done == 4 and (tmp_path / "env-cache.sqlite").is_file()


def test_a_driver_killed_while_retry_failed_rewrites_a_block_leaves_each_prompt_in_one_file(tmp_path):
    """retry_failed rewrites a block without its failed lines: the old file is set aside first, so that a driver
    killed at any step leaves no prompt in two block files; the next run finishes the step."""
    import json

    from moa_lab.runs._ray import _drop_failed, block_name, mend_dropped

    blocks = tmp_path / "blocks"
    blocks.mkdir()
    lines = [
        {"id": f"p{i}", "prompt": f"Q{i}", "status": "ok" if i % 2 else "failed", "settings_id": "s"} for i in range(4)
    ]
    name = block_name([(v["id"], v["prompt"]) for v in lines], "s")
    (blocks / f"{name}.jsonl").write_text("".join(json.dumps(v) + "\n" for v in lines))
    kept = _drop_failed(tmp_path, lines, "s")
    assert [v["id"] for v in kept] == ["p1", "p3"] and [v["id"] for v in read_results(tmp_path)] == ["p1", "p3"]
    (new,) = blocks.glob("*.jsonl")
    for killed_after in ("set aside", "kept written"):  # the two moments a driver may die at
        for path in blocks.iterdir():
            path.unlink()
        (blocks / f".{name}.dropped").write_text("".join(json.dumps(v) + "\n" for v in lines))
        if killed_after == "kept written":
            new.write_text("".join(json.dumps(v) + "\n" for v in kept))
        ids = [v["id"] for v in read_results(tmp_path)] if list(blocks.glob("*.jsonl")) else []
        assert len(ids) == len(set(ids))  # never a prompt in two files, even before the mend
        mend_dropped(tmp_path, "s")
        assert sorted(p.name for p in blocks.iterdir() if not p.name.endswith(".parquet")) == [new.name]
        assert [v["id"] for v in read_results(tmp_path)] == ["p1", "p3"]
