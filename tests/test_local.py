"""The real embedded llama.cpp server with the bundled models (small max_tokens: structure, never quality)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import run

import moa_lab
from moa_lab import aggregate, run_layer, run_moa

pytestmark = pytest.mark.local
P = "Name three fun things to do in San Francisco."
S, G = "smollm2-135m", "gemma3-270m"


def test_two_layer_run(local):
    result = run(run_moa(P, [S, G], S, max_tokens=24, backend=local))
    assert len(result.trace) == 3 and all(c.ok for c in result.trace)
    assert all(answer.strip() for answer in result.layers[0].answers) and result.text.strip()
    assert all(c.prompt_tokens and 0 < c.completion_tokens <= 24 for c in result.trace)


def test_three_layer_run_per_layer_models(local):
    result = run(run_moa(P, [[S, G], [G, S]], S, max_tokens=16, backend=local))
    assert [len(layer.calls) for layer in result.layers] == [2, 2] and len(result.trace) == 5
    assert [c.model for c in result.trace] == [S, G, G, S, S]
    assert all(c.ok and c.text.strip() for c in result.trace)
    # Layer 2 saw layer 1's answers in its prompt: its prompts are longer than layer 1's.
    assert result.layers[1].calls[1].prompt_tokens > result.layers[0].calls[0].prompt_tokens + 16


def test_same_model_proposers_give_different_answers(local):
    layer = run(run_layer(P, [S, S, S], max_tokens=24, backend=local))
    assert len(set(layer.answers)) == 3


def test_same_seed_same_answer(local):
    one = run(run_layer(P, [S], max_tokens=16, seed=7, backend=local))
    two = run(run_layer(P, [S], max_tokens=16, seed=7, backend=local))
    assert one.answers == two.answers


def test_stream_arrives_in_several_chunks_with_usage(local):
    agg = aggregate(P, ["Visit the Golden Gate Bridge.", "Ride a cable car."], S, max_tokens=24, backend=local)
    chunks = list(agg)
    assert len(chunks) > 3 and "".join(chunks) == agg.record.text
    assert agg.record.completion_tokens == len(chunks) and agg.record.prompt_tokens > 20


def test_front_rejects_unknown_model_and_lists_models(local):
    url = local.server.url
    r = httpx.post(url + "/v1/chat/completions", json={"model": "gpt-4", "messages": []}, timeout=30)
    assert r.status_code == 404 and "smollm2-135m" in r.json()["error"]["message"]
    models = httpx.get(url + "/v1/models").json()["data"]
    assert {m["id"] for m in models} >= {S, G}


def test_layer_runs_on_all_workers_in_parallel(local):
    if local.server.workers < 2:
        pytest.skip("one worker: nothing runs in parallel")
    t0 = time.perf_counter()
    layer = run(run_layer(P, [S, S], max_tokens=48, backend=local))
    wall = time.perf_counter() - t0
    assert max(c.started for c in layer.calls) - min(c.started for c in layer.calls) < 0.5
    assert wall < sum(c.seconds for c in layer.calls)  # overlapped, not one after the other


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pids, seconds=20.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def test_stop_leaves_no_processes():
    server = moa_lab.LocalServer(workers=1)
    server.start()
    front = server._proc.pid
    workers = _children(front)
    assert len(workers) == len(moa_lab.BUNDLED_MODELS)
    server.stop()
    assert _wait_gone([front] + workers) == []


def test_no_orphans_when_the_user_process_is_killed(tmp_path):
    """The user's Python dies by SIGKILL (no atexit): the server and its workers still go away."""
    script = (
        "import moa_lab, os, sys, time\n"
        "s = moa_lab.LocalServer(workers=1); s.start()\n"
        "print(s._proc.pid, flush=True); time.sleep(600)\n"
    )
    user = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    front = int(user.stdout.readline())
    workers = _children(front)
    assert workers
    os.kill(user.pid, signal.SIGKILL)
    user.wait()
    assert _wait_gone([front] + workers) == []


def test_failed_start_shows_the_log_tail():
    server = moa_lab.LocalServer(workers=1, startup_timeout=0.05)
    with pytest.raises(moa_lab.LocalServerError, match="did not answer in 0.05s; log .*server.log"):
        server.start()
    assert server._proc is None


def test_server_error_becomes_a_call_failure_naming_the_model(monkeypatch):
    backend = moa_lab.get_backend("local")
    broken = moa_lab.LocalServer(workers=1, startup_timeout=0.05)
    backend = moa_lab.Backend("local", None, {}, backend.known_models, server=broken)
    with pytest.raises(moa_lab.MoAError, match=r"smollm2-135m \(layer 1 proposer 1\): LocalServerError"):
        run(run_layer(P, [S], backend=backend))


def test_front_passes_bad_request_fields_to_llama_cpp_for_its_own_error(local):
    body = {"model": S, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": "many"}
    r = httpx.post(local.server.url + "/v1/chat/completions", json=body, timeout=30)
    # llama-cpp-python answers validation errors with 500; the front passes its message on and keeps serving.
    assert r.status_code == 500 and "'max_tokens'" in r.json()["error"]["message"]
    assert run(run_layer(P, [S], max_tokens=4, backend=local)).calls[0].ok


def test_a_request_cancelled_while_queued_never_takes_a_core(local):
    """Fill every core with calls, one of them shorter; queue a long call and cancel it (as a quorum cancels a
    straggler); then queue a short one: it takes the first core that frees, not after the cancelled call (which,
    being longer, would go first)."""
    import asyncio

    prompt = "Write a very long story about a dragon who learns to bake bread, with many chapters."
    settings = dict(temperature=0.0, timeout=120, retries=0, backend=local, cache=False)

    async def scenario():
        busy = [asyncio.ensure_future(run_layer(prompt, [S], seed=i, max_tokens=100 if i == 0 else 250, **settings))
                for i in range(local.server.workers)]
        await asyncio.sleep(0.4)
        straggler = asyncio.ensure_future(run_layer(prompt, [S], seed=99, max_tokens=200, **settings))
        await asyncio.sleep(0.4)
        straggler.cancel()
        await asyncio.sleep(0.5)  # the server looks every 0.25 s
        short = asyncio.ensure_future(run_layer(prompt, [S], seed=7, max_tokens=2, **settings))
        first = (await busy[0]).calls[0]
        done = (await short).calls[0]
        await asyncio.gather(*busy[1:])
        return first, done.started + done.seconds

    first, short_done = run(scenario())
    assert first.completion_tokens == 100  # it held its core for a while (about 2 s)
    # The short call ends right after (or, seen from here, even just before) the first core frees: the cancelled
    # call, which would have gone first, would hold that core about 3 s.
    assert short_done - (first.started + first.seconds) < 1.2
