"""The real embedded llama.cpp server with the bundled models (small max_tokens: structure, never quality)."""

import os
import shutil
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
    r = httpx.post(
        url + "/v1/chat/completions",
        json={"model": "gpt-4", "messages": [{"role": "user", "content": "Hi"}]},
        timeout=30,
    )
    assert r.status_code == 404 and "smollm2-135m" in r.json()["error"]["message"]
    models = httpx.get(url + "/v1/models").json()["data"]
    assert {m["id"] for m in models} >= {S, G}


def test_layer_runs_on_all_workers_in_parallel(local):
    if local.server.threads < 2:
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


def test_stop_leaves_no_processes_and_no_folder():
    server = moa_lab.engine.LocalServer(threads=1)
    server.start()
    front, folder = server._proc.pid, server.log_path.parent
    workers = _children(front)
    assert len(workers) == len(moa_lab.engine.BUNDLED_MODELS) and folder.is_dir()
    server.stop()
    assert _wait_gone([front] + workers) == [] and not folder.exists()


def test_no_orphans_when_the_user_process_is_killed(tmp_path):
    """The user's Python dies by SIGKILL (no atexit): the server and its workers still go away, and so does the
    server's folder of logs (nobody is left to read it)."""
    script = (
        "import moa_lab, os, sys, time\n"
        "s = moa_lab.engine.LocalServer(threads=1); s.start()\n"
        "print(s._proc.pid, s.log_path.parent, flush=True); time.sleep(600)\n"
    )
    user = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    front, folder = user.stdout.readline().split()
    front, folder = int(front), Path(folder)
    workers = _children(front)
    assert workers and folder.is_dir()
    os.kill(user.pid, signal.SIGKILL)
    user.wait()
    assert _wait_gone([front] + workers) == [] and not folder.exists()


def test_failed_start_shows_the_log_tail_and_keeps_the_log():
    server = moa_lab.engine.LocalServer(threads=1, startup_timeout=0.05)
    with pytest.raises(moa_lab.engine.LocalServerError, match="did not answer in 0.05s; log .*server.log"):
        server.start()
    assert server._proc is None and server.log_path.is_file()  # the message names it: it stays for a look
    shutil.rmtree(server.log_path.parent)


def test_server_error_becomes_a_call_failure_naming_the_model(monkeypatch):
    backend = moa_lab.get_backend("local")
    broken = moa_lab.engine.LocalServer(threads=1, startup_timeout=0.05)
    backend = moa_lab.Backend("local", None, {}, backend.known_models, server=broken)
    with pytest.raises(moa_lab.MoAError, match=r"smollm2-135m \(layer 1 proposer 1\): LocalServerError"):
        run(run_layer(P, [S], backend=backend))
    shutil.rmtree(broken.log_path.parent)  # kept by the failed start, for a look


@pytest.mark.parametrize("limit", ["many", 0, -1, 2.5, True])
def test_the_front_refuses_a_max_tokens_llama_cpp_would_read_as_no_limit(local, limit):
    body = {"model": S, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": limit}
    r = httpx.post(local.server.url + "/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["message"] == (
        f"max_tokens must be an integer >= 1 (or left out: {local.server.max_tokens_cap}), got {limit!r}"
    )
    assert run(run_layer(P, [S], max_tokens=4, backend=local)).calls[0].ok  # the front keeps serving


def test_a_request_cancelled_while_queued_never_takes_a_core(local):
    """Fill every core with calls, one of them shorter; queue a long call and cancel it (as a quorum cancels a
    straggler); then queue a short one: it takes the first core that frees, not after the cancelled call (which,
    being longer, would go first)."""
    import asyncio

    prompt = "Write a very long story about a dragon who learns to bake bread, with many chapters."
    settings = dict(temperature=0.0, timeout=120, retries=0, backend=local, cache=False)

    async def scenario():
        busy = [
            asyncio.ensure_future(run_layer(prompt, [S], seed=i, max_tokens=150 if i == 0 else 400, **settings))
            for i in range(local.server.threads)
        ]
        await asyncio.sleep(0.3)
        straggler = asyncio.ensure_future(run_layer(prompt, [S], seed=99, max_tokens=200, **settings))
        await asyncio.sleep(0.3)
        straggler.cancel()  # about 0.8 s before the first core frees: the server looks every 0.25 s
        await asyncio.sleep(0.4)
        short = asyncio.ensure_future(run_layer(prompt, [S], seed=7, max_tokens=2, **settings))
        first = (await busy[0]).calls[0]
        done = (await short).calls[0]
        await asyncio.gather(*busy[1:])
        return first, done.started + done.seconds

    first, short_done = run(scenario())
    assert first.completion_tokens == 150  # it held its core for a while (about 1.4 s)
    # The short call ends right after (or, seen from here, even just before) the first core frees. Had the
    # cancelled call (which, being longer, would go first) taken that core, the short one would wait for a core
    # about 1.8 s longer.
    assert short_done - (first.started + first.seconds) < 1.0


def status(server) -> dict:
    return httpx.get(server.url + "/moa_lab/status", timeout=10).json()


def wait_for(condition, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_streams_that_disconnect_under_load_give_every_core_back(local):
    """32 streams at once on 2 cores from clients that hang up early: some before any answer (while queued), most
    after 1 to 10 lines (Stop in the playground, a ``break``, a client timeout). Afterwards no core is held, nothing
    waits, and a layer of two calls runs on both cores at once. (Before, a core was lost for good when the code that
    gave it back was cancelled while it waited for the pool's lock: this storm lost both.)"""
    import asyncio
    import json
    import random
    from urllib.parse import urlsplit

    rng = random.Random(7)
    where = urlsplit(local.server.url)

    async def one(i: int) -> None:
        body = json.dumps(
            {
                "model": rng.choice([S, G]),
                "messages": [{"role": "user", "content": f"Story {i}."}],
                "max_tokens": 40,
                "stream": True,
            }
        ).encode()
        leave_after = rng.choice([0, 0, 1, 2, 3, 10, None])  # data lines read before hanging up
        reader, writer = await asyncio.open_connection(where.hostname, where.port)
        try:
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
            seen = 0
            while leave_after is None or seen < leave_after:
                line = await reader.readline()
                if not line or b"[DONE]" in line:
                    break
                seen += line.startswith(b"data: ")
        finally:
            writer.close()

    async def storm() -> None:
        await asyncio.gather(*(one(i) for i in range(32)))

    run(storm())
    assert wait_for(lambda: (lambda s: s["busy"] == 0 and s["waiting"] == 0)(status(local.server))), status(
        local.server
    )
    layer = run(run_layer(P, [S, S], max_tokens=24, cache=False, timeout=30, backend=local))
    assert all(c.ok for c in layer.calls)
    assert max(c.started for c in layer.calls) - min(c.started for c in layer.calls) < 0.5  # both cores free


@pytest.fixture
def own_server():
    """A server of this test's own (one worker per model), to kill parts of."""
    server = moa_lab.engine.LocalServer(threads=1)
    server.start()
    yield server, moa_lab.Backend("local", None, {}, server.model_names(), server=server, default_max_tokens=64)
    server.stop()


def test_a_dead_worker_is_started_again_and_the_call_it_held_answers(own_server):
    """A llama.cpp worker killed while it answers: the front gives the call to its replacement (the caller sees one
    attempt, no error), logs the death and the restart, and the model keeps answering."""
    import asyncio

    server, backend = own_server
    (worker,) = [w for w in status(server)["workers"] if w["model"] == S]

    async def kill_while_busy():
        call = asyncio.ensure_future(run_layer(P, [S], max_tokens=200, cache=False, backend=backend))
        await asyncio.sleep(0.5)
        os.kill(worker["pid"], signal.SIGKILL)
        return await call

    layer = run(kill_while_busy())
    assert layer.calls[0].ok and layer.calls[0].attempts == 1 and layer.calls[0].text.strip()
    (fresh,) = [w for w in status(server)["workers"] if w["model"] == S]
    assert fresh["generation"] == 1 and fresh["alive"] and fresh["pid"] != worker["pid"]
    log = server.log_path.read_text()
    assert (
        f"llama.cpp worker {worker['index']} ({S}, pid {worker['pid']}) exited with code -9; starting it again" in log
    )
    assert "started again as" in log
    assert run(run_layer(P, [S, G], max_tokens=4, cache=False, backend=backend)).calls[1].ok


def test_a_worker_that_dies_mid_stream_is_named_in_the_error_and_its_text_kept(own_server):
    """A stream already under way cannot move to another worker: the front ends it with an error event naming the
    worker, the call keeps the text that arrived, and the aggregator's failure says so (not a quiet end)."""
    server, backend = own_server
    (worker,) = [w for w in status(server)["workers"] if w["model"] == S]

    async def kill_mid_stream():
        agg = aggregate(P, ["Ride a cable car."], S, max_tokens=300, cache=False, retries=0, backend=backend)
        chunks = []
        with pytest.raises(moa_lab.MoAError) as info:
            async for chunk in agg:
                chunks.append(chunk)
                if len(chunks) == 3:
                    os.kill(worker["pid"], signal.SIGKILL)
        return info.value, chunks

    error, chunks = run(kill_mid_stream())
    assert len(chunks) >= 3 and error.partial == "".join(chunks)
    (call,) = error.failures
    assert call.error.startswith(
        f"stream broke after {len(error.partial)} characters: HTTP 502 in the stream: "
        f"llama.cpp worker {worker['index']} ({S}, pid {worker['pid']}) stopped mid-answer"
    )
    assert wait_for(lambda: [w for w in status(server)["workers"] if w["model"] == S][0]["generation"] == 1)


def test_a_worker_that_cannot_be_started_again_is_given_up_and_its_model_answers_503(tmp_path, monkeypatch):
    """The model file went away under a running server: the dead worker's restarts fail, the front gives up on it
    after 3 tries, logs why, and answers that model's calls with a 503 naming the cause (never an endless wait);
    the other model still answers."""
    from moa_lab.engine._local import MODEL_FILES, model_path

    folder = tmp_path / "models"
    folder.mkdir()
    for name, file in MODEL_FILES.items():
        (folder / file).symlink_to(model_path(name))
    monkeypatch.setenv("MOA_LAB_MODEL_DIR", str(folder))
    server = moa_lab.engine.LocalServer(threads=1)
    server.start()
    try:
        backend = moa_lab.Backend("local", None, {}, server.model_names(), server=server, default_max_tokens=64)
        (folder / MODEL_FILES[S]).unlink()
        (worker,) = [w for w in status(server)["workers"] if w["model"] == S]
        os.kill(worker["pid"], signal.SIGKILL)
        assert wait_for(lambda: [w for w in status(server)["workers"] if w["model"] == S][0]["failed"], 60)
        layer = run(run_layer(P, [S, G], max_tokens=4, retries=0, cache=False, backend=backend))
        log = server.log_path.read_text()
    finally:
        server.stop()
    assert layer.calls[0].error.startswith(
        f"HTTP 503: {S} cannot answer: llama.cpp worker {worker['index']} ({S}, "
        f"pid {worker['pid']}) died and could not be started again (3 tries)"
    ), layer.calls[0].error
    assert layer.calls[1].ok and log.count("could not be started again") >= 3


def test_a_dead_embedded_server_is_started_again_by_the_next_call(own_server, caplog):
    server, backend = own_server
    front, folder = server._proc.pid, server.log_path.parent
    workers = _children(front)
    os.kill(front, signal.SIGKILL)
    assert _wait_gone([front] + workers) == []  # its workers went with it
    with caplog.at_level("WARNING", logger="moa_lab"):
        layer = run(run_layer(P, [S], max_tokens=4, cache=False, backend=backend))
    assert layer.calls[0].ok and server.restarts == 1 and server._proc.pid != front
    assert f"the embedded llama.cpp server (pid {front}) exited with code -9; starting it again" in caplog.text
    assert not folder.exists()  # the dead one's folder went, once read


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_prompt_longer_than_the_context_is_an_error_that_says_so(local, stream):
    """The worker checks the prompt before a stream starts and answers HTTP 400 in OpenAI's words, which is not
    retried and names the model."""
    long_prompt = "word " * 5000
    with pytest.raises(moa_lab.MoAError) as info:
        if stream:
            run(aggregate(long_prompt, ["x"], S, max_tokens=8, backend=local))
        else:
            run(run_layer(long_prompt, [S], max_tokens=8, backend=local))
    (call,) = info.value.failures
    assert call.attempts == 1 and call.error.startswith(
        "HTTP 400: This model's maximum context length is 4096 tokens. However, you requested 5"
    ), call.error
    assert call.describe_failure().startswith(f"{S} (layer ")


def test_answers_from_another_model_file_under_the_same_name_are_kept_apart(local, tmp_path, monkeypatch):
    """MOA_LAB_MODEL_DIR with other files under the bundled names: the cache and a batch's settings know what
    answers (a file's content, wherever it lies), so the old answers are neither replayed nor resumed."""
    from moa_lab.engine._local import MODEL_FILES

    files = local.server.model_files()
    folder = tmp_path / "my models"
    folder.mkdir()
    (folder / MODEL_FILES[G]).symlink_to(files[G])  # the same file elsewhere: the same model
    (folder / MODEL_FILES[S]).symlink_to(files[G])  # another model under SmolLM2's name
    monkeypatch.setenv("MOA_LAB_MODEL_DIR", str(folder))
    swapped = moa_lab.Backend(
        "local", None, {}, local.known_models, server=moa_lab.engine.LocalServer(), default_max_tokens=64
    )
    assert swapped.scope(G) == local.scope(G) and swapped.scope(S) != local.scope(S)
    out = tmp_path / "out.jsonl"
    settings = dict(proposers=[S], aggregator=S, max_tokens=4, progress=False)
    run(moa_lab.run_batch(["Hi"], out, backend=local, **settings))
    with pytest.raises(ValueError, match="other servers or model files behind the same model names"):
        run(moa_lab.run_batch(["Hi"], out, backend=swapped, **settings))
    assert not swapped.server.running


BAD_BODIES = [  # (body, the field named): OpenAI-valid forms are accepted, wrong ones get a 400, never a 500
    ({"model": S, "messages": 5}, "messages"),
    ({"model": [S], "messages": [{"role": "user", "content": "Hi"}]}, "model"),
    ({"model": S, "messages": [{"role": "user", "content": "Hi"}], "temperature": "hot"}, "temperature"),
    (
        {"model": S, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        "messages[0].content[0]",
    ),
    ({"model": S, "messages": [{"role": "wizard", "content": "Hi"}]}, "messages[0].role"),
    ({"model": S, "messages": [{"role": "user", "content": "Hi"}], "stream": "yes"}, "stream"),
    ({"model": S, "messages": [{"role": "user", "content": "Hi"}], "stop": 3}, "stop"),
    ([1, 2], "body"),
]


def test_the_front_answers_bad_bodies_with_a_400_naming_the_field_and_takes_text_parts(local):
    url = local.server.url + "/v1/chat/completions"
    for body, field in BAD_BODIES:
        r = httpx.post(url, json=body, timeout=30)
        assert r.status_code == 400, (body, r.status_code, r.text)
        error = r.json()["error"]
        assert (
            error["param"] == field
            and error["type"] == "invalid_request_error"
            and field.split("[")[0] in error["message"]
        ), (body, error)
    r = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "body"
    parts = [{"type": "text", "text": "Say "}, {"type": "text", "text": "hi 🙂"}]  # OpenAI's own form
    for stream in (False, True):
        r = httpx.post(
            url,
            json={"model": S, "messages": [{"role": "user", "content": parts}], "max_tokens": 4, "stream": stream},
            timeout=60,
        )
        assert r.status_code == 200 and ("[DONE]" in r.text if stream else r.json()["choices"][0]["message"])


def test_a_client_attached_to_a_served_alias_learns_its_names_and_identities(local, monkeypatch, tmp_path):
    """MOA_LAB_LOCAL_URL pointed at `moa-lab serve --alias fast=...` (in any URL form): the alias is a known
    model, its answers are cached under the same identity as the server's own model, and calls go to the right
    path (not /v1/v1/...)."""
    from conftest import MOA, free_port

    port = free_port()
    serve = subprocess.Popen(
        MOA + ["serve", "--port", str(port), "--alias", f"fast={S}", "--threads", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_for(lambda: _answers(f"http://127.0.0.1:{port}/v1/models"), 120), serve.stdout.read()
        for form in ("", "/", "/v1", "/v1/"):
            monkeypatch.setenv("MOA_LAB_LOCAL_URL", f"http://127.0.0.1:{port}{form}")
            backend = moa_lab.get_backend()
            assert backend.server.attached and "fast" in backend.known_models and S in backend.known_models
            assert backend.server.url == f"http://127.0.0.1:{port}"
            assert backend.scope("fast") == backend.scope(S) == "local:" + local.server.identity(S)
            layer = run(run_layer(P, ["fast"], max_tokens=4, retries=0, backend=backend))
            assert layer.calls[0].ok, layer.calls[0].error
    finally:
        serve.terminate()
        serve.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_truncated_gguf_of_yours_is_named_on_every_call_and_the_bundled_models_still_answer(tmp_path):
    from moa_lab.engine._local import model_path

    data = model_path(S).read_bytes()
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(data[: len(data) // 3])  # a download cut short: a GGUF header, a third of the weights
    server = moa_lab.engine.LocalServer(threads=1, models=[f"broken={broken}"])
    server.start()
    try:
        backend = moa_lab.Backend("local", None, {}, server.model_names(), server=server, default_max_tokens=8)
        layer = run(
            run_layer(P, [S, "broken", "broken"], max_tokens=4, retries=0, cache=False, min_ok=1, backend=backend)
        )
    finally:
        server.stop()
    ok, *failed = layer.calls
    assert ok.ok and len(failed) == 2
    for call in failed:
        assert call.error.startswith("HTTP 503: broken cannot answer: its model file") and str(broken) in call.error
        assert "could not be loaded" in call.error


def test_a_hung_worker_is_killed_by_the_watchdog_and_its_cores_come_back(monkeypatch):
    """A worker that stops answering (SIGSTOP: it reads nothing more) while it holds a call: after
    MOA_LAB_WORKER_TIMEOUT seconds the front kills it, its cores come back, it is started again and answers."""
    monkeypatch.setenv("MOA_LAB_WORKER_TIMEOUT", "2")
    server = moa_lab.engine.LocalServer(threads=1)
    server.start()
    try:
        backend = moa_lab.Backend("local", None, {}, server.model_names(), server=server, default_max_tokens=64)
        (worker,) = [w for w in status(server)["workers"] if w["model"] == S]
        import threading

        def stop_it_mid_call() -> None:
            assert wait_for(lambda: status(server)["busy"] == 1, 30)
            os.kill(worker["pid"], signal.SIGSTOP)

        threading.Thread(target=stop_it_mid_call, daemon=True).start()
        layer = run(
            run_layer(
                "Write a long story about a dragon.",
                [S],
                max_tokens=400,
                retries=0,
                cache=False,
                timeout=60,
                backend=backend,
            )
        )
        assert wait_for(
            lambda: (
                lambda s: (
                    s["busy"] == 0
                    and s["threads_in_use"] == 0
                    and all(w["alive"] for w in s["workers"] if w["pid"] is not None)  # the pack's: not loaded
                    and [w for w in s["workers"] if w["model"] == S][0]["pid"] != worker["pid"]
                )
            )(status(server)),
            60,
        ), status(server)
        log = server.log_path.read_text()
        again = run(run_layer(P, [S], max_tokens=4, retries=0, cache=False, backend=backend))
    finally:
        server.stop()
    assert "did not answer its health check in 2s" in log
    assert not _alive(worker["pid"])
    assert again.calls[0].ok
    assert layer.calls[0].ok, layer.calls[0].error  # the call it held was sent again to the new worker, once


def test_a_watched_server_that_dies_is_started_again_on_its_port(own_server):
    """What a sweep and a Ray batch do for the processes that share their server through MOA_LAB_LOCAL_URL."""
    server, backend = own_server
    url, pid = server.url, server._proc.pid
    with server.watch(every=0.2):
        os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: server._proc is not None and server._proc.pid != pid and server.running, 60)
    assert server.url == url and server.restarts == 1
    assert run(run_layer(P, [S], max_tokens=4, retries=0, cache=False, backend=backend)).calls[0].ok
