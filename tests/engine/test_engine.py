"""The embedded engine: threads follow the work (never more than the cores), your own GGUF models, the URL forms
of other OpenAI-compatible servers, and the wait for a core in the trace. Real llama.cpp workers throughout."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import MOA, run

import moa_lab
from moa_lab import aggregate, estimate, get_backend, plan_run, run_layer
from moa_lab.engine._local import model_path

pytestmark = pytest.mark.local

S, G = "smollm2-135m", "gemma3-270m"
LONG = "Write a long story about a lighthouse keeper and a storm, in many short chapters."


def status(server) -> dict:
    return httpx.get(server.url + "/moa_lab/status", timeout=10).json()


class Watch:
    """Reads the server's status every few milliseconds, in a thread, while calls run."""

    def __init__(self, server) -> None:
        self.server, self.seen, self._stop = server, [], threading.Event()

    def __enter__(self) -> Watch:
        def look() -> None:
            with httpx.Client(timeout=10) as http:
                while not self._stop.is_set():
                    self.seen.append(http.get(self.server.url + "/moa_lab/status").json())
                    time.sleep(0.005)

        self._thread = threading.Thread(target=look, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def test_threads_follow_the_work_and_never_exceed_the_cores(local):
    """A call alone gets every core; calls running at once share them; streams cancelled mid-way and calls that
    queue give their cores back. At no moment do the threads granted or in use exceed the cores (each worker
    writes what it uses before every 32 prompt tokens and every token)."""
    server, cores = local.server, local.server.threads
    settings = dict(temperature=0.7, retries=0, timeout=120, backend=local, cache=False)

    async def storm() -> None:
        alone = asyncio.ensure_future(run_layer(LONG, [S], max_tokens=40, seed=1, **settings))
        await asyncio.sleep(1.0)
        many = [
            asyncio.ensure_future(
                run_layer(LONG + f" ({i})", [S if i % 2 else G], max_tokens=16 + 4 * i, seed=10 + i, **settings)
            )
            for i in range(5)
        ]
        streamed = aggregate(LONG, ["One.", "Two."], S, max_tokens=60, **settings)
        async for _ in streamed:  # a stream left after its first chunk (Stop in the playground)
            break
        await asyncio.gather(alone, *many)

    with Watch(server) as watch:
        run(storm())
    seen = watch.seen
    assert len(seen) > 50
    held = [sum(max(c["granted"], c["using"]) for c in s["calls"]) for s in seen]
    assert max(s["threads_in_use"] for s in seen) <= cores and max(held) <= cores
    assert status(server)["threads_peak"] <= cores
    # Alone, a call used every core; with several running, each had a share (one core each, on two cores).
    assert any(len(s["calls"]) == 1 and s["threads_in_use"] == cores for s in seen), seen[:5]
    if cores >= 2:
        assert any(sum(c["using"] > 0 for c in s["calls"]) >= 2 for s in seen)
    assert wait_idle(server)


def wait_idle(server, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        s = status(server)
        if s["busy"] == 0 and s["waiting"] == 0 and s["threads_in_use"] == 0 and not s["calls"]:
            return True
        time.sleep(0.1)
    return False


def test_a_call_that_waited_for_a_core_says_so_in_the_trace():
    """One core, two calls at once: one runs, the other waits for it. The wait is the call's ``queued`` time
    (inside its ``seconds``), the timeline draws it apart, and the trace table has the column."""
    server = moa_lab.engine.LocalServer(threads=1)
    try:
        backend = moa_lab.Backend("local", None, {}, server.model_names(), server=server, default_max_tokens=32)
        layer = run(run_layer(LONG, [S, S], max_tokens=32, cache=False, backend=backend))
    finally:
        server.stop()
    first, second = sorted(layer.calls, key=lambda c: c.queued)
    assert first.queued < 0.2 and second.queued > 0.3 and second.queued < second.seconds
    assert second.queued == pytest.approx(first.started + first.seconds - second.started, abs=0.5)
    assert "queued" in moa_lab.views.format_trace(layer.calls).splitlines()[0]
    from moa_lab.views._display import plot_timeline

    figure = plot_timeline(layer.calls)
    assert len(figure.axes[0].patches) == 3  # two calls, one of them waited first
    assert "waiting for a core" in figure.axes[0].get_xlabel()


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """The bundled GGUF files copied under other names, in a folder with spaces in its name, served as your own
    models next to the bundled ones: one with the GGUF's template, one with a chat format given."""
    folder = tmp_path_factory.mktemp("models") / "my models"
    folder.mkdir()
    tiny, base = folder / "tiny chat.Q4_1.gguf", folder / "base model.gguf"
    shutil.copyfile(model_path(S), tiny)
    shutil.copyfile(model_path(G), base)
    server = moa_lab.engine.LocalServer(threads=2, models=[f"tiny={tiny}", f"base:270m={base}:alpaca"])
    server.start()
    yield server, tiny, base
    server.stop()


def test_your_own_models_answer_and_every_view_knows_them(own):
    server, tiny, base = own
    backend = moa_lab.Backend(
        "local",
        None,
        {},
        server.model_names(),
        server=server,
        default_max_tokens=16,
        default_proposers=("tiny", "base:270m"),
        default_aggregator="tiny",
    )
    models = {m["id"] for m in httpx.get(server.url + "/v1/models").json()["data"]}
    assert models >= {S, G, "tiny", "base:270m"}
    layer = run(run_layer("Name a colour.", ["tiny", "base:270m"], max_tokens=12, cache=False, backend=backend))
    assert all(c.ok and c.text.strip() and c.completion_tokens for c in layer.calls), layer.calls
    assert server.identity("tiny").startswith("tiny:") and server.identity("tiny").endswith(":gguf-template")
    assert server.identity("base:270m").endswith(":alpaca")
    plan = plan_run("Hi", ["tiny", "base:270m"], "tiny", backend=backend)
    bound = estimate(plan)
    assert bound.calls == 3
    from moa_lab.views._playground import Playground

    assert {"tiny", "base:270m"} <= set(Playground(backend=backend).models)


def test_a_model_is_loaded_once_whatever_the_calls_at_once(own):
    """Two calls of one model at once run in two contexts over one copy of the weights: one worker process maps
    the GGUF file, and it is the model's only process."""
    server, tiny, _ = own
    backend = moa_lab.Backend("local", None, {}, server.model_names(), server=server, default_max_tokens=16)
    layer = run(run_layer(LONG, ["tiny", "tiny"], max_tokens=24, cache=False, backend=backend))
    assert all(c.ok for c in layer.calls)
    assert abs(layer.calls[0].started - layer.calls[1].started) < 0.5
    workers = [w for w in status(server)["workers"] if w["model"] == "tiny"]
    assert len(workers) == 1
    mapping = [pid for pid in _all_pids() if str(tiny) in _maps(pid)]
    assert mapping == [workers[0]["pid"]]


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _maps(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


def test_models_from_the_environment_reach_get_backend_and_describe(monkeypatch, tmp_path):
    """MOA_LAB_MODELS (no server started here): get_backend knows the names, describe() says where they are."""
    path = tmp_path / "dir with space" / "m.gguf"
    path.parent.mkdir()
    shutil.copyfile(model_path(S), path)
    monkeypatch.setenv("MOA_LAB_MODELS", f"mine={path};other={path}:chatml")
    backend = get_backend()
    assert backend.kind == "local" and {"mine", "other"} <= set(backend.known_models)
    assert f"mine = {path}" in backend.describe()
    assert estimate("Hi", ["mine", "other"], "mine", backend=backend).max_cost == 0  # your machine: no price
    assert not backend.server.running


def test_serve_with_your_model_from_the_command_line(tmp_path):
    """``moa-lab serve --model NAME=PATH``: the announcement names the model and its file, and it answers."""
    import subprocess

    path = tmp_path / "a b" / "x.gguf"
    path.parent.mkdir()
    shutil.copyfile(model_path(S), path)
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        MOA + ["serve", "--port", "0", "--threads", "1", "--model", f"mine={path}", "--ready-file", str(ready)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        url = ready.read_text()
        r = httpx.post(
            url + "/v1/chat/completions",
            timeout=60,
            json={"model": "mine", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        )
        assert r.status_code == 200 and r.json()["model"] == "mine" and r.json()["usage"]["completion_tokens"] >= 1
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert f"model: mine ({path}, chat format: from the GGUF)" in out
    assert "1 core(s) shared by the calls running" in out


@pytest.mark.parametrize("form", ["{url}", "{url}/", "{url}/v1", "{url}/v1/"])
def test_base_url_forms_of_other_servers(monkeypatch, fault, form):
    """Ollama's http://127.0.0.1:11434/v1, LM Studio's .../v1, vLLM's and llama-server's roots, with or without a
    trailing slash: MOA_LAB_BASE_URL takes them all. Its key (MOA_LAB_API_KEY) goes there; Together's does not."""
    monkeypatch.setenv("MOA_LAB_BASE_URL", form.format(url=fault.url))
    monkeypatch.setenv("MOA_LAB_API_KEY", "sk-local-server")
    monkeypatch.setenv("TOGETHER_API_KEY", "sk-together-SECRET")
    backend = get_backend()
    assert backend.kind == "url" and backend.base_url == fault.url
    layer = run(run_layer("Hi", ["llama3.2"], cache=False, retries=0, backend=backend))
    assert layer.calls[0].ok
    assert fault.authorizations() == ["Bearer sk-local-server"]
    assert "sk-together" not in repr(backend) + backend.describe()


def test_together_base_url_keeps_working_and_wins_over_nothing_else(monkeypatch, fault):
    """The seed's variables are unchanged: TOGETHER_BASE_URL with TOGETHER_API_KEY. MOA_LAB_BASE_URL, when set
    too, is the one used (with no key unless MOA_LAB_API_KEY is set)."""
    monkeypatch.setenv("TOGETHER_BASE_URL", fault.url + "/v1/")
    monkeypatch.setenv("TOGETHER_API_KEY", "sk-together-SECRET")
    assert get_backend().base_url == fault.url
    run(run_layer("Hi", ["m"], cache=False, retries=0))
    assert fault.authorizations() == ["Bearer sk-together-SECRET"]
    from fault_server import FaultServer

    with FaultServer() as other:
        monkeypatch.setenv("MOA_LAB_BASE_URL", other.url)
        run(run_layer("Hi", ["m"], cache=False, retries=0))
        assert other.authorizations() == ["Bearer no-key-needed"]


def test_a_model_in_a_non_ascii_folder_answers_non_ascii_prompts_streamed_and_not(tmp_path):
    """A GGUF under a CJK and emoji folder name; prompts with CJK, emoji and U+2028/U+2029 go through the worker
    both ways (its SSE events are JSON with escapes: a line separator inside a token never splits an event)."""
    folder = tmp_path / "模型 😀 models"
    folder.mkdir()
    path = folder / "小模型.gguf"
    shutil.copyfile(model_path(S), path)
    server = moa_lab.engine.LocalServer(threads=1, models=[f"小={path}"])
    prompt = "用中文回答 😀: line one\u2028line two\u2029end"
    try:
        backend = moa_lab.Backend("local", None, {}, server.model_names(), server=server, default_max_tokens=12)
        layer = run(run_layer(prompt, ["小"], max_tokens=12, cache=False, backend=backend))
        agg = aggregate(prompt, ["第一 \u2028 😀", "second"], "小", max_tokens=12, cache=False, backend=backend)
        chunks = list(agg)
    finally:
        server.stop()
    (call,) = layer.calls
    assert call.ok and call.text and call.prompt_tokens > 10
    # A CJK character may take several tokens and arrive as one chunk: tokens >= chunks.
    assert agg.record.ok and "".join(chunks) == agg.record.text and agg.record.completion_tokens >= len(chunks) > 0
    assert server.identity("小").startswith("小:")
