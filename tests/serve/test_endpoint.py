"""MoA as a model: ``moa-lab serve --recipe NAME=FILE`` serves ``moa/NAME`` to clients that no one here wrote (the
openai and together SDKs, inspect-ai), over real HTTP, on the bundled models (and a fault server where a failure
must be made on demand). One server for the module; it requires a key, as a shared one would."""

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import together
import yaml
from conftest import MOA
from fault_server import FaultServer

from moa_lab import MoAError, get_backend, run_layer, run_moa
from moa_lab._recipe import Recipe

pytestmark = pytest.mark.local

KEY = "serve-key-5f1c0a"  # what clients of the endpoint send
UPSTREAM = "upstream-key-93be77"  # what the recipes' upstream server gets; never in a response, a record or a log
TINY = {
    "backend": "local",
    "proposers": ["smollm2-135m", "gemma3-270m"],
    "aggregator": "smollm2-135m",
    "max_tokens": 12,
}


class Served:
    def __init__(self, url: str, fault: FaultServer, cache: Path, proc: subprocess.Popen, folder: Path) -> None:
        self.url, self.fault, self.cache, self.proc, self.folder = url, fault, cache, proc, folder

    def post(self, body: dict, key: str | None = KEY, timeout: float = 120) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.post(self.url + "/v1/chat/completions", json=body, headers=headers, timeout=timeout)

    def record(self, run_id: str) -> dict:
        r = httpx.get(f"{self.url}/moa_lab/runs/{run_id}", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def runs(self) -> list[dict]:
        r = httpx.get(f"{self.url}/moa_lab/runs", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
        return r.json()["data"]

    def wait_status(self, run_id: str, *statuses: str, within: float = 30) -> dict:
        deadline = time.monotonic() + within
        while True:
            record = self.record(run_id)
            if record["status"] in statuses or time.monotonic() > deadline:
                return record
            time.sleep(0.1)


def start_serve(folder: Path, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    ready = folder / "ready"
    proc = subprocess.Popen(
        [*MOA, "serve", "--port", "0", "--ready-file", str(ready), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + 180
    while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert ready.exists(), proc.communicate(timeout=30)[0]
    return proc, ready.read_text()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("endpoint")
    with FaultServer() as fault:
        recipes = {
            "tiny": TINY,
            "remote": {"backend": fault.url, "proposers": ["a", "b"], "aggregator": "g", "retries": 0},
            "capped": {"backend": fault.url, "proposers": ["a"], "aggregator": "g", "max_tokens_total": 5},
            "budgeted": {
                "backend": fault.url,
                "proposers": ["a"],
                "aggregator": "g",
                "max_tokens": 20,
                "max_tokens_total": 1000,  # the run's bound is about 720: it starts
                "retries": 0,
            },
        }
        args = []
        for name, recipe in recipes.items():
            (folder / f"{name}.yaml").write_text(yaml.safe_dump(recipe))
            args += ["--recipe", f"{name}={folder / f'{name}.yaml'}"]
        cache = folder / "cache.sqlite"
        env = {"MOA_LAB_SERVE_KEY": KEY, "TOGETHER_API_KEY": UPSTREAM, "MOA_LAB_CACHE": str(cache)}
        proc, url = start_serve(folder, *args, "--patience", "1", env=env)
        served = Served(url, fault, cache, proc, folder)
        yield served
        proc.terminate()
        served.log = proc.communicate(timeout=30)[0]
        assert KEY not in served.log and UPSTREAM not in served.log
        assert "Task was destroyed" not in served.log and "Traceback" not in served.log, served.log


@pytest.fixture(autouse=True)
def no_faults_left(request):
    """Each test starts with no fault scripted: a run an earlier test cancelled may not have sent all its calls
    (a proposer not yet started when its client left), and their faults would meet this test's calls."""
    if "served" in request.fixturenames:
        request.getfixturevalue("served").fault.plan.clear()


def test_the_openai_sdk_sync_async_and_streamed_with_usage(served):
    """Promise 8: OpenAI's own SDK, as it is."""
    client = openai.OpenAI(base_url=served.url + "/v1", api_key=KEY)
    assert {"moa/tiny", "moa/default", "smollm2-135m"} <= {m.id for m in client.models.list().data}

    messages = [{"role": "user", "content": "Name one colour. 答えて 🎨"}]
    raw = client.chat.completions.with_raw_response.create(model="moa/tiny", messages=messages, seed=3)
    reply = raw.parse()
    run_id = raw.headers["x-moa-lab-run-id"]
    record = served.record(run_id)
    assert record["status"] == "ok" and reply.moa_lab["run_id"] == run_id
    assert reply.choices[0].message.content == record["result"]["final"] != ""
    trace = record["result"]["trace"]
    assert [c["model"] for c in trace] == ["smollm2-135m", "gemma3-270m", "smollm2-135m"]  # every call, on record
    assert reply.usage.prompt_tokens == sum(c["prompt_tokens"] for c in trace)  # usage counts every call
    assert reply.usage.completion_tokens == sum(c["completion_tokens"] for c in trace)

    async def streamed():
        client = openai.AsyncOpenAI(base_url=served.url + "/v1", api_key=KEY)
        stream = await client.chat.completions.create(
            model="moa/tiny",
            messages=[{"role": "user", "content": "Name one animal."}],
            stream=True,
            stream_options={"include_usage": True},
            temperature=0.3,
        )
        chunks = [chunk async for chunk in stream]
        await client.close()
        return chunks

    chunks = asyncio.run(streamed())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0  # the usage chunk comes last
    record = served.record(chunks[-1].moa_lab["run_id"])
    cut = record["result"]["trace"][-1]["completion_tokens"] >= TINY["max_tokens"]  # the aggregator used them all
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == ("length" if cut else "stop")
    assert text == record["result"]["final"] != ""
    assert chunks[-1].usage.completion_tokens == sum(c["completion_tokens"] for c in record["result"]["trace"])

    together_client = together.Together(base_url=served.url, api_key=KEY)  # its SDK adds /v1
    answer = together_client.chat.completions.create(model="moa/tiny", messages=messages, seed=3)
    assert answer.choices[0].message.content == reply.choices[0].message.content  # the same run, from the cache


def test_a_second_turn_through_the_endpoint_equals_run_moa_with_messages(served, monkeypatch):
    client = openai.OpenAI(base_url=served.url + "/v1", api_key=KEY)
    system = {"role": "system", "content": "Answer in one short sentence."}
    first = [system, {"role": "user", "content": "What is the capital of France?"}]
    one = client.chat.completions.create(model="moa/tiny", messages=first, seed=7).choices[0].message.content
    second = [*first, {"role": "assistant", "content": one}, {"role": "user", "content": "And of Italy?"}]
    raw = client.chat.completions.with_raw_response.create(model="moa/tiny", messages=second, seed=7)
    two, run_id = raw.parse().choices[0].message.content, raw.headers["x-moa-lab-run-id"]

    # the same conversation in-process, on the same server and cache: the same calls, every one from the cache
    monkeypatch.setenv("MOA_LAB_LOCAL_URL", served.url)
    monkeypatch.setenv("MOA_LAB_LOCAL_KEY", KEY)
    monkeypatch.setenv("MOA_LAB_CACHE", str(served.cache))
    result = asyncio.run(run_moa(messages=second, **{**Recipe.from_dict(TINY).arguments(), "seed": 7}))
    assert result.text == two
    assert all(c.cached for c in result.trace)
    record = served.record(run_id)["result"]
    assert [(c["model"], c["text"]) for c in record["trace"]] == [(c.model, c.text) for c in result.trace]
    assert record["messages"] == second


BAD = [
    ({"n": 2}, 400, "n"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools"),
    ({"logprobs": True}, 400, "logprobs"),
    ({"max_tokens": 0}, 400, "max_tokens"),
    ({"temperature": 3}, 400, "temperature"),
    ({"stream": "yes"}, 400, "stream"),
    ({"messages": []}, 400, "messages"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, 400, "messages[0].role"),
    ({"messages": [{"role": "tool", "content": "hi"}]}, 400, "messages[0].role"),
    (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        400,
        "messages[0].content[0]",
    ),
    ({"messages": [{"role": "user", "content": "   "}]}, 400, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "a\ud800b"}]}, 400, "messages[0].content"),
    ({"model": "moa/nope"}, 404, "model"),
]


def test_bad_bodies_get_a_400_naming_the_field_and_no_key_a_401(served):
    base = {"model": "moa/remote", "messages": [{"role": "user", "content": "hi"}]}
    before = len(served.fault.requests)
    for change, status, param in BAD:
        body = json.dumps({**base, **change}, ensure_ascii=False).encode("utf-8", "surrogatepass")
        r = httpx.post(
            served.url + "/v1/chat/completions",
            content=body,
            headers={"Authorization": f"Bearer {KEY}", "content-type": "application/json"},
        )
        assert r.status_code == status, (change, r.text)
        error = r.json()["error"]
        assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error", change
    assert len(served.fault.requests) == before  # refused before any call
    for key in (None, "wrong"):
        r = served.post(base, key=key)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(served.url + "/v1/models").status_code == 401


def test_an_upstream_failure_is_a_502_naming_the_models_and_the_cause(served):
    served.fault.script("a", "500").script("b", "503")
    r = served.post({"model": "moa/remote", "messages": [{"role": "user", "content": "hi"}]})
    error = r.json()["error"]
    assert r.status_code == 502 and error["type"] == "upstream_error"
    assert "moa/remote" in error["message"] and "min_ok" in error["message"]
    assert (
        "a (layer 1 proposer 1): HTTP 500" in error["message"]
        and "b (layer 1 proposer 2): HTTP 503" in error["message"]
    )
    record = served.record(r.headers["x-moa-lab-run-id"])
    assert record["status"] == "failed" and len(record["result"]["trace"]) == 2  # what it made is on record

    served.fault.script("g", "500")  # the aggregator fails mid-stream: an error event, never a [DONE]
    body = {"model": "moa/remote", "messages": [{"role": "user", "content": "streamed"}], "stream": True}
    lines = served.post(body).text.splitlines()
    errors = [json.loads(x[6:])["error"] for x in lines if x.startswith('data: {"error"')]
    assert errors and "g" in errors[0]["message"] and errors[0]["code"] == 502 and "data: [DONE]" not in lines

    r = served.post({"model": "moa/capped", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "budget_exceeded"
    assert "max_tokens_total" in r.json()["error"]["message"]


def test_the_stream_stays_alive_while_the_proposers_run_and_a_gone_client_cancels_its_run(served):
    served.fault.script("a", "delay:2.5").script("b", "delay:2.5")
    body = {"model": "moa/remote", "messages": [{"role": "user", "content": "slow"}], "stream": True}
    t0 = time.monotonic()
    with httpx.stream(
        "POST", served.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
    ) as r:
        lines = r.iter_lines()
        first = next(lines)
        first_byte = time.monotonic() - t0
        seen = [next(lines) for _ in range(4)]
    assert first_byte < 1.0 and first.startswith("data: ") and any(x.startswith(": ") for x in seen)

    # a client that leaves while its proposers are still being answered: its run stops, and so do its calls
    served.fault.script("a", "ping").script("b", "ping")
    with httpx.stream(
        "POST", served.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
    ) as r:
        run_id = r.headers["x-moa-lab-run-id"]
        next(r.iter_lines())
        time.sleep(0.5)
    assert served.wait_status(run_id, "cancelled")["status"] == "cancelled"
    deadline = time.monotonic() + 10
    while served.fault.active and time.monotonic() < deadline:
        time.sleep(0.1)
    assert served.fault.active == 0  # no call goes on for a client that is gone
    assert UPSTREAM not in json.dumps(served.record(run_id))

    # the same without streaming: a client that gives up waiting
    served.fault.script("a", "ping").script("b", "ping")
    with pytest.raises(httpx.ReadTimeout):
        served.post({**body, "stream": False}, timeout=1.0)
    runs = [r for r in served.runs() if r["status"] != "ok"]
    assert served.wait_status(runs[-1]["id"], "cancelled")["status"] == "cancelled"
    deadline = time.monotonic() + 10
    while served.fault.active and time.monotonic() < deadline:
        time.sleep(0.1)
    assert served.fault.active == 0
    # the recipe's upstream (a URL no variable names) gets no key: neither TOGETHER_API_KEY nor the client's
    assert set(served.fault.authorizations()) == {"Bearer no-key-needed"}


def test_serving_beyond_loopback_needs_a_key(tmp_path):
    out = subprocess.run(
        [*MOA, "serve", "--host", "0.0.0.0", "--port", "0"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2 and "without an API key" in out.stderr


def test_inspect_ai_scores_one_sample_per_input_through_the_endpoint(served, tmp_path):
    """Promise 8: inspect-ai, as it is.
    A real evaluation harness, end to end: inspect-ai's OpenAI-compatible provider on moa/tiny."""
    dataset = tmp_path / "data.jsonl"
    rows = [{"input": f"Say the word '{w}'.", "target": w} for w in ("apple", "river", "stone")]
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = tmp_path / "task.py"
    task.write_text(
        "from inspect_ai import Task, task\n"
        "from inspect_ai.dataset import json_dataset\n"
        "from inspect_ai.scorer import includes\n"
        "from inspect_ai.solver import generate\n\n"
        "@task\n"
        "def words():\n"
        f"    return Task(dataset=json_dataset({str(dataset)!r}), solver=generate(), scorer=includes())\n"
    )
    logs = tmp_path / "logs"
    env = {
        **os.environ,
        "MOALAB_API_KEY": KEY,
        "MOALAB_BASE_URL": served.url + "/v1",
        "INSPECT_LOG_DIR": str(logs),
        "NO_COLOR": "1",
    }
    inspect = Path(sys.executable).parent / "inspect"
    out = subprocess.run(
        [str(inspect), "eval", task.name, "--model", "openai-api/moalab/moa/tiny", "--log-format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (log,) = logs.glob("*.json")
    result = json.loads(log.read_text())
    assert result["status"] == "success"
    samples = result["samples"]
    assert len(samples) == 3 and all(s["scores"] for s in samples)  # one scored sample per input
    assert {s["input"] for s in samples} == {r["input"] for r in rows}


@pytest.mark.load
def test_16_clients_at_once_2_leaving_mid_stream(served):
    """Every finished run complete, the gone clients' runs cancelled, no worker lost."""
    results: dict[int, dict] = {}

    def client(i: int) -> None:
        body = {
            "model": "moa/tiny",
            "messages": [{"role": "user", "content": f"Count to {i}."}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.stream("POST", served.url + "/v1/chat/completions", json=body, headers=headers, timeout=300) as r:
            run_id, lines = r.headers["x-moa-lab-run-id"], []
            for line in r.iter_lines():
                lines += [line] if line else []
                if i < 2 and len(lines) >= 2:  # leaves after its first chunk, while the proposers run
                    break
        results[i] = {"run_id": run_id, "lines": lines}

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert len(results) == 16
    for i, got in results.items():
        if i < 2:
            assert served.wait_status(got["run_id"], "cancelled", "ok")["status"] == "cancelled"
            continue
        record = served.record(got["run_id"])
        events = [json.loads(x[6:]) for x in got["lines"] if x.startswith("data: {")]
        text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
        assert got["lines"][-1] == "data: [DONE]" and record["status"] == "ok"
        assert text == record["result"]["final"] and events[-1]["usage"]["total_tokens"] > 0
    status = httpx.get(served.url + "/moa_lab/status", headers={"Authorization": f"Bearer {KEY}"}).json()
    started = [w for w in status["workers"] if w["pid"] is not None]  # not the pack's: loaded on first call
    assert started and all(w["alive"] and w["generation"] == 0 for w in started)
    assert status["busy"] == 0  # no call left running


def _stream(served: Served, body: dict) -> tuple[str, list[dict]]:
    """A streamed request's text and events (its error events too)."""
    lines = served.post({**body, "stream": True}).text.splitlines()
    events = [json.loads(x[6:]) for x in lines if x.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices"))
    return text, events


def test_finish_reason_is_length_when_max_tokens_cut_the_final_answer(served):
    """Hardening 10: "length" when max_tokens cut the final answer (a harness's truncation check), in the
    completion and in the stream's last chunk, also when it comes from the cache; "stop" otherwise."""
    body = {"model": "moa/tiny", "messages": [{"role": "user", "content": "Tell a long story about a cat."}]}
    cut = served.post({**body, "max_tokens": 3, "seed": 0}).json()
    assert cut["choices"][0]["finish_reason"] == "length" and cut["moa_lab"]["calls"] == 3
    text, events = _stream(served, {**body, "max_tokens": 3, "seed": 0})  # the same calls, from the cache
    assert [e["choices"][0]["finish_reason"] for e in events if e.get("choices")][-1] == "length"
    assert text == cut["choices"][0]["message"]["content"]
    served.fault.script("g", "say:Blue.")
    whole = served.post({"model": "moa/remote", "messages": [{"role": "user", "content": "Sky colour?"}]}).json()
    assert whole["choices"][0]["finish_reason"] == "stop" and whole["choices"][0]["message"]["content"] == "Blue."


def test_a_stop_string_is_cut_from_a_stream_that_arrives_in_small_pieces(served):
    """Hardening 11: the answer "ab END" arrives as "ab " and "END"; stop "b END" leaves "a", streamed or not."""
    body = {"model": "moa/remote", "messages": [{"role": "user", "content": "stop test"}], "stop": ["b END"]}
    served.fault.script("g", "say:ab END", "say:ab END")
    assert served.post(body).json()["choices"][0]["message"]["content"] == "a"
    text, events = _stream(served, {**body, "seed": 1})
    assert text == "a" and [e["choices"][0]["finish_reason"] for e in events if e.get("choices")][-1] == "stop"


def test_a_run_stopped_by_its_budget_midway_is_a_400_not_a_502(served):
    """Hardening 12: the proposer reports more tokens than its bound, so the aggregator's call cannot fit: a 400
    (budget_exceeded), streamed or not; a client retries a 502 and would pay for the MoA again."""
    served.fault.script("a", "tokens:1000", "tokens:1000")
    body = {"model": "moa/budgeted", "messages": [{"role": "user", "content": "budget"}]}
    r = served.post(body)
    assert r.status_code == 400 and r.json()["error"]["code"] == "budget_exceeded", r.text
    assert "max_tokens_total" in r.json()["error"]["message"]
    assert "refused before any call" not in r.json()["error"]["message"]  # stopped mid-way: its proposer answered
    _, events = _stream(served, {**body, "seed": 3})
    (error,) = [e["error"] for e in events if "error" in e]
    assert error["code"] == 400 and error["type"] == "invalid_request_error" and "max_tokens_total" in error["message"]


def test_without_a_seed_each_request_is_a_fresh_sample_and_its_seed_is_kept_for_a_replay(served):
    """Hardening 13: the same request twice without ``seed`` gets two samples (a harness's epochs differ); each
    run's record keeps the seed drawn, and a request with that seed replays it from the cache."""
    body = {"model": "moa/remote", "messages": [{"role": "user", "content": "Sample me."}], "temperature": 1.0}
    one, two = served.post(body), served.post(body)
    assert one.json()["choices"][0]["message"]["content"] != two.json()["choices"][0]["message"]["content"]
    seeds = [served.record(r.headers["x-moa-lab-run-id"])["seed"] for r in (one, two)]
    assert seeds[0] != seeds[1] and all(isinstance(s, int) for s in seeds)
    before = len(served.fault.requests)
    again = served.post({**body, "seed": seeds[0]}).json()
    assert again["choices"][0]["message"]["content"] == one.json()["choices"][0]["message"]["content"]
    assert len(served.fault.requests) == before and again["moa_lab"]["cached_calls"] == 3  # replayed, no call
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == again["usage"]["prompt_tokens"] > 0


def test_openai_error_json_for_routes_formats_and_schemes_and_a_case_insensitive_bearer(served):
    """Hardening 14 and 15: ``response_format`` is refused naming it; unknown routes and wrong methods answer
    OpenAI's error JSON naming the path (the together SDK given ``.../v1``, inspect's ``/v1/responses``); the
    Authorization scheme is case-insensitive."""
    base = {"model": "moa/remote", "messages": [{"role": "user", "content": "hi"}]}
    before = len(served.fault.requests)
    for form in ({"type": "json_object"}, {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}):
        r = served.post({**base, "response_format": form})
        assert r.status_code == 400 and r.json()["error"]["param"] == "response_format", r.text
    assert len(served.fault.requests) == before
    auth = {"Authorization": f"Bearer {KEY}"}
    for method, path, status in (
        ("POST", "/v1/responses", 404),
        ("GET", "/v1/nothing", 404),
        ("GET", "/v1/chat/completions", 405),
    ):
        r = httpx.request(method, served.url + path, headers=auth, json={})
        error = r.json()["error"]
        assert r.status_code == status and path in error["message"] and error["type"] == "invalid_request_error"
    assert (
        "chat completions" in httpx.post(served.url + "/v1/responses", headers=auth, json={}).json()["error"]["message"]
    )
    wrong = together.Together(base_url=served.url + "/v1", api_key=KEY, max_retries=0)
    with pytest.raises(together.NotFoundError, match="/v1/v1/chat/completions"):
        wrong.chat.completions.create(**base)
    lower = httpx.post(
        served.url + "/v1/chat/completions", json={**base, "seed": 5}, headers={"Authorization": f"bearer {KEY}"}
    )
    assert lower.status_code == 200, lower.text


def test_a_run_longer_than_the_clients_read_timeout_is_kept_alive(served):
    """Hardening 16: the together SDK reads for at most 2 s here; the run takes about 3.5 s (this server's
    ``--patience`` is 1 s). The status goes out as 200 and spaces keep the connection alive: one run, answered once
    (no retry pays for a second MoA). A run that fails after that gives its error as the body's error object,
    which moa_lab's own calls read as a failure."""
    served.fault.script("a", "delay:3.5").script("b", "delay:3.5").script("g", "say:Slow but sure.")
    runs = len(served.runs())
    client = together.Together(base_url=served.url, api_key=KEY, timeout=2.0)
    answer = client.chat.completions.create(model="moa/remote", messages=[{"role": "user", "content": "slow one"}])
    assert answer.choices[0].message.content == "Slow but sure." and answer.choices[0].finish_reason == "stop"
    assert len(served.runs()) == runs + 1 and [r["status"] for r in served.runs()][-1] == "ok"

    served.fault.script("a", "delay:2.5").script("b", "500").script("g", "500")
    r = served.post({"model": "moa/remote", "messages": [{"role": "user", "content": "slow failure"}]})
    assert r.status_code == 200 and r.text.startswith(" ")  # committed before the run failed
    error = r.json()["error"]
    assert error["type"] == "upstream_error" and "g (layer 2 aggregator): HTTP 500" in error["message"]

    served.fault.script("a", "delay:2.5").script("b", "500").script("g", "500")
    backend = get_backend(served.url, api_key=KEY)
    with pytest.raises(MoAError) as info:
        asyncio.run(run_layer("slow failure, again", ["moa/remote"], backend=backend, retries=0, cache=False))
    (call,) = info.value.failures[:1]
    assert call.error.startswith("error in the body: moa/remote: the MoA run failed"), call.error
