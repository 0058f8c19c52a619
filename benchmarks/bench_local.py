"""Local: the embedded engine (the bundled models on this machine's cores), against llama-cpp-python in-process.

- **Aggregator alone**: an ~800-token prompt, 128 tokens, through the server ÷ in-process llama-cpp-python with
  every core (``n_threads`` = cores). Same model file, prompt, seed and settings; the two timed in turn, medians
  of ``repeats``; each repeat starts its prompt differently (llama.cpp reuses an evaluated prefix). Target ≤ 1.10.
  The same for each model of the pack that is installed (``qwen-coder-0.5b``, ``qwen-coder-1.5b``: loaded on its
  first call, which the warm-up round makes), with its tokens per second both ways.
- **The demo's run** (``make demo``: 4 proposers + aggregator, 160 tokens): the engine now ÷ the previous policy
  (one thread per call whatever runs, ``MOA_LAB_THREAD_POLICY=one``), two servers, timed in turn. Target ≤ 0.8.
- **A 4-call layer** (2 × SmolLM2, 2 × Gemma) at once through the server ÷ the same calls one after another
  in-process on one thread each (the comparison of earlier runs: no regression). Target ≤ 0.55. Also shown: ÷ the
  same calls one after another through the server (each alone then gets every core).
- **Scaling**: a 3-layer run (4 + 4 proposers, aggregator) under ``taskset`` with 1 core and with 2 cores.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

from harness import Row, no_cache

from moa_lab import get_backend, run_moa
from moa_lab._backends import LOCAL_AGGREGATOR, LOCAL_PROPOSERS, Backend
from moa_lab.engine import LocalServer
from moa_lab.engine._local import BUNDLED_MODELS, model_path
from moa_lab.engine._pack import installed_pack, pack_path
from moa_lab.engine._policy import default_threads

S = "smollm2-135m"
FOUR = ["smollm2-135m", "smollm2-135m", "gemma3-270m", "gemma3-270m"]
STORY = [{"role": "user", "content": "Write a short story about a robot who learns to paint."}]
DEMO = "Give one tip for writing clear emails."


def _aggregator_messages(i: int) -> list[dict]:
    refs = "\n".join(
        f"{k}. Answer {k} ({i}): " + "Clear emails state the request first, keep to one topic, and "
        "end with the next step and a date. " * 9
        for k in range(1, 5)
    )
    return [
        {"role": "system", "content": f"[{i}] Synthesise these responses into one answer:\n" + refs},
        {"role": "user", "content": "Write ten numbered tips for writing clear emails, each with an example."},
    ]


def _backend(server: LocalServer) -> Backend:
    return Backend(
        "local",
        None,
        {},
        server.model_names(),
        server=server,
        default_max_tokens=64,
        default_proposers=LOCAL_PROPOSERS,
        default_aggregator=LOCAL_AGGREGATOR,
    )


def _served(backend, model, messages, **settings):
    async def call():
        client = await backend.client(model)
        t0 = time.perf_counter()
        out = await client.chat.completions.create(model=model, messages=messages, **settings)
        return out.usage, time.perf_counter() - t0

    return call()


def aggregator_alone(repeats: int, model: str = S) -> Row:
    from llama_cpp import Llama

    cores = default_threads()
    path = model_path(model) if model in BUNDLED_MODELS else pack_path(model)
    llm = Llama(model_path=str(path), n_ctx=4096, n_threads=cores, n_threads_batch=cores, verbose=False)
    backend = get_backend("local")
    backend.server.start()
    settings = dict(max_tokens=128, temperature=0.0, seed=1)
    times = {"in-process": [], "server": []}

    async def main():
        for i in range(repeats + 1):  # the first round warms both up
            t0 = time.perf_counter()
            mine = llm.create_chat_completion(_aggregator_messages(2 * i), **settings)
            alone = time.perf_counter() - t0
            usage, served = await _served(backend, model, _aggregator_messages(2 * i + 1), **settings)
            if i:
                times["in-process"].append(alone)
                times["server"].append(served)
        return mine["usage"], usage

    try:
        mine, usage = asyncio.run(main())
    finally:
        backend.server.stop()
    server, alone = statistics.median(times["server"]), statistics.median(times["in-process"])
    tokens = usage.prompt_tokens + usage.completion_tokens
    return Row(
        "local: aggregator alone, server ÷ in-process with every core" + ("" if model == S else f" ({model})"),
        server / alone,
        "≤ 1.10",
        server / alone <= 1.10,
        f"{model}, {tokens / server:.0f} vs {tokens / alone:.0f} tokens/s, {usage.prompt_tokens} prompt tokens, "
        f"{usage.completion_tokens} generated, {cores} "
        f"core(s): {server:.2f} s vs {alone:.2f} s in-process ({mine['prompt_tokens']} prompt tokens) "
        f"(medians of {repeats}, timed in turn)",
    )


def demo(repeats: int) -> Row:
    servers = {}
    os.environ["MOA_LAB_THREAD_POLICY"] = "one"
    try:
        servers["before"] = LocalServer()
        servers["before"].start()
    finally:
        del os.environ["MOA_LAB_THREAD_POLICY"]
    servers["after"] = LocalServer()
    servers["after"].start()
    times = {"before": [], "after": []}
    try:
        for i in range(repeats):
            for name in ("before", "after"):
                t0 = time.perf_counter()
                result = asyncio.run(run_moa(f"({i}) {DEMO}", max_tokens=160, backend=_backend(servers[name])))
                times[name].append(time.perf_counter() - t0)
                assert result.text
    finally:
        for server in servers.values():
            server.stop()
    before, after = statistics.median(times["before"]), statistics.median(times["after"])
    return Row(
        "local: the demo's run, engine now ÷ one thread per call",
        after / before,
        "≤ 0.8",
        after / before <= 0.8,
        f"4 proposers + aggregator, 160 tokens, {default_threads()} core(s): {after:.1f} s vs {before:.1f} s "
        f"(medians of {repeats}, timed in turn; before = MOA_LAB_THREAD_POLICY=one)",
    )


def four_calls(repeats: int) -> list[Row]:
    from llama_cpp import Llama

    llms = {
        m: Llama(
            model_path=str(model_path(m)),
            chat_format=BUNDLED_MODELS[m],
            n_ctx=4096,
            n_threads=1,
            n_threads_batch=1,
            verbose=False,
        )
        for m in BUNDLED_MODELS
    }
    backend = get_backend("local")
    backend.server.start()
    settings = dict(max_tokens=128, temperature=0.0, seed=1)
    try:
        for m in BUNDLED_MODELS:  # warm up
            llms[m].create_chat_completion(STORY, max_tokens=4)
        t0 = time.perf_counter()
        for i, model in enumerate(FOUR):
            llms[model].create_chat_completion(
                [{"role": "user", "content": f"({i}a) " + STORY[0]["content"]}], **settings
            )
        in_process = time.perf_counter() - t0

        async def at_once(tag):
            await asyncio.gather(
                *(
                    _served(backend, m, [{"role": "user", "content": f"({i}{tag}) " + STORY[0]["content"]}], **settings)
                    for i, m in enumerate(FOUR)
                )
            )

        async def in_turn(tag):
            for i, m in enumerate(FOUR):
                await _served(
                    backend, m, [{"role": "user", "content": f"({i}{tag}) " + STORY[0]["content"]}], **settings
                )

        asyncio.run(at_once("w"))
        rounds = {"at once": [], "in turn": []}
        for r in range(repeats):  # timed in turn
            t0 = time.perf_counter()
            asyncio.run(at_once(f"b{r}"))
            rounds["at once"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            asyncio.run(in_turn(f"c{r}"))
            rounds["in turn"].append(time.perf_counter() - t0)
        together, served_in_turn = statistics.median(rounds["at once"]), statistics.median(rounds["in turn"])
    finally:
        backend.server.stop()
    return [
        Row(
            "local: a 4-call layer at once ÷ one by one in-process (1 thread)",
            together / in_process,
            "≤ 0.55",
            together / in_process <= 0.55,
            f"2 × smollm2 + 2 × gemma3, 128 tokens: {together:.1f} s through the server at once (median of {repeats}), "
            f"{in_process:.1f} s one after another in-process",
        ),
        Row(
            "local: a 4-call layer at once ÷ one by one through the server",
            together / served_in_turn,
            "(none)",
            None,
            f"{together:.1f} s at once vs {served_in_turn:.1f} s one after another (each alone on every core; medians "
            f"of {repeats}, timed in turn)",
        ),
    ]


SCALING = """
import asyncio, json, time
from moa_lab import run_moa
t0 = time.perf_counter()
r = asyncio.run(run_moa({prompt!r}, layers=3, max_tokens=64, cache=False))
print(json.dumps({{"seconds": r.seconds, "ok": bool(r.text)}}))
"""


def scaling() -> Row:
    seconds = {}
    for cpus in ("0", "0,1"):
        if len(os.sched_getaffinity(0)) < len(cpus.split(",")):
            continue
        done = subprocess.run(
            [
                "taskset",
                "-c",
                cpus,
                sys.executable,
                "-c",
                SCALING.format(prompt=f"({cpus}) Name three uses of a paperclip."),
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        seconds[cpus] = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
    if "0,1" not in seconds:
        return Row("local: 3-layer run, 1 core ÷ 2 cores", float("nan"), "(none)", None, "one core here: not measured")
    ratio = seconds["0"] / seconds["0,1"]
    return Row(
        "local: 3-layer run, 1 core ÷ 2 cores (speed-up)",
        ratio,
        "(none)",
        None,
        f"4 + 4 proposers and the aggregator, 64 tokens: {seconds['0']:.1f} s on 1 core, {seconds['0,1']:.1f} s "
        "on 2 (taskset; the server uses the cores it may run on)",
    )


def run(repeats: int = 3) -> list[Row]:
    with no_cache():
        pack = [aggregator_alone(repeats, name) for name in installed_pack()]
        return [aggregator_alone(repeats), *pack, demo(repeats), *four_calls(repeats), scaling()]
