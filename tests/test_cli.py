"""`moa-lab serve` (aliases, the seed's script unchanged, cap, busy port) and `moa-lab ask`, as subprocesses."""

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import default_sigint, free_port

pytestmark = pytest.mark.local
DATA = Path(__file__).parent / "data"
MOA = [sys.executable, "-m", "moa_lab"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`moa-lab serve` with the seed's names aliased from a file, one more from the command line."""
    aliases = tmp_path_factory.mktemp("serve") / "aliases.txt"
    aliases.write_text(
        "# the seed's models\n"
        + "".join(
            f"{name}={target}\n"
            for name, target in {
                "Qwen/Qwen2-72B-Instruct": "smollm2-135m",
                "Qwen/Qwen1.5-72B-Chat": "gemma3-270m",
                "mistralai/Mixtral-8x22B-Instruct-v0.1": "smollm2-135m",
                "databricks/dbrx-instruct": "gemma3-270m",
            }.items()
        )
    )
    port = free_port()
    proc = subprocess.Popen(
        MOA
        + [
            "serve",
            "--port",
            str(port),
            "--alias-file",
            str(aliases),
            "--alias",
            "my-model=gemma3-270m",
            "--max-tokens-cap",
            "12",
            "--max-tokens-limit",
            "40",  # the seed's script asks each proposer for 512: a CI run need not wait for 4 × 512 tokens
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    while not any(line.startswith("use it:") for line in lines):
        line = proc.stdout.readline()
        assert line, "server exited:\n" + "".join(lines)
        lines.append(line)
    yield f"http://127.0.0.1:{port}", "".join(lines)
    proc.terminate()
    proc.wait(timeout=20)


def test_serve_announces_and_lists_aliases(served):
    url, banner = served
    assert f"listening on {url}" in banner
    assert "alias: Qwen/Qwen2-72B-Instruct -> smollm2-135m" in banner and "alias: my-model -> gemma3-270m" in banner
    assert "model: qwen-coder-1.5b (" in banner and "loaded on its first call" in banner
    ids = {m["id"] for m in httpx.get(url + "/v1/models").json()["data"]}
    assert ids == {
        "smollm2-135m",
        "gemma3-270m",
        "qwen-coder-0.5b",  # the pack (make test installs it), loaded on its first call
        "qwen-coder-1.5b",
        "my-model",
        "Qwen/Qwen2-72B-Instruct",
        "Qwen/Qwen1.5-72B-Chat",
        "mistralai/Mixtral-8x22B-Instruct-v0.1",
        "databricks/dbrx-instruct",
        "moa/default",  # the default MoA, as a model (moa_lab.serve)
    }


def test_serve_caps_requests_without_max_tokens(served):
    url, _ = served
    body = {"model": "my-model", "messages": [{"role": "user", "content": "Tell me a long story."}]}
    answer = httpx.post(url + "/v1/chat/completions", json=body, timeout=60).json()
    assert answer["model"] == "my-model" and 0 < answer["usage"]["completion_tokens"] <= 12
    asked = httpx.post(url + "/v1/chat/completions", json={**body, "max_tokens": 512}, timeout=60).json()
    assert 0 < asked["usage"]["completion_tokens"] <= 40  # --max-tokens-limit: never more, whatever is asked
    assert asked["usage"]["completion_tokens"] < 40 or asked["choices"][0]["finish_reason"] == "length"


def test_seed_script_runs_unchanged_against_serve(served):
    """Together's own 2-layer recipe, byte for byte, with only TOGETHER_BASE_URL (and any key) set."""
    url, _ = served
    env = dict(os.environ, TOGETHER_BASE_URL=url, TOGETHER_API_KEY="local")
    done = subprocess.run(
        [sys.executable, str(DATA / "seed_two_layer.py")], env=env, capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, done.stderr[-2000:]
    printed = done.stdout.splitlines()
    for model in ("Qwen/Qwen2-72B-Instruct", "Qwen/Qwen1.5-72B-Chat", "databricks/dbrx-instruct"):
        assert model in printed  # the seed prints each proposer's name when its answer arrives
    assert done.stdout.split("databricks/dbrx-instruct")[-1].strip() or done.stdout.split("Mixtral")[-1].strip()


def test_ask_streams_then_summarises():
    done = subprocess.run(
        MOA + ["ask", "Name a color.", "--proposers", "smollm2-135m,gemma3-270m", "--max-tokens", "12", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "embedded local server" in done.stderr
    answer, _, rest = done.stdout.partition("\n\n")
    data = json.loads(rest[: rest.rindex("}") + 1])
    assert answer.strip() == data["final"].strip() and data["final"].strip()
    assert [c["model"] for c in data["trace"]] == ["smollm2-135m", "gemma3-270m", "smollm2-135m"]
    assert "3 calls" in done.stdout


def test_ask_table():
    done = subprocess.run(
        MOA + ["ask", "Hi", "--layers", "1", "--max-tokens", "8"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.split("\n\n")[-2].splitlines()[-1].startswith("agg")


def test_batch_on_the_bundled_models_then_estimate_and_bad_lines(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Name a colour.\nName a fruit.\nName an animal.\n")
    out = tmp_path / "out.jsonl"
    args = [str(prompts), str(out), "--max-tokens", "8", "--concurrency", "2"]
    done = subprocess.run(MOA + ["batch"] + args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == ["1", "2", "3"] and all(r["status"] == "ok" and r["final"] for r in rows)
    assert all(r["calls"] == 5 and r["completion_tokens"] > 0 and r["cost"] == 0 for r in rows)
    assert "3 done, 0 failed" in done.stdout and "MoA batch" in done.stderr  # the progress bar
    again = subprocess.run(MOA + ["batch"] + args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "0 done, 0 failed, 3 already there" in again.stdout

    est = subprocess.run(
        MOA + ["batch"] + args + ["--estimate", "--layers", "3"], capture_output=True, text=True, timeout=60
    )
    assert (
        est.returncode == 0 and "3 prompt(s): 27 model calls" in est.stdout and "≤ 216 completion tokens" in est.stdout
    )

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": broken\n')
    done = subprocess.run(
        MOA + ["batch", str(bad), str(tmp_path / "bad-out.jsonl")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "bad.jsonl:2: not valid JSON" in done.stderr
    assert not (tmp_path / "bad-out.jsonl").exists()


def test_ctrl_c_in_ask_exits_130_with_a_message_not_a_traceback(fault):
    import signal
    import time

    fault.script("b", "hang")  # one proposer never answers: the run is waiting when Ctrl-C comes
    ask = subprocess.Popen(
        MOA + ["ask", "Hi", "--proposers", "a,b", "--aggregator", "a", "--backend", fault.url, "--no-cache"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,  # Ctrl-C as from a terminal, however the tests were started
    )
    deadline = time.monotonic() + 60
    while len(fault.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    ask.send_signal(signal.SIGINT)
    out, err = ask.communicate(timeout=60)
    assert ask.returncode == 130 and "moa-lab ask: interrupted" in err, (ask.returncode, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
