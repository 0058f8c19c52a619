"""Promise 5: the API key is never printed, logged, cached, traced, raised or saved; the local server stays local.

A recognisable fake key is set in TOGETHER_API_KEY and the calls go to the fault-injecting server, one of whose
models answers 401 with the request's Authorization header in the error text (as some servers do). Every file
the run produced and everything it printed, logged or raised is scanned for the key.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import subprocess
import time

import httpx
import psutil
import pytest
from conftest import MOA, all_text, run, write_jsonl
from conftest import execute_notebook as execute

import moa_lab
from moa_lab import MoAError, run_moa
from moa_lab._logs import verbose
from moa_lab.moa import REFERENCE_PROPOSERS
from moa_lab.views._playground import Playground

KEY = "tgp-FAKE-0f3a9c1e5b7d-SECRET"


@pytest.fixture
def keyed(monkeypatch, fault):
    monkeypatch.setenv("TOGETHER_BASE_URL", fault.url)
    monkeypatch.setenv("TOGETHER_API_KEY", KEY)
    return fault


def assert_no_key(tmp_path, *texts: str) -> None:
    """Not in any file under tmp_path (outputs, cache, executed notebooks, logs), nor in any text given."""
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path
    for text in texts:
        assert KEY not in text
    assert files or texts


def test_cli_ask_with_verbose_logging_and_a_failing_aggregator(keyed, tmp_path):
    keyed.script("agg", "echo-auth", "echo-auth")
    done = subprocess.run(
        MOA + ["ask", "Hi", "--proposers", "a,b", "--aggregator", "agg", "--retries", "1", "-v"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "agg (layer 2 aggregator): HTTP 401" in done.stderr and "Bearer ***" in done.stderr  # the server saw it
    assert "moa_lab DEBUG: a (layer 1 proposer 1): answered" in done.stderr  # the verbose log ran...
    assert "httpx" in done.stderr and "Request options" in done.stderr  # ...down to the SDK's requests
    assert_no_key(tmp_path, done.stdout, done.stderr)


def test_cli_batch_with_verbose_logging(keyed, tmp_path):
    keyed.script("b", "echo-auth").script("agg", "echo-auth")
    done = subprocess.run(
        MOA
        + [
            "batch",
            str(write_jsonl(tmp_path / "in.jsonl", 4)),
            str(tmp_path / "out.jsonl"),
            "--proposers",
            "a,b",
            "--aggregator",
            "agg",
            "--retries",
            "0",
            "-v",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 1 and "3 done, 1 failed" in done.stdout  # one 401 proposer, one 401 aggregator
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert "HTTP 401" in json.dumps(rows) and "Bearer ***" in json.dumps(rows)
    assert (tmp_path / "moa_cache.sqlite").exists()  # the answers cache (MOA_LAB_CACHE) is under tmp_path: scanned
    assert_no_key(tmp_path, done.stdout, done.stderr)


def test_a_failing_run_in_python_its_error_trace_result_and_log(keyed, tmp_path):
    keyed.script("b", "echo-auth").script("agg", "echo-auth")
    stream = io.StringIO()
    handler = verbose(stream=stream)
    try:
        with pytest.raises(MoAError) as info:
            run(run_moa("Hi", ["a", "b"], "agg", retries=0))
        result = run(run_moa("Hi", ["a", "b"], "agg2", retries=0))
        # What a library might log one day: the header in the arguments, the key in an exception's traceback.
        logging.getLogger("httpcore").debug("send headers %s", {"authorization": f"Bearer {KEY}"})
        try:
            raise ValueError(f"rejected key {KEY}")
        except ValueError:
            logging.getLogger("together").debug("failed", exc_info=True)
    finally:
        for name in ("moa_lab", "together", "httpx", "httpcore"):
            logging.getLogger(name).removeHandler(handler)
            logging.getLogger(name).setLevel(logging.NOTSET)
    err = info.value
    texts = [
        str(err),
        repr(err),
        repr(err.failures),
        repr(err.layers),
        err.partial,
        stream.getvalue(),
        json.dumps(result.to_dict()),
        result.summary(),
        repr(result),
        repr(moa_lab.get_backend()),
        moa_lab.get_backend().describe(),
        json.dumps(moa_lab.views.trace_rows(result.trace)),
    ]
    assert "HTTP 401" in str(err) and "Bearer ***" in stream.getvalue() and "rejected key ***" in stream.getvalue()
    assert_no_key(tmp_path, *texts)


def test_the_playground_panel(fault, tmp_path):
    from conftest import click_and_wait

    fault.script("leaky", "echo-auth")
    panel = Playground("q", ["leaky", "ok"], "agg", backend=moa_lab.get_backend(fault.url, api_key=KEY))
    click_and_wait(panel)
    assert "failed" in panel.slots[0][0].value and "HTTP 401" in panel.slots[0][0].value
    shown = [
        panel.message,
        panel.final_text,
        repr(panel),
        panel.settings_text(),
        panel.settings_text("run_moa(...) call"),
    ]
    shown += [repr(widget.get_state()) for widget in _all_widgets(panel.widget)]
    assert "Bearer ***" in panel.slots[0][0].value
    assert_no_key(tmp_path, *shown)


def _all_widgets(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _all_widgets(child)


@pytest.mark.kernel
@pytest.mark.parametrize("name", ["01_two_layer_moa", "02_three_layer_moa"])
def test_the_notebooks_unchanged_on_a_remote_backend(keyed, tmp_path, name):
    """With TOGETHER_BASE_URL and a key set, the same notebook runs on the seed's models (an OpenAI-compatible
    server, here the fault-injecting one). One proposer's server echoes the Authorization header in its error."""
    keyed.script(REFERENCE_PROPOSERS[1], "echo-auth")
    nb = execute(name, tmp_path)
    summary = json.loads(next((tmp_path / "runs").glob("*.json")).read_text())
    assert summary["settings"]["backend"] == "url" and summary["layers"][0]["models"] == list(REFERENCE_PROPOSERS)
    assert summary["settings"]["max_tokens"] == 512  # the seed's default off the local backend
    assert summary["failed_calls"] == 1 and "HTTP 401" in summary["layers"][0]["errors"][0]
    assert summary["final"].strip()
    assert_no_key(tmp_path, all_text(nb))  # the executed notebook is a file under tmp_path too


@pytest.mark.kernel
def test_the_batch_notebook_on_a_remote_backend(keyed, tmp_path):
    keyed.script(REFERENCE_PROPOSERS[1], "echo-auth")
    nb = execute("04_batch_synthetic_data", tmp_path, n_prompts=3)
    rows = [json.loads(line) for line in (tmp_path / "runs" / "04_batch.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)
    assert sum(len(r["layers"][0]["errors"]) for r in rows) == 1  # the 401, recorded in its line
    assert all(r["layers"][0]["models"] == list(REFERENCE_PROPOSERS) and r["cost"] > 0 for r in rows)  # Together prices
    assert_no_key(tmp_path, all_text(nb))


@pytest.mark.kernel
def test_the_evaluation_notebook_on_a_remote_backend(keyed, tmp_path):
    """Notebook 05 unchanged on a keyed OpenAI-compatible server: the seed's models, Together's prices (so the cost
    is in dollars), no local-models caveat; one proposer's server echoes the Authorization header."""
    keyed.script(REFERENCE_PROPOSERS[1], "echo-auth")
    nb = execute("05_evaluate_moa", tmp_path, n_instructions=2, n_questions=1)
    folder = tmp_path / "runs" / "05_evaluate"
    table = (folder / "results.md").read_text()
    assert "OpenAI-compatible server at http://127.0.0.1:" in table and "bundled" not in table
    assert "| MoA n=2 | 3 |" in table
    costs = [float(row["cost"]) for row in csv.DictReader((folder / "results.csv").open())]
    assert len(costs) == 5 and all(c > 0 for c in costs)  # Together's prices for the seed's models
    text = all_text(nb)
    assert "NOTE:" not in text and f"judge: {moa_lab.moa.REFERENCE_AGGREGATOR}" in text
    answers = "".join(f.read_text() for f in (folder / "answers").iterdir())
    assert "HTTP 401" in answers and "Bearer ***" in answers  # the server got the key, and it was scrubbed
    assert_no_key(tmp_path, text)


def _listening(pid: int) -> set[str]:
    """The addresses a process and its children listen on."""
    procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    return {c.laddr.ip for p in procs for c in p.net_connections("tcp") if c.status == psutil.CONN_LISTEN}


@pytest.mark.local
def test_the_embedded_server_listens_on_loopback_only(local):
    pid = local.server._proc.pid
    assert local.server.url.startswith("http://127.0.0.1:") and _listening(pid) == {"127.0.0.1"}


@pytest.mark.local
def test_serve_on_another_address_says_so(tmp_path):
    proc = subprocess.Popen(
        MOA + ["serve", "--host", "0.0.0.0", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "MOA_LAB_SERVE_KEY": "a-serve-key"},  # beyond loopback only with a key
    )
    try:
        banner = [proc.stdout.readline() for _ in range(3)]
        deadline = time.monotonic() + 30
        while "0.0.0.0" not in _listening(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        addresses = _listening(proc.pid)
        port = banner[0].split("http://0.0.0.0:")[1].split(";")[0]
        body = {"model": "moa/default", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        refused = httpx.post(url, json=body, timeout=60)
        answered = httpx.post(url, json=body, headers={"Authorization": "Bearer a-serve-key"}, timeout=120)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert refused.status_code == 401  # without the key
    assert answered.status_code == 200, answered.text  # its MoA calls its own models, with its key, over loopback
    assert "listening on http://0.0.0.0:" in banner[0]
    assert banner[1].startswith("WARNING: bound to 0.0.0.0, not loopback: other machines can reach this server")
    assert addresses == {"0.0.0.0", "127.0.0.1"}  # the front as told; its llama.cpp workers stay on loopback


OTHER_KEY = "sk-THIRD-PARTY-7e1d-SECRET"


def test_each_key_is_sent_only_where_it_belongs(monkeypatch, tmp_path):
    """Every server records the Authorization header of every request it receives. Together's key goes to
    TOGETHER_BASE_URL and nowhere else; a per-model server (MOA_LAB_MODEL_URLS) gets the key its entry names
    (``name=url|ENV_VAR``), or none; a key echoed back in an error is scrubbed, whichever key it is."""
    from fault_server import FaultServer

    with FaultServer() as base, FaultServer() as third, FaultServer() as keyed_server:
        monkeypatch.setenv("TOGETHER_BASE_URL", base.url)
        monkeypatch.setenv("TOGETHER_API_KEY", KEY)
        monkeypatch.setenv("THIRD_PARTY_KEY", OTHER_KEY)
        monkeypatch.setenv("MOA_LAB_MODEL_URLS", f"x={third.url}, y={keyed_server.url}/v1/|THIRD_PARTY_KEY")
        keyed_server.script("y", "echo-auth")
        result = run(run_moa("Hi", ["a", "x", "y"], "agg", retries=0))
        backend = moa_lab.get_backend()
        # Together's own backend (no base URL): a per-model server still gets no key of Together's.
        run(moa_lab.run_layer("Hi", ["x"], cache=False, backend=moa_lab.get_backend("together")))
        # The local backend with a key in the environment: likewise.
        run(moa_lab.run_layer("Hi", ["x"], cache=False, backend=moa_lab.get_backend("local")))
    assert base.authorizations() == [f"Bearer {KEY}"] * 2  # a, and the aggregator
    assert third.authorizations() == ["Bearer no-key-needed"] * 3
    assert keyed_server.authorizations() == [f"Bearer {OTHER_KEY}"]
    error = result.layers[0].calls[2].error
    assert error.startswith("HTTP 401") and "Bearer ***" in error
    assert_no_key(tmp_path, repr(backend), backend.describe(), json.dumps(result.to_dict()))
    assert OTHER_KEY not in json.dumps(result.to_dict()) + repr(backend)


def test_a_key_variable_that_is_not_set_is_refused_before_any_call(monkeypatch, fault):
    monkeypatch.setenv("MOA_LAB_MODEL_URLS", f"x={fault.url}|NOT_SET_ANYWHERE")
    with pytest.raises(
        ValueError, match="model 'x' takes its key from the environment variable NOT_SET_ANYWHERE, which is not set"
    ):
        moa_lab.get_backend(fault.url)
    assert fault.requests == []


def test_togethers_key_goes_to_togethers_own_url(monkeypatch):
    """The together backend's client has the SDK's URL (Together's API), never an empty one."""
    monkeypatch.setenv("TOGETHER_API_KEY", KEY)
    client = run(moa_lab.get_backend().client("Qwen/Qwen2-72B-Instruct"))
    assert str(client.base_url).startswith(moa_lab._backends.TOGETHER_URLS) and client.api_key == KEY


@pytest.mark.local
def test_the_embedded_server_is_sent_no_key(monkeypatch, local):
    monkeypatch.setenv("TOGETHER_API_KEY", KEY)
    backend = moa_lab.get_backend("local")
    client = run(backend.client("smollm2-135m"))
    assert client.api_key == "no-key-needed" and client.base_url.host == "127.0.0.1"


def test_a_url_given_as_the_backend_gets_no_key_of_another_server(monkeypatch, tmp_path):
    """Hardening 1: a recipe's ``backend: URL`` (also ``--backend URL``, ``get_backend(URL)``, ``run_moa(backend=URL)``,
    and a ``MOA_LAB_MODEL_URLS`` entry at that URL) is sent no TOGETHER_API_KEY, nor MOA_LAB_API_KEY: a URL gets the
    key of the variable that names it, or none."""
    from fault_server import FaultServer

    with FaultServer() as stranger, FaultServer() as together_base, FaultServer() as moa_base:
        monkeypatch.setenv("TOGETHER_API_KEY", KEY)
        monkeypatch.setenv("TOGETHER_BASE_URL", together_base.url)
        monkeypatch.setenv("MOA_LAB_API_KEY", OTHER_KEY)
        recipe = tmp_path / "r.yaml"
        recipe.write_text(f"backend: {stranger.url}/v1\nproposers: [a]\naggregator: agg\nlayers: 1\n")
        run(run_moa("Hi", ["a"], "agg", cache=False, backend=stranger.url))
        run(moa_lab.run_moa("Hi", cache=False, **moa_lab.Recipe.from_file(recipe).arguments()))
        run(moa_lab.run_layer("Hi", ["a"], cache=False, backend=moa_lab.get_backend(f"{stranger.url}/")))
        monkeypatch.setenv("MOA_LAB_MODEL_URLS", f"m={stranger.url}")
        run(moa_lab.run_layer("Hi", ["m"], cache=False, backend=moa_lab.get_backend(f"{stranger.url}/v1")))
        done = subprocess.run(
            MOA + ["ask", "Hi", "--backend", stranger.url, "--proposers", "a", "--aggregator", "agg", "--no-cache"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        # The URLs the variables name get their own keys, given as the backend too.
        run(moa_lab.run_layer("Hi", ["a"], cache=False, backend=moa_lab.get_backend(together_base.url)))
        monkeypatch.setenv("MOA_LAB_BASE_URL", moa_base.url)
        run(moa_lab.run_layer("Hi", ["a"], cache=False, backend=moa_lab.get_backend(f"{moa_base.url}/v1")))
    assert len(stranger.authorizations()) == 2 + 1 + 1 + 1 + 2
    assert set(stranger.authorizations()) == {"Bearer no-key-needed"}
    assert together_base.authorizations() == [f"Bearer {KEY}"]
    assert moa_base.authorizations() == [f"Bearer {OTHER_KEY}"]
