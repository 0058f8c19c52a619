"""Promise 4: bad input gets a clear message naming the bad value, before anything is called or written.

One table over every way in: the Python API, batch input files and settings, the CLI, papermill parameters,
the playground widgets and ``moa-lab serve``. Each row runs against the fault-injecting server (or the local
backend, which is never started) in an empty folder, and checks: the message, no request, no file left behind.
The table is rendered to ``bad_input_table.md`` and checked like the fault table.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
from conftest import MOA, NOTEBOOKS, check_table, execute_notebook, run

from moa_lab import aggregate, get_backend, plan_run, run_batch, run_layer, run_moa
from moa_lab.engine import LocalServer
from moa_lab.evaluate import builtin_tasks, evaluate, moa, reference, single, variant, variants
from moa_lab.runs import RayOptions, check_output_path, settings_id
from moa_lab.sweeps import run_sweep
from moa_lab.views._playground import Playground

P = "What is MoA?"
S = "smollm2-135m"


def api(call):
    """A call of the Python API with the fault server as backend; returns the error message."""

    def go(ctx):
        with pytest.raises(ValueError) as info:
            obj = call(ctx.remote)
            run(obj) if asyncio.iscoroutine(obj) else None
        return str(info.value)

    return go


def batch_file(content: str | bytes):
    def go(ctx):
        path = ctx.dir / "in.jsonl"
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        ctx.inputs.add("in.jsonl")
        with pytest.raises(ValueError) as info:
            run(
                run_batch(
                    ctx.dir / "in.jsonl", ctx.dir / "out.jsonl", ["a", "b"], "agg", backend=ctx.remote, progress=False
                )
            )
        return str(info.value)

    return go


def batch_settings(**kw):
    def go(ctx):
        with pytest.raises(ValueError) as info:
            run(run_batch(["q"], ctx.dir / "out.jsonl", ["a", "b"], "agg", backend=ctx.remote, progress=False, **kw))
        return str(info.value)

    return go


def cli(*args: str | bytes, files: dict[str, str] | None = None, backend: bool = True, env: dict | None = None):
    """``moa-lab ARGS`` in the folder (with the fault server as backend): exit 2, nothing on stdout. A bytes
    argument is passed as those bytes (as a terminal in another encoding would)."""

    def go(ctx):
        for name, content in (files or {}).items():
            (ctx.dir / name).write_text(content)
            ctx.inputs.add(name)
        extra = ["--backend", ctx.fault.url] if backend else []
        done = subprocess.run(
            MOA + list(args) + extra,
            cwd=ctx.dir,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **(env or {})},
        )
        assert done.returncode == 2 and not done.stdout.strip(), (done.returncode, done.stdout, done.stderr)
        return done.stderr

    return go


def batch_list(prompts: list):
    def go(ctx):
        with pytest.raises(ValueError) as info:
            run(run_batch(prompts, ctx.dir / "out.jsonl", ["a", "b"], "agg", backend=ctx.remote, progress=False))
        return str(info.value)

    return go


def resume_with_an_edited_input(ctx):
    """An output written for "one" (line 1), then the input edited: line 1 is now "zero"."""
    (ctx.dir / "in.txt").write_text("zero\none\n")
    line = {
        "id": "1",
        "prompt": "one",
        "status": "ok",
        "settings_id": settings_id(plan_run("one", ["a", "b"], "agg", backend=ctx.remote)),
    }
    (ctx.dir / "out.jsonl").write_text(json.dumps(line) + "\n")
    ctx.inputs.update({"in.txt", "out.jsonl"})
    with pytest.raises(ValueError) as info:
        run(run_batch(ctx.dir / "in.txt", ctx.dir / "out.jsonl", ["a", "b"], "agg", backend=ctx.remote, progress=False))
    assert (ctx.dir / "out.jsonl").read_text() == json.dumps(line) + "\n"
    return str(info.value)


def serve(*args: str):
    return cli("serve", "--port", "0", *args, backend=False)


def endpoint(**fields):
    """A ``moa/NAME`` request body with ``fields``, as ``moa-lab serve`` answers it (its 400's message)."""

    def go(ctx):
        from moa_lab._recipe import Recipe
        from moa_lab.serve import MoAEndpoint

        served = MoAEndpoint({"r": Recipe(["a"], "agg", backend=ctx.fault.url)})
        body = {"model": "moa/r", "messages": [{"role": "user", "content": "hi"}], **fields}
        response = asyncio.run(served.chat(None, body))  # type: ignore[arg-type]  # refused before the request is read
        assert response.status_code == 400
        return json.loads(response.body)["error"]["message"]

    return go


def serve_on_a_busy_port(ctx):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        return serve("--port", str(busy.getsockname()[1]))(ctx)


def serve_without_model_file(ctx):
    os.environ["MOA_LAB_MODEL_DIR"] = str(ctx.dir / "models")  # an empty folder (monkeypatched: undone after)
    try:
        return serve()(ctx)
    finally:
        del os.environ["MOA_LAB_MODEL_DIR"]


GGUF_BYTES = b"GGUF" + bytes(60)  # a GGUF header's magic: enough for the checks made before loading


def own_models(*entries: str, files: dict[str, bytes] | None = None, env: bool = False, sparse: str | None = None):
    """Your own models for the embedded server (files written in the folder), refused before anything starts:
    by ``LocalServer(models=...)``, or by ``get_backend()`` with ``MOA_LAB_MODELS`` (``env=True``). ``sparse``: a
    file of that name as large as the free memory and 1 GiB more, taking no disk."""

    def go(ctx):
        for name, content in (files or {}).items():
            (ctx.dir / name).write_bytes(content)
            ctx.inputs.add(name)
        if sparse:
            from moa_lab.engine._models import free_memory

            with open(ctx.dir / sparse, "wb") as f:
                f.write(GGUF_BYTES)
                f.truncate((free_memory() or 2**36) + 2**30)
            ctx.inputs.add(sparse)
        given = [e.replace("DIR", str(ctx.dir)) for e in entries]
        with pytest.raises(ValueError) as info:
            if env:
                os.environ["MOA_LAB_MODELS"] = ";".join(given)
                try:
                    get_backend("local")
                finally:
                    del os.environ["MOA_LAB_MODELS"]
            else:
                LocalServer(models=given)
        return str(info.value).replace(str(ctx.dir), "DIR")

    return go


def evaluation(tasks=None, configs=None, file: str | None = None, **kw):
    """``moa_lab.evaluate.evaluate`` into the folder (built-in tasks, two configurations unless given)."""

    def go(ctx):
        given = tasks
        if file is not None:
            (ctx.dir / "tasks.jsonl").write_text(file)
            ctx.inputs.add("tasks.jsonl")
            given = ctx.dir / "tasks.jsonl"
        with pytest.raises(ValueError) as info:
            run(
                evaluate(
                    given or builtin_tasks(2, 1),
                    configs or [single("a"), moa(["a", "b"], "agg")],
                    ctx.dir / "eval",
                    backend=ctx.remote,
                    progress=False,
                    **kw,
                )
            )
        return str(info.value)

    return go


def notebook(name: str, **parameters):
    """The notebook under papermill: it stops in the first cell after the parameters, and runs no other."""

    def go(ctx):
        import nbformat
        import papermill

        with pytest.raises(papermill.PapermillExecutionError) as info:
            execute_notebook(name, ctx.dir, **parameters)
        ctx.inputs.add(f"{name}.out.ipynb")
        nb = nbformat.read(ctx.dir / f"{name}.out.ipynb", as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        injected = next(i for i, c in enumerate(code) if "injected-parameters" in c.metadata.get("tags", []))
        failed = [i for i, c in enumerate(code) if any(o.output_type == "error" for o in c.get("outputs", []))]
        checks = {"03_playground": "Playground(", "05_evaluate_moa": "check_configs(", "06_sweeps": "plan_sweep("}.get(
            name, "plan_run("
        )
        assert failed == [injected + 1] and checks in code[injected + 1].source
        assert all(c.execution_count is None for c in code[injected + 2 :])  # no model was called after it
        return str(info.value)

    return go


def sweep(spec, notebook="01_two_layer_moa", setup=None, **kw):
    """``run_sweep`` of a notebook into the folder's ``out``: refused before any kernel starts."""

    def go(ctx):
        if setup is not None:
            setup(ctx, ctx.dir / "out")
        with pytest.raises(ValueError) as info:
            run(run_sweep(notebook, spec, ctx.dir / "out", progress=False, **kw))
        return str(info.value)

    return go


def out_of_sync_pair(ctx):
    """The .py of a jupytext pair edited (a parameter added) but not synced: papermill would run the old .ipynb."""
    import shutil

    for suffix in (".py", ".ipynb"):
        shutil.copy(NOTEBOOKS / f"01_two_layer_moa{suffix}", ctx.dir / f"nb{suffix}")
        ctx.inputs.add(f"nb{suffix}")
    py = ctx.dir / "nb.py"
    py.write_text(py.read_text().replace("seed: int = 0", "seed: int = 0\nlayers: int = 2", 1))
    with pytest.raises(ValueError) as info:
        run(run_sweep(py, {"grid": {"layers": [2]}}, ctx.dir / "out", progress=False))
    return str(info.value)


def another_sweep(ctx, outdir):
    outdir.mkdir()
    (outdir / "sweep.json").write_text(json.dumps({"notebook": "/elsewhere/other.ipynb", "notebook_hash": "x"}))
    ctx.inputs.update({"out", "sweep.json"})


def other_files(ctx, outdir):
    outdir.mkdir()
    (outdir / "notes.txt").write_text("mine")
    ctx.inputs.update({"out", "notes.txt"})


def widget(change):
    """The playground: change a control, click Run; nothing starts, the panel says why."""

    def go(ctx):
        panel = Playground(backend=ctx.remote)
        change(panel)

        async def click():
            panel.run_button.click()
            return panel.task

        assert run(click()) is None and panel.task is None and "Not started" in panel.message
        assert panel.run_button.disabled is False
        return panel.message

    return go


BAD = [
    # surface, case, how, what the message must say
    ("API", "empty prompt", api(lambda b: run_moa("  ", ["a"], "g", backend=b)), "prompt must be a non-empty string"),
    (
        "API",
        "prompt not a string",
        api(lambda b: run_moa(None, ["a"], "g", backend=b)),
        "prompt must be a non-empty string, got None",
    ),
    ("API", "no proposers", api(lambda b: run_moa(P, [], "g", backend=b)), "proposers is empty"),
    (
        "API",
        "proposers a string",
        api(lambda b: run_moa(P, "abc", "g", backend=b)),
        "proposers must be a list of model names",
    ),
    ("API", "model not a string", api(lambda b: run_moa(P, ["a", 3], "g", backend=b)), "holds 3"),
    ("API", "empty model name", api(lambda b: run_moa(P, ["a", ""], "g", backend=b)), "non-empty string"),
    ("API", "aggregator not a string", api(lambda b: run_moa(P, ["a"], 7, backend=b)), "aggregator holds 7"),
    (
        "API",
        "aggregator empty",
        api(lambda b: plan_run(P, ["a"], "", backend=b)),
        "every model name must be a non-empty string",
    ),
    ("API", "layers 0", api(lambda b: run_moa(P, ["a"], "g", layers=0, backend=b)), "layers must be an integer >= 1"),
    ("API", "layers -1", api(lambda b: run_moa(P, ["a"], "g", layers=-1, backend=b)), "got -1"),
    ("API", "layers 2.5", api(lambda b: run_moa(P, ["a"], "g", layers=2.5, backend=b)), "got 2.5"),
    (
        "API",
        "per-layer lists against layers",
        api(lambda b: run_moa(P, [["a"], ["b"]], "g", layers=4, backend=b)),
        "makes layers=3",
    ),
    ("API", "an empty layer", api(lambda b: run_moa(P, [["a"], []], "g", backend=b)), "proposers of layer 2 is empty"),
    (
        "API",
        "temperature 2.5",
        api(lambda b: run_moa(P, ["a"], "g", temperature=2.5, backend=b)),
        "temperature must be a number in [0, 2], got 2.5",
    ),
    ("API", "temperature -0.1", api(lambda b: run_layer(P, ["a"], temperature=-0.1, backend=b)), "got -0.1"),
    ("API", "temperature 'hot'", api(lambda b: run_layer(P, ["a"], temperature="hot", backend=b)), "got 'hot'"),
    (
        "API",
        "max_tokens 0",
        api(lambda b: run_moa(P, ["a"], "g", max_tokens=0, backend=b)),
        "max_tokens must be an integer >= 1, got 0",
    ),
    ("API", "max_tokens 1.5", api(lambda b: run_layer(P, ["a"], max_tokens=1.5, backend=b)), "got 1.5"),
    ("API", "max_tokens True", api(lambda b: run_layer(P, ["a"], max_tokens=True, backend=b)), "got True"),
    ("API", "timeout 0", api(lambda b: run_layer(P, ["a"], timeout=0, backend=b)), "timeout must be a positive number"),
    ("API", "retries -1", api(lambda b: run_layer(P, ["a"], retries=-1, backend=b)), "retries must be an integer >= 0"),
    (
        "API",
        "min_ok above the proposers",
        api(lambda b: run_layer(P, ["a", "b"], min_ok=3, backend=b)),
        "from 1 to the number of proposers (2)",
    ),
    ("API", "quorum above the proposers", api(lambda b: run_moa(P, ["a", "b"], "g", quorum=3, backend=b)), "quorum"),
    ("API", "deadline 0", api(lambda b: run_moa(P, ["a", "b"], "g", deadline=0, backend=b)), "deadline"),
    (
        "API",
        "None among previous answers",
        api(lambda b: run_layer(P, ["a"], previous=["x", None], backend=b)),
        "every answer must be a string",
    ),
    (
        "API",
        "previous answers empty",
        api(lambda b: run_layer(P, ["a"], previous=[], backend=b)),
        "previous answers are empty",
    ),
    ("API", "answers a string", api(lambda b: aggregate(P, "xy", "g", backend=b)), "answers must be a list"),
    ("API", "aggregate with an empty prompt", api(lambda b: aggregate("", ["x"], "g", backend=b)), "prompt must be"),
    (
        "API",
        "aggregate at layer 0",
        api(lambda b: aggregate(P, ["x"], "g", layer=0, backend=b)),
        "layer must be an integer >= 1",
    ),
    (
        "API",
        "system_prompt not a string",
        api(lambda b: plan_run(P, ["a"], "g", system_prompt=3, backend=b)),
        "system_prompt must be",
    ),
    (
        "API",
        "seed a string",
        api(lambda b: plan_run(P, ["a"], "g", seed="1", backend=b)),
        "seed must be an integer or None",
    ),
    ("API", "cache a number", api(lambda b: plan_run(P, ["a"], "g", cache=3, backend=b)), "cache"),
    (
        "API",
        "an unknown setting (a typo)",
        api(lambda b: run_moa(P, ["a"], "g", temprature=0.2, backend=b)),
        "unknown setting 'temprature'; the settings are: temperature, max_tokens, seed",
    ),
    (
        "API",
        "settings not a Settings",
        api(lambda b: run_moa(P, ["a"], "g", settings={"temperature": 0.2}, backend=b)),
        "settings must be a moa_lab.moa.Settings (or a plan), got {'temperature': 0.2}",
    ),
    (
        "API",
        "a cache that is a folder",
        api(lambda b: run_layer(P, ["a"], cache=".", backend=b)),
        "cache '.' is a folder",
    ),
    (
        "API",
        "backoff negative",
        api(lambda b: plan_run(P, ["a"], "g", backoff=-1, backend=b)),
        "backoff must be a number of seconds >= 0, got -1",
    ),
    (
        "API",
        "backend a number",
        api(lambda b: run_moa(P, ["a"], "g", backend=42)),
        "backend must be a Backend, 'local', 'together' or a URL, got 42",
    ),
    (
        "API",
        "backend URL without http",
        api(lambda b: run_moa(P, ["a"], "g", backend="localhost:8000")),
        "must be an http:// or https:// URL, got 'localhost:8000'",
    ),
    (
        "API",
        "unknown model on the local backend",
        api(lambda b: run_moa(P, [S, "gpt-7"], S, backend="local")),
        "unknown model 'gpt-7' on the local backend; known models: smollm2-135m, gemma3-270m",
    ),
    ("API", "output_path a number", api(lambda b: check_output_path(3)), "output_path must be a file path"),
    (
        "API",
        "a prompt holding a lone surrogate",
        api(lambda b: run_moa("scraped \udc00 text", ["a"], "g", backend=b)),
        "prompt holds a lone surrogate (U+DC00 at character 8), which is not valid Unicode and cannot be sent to a "
        "model",
    ),
    (
        "API",
        "a system_prompt holding a lone surrogate",
        api(lambda b: plan_run(P, ["a"], "g", system_prompt="x\ud800", backend=b)),
        "system_prompt holds a lone surrogate (U+D800 at character 1)",
    ),
    (
        "API",
        "a previous answer holding a lone surrogate",
        api(lambda b: run_layer(P, ["a"], previous=["ok", "half \ud83d"], backend=b)),
        "answer 2 holds a lone surrogate (U+D83D at character 5)",
    ),
    (
        "API",
        "a model name holding a lone surrogate",
        api(lambda b: run_moa(P, ["a\udc80"], "g", backend=b)),
        "holds a lone surrogate (U+DC80 at character 1)",
    ),
    (
        "API",
        "a model URL whose key variable is not set",
        api(lambda b: get_backend(b.base_url, model_urls={"x": {"url": b.base_url, "key_env": "MOA_LAB_UNSET_KEY"}})),
        "model 'x' takes its key from the environment variable MOA_LAB_UNSET_KEY, which is not set",
    ),
    (
        "API",
        "a model URL entry with an unknown field",
        api(lambda b: get_backend(b.base_url, model_urls={"x": {"url": b.base_url, "token": "t"}})),
        "the entry of model 'x' in model_urls must be a URL or",
    ),
    (
        "evaluate",
        "one configuration",
        evaluation(configs=[single("a")]),
        "configs must be a list of at least two configurations",
    ),
    (
        "evaluate",
        "two configurations with one name",
        evaluation(configs=[single("a"), single("a")]),
        "configurations 'a alone' and 'a alone' have the same name",
    ),
    (
        "evaluate",
        "an unknown baseline",
        evaluation(baseline="GPT"),
        "baseline 'GPT' is not one of the configurations: 'a alone', 'MoA n=2'",
    ),
    ("evaluate", "n_orders 3", evaluation(n_orders=3), "orders must be 1 (one random order) or 2 (both orders), got 3"),
    ("evaluate", "judge_max_tokens 0", evaluation(judge_max_tokens=0), "max_tokens must be an integer >= 1, got 0"),
    ("evaluate", "temperature 3", evaluation(temperature=3), "temperature must be a number in [0, 2], got 3"),
    (
        "evaluate",
        "a reference baseline without references",
        evaluation(configs=[reference(), single("a")]),
        "the reference configuration needs a \"reference\" answer for every open task; task 'i01' has none",
    ),
    (
        "evaluate",
        "a tasks file with a bad kind",
        evaluation(file='{"prompt": "2+2?", "answer": "4", "kind": "maths"}\n'),
        "tasks.jsonl:1: \"kind\" must be one of number, choice, text, got 'maths'",
    ),
    (
        "batch file",
        "a line that is not JSON",
        batch_file('{"prompt": "ok"}\n{"prompt": "fine"}\n{"prompt": oops}\n'),
        "in.jsonl:3: not valid JSON",
    ),
    (
        "batch file",
        "a repeated id",
        batch_file('{"prompt": "ok", "id": 1}\n{"prompt": "again", "id": 1}\n'),
        "in.jsonl:2: id '1' repeats the one at",
    ),
    (
        "batch file",
        "an empty prompt",
        batch_file('{"prompt": ""}\n'),
        'in.jsonl:1: "prompt" must be a non-empty string',
    ),
    ("batch file", "no prompt field", batch_file('{"text": "no prompt"}\n'), 'in.jsonl:1: "prompt" must be'),
    ("batch file", "an id that is a list", batch_file('{"prompt": "x", "id": [1]}\n'), 'in.jsonl:1: "id" must be'),
    ("batch file", "only blank lines", batch_file("\n\n"), "no prompts"),
    (
        "batch file",
        "a JSON line holding a lone surrogate",
        batch_file('{"prompt": "ok"}\n{"prompt": "half \\ud83d"}\n'),
        'in.jsonl:2: "prompt" holds a lone surrogate (U+D83D at character 5)',
    ),
    (
        "batch file",
        "a line that is not UTF-8",
        batch_file("ok\ncaf\xe9\n".encode("latin-1")),
        "in.jsonl:2: not UTF-8 text (byte 0xe9); save the file as UTF-8",
    ),
    (
        "batch",
        "a list holding a lone surrogate",
        batch_list(["ok", "x \udc00"]),
        'prompts[1]: "prompt" holds a lone surrogate',
    ),
    (
        "batch",
        "an input edited since the output was written",
        resume_with_an_edited_input,
        "holds answers to other prompts under the same ids (1 id(s) differ): id '1' was 'one' there but is 'zero' in",
    ),
    ("batch", "concurrency 0", batch_settings(concurrency=0), "concurrency must be an integer >= 1, got 0"),
    ("batch", "rps 0", batch_settings(rps=0), "rps"),
    ("batch", "shard 3/3", batch_settings(shard="3/3"), "shard 3/3: I must be from 0 to N-1 (2)"),
    ("batch", "shard a/b", batch_settings(shard="a/b"), "shard must be 'I/N' (e.g. '0/4'), got 'a/b'"),
    ("batch", "quorum 9 of 2", batch_settings(quorum=9), "quorum"),
    ("batch", "a negative price", batch_settings(prices={"a": -1}), "price of 'a'"),
    ("CLI", "ask: layers 0", cli("ask", "Hi", "--layers", "0"), "layers must be an integer >= 1"),
    ("CLI", "ask: empty prompt", cli("ask", " "), "prompt must be a non-empty string"),
    (
        "CLI",
        "ask: temperature 3",
        cli("ask", "Hi", "--temperature", "3"),
        "temperature must be a number in [0, 2], got 3",
    ),
    (
        "CLI",
        "ask: max-tokens not a number",
        cli("ask", "Hi", "--max-tokens", "many"),
        "argument --max-tokens: invalid int value: 'many'",
    ),
    (
        "CLI",
        "ask: an ftp backend",
        cli("ask", "Hi", "--backend", "ftp://x", backend=False),
        "must be an http:// or https:// URL, got 'ftp://x'",
    ),
    (
        "CLI",
        "ask: a prompt that is not UTF-8",
        cli("ask", b"caf\xe9"),
        "prompt holds a lone surrogate (U+DCE9 at character 3)",
    ),
    (
        "CLI",
        "batch: MOA_LAB_MODEL_URLS names a key variable that is not set",
        cli(
            "batch",
            "in.txt",
            "out.jsonl",
            files={"in.txt": "q\n"},
            env={"MOA_LAB_MODEL_URLS": "x=http://127.0.0.1:9|NO_SUCH_KEY"},
        ),
        "model 'x' takes its key from the environment variable NO_SUCH_KEY, which is not set",
    ),
    (
        "CLI",
        "ask: unknown local model",
        cli("ask", "Hi", "--proposers", "gpt-4", "--backend", "local", backend=False),
        "unknown model 'gpt-4' on the local backend",
    ),
    (
        "CLI",
        "batch: a missing input file",
        cli("batch", "missing.jsonl", "out.jsonl"),
        "cannot read prompts from 'missing.jsonl'",
    ),
    (
        "CLI",
        "batch: a bad JSON line",
        cli("batch", "in.jsonl", "out.jsonl", files={"in.jsonl": '{"prompt": "a"}\n{oops\n'}),
        "in.jsonl:2: not valid JSON",
    ),
    (
        "CLI",
        "batch: concurrency 0",
        cli("batch", "in.txt", "out.jsonl", "--concurrency", "0", files={"in.txt": "q\n"}),
        "concurrency must be an integer >= 1, got 0",
    ),
    (
        "CLI",
        "batch: shard 5/2",
        cli("batch", "in.txt", "out.jsonl", "--shard", "5/2", files={"in.txt": "q\n"}),
        "shard 5/2: I must be from 0 to N-1 (1)",
    ),
    (
        "CLI",
        "batch: a missing prices file",
        cli("batch", "in.txt", "out.jsonl", "--prices", "p.json", files={"in.txt": "q\n"}),
        "cannot read prices from 'p.json': No such file or directory",
    ),
    (
        "CLI",
        "batch: a prices file that is not JSON",
        cli("batch", "in.txt", "out.jsonl", "--prices", "p.json", files={"in.txt": "q\n", "p.json": "a: 1"}),
        "prices file 'p.json' is not JSON",
    ),
    (
        "CLI",
        "batch: an output that is a folder",
        cli("batch", "in.txt", ".", files={"in.txt": "q\n"}),
        "output_path '.' is a folder",
    ),
    (
        "serve",
        "an alias to a model it does not serve",
        serve("--alias", "x=gpt-4"),
        "points to 'gpt-4', which this server does not serve; its models: smollm2-135m",
    ),
    (
        "serve",
        "--model: a missing file",
        serve("--model", "mine=nope.gguf"),
        "the model file of 'mine', 'nope.gguf', does not exist",
    ),
    (
        "serve",
        "--model: a file that is not GGUF",
        cli(
            "serve",
            "--port",
            "0",
            "--model",
            "mine=model.gguf",
            files={"model.gguf": "<html>Not Found</html>"},
            backend=False,
        ),
        "the model file of 'mine', 'model.gguf', is not a GGUF file (it starts with b'<htm'",
    ),
    (
        "serve",
        "--model: an unknown chat format",
        cli("serve", "--port", "0", "--model", "mine=m.gguf:chatgpt", files={"m.gguf": "GGUF"}, backend=False),
        "unknown chat format 'chatgpt' for the model 'mine'; known: alpaca",
    ),
    (
        "serve",
        "--model: a name given twice",
        cli(
            "serve",
            "--port",
            "0",
            "--model",
            "mine=m.gguf",
            "--model",
            "mine=m.gguf",
            files={"m.gguf": "GGUF"},
            backend=False,
        ),
        "the model name 'mine' is given twice (m.gguf and m.gguf)",
    ),
    (
        "serve",
        "--model: a bundled model's name",
        cli("serve", "--port", "0", "--model", "smollm2-135m=m.gguf", files={"m.gguf": "GGUF"}, backend=False),
        "the model name 'smollm2-135m' is given twice",
    ),
    (
        "serve",
        "--model without =",
        serve("--model", "m.gguf"),
        "--model entry 'm.gguf' is not of the form NAME=PATH.gguf",
    ),
    ("API", "models: a folder, not a file", own_models("mine=DIR"), "the model file of 'mine', 'DIR', is not a file"),
    (
        "API",
        "models: a bundled model's name",
        own_models("gemma3-270m=DIR/m.gguf", files={"m.gguf": GGUF_BYTES}),
        "the model name 'gemma3-270m' is a bundled model's: give your model another name",
    ),
    (
        "API",
        "models: larger than the free memory",
        own_models("huge=DIR/huge.gguf", sparse="huge.gguf"),
        "the model 'huge' (",
    ),
    (
        "API",
        "MOA_LAB_MODELS: a missing file",
        own_models("a=DIR/m.gguf", "b=DIR/gone.gguf", files={"m.gguf": GGUF_BYTES}, env=True),
        "the model file of 'b', 'DIR/gone.gguf', does not exist",
    ),
    (
        "API",
        "MOA_LAB_MODELS: a name with a space",
        own_models("my model=DIR/m.gguf", files={"m.gguf": GGUF_BYTES}, env=True),
        "MOA_LAB_MODELS: the model name 'my model' may not hold spaces or commas",
    ),
    ("serve", "an alias without =", serve("--alias", "novalue"), "alias 'novalue' is not of the form NAME=MODEL"),
    (
        "serve",
        "a missing alias file",
        serve("--alias-file", "nope.txt"),
        "cannot read alias file 'nope.txt': No such file or directory",
    ),
    (
        "serve",
        "an alias file that is broken JSON",
        cli("serve", "--port", "0", "--alias-file", "a.json", files={"a.json": "{oops"}, backend=False),
        "alias file 'a.json' is not a JSON object",
    ),
    ("serve", "threads 0", serve("--threads", "0"), "--threads must be at least 1, got 0"),
    ("serve", "max-tokens-cap 0", serve("--max-tokens-cap", "0"), "--max-tokens-cap must be at least 1, got 0"),
    ("serve", "a port in use", serve_on_a_busy_port, "(choose another --port, or --port 0 for any free one)"),
    ("serve", "a missing model file", serve_without_model_file, "the model file of smollm2-135m is missing"),
    ("papermill", "01: proposers []", notebook("01_two_layer_moa", proposers=[]), "proposers is empty"),
    (
        "papermill",
        "01: temperature 5",
        notebook("01_two_layer_moa", temperature=5),
        "temperature must be a number in [0, 2], got 5",
    ),
    (
        "papermill",
        "01: an unknown aggregator",
        notebook("01_two_layer_moa", aggregator="gpt-7"),
        "unknown model 'gpt-7' on the local backend",
    ),
    (
        "papermill",
        "02: layers 0",
        notebook("02_three_layer_moa", layers=0),
        "layers must be an integer >= 1 (1 = the aggregator alone), got 0",
    ),
    ("papermill", "02: layers 1", notebook("02_three_layer_moa", layers=1), "layers=1: this notebook needs at least 2"),
    (
        "papermill",
        "02: an empty layer",
        notebook("02_three_layer_moa", layers=3, proposers=[[S], []]),
        "proposers of layer 2 is empty",
    ),
    (
        "papermill",
        "02: output_path a folder",
        notebook("02_three_layer_moa", output_path="."),
        "output_path '.' is a folder",
    ),
    (
        "papermill",
        "03: layers 9",
        notebook("03_playground", layers=9),
        "layers=9: the playground shows at most 6 layers",
    ),
    (
        "papermill",
        "03: max_tokens -5",
        notebook("03_playground", max_tokens=-5),
        "max_tokens must be an integer >= 1, got -5",
    ),
    (
        "papermill",
        "04: n_prompts -1",
        notebook("04_batch_synthetic_data", n_prompts=-1),
        "n_prompts must be an integer >= 0 (0: all), got -1",
    ),
    (
        "papermill",
        "04: a missing prompts file",
        notebook("04_batch_synthetic_data", prompts_path="missing.jsonl"),
        "cannot read prompts from 'missing.jsonl'",
    ),
    (
        "papermill",
        "04: concurrency 0",
        notebook("04_batch_synthetic_data", concurrency=0),
        "concurrency must be an integer >= 1, got 0",
    ),
    (
        "papermill",
        "05: n_instructions 25",
        notebook("05_evaluate_moa", n_instructions=25),
        "n_instructions must be an integer from 0 to 20 (None: all 20), got 25",
    ),
    (
        "papermill",
        "05: proposer_counts [5]",
        notebook("05_evaluate_moa", proposer_counts=[5]),
        "counts must be integers from 1 to the pool's size (4), got 5",
    ),
    (
        "papermill",
        "05: an unknown baseline",
        notebook("05_evaluate_moa", baseline="GPT"),
        "baseline 'GPT' is not one of the configurations",
    ),
    (
        "papermill",
        "05: a reference baseline on the built-in tasks",
        notebook("05_evaluate_moa", baseline="reference"),
        "task 'i01' has none",
    ),
    (
        "papermill",
        "05: n_orders 0",
        notebook("05_evaluate_moa", n_orders=0),
        "orders must be 1 (one random order) or 2 (both orders), got 0",
    ),
    (
        "papermill",
        "06: a swept parameter notebook 02 does not have",
        notebook("06_sweeps", grid={"layerz": [2, 3]}),
        "parameter 'layerz' is not in the parameters cell of 02_three_layer_moa.ipynb; its parameters: prompt",
    ),
    (
        "papermill",
        "06: seeds not integers",
        notebook("06_sweeps", seeds=["a"]),
        "seeds must be a non-empty list of integers, got ['a']",
    ),
    (
        "sweep",
        "a parameter the notebook does not have",
        sweep({"grid": {"layerz": [2, 3]}}),
        "parameter 'layerz' is not in the parameters cell of 01_two_layer_moa.ipynb; its parameters: prompt, proposers",
    ),
    (
        "sweep",
        "a value of the wrong type",
        sweep({"grid": {"temperature": [0.2, "hot"]}}),
        "parameter 'temperature' of 01_two_layer_moa.ipynb is float (its cell says temperature: float = 0.7), "
        "got 'hot'",
    ),
    (
        "sweep",
        "a fixed value of the wrong type",
        sweep({"parameters": {"seed": True}}),
        "parameter 'seed' of 01_two_layer_moa.ipynb is int (its cell says seed: int = 0), got True",
    ),
    (
        "sweep",
        "a swept prompt holding a lone surrogate",
        sweep({"zip": {"prompt": ["ok", "scraped \udc00"]}}),
        "parameter 'prompt' holds a lone surrogate (U+DC00",
    ),
    (
        "sweep",
        "an empty grid",
        sweep({"grid": {"temperature": []}}),
        "grid 'temperature' is empty: give at least one value",
    ),
    (
        "sweep",
        "a grid value that is not a list",
        sweep({"grid": {"temperature": 0.2}}),
        "grid 'temperature' must be a list of values, got 0.2",
    ),
    (
        "sweep",
        "zip lists of two lengths",
        sweep({"zip": {"temperature": [0.1, 0.2], "prompt": ["a"]}}),
        "zip's lists must have one length, got temperature: 2, prompt: 1",
    ),
    (
        "sweep",
        "a parameter in the grid and fixed",
        sweep({"parameters": {"temperature": 0.2}, "grid": {"temperature": [0.3]}}),
        "parameter 'temperature' is given twice",
    ),
    (
        "sweep",
        "seeds for a notebook without a seed",
        sweep({"seeds": [0, 1]}, notebook="04_batch_synthetic_data"),
        "seeds need a `seed` parameter, and 04_batch_synthetic_data.ipynb has none",
    ),
    (
        "sweep",
        "an unknown key in the spec",
        sweep({"grdi": {"temperature": [0.2]}}),
        "unknown key 'grdi' in the sweep spec; its keys: parameters, grid, zip, seeds",
    ),
    (
        "sweep",
        "a missing notebook",
        sweep({"grid": {"temperature": [0.2]}}, notebook="nope.ipynb"),
        "notebook 'nope.ipynb' not found",
    ),
    (
        "sweep",
        "an OUTDIR holding another sweep",
        sweep({"grid": {"temperature": [0.2]}}, setup=another_sweep),
        "holds another sweep (of /elsewhere/other.ipynb); give another OUTDIR",
    ),
    (
        "sweep",
        "an OUTDIR holding other files",
        sweep({"grid": {"temperature": [0.2]}}, setup=other_files),
        "holds files but no sweep (sweep.json); give an empty or new folder",
    ),
    (
        "sweep",
        "jobs 0",
        sweep({"grid": {"temperature": [0.2]}}, jobs=0),
        "jobs must be an integer >= 1 (kernels at once), got 0",
    ),
    (
        "CLI",
        "sweep: a spec that is not YAML",
        cli("sweep", "01_two_layer_moa", "s.yaml", "out", files={"s.yaml": "grid: [unclosed"}, backend=False),
        "the sweep spec 's.yaml' is not valid YAML",
    ),
    (
        "CLI",
        "sweep: a missing spec file",
        cli("sweep", "01_two_layer_moa", "s.yaml", "out", backend=False),
        "cannot read the sweep spec 's.yaml': No such file or directory",
    ),
    (
        "CLI",
        "sweep: a value of the wrong type",
        cli(
            "sweep",
            "01_two_layer_moa",
            "s.json",
            "out",
            "--dry-run",
            files={"s.json": '{"grid": {"temperature": ["hot"]}}'},
            backend=False,
        ),
        "parameter 'temperature' of 01_two_layer_moa.ipynb is float",
    ),
    (
        "widgets",
        "a blank prompt",
        widget(lambda p: setattr(p.prompt, "value", "   ")),
        "prompt must be a non-empty string",
    ),
    (
        "widgets",
        "max_tokens 0",
        widget(lambda p: setattr(p.max_tokens, "value", 0)),
        "max_tokens must be an integer >= 1, got 0",
    ),
    (
        "widgets",
        "no proposers in layer 1",
        widget(lambda p: setattr(p.proposers[0], "value", [])),
        "proposers of layer 1 is empty",
    ),
    (
        "widgets",
        "an empty aggregator",
        widget(lambda p: setattr(p.aggregator, "value", "")),
        "every model name must be a non-empty string",
    ),
    # the variants (issue 18)
    (
        "API",
        "an unknown combine mode",
        api(lambda b: run_moa(P, ["a"], "g", backend=b, combine="blend")),
        "unknown combine mode 'blend'; the modes are: synthesize, select, rank, vote, sequential",
    ),
    (
        "API",
        "a sequential window 0",
        api(lambda b: run_moa(P, ["a"], "g", backend=b, combine="sequential", window=0)),
        "window must be an integer >= 1, got 0",
    ),
    (
        "API",
        "rank top_k more than the references",
        api(lambda b: run_moa(P, ["a", "b"], "g", backend=b, combine="rank", top_k=3)),
        "top_k=3 is more than the references ranked (2, the last proposer layer's answers)",
    ),
    (
        "API",
        "max_references more than the references",
        api(lambda b: run_moa(P, ["a", "b"], "g", backend=b, max_references=3)),
        "max_references=3 is more than the references there are: the smallest layer has 2 proposer(s)",
    ),
    (
        "API",
        "a combine mode without proposers",
        api(lambda b: run_moa(P, [], "g", layers=1, backend=b, combine="vote")),
        "combine='vote' combines the proposers' answers: it needs a proposer layer (layers >= 2)",
    ),
    (
        "API",
        "roles for fewer proposers",
        api(lambda b: run_moa(P, ["a", "b"], "g", backend=b, roles=["x"])),
        "roles gives 1 system prompt(s), one per proposer, but the largest layer has 2 proposer(s)",
    ),
    (
        "API",
        "roles a string",
        api(lambda b: run_moa(P, ["a"], "g", backend=b, roles="be brief")),
        "roles must be None or a list with one system prompt (or None) per proposer, got 'be brief'",
    ),
    (
        "API",
        "shuffle_references not a bool",
        api(lambda b: run_moa(P, ["a"], "g", backend=b, shuffle_references="yes")),
        "shuffle_references must be True or False, got 'yes'",
    ),
    (
        "API",
        "early_stop 1.5",
        api(lambda b: run_moa(P, ["a"], "g", backend=b, early_stop=1.5)),
        "early_stop must be None (never) or a similarity threshold in (0, 1], got 1.5",
    ),
    (
        "API",
        "a similarity that is neither a measure's name nor a function",
        api(lambda b: run_moa(P, ["a"], "g", backend=b, similarity="cosine")),
        "similarity must be None (lexical), 'lexical' or 'semantic' or a function f(a, b) -> [0, 1], got 'cosine'",
    ),
    (
        "API",
        "a filter_outliers margin above 1",
        api(lambda b: run_moa(P, ["a", "b", "c"], "g", backend=b, filter_outliers=2)),
        "filter_outliers must be None (off) or a similarity margin in [0, 1], got 2",
    ),
    (
        "CLI",
        "an unknown --similarity",
        cli("ask", "q", "--similarity", "cosine"),
        "argument --similarity: invalid choice: 'cosine' (choose from 'lexical', 'semantic')",
    ),
    (
        "API",
        "a negative max_cost",
        api(lambda b: run_moa(P, ["a"], "g", backend=b, max_cost=-1)),
        "max_cost must be None (no cap) or a number of USD >= 0, got -1",
    ),
    (
        "API",
        "max_tokens_total 0",
        api(lambda b: run_moa(P, ["a"], "g", backend=b, max_tokens_total=0)),
        "max_tokens_total must be None (no cap) or an integer >= 1, got 0",
    ),
    (
        "API",
        "an unpriced model under max_cost",
        api(lambda b: run_moa(P, ["a"], "g", backend=b, max_cost=1.0)),
        "max_cost is set but 'a' has no price: its calls cannot be counted (never guessed)",
    ),
    (
        "API",
        "an unpriced model under max_cost, one layer",
        api(lambda b: run_layer(P, ["a"], backend=b, max_cost=1.0)),
        "max_cost is set but 'a' has no price",
    ),
    (
        "evaluate",
        "a variant with top_k more than its references",
        api(lambda b: variant(["a", "b"], "g", "r", combine="rank", top_k=4)),
        "top_k=4 is more than the references ranked (2",
    ),
    (
        "evaluate",
        "variants with n 1",
        api(lambda b: variants(["a"], "g", n=1)),
        "n (proposers per variant) must be an integer >= 2, got 1",
    ),
    (
        "batch",
        "a negative max_cost",
        batch_settings(max_cost=-0.5),
        "max_cost must be None (no cap) or a number of USD >= 0, got -0.5",
    ),
    ("batch", "an unpriced model under max_cost", batch_settings(max_cost=2.0), "max_cost is set but 'a' has no price"),
    ("CLI", "ask: an unknown combine mode", cli("ask", "Hi", "--combine", "blend"), "unknown combine mode 'blend'"),
    (
        "CLI",
        "batch: a negative max-cost",
        cli("batch", "in.txt", "out.jsonl", "--max-cost", "-2", files={"in.txt": "q\n"}),
        "max_cost must be None (no cap) or a number of USD >= 0, got -2.0",
    ),
    (
        "papermill",
        "07: n 1",
        notebook("07_moa_variants", n=1),
        "n (proposers per variant) must be an integer >= 2, got 1",
    ),
    ("papermill", "07: window 0", notebook("07_moa_variants", window=0), "window must be an integer >= 1, got 0"),
    (
        "batch",
        "an unknown engine",
        batch_settings(engine="spark"),
        "engine must be 'asyncio' (this process), 'ray' or RayOptions(...) (a Ray cluster), got 'spark'",
    ),
    ("batch", "Ray with a shard", batch_settings(engine="ray", shard="0/2"), "shard is for machines without Ray"),
    (
        "batch",
        "RayOptions with 0 actors",
        api(lambda remote: RayOptions(actors=0)),
        "actors must be an integer >= 1, got 0",
    ),
    (
        "CLI",
        "batch --ray: an output that is a file",
        cli("batch", "in.txt", "in.txt", "--ray", files={"in.txt": "q\n"}),
        "out 'in.txt' is a file; the Ray engine writes a folder of block files",
    ),
    (
        "CLI",
        "batch --ray: block size 0",
        cli("batch", "in.txt", "out", "--ray", "--block-size", "0", files={"in.txt": "q\n"}),
        "block_size must be an integer >= 1, got 0",
    ),
    (
        "serve",
        "a port above 65535",
        serve("--port", "70000"),
        "--port must be from 0 to 65535 (0: any free port), got 70000",
    ),
    (
        "CLI",
        "sweep: a name given twice in a YAML mapping",
        cli(
            "sweep",
            "01_two_layer_moa",
            "s.yaml",
            "out",
            files={"s.yaml": "grid:\n  temperature: [0.1]\n  temperature: [0.9]\n"},
            backend=False,
        ),
        "the name 'temperature' is given twice in one mapping (line 2 and line 3)",
    ),
    (
        "CLI",
        "sweep: a key given twice at the top of a YAML spec",
        cli(
            "sweep",
            "01_two_layer_moa",
            "s.yaml",
            "out",
            files={"s.yaml": "grid: {seed: [1]}\ngrid: {seed: [2]}\n"},
            backend=False,
        ),
        "the name 'grid' is given twice in one mapping (line 1 and line 2)",
    ),
    (
        "CLI",
        "sweep: a name given twice in a JSON spec",
        cli(
            "sweep",
            "01_two_layer_moa",
            "s.json",
            "out",
            files={"s.json": '{"grid": {"seed": [1], "seed": [2]}}'},
            backend=False,
        ),
        "the name 'seed' is given twice in one mapping",
    ),
    (
        "CLI",
        "batch: a model given twice in a prices file",
        cli(
            "batch",
            "in.txt",
            "out.jsonl",
            "--prices",
            "p.json",
            files={"in.txt": "q\n", "p.json": '{"a": [1, 2], "a": [0, 0]}'},
        ),
        "the name 'a' is given twice in one mapping",
    ),
    (
        "sweep",
        "the .py of a pair out of sync with its .ipynb",
        out_of_sync_pair,
        "are out of sync (they differ from cell 3); papermill would run the .ipynb's old cells",
    ),
    (
        "CLI",
        "ask: more roles than proposers",
        cli("ask", "Hi", "--proposers", "a", "--role", "x", "--role", ""),
        "roles gives 2 system prompt(s), one per proposer, but the largest layer has 1 proposer(s)",
    ),
    (
        "API",
        "a conversation ending with the assistant",
        api(
            lambda b: run_moa(
                messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], backend=b
            )
        ),
        "the last message of messages must be the user's (the turn the run answers), got a 'assistant' message",
    ),
    (
        "API",
        "a conversation with an image part",
        api(lambda b: run_moa([{"role": "user", "content": [{"type": "image_url"}]}], ["a"], "g", backend=b)),
        "prompt[0].content[0] must be a text part",
    ),
    (
        "API",
        "a tool message",
        api(lambda b: plan_run(messages=[{"role": "tool", "content": "x"}], backend=b)),
        "messages[0].role must be one of system, developer, user, assistant, got 'tool' (tool calls are not supported)",
    ),
    (
        "API",
        "both prompt= and messages=",
        api(lambda b: plan_run("a", messages=[{"role": "user", "content": "b"}], backend=b)),
        "give prompt= or messages=, not both",
    ),
    (
        "batch file",
        "a line with both prompt and messages",
        batch_file('{"prompt": "a", "messages": [{"role": "user", "content": "b"}]}\n'),
        'in.jsonl:1: give "prompt" or "messages", not both',
    ),
    (
        "batch file",
        "messages whose content is a lone surrogate",
        batch_file('{"messages": [{"role": "user", "content": "\\ud800"}]}\n'),
        'in.jsonl:1: "messages"[0].content',
    ),
    (
        "CLI",
        "ask: a recipe with a misspelt setting",
        cli("ask", "Hi", "--recipe", "r.yaml", files={"r.yaml": "proposers: [a]\ntemprature: 0.2\n"}),
        "r.yaml: unknown key 'temprature'; a recipe's keys are: proposers, aggregator, layers, backend, temperature",
    ),
    (
        "CLI",
        "ask: a recipe that gives a name twice",
        cli("ask", "Hi", "--recipe", "r.json", files={"r.json": '{"aggregator": "a", "aggregator": "b"}'}),
        "the name 'aggregator' is given twice in one mapping",
    ),
    (
        "CLI",
        "chat: a recipe with a bad value",
        cli("chat", "--recipe", "r.yaml", files={"r.yaml": "proposers: [a]\ntemperature: 9\n"}),
        "r.yaml: temperature must be a number in [0, 2], got 9",
    ),
    (
        "CLI",
        "eval: an MT-Bench question with one turn",
        cli(
            "eval",
            "mt-bench",
            "q.jsonl",
            "out",
            files={"q.jsonl": '{"question_id": 1, "category": "x", "turns": ["a"]}'},
            backend=False,
        ),
        'q.jsonl:1: "turns" must be a list of 2 non-empty strings (MT-Bench has two)',
    ),
    (
        "CLI",
        "eval: a repeated question id",
        cli(
            "eval",
            "choice",
            "c.jsonl",
            "out",
            files={"c.jsonl": '{"id": 1, "question": "q", "choices": ["a", "b"], "answer": "A"}\n' * 2},
            backend=False,
        ),
        "c.jsonl:2: id '1' repeats the one at",
    ),
    (
        "serve",
        "a recipe without NAME=",
        cli("serve", "--recipe", "r.yaml", backend=False),
        "--recipe 'r.yaml': expected NAME=FILE",
    ),
    (
        "CLI",
        "eval: an empty .json file",
        cli("eval", "gsm8k", "g.json", "out", files={"g.json": "[]\n"}, backend=False),
        "g.json: no items (an empty JSON list)",
    ),
    (
        "CLI",
        "eval: #### abc",
        cli(
            "eval",
            "gsm8k",
            "g.jsonl",
            "out",
            files={"g.jsonl": '{"question": "q", "answer": "#### abc"}'},
            backend=False,
        ),
        "g.jsonl:1: the answer after \"####\" must be a number (as 42, 5.50, $1,000), got 'abc'",
    ),
    (
        "serve",
        "an alias given twice",
        serve("--alias", "fast=smollm2-135m", "--alias", "fast=gemma3-270m"),
        "the alias 'fast' is given twice: --alias fast=smollm2-135m ('smollm2-135m') and --alias fast=gemma3-270m",
    ),
    (
        "endpoint",
        "response_format json_object",
        endpoint(response_format={"type": "json_object"}),
        "'response_format' 'json_object' is not supported",
    ),
]


class Ctx:
    def __init__(self, fault, remote, folder: Path) -> None:
        self.fault, self.remote, self.dir, self.inputs = fault, remote, folder, set()


@pytest.mark.parametrize(
    "surface, case, how, message",
    [pytest.param(*b, marks=pytest.mark.kernel) if b[0] == "papermill" else b for b in BAD],  # papermill: a kernel
    ids=[f"{b[0]}: {b[1]}" for b in BAD],
)
def test_bad_input(fault, remote, tmp_path, surface, case, how, message):
    folder = tmp_path / "work"
    folder.mkdir()
    ctx = Ctx(fault, remote, folder)
    said = how(ctx)
    assert message in said, said
    assert fault.requests == []  # nothing was called
    left = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name not in ctx.inputs)
    assert left == [], left  # nothing half-written


def test_the_table_has_thirty_cases_over_every_surface_and_is_the_documented_one():
    surfaces = {b[0] for b in BAD}
    assert len(BAD) >= 30
    assert {"API", "evaluate", "batch file", "CLI", "papermill", "widgets", "serve", "endpoint"} <= surfaces
    rows = "".join(f"| {surface} | {case} | {message.replace('|', '/')} |\n" for surface, case, _, message in BAD)
    check_table(
        Path(__file__).with_name("bad_input_table.md"),
        "Generated by tests/reliability/test_bad_input_table.py: each case gives this message, calls "
        "nothing and leaves no file.\n\n| surface | bad input | the message says |\n|---|---|---|\n" + rows,
    )
