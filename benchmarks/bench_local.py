"""Local: the embedded server's generation speed ÷ llama-cpp-python called in-process on the same model.

Same model file (SmolLM2-135M), same settings as the server's workers (one thread, n_ctx 4096), same prompt,
seed and max_tokens; tokens/s = completion tokens ÷ wall seconds of the whole call, as a client sees it. The
two are timed in turn, call after call (medians of ``repeats``), so that drift on a shared machine hits both.
Target ≥ 0.9. Also shown: 4 calls at once (2 per bundled model), through the server's workers, against the
same 4 calls made one after another in-process.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from harness import Row, no_cache

from moa_lab import get_backend
from moa_lab.local import BUNDLED_MODELS, model_path

MESSAGES = [{"role": "user", "content": "Write a short story about a robot who learns to paint."}]
SETTINGS = dict(max_tokens=128, temperature=0.0, seed=1)
FOUR = ["smollm2-135m", "smollm2-135m", "gemma3-270m", "gemma3-270m"]


def run(repeats: int = 5) -> list[Row]:
    from llama_cpp import Llama

    llms = {m: Llama(model_path=str(model_path(m)), chat_format=BUNDLED_MODELS[m], n_ctx=4096, n_threads=1,
                     n_threads_batch=1, verbose=False) for m in BUNDLED_MODELS}
    backend = get_backend("local")
    backend.server.start()

    def in_process(model: str) -> tuple[int, float]:
        t0 = time.perf_counter()
        out = llms[model].create_chat_completion(MESSAGES, **SETTINGS)
        return out["usage"]["completion_tokens"], time.perf_counter() - t0

    async def served(model: str) -> tuple[int, float]:
        client = await backend.client(model)
        t0 = time.perf_counter()
        out = await client.chat.completions.create(model=model, messages=MESSAGES, **SETTINGS)
        return out.usage.completion_tokens, time.perf_counter() - t0

    async def main():
        speeds = {"in-process": [], "server": []}
        for i in range(repeats + 1):  # the first round is a warm-up
            for name, (tokens, seconds) in (("in-process", in_process(FOUR[0])), ("server", await served(FOUR[0]))):
                if i:
                    speeds[name].append(tokens / seconds)
        t0 = time.perf_counter()
        for model in FOUR:
            in_process(model)
        one_by_one = time.perf_counter() - t0
        t0 = time.perf_counter()
        await asyncio.gather(*(served(model) for model in FOUR))
        return speeds, one_by_one, time.perf_counter() - t0

    try:
        with no_cache():
            speeds, one_by_one, at_once = asyncio.run(main())
    finally:
        backend.server.stop()
    alone, server = statistics.median(speeds["in-process"]), statistics.median(speeds["server"])
    return [
        Row("local: server tokens/s ÷ in-process llama-cpp-python", server / alone, "≥ 0.9", server / alone >= 0.9,
            f"smollm2-135m, ≤ 128 tokens, 1 thread: {server:.1f} vs {alone:.1f} tokens/s (medians of {repeats}, "
            "timed in turn)"),
        Row("local: 4 calls at once, in-process one by one ÷ server", one_by_one / at_once, "(none)", None,
            f"2 × smollm2 + 2 × gemma3: {one_by_one:.1f} s one after another in-process, {at_once:.1f} s through "
            "the server's workers at once"),
    ]
