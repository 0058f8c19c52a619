"""Local: the embedded server's generation speed ÷ llama-cpp-python called in-process on the same model.

Same model file (SmolLM2-135M), same settings as the server's workers (one thread, n_ctx 4096), same prompt,
seed and max_tokens; tokens/s = completion tokens ÷ wall seconds of the whole call, as a client sees it.
Target ≥ 0.9. Also shown: 4 calls at once (2 per bundled model), the server's workers against the same 4
calls made one after another in-process.
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


def in_process(models: list[str], repeats: int) -> tuple[float, float]:
    """(tokens/s of single calls to models[0], seconds for one call to each of ``models`` in turn)."""
    from llama_cpp import Llama

    llms = {m: Llama(model_path=str(model_path(m)), chat_format=BUNDLED_MODELS[m], n_ctx=4096, n_threads=1,
                     n_threads_batch=1, verbose=False) for m in set(models)}
    speeds = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        out = llms[models[0]].create_chat_completion(MESSAGES, **SETTINGS)
        if i:  # the first call is a warm-up
            speeds.append(out["usage"]["completion_tokens"] / (time.perf_counter() - t0))
    t0 = time.perf_counter()
    for model in models:
        llms[model].create_chat_completion(MESSAGES, **SETTINGS)
    return statistics.mean(speeds), time.perf_counter() - t0


def served(models: list[str], repeats: int) -> tuple[float, float]:
    backend = get_backend("local")
    backend.server.start()
    try:
        async def main():
            client = await backend.client(models[0])
            speeds = []
            for i in range(repeats + 1):
                t0 = time.perf_counter()
                out = await client.chat.completions.create(model=models[0], messages=MESSAGES, **SETTINGS)
                if i:
                    speeds.append(out.usage.completion_tokens / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            await asyncio.gather(*(client.chat.completions.create(model=m, messages=MESSAGES, **SETTINGS)
                                   for m in models))
            return statistics.mean(speeds), time.perf_counter() - t0

        return asyncio.run(main())
    finally:
        backend.server.stop()


def run(repeats: int = 3) -> list[Row]:
    models = ["smollm2-135m", "smollm2-135m", "gemma3-270m", "gemma3-270m"]
    with no_cache():
        alone, four_alone = in_process(models, repeats)
        server, four_server = served(models, repeats)
    return [
        Row("local: server tokens/s ÷ in-process llama-cpp-python", server / alone, "≥ 0.9", server / alone >= 0.9,
            f"smollm2-135m, 128 tokens max, 1 thread: {server:.1f} vs {alone:.1f} tokens/s (mean of {repeats})"),
        Row("local: 4 calls at once, in-process one by one ÷ server", four_alone / four_server, "(none)", None,
            f"2 × smollm2 + 2 × gemma3: {four_alone:.1f} s one after another in-process, {four_server:.1f} s "
            "through the server's workers"),
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
