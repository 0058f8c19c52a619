"""One llama.cpp worker process: one model, loaded once, serving several calls at once with the threads the front
gives each.

``python -m moa_lab.engine._worker CONFIG.json`` (started by :mod:`moa_lab.serve._front`, on 127.0.0.1). The model's
weights are loaded once; each call runs in a *slot*: its own llama.cpp context (KV cache) over those weights, made
when the slot is first used. The front sends the slot in the ``x-moa-slot`` header, and writes the threads the slot
may use on the shared board (:class:`moa_lab.engine._policy.Board`); the slot reads it before every batch of prompt
tokens and every generated token, sets its context's threads (``llama_set_n_threads``) and writes back what it uses,
so that the front never gives a core away before the call that held it let go of it.

Answers are OpenAI's chat completion objects (llama-cpp-python's), with the usage on the last chunk of a stream
and ``moa_lab.queued`` (seconds the call waited in the front for a core) on the first. A prompt longer than the
context is a 400 with llama.cpp's message, before any byte of a stream.

Over 300 lines: a process of its own: loading a model once, slots, threads that follow the board, and its small HTTP
app.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

#: Prompt tokens evaluated between two looks at the board (a change of threads waits at most this long).
CHUNK = 32
#: llama-cpp-python server's defaults, which the bundled models were tuned with (its request model's fields).
DEFAULTS = {"temperature": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1}
#: Request fields passed to llama.cpp; the others (``n``, ``user``, Together's extras, ...) are ignored.
FIELDS = {
    "messages",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "typical_p",
    "stop",
    "seed",
    "max_tokens",
    "presence_penalty",
    "frequency_penalty",
    "repeat_penalty",
    "response_format",
    "logprobs",
    "top_logprobs",
}


class Cancelled(Exception):
    """The client went away: the call stops at its next batch of tokens."""


def _slot_class():
    import llama_cpp
    from llama_cpp import Llama

    class Slot(Llama):
        """A context over shared weights that follows the board: threads re-read before every eval."""

        board = None
        cell = 0
        cancel: threading.Event | None = None
        streaming = False
        threads = (0, 0)  # (generation, prompt) threads now set on the context

        def eval(self, tokens):
            for i in range(0, len(tokens), CHUNK):
                if self.cancel is not None and self.cancel.is_set():
                    raise Cancelled
                self.follow()
                super().eval(tokens[i : i + CHUNK])

        def follow(self) -> None:
            granted = max(1, self.board.granted(self.cell))
            # A stream's tokens go out one by one through three processes (this one's loop, the front, the client):
            # holding every core, its generation leaves one to them, else they preempt a llama.cpp thread and the
            # others spin at its barrier (measured: 2 threads streaming ran slower than 1). Its prompt takes all.
            generate = granted - 1 if self.streaming and granted > 1 else granted
            if (generate, granted) != self.threads:
                llama_cpp.llama_set_n_threads(self.ctx, generate, granted)
                self.threads = (generate, granted)
            self.board.set_using(self.cell, granted)

        def generate(self, tokens, *args, **kwargs):
            self.prompt_count, self.completion_count = len(tokens), 0
            for token in super().generate(tokens, *args, **kwargs):
                self.completion_count += not llama_cpp.llama_vocab_is_eog(self._model.vocab, token)  # as usage counts
                yield token

    return Slot


class Model:
    """The model's weights (loaded once) and its slots (contexts made on first use)."""

    def __init__(self, config: dict) -> None:
        from llama_cpp import _internals

        from moa_lab.engine._policy import Board

        self.config = config
        self.board = Board.open(Path(config["board"]), config["cells"])
        self.base = config["first_cell"]
        self.slots: dict[int, object] = {}
        self._internals, self._Slot = _internals, _slot_class()
        self._lock = threading.Lock()
        self.slot(0)

    def _new(self):
        kwargs = dict(
            model_path=self.config["path"],
            chat_format=self.config.get("chat_format"),
            n_ctx=self.config.get("n_ctx", 4096),
            n_threads=1,
            n_threads_batch=1,
            verbose=False,
        )
        if not self.slots:
            return self._Slot(**kwargs)
        weights = next(iter(self.slots.values()))._model
        real = self._internals.LlamaModel

        class Borrowed:  # the first slot's weights; closed by that slot only
            def __getattr__(self, name):
                return getattr(weights, name)

            def close(self):
                pass

        self._internals.LlamaModel = lambda **_: Borrowed()
        try:
            return self._Slot(**kwargs)
        finally:
            self._internals.LlamaModel = real

    def slot(self, index: int):
        with self._lock:  # contexts are made one at a time (the loader is patched while a second one is made)
            if index not in self.slots:
                if not 0 <= index < self.config["slots"]:
                    raise ValueError(f"slot {index} out of range 0..{self.config['slots'] - 1}")
                llm = self._new()
                llm.board, llm.cell = self.board, self.base + index
                self.slots[index] = llm
            return self.slots[index]

    def run(self, index: int, body: dict, cancel: threading.Event, emit=None):
        """One call in a slot; with ``emit``, stream chunks to it and return None."""
        llm = self.slot(index)
        llm.cancel, llm.streaming = cancel, emit is not None
        kwargs = DEFAULTS | {k: v for k, v in body.items() if k in FIELDS}
        try:
            if emit is None:
                return llm.create_chat_completion(**kwargs)
            last = None
            for chunk in llm.create_chat_completion(stream=True, **kwargs):
                if last is not None:
                    emit(last)
                last = chunk
            if last is not None:
                last["usage"] = {
                    "prompt_tokens": llm.prompt_count,
                    "completion_tokens": llm.completion_count,
                    "total_tokens": llm.prompt_count + llm.completion_count,
                }
                emit(last)
            return None
        finally:
            llm.cancel = None
            self.board.set_using(llm.cell, 0)


def _too_long(exc: ValueError, body: dict):
    """llama-cpp-python's "Requested tokens (N) exceed context window of M", said as OpenAI says it."""
    found = re.search(r"Requested tokens \((\d+)\) exceed context window of (\d+)", str(exc))
    if not found:
        return _error(400, str(exc), "invalid_request")
    prompt, window, completion = int(found[1]), int(found[2]), body.get("max_tokens") or 0
    return _error(
        400,
        f"This model's maximum context length is {window} tokens. However, you requested "
        f"{prompt + completion} tokens ({prompt} in the messages, {completion} in the completion). "
        "Please reduce the length of the messages or completion.",
        "context_length_exceeded",
    )


def _error(status: int, message: str, code: str, kind: str = "invalid_request_error"):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, status)


def build_app(model: Model, name: str):
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    pool = ThreadPoolExecutor(max_workers=model.config["slots"], thread_name_prefix="slot")

    async def health(request):
        return JSONResponse({"model": name, "slots": sorted(model.slots), "pid": os.getpid()})

    async def chat(request):
        body = await request.json()
        index = int(request.headers.get("x-moa-slot", "0"))
        queued = float(request.headers.get("x-moa-queued", "0"))
        requested = body.get("model", name)
        cancel = threading.Event()
        loop = asyncio.get_running_loop()

        def mark(value: dict) -> dict:
            value["model"] = requested
            return value

        if not body.get("stream"):
            future = loop.run_in_executor(pool, model.run, index, body, cancel)
            try:
                while True:  # the client may leave (a quorum's straggler): the call then stops early
                    done, _ = await asyncio.wait([future], timeout=0.25)
                    if done:
                        break
                    if await request.is_disconnected():
                        cancel.set()
                answer = await future
            except ValueError as exc:  # llama-cpp-python: the prompt does not fit the context
                return _too_long(exc, body)
            except Cancelled:
                return _error(499, "the client went away", "cancelled")
            answer = mark(answer)
            answer["moa_lab"] = {"queued": queued}
            return JSONResponse(answer)

        chunks: asyncio.Queue = asyncio.Queue()

        def emit(value) -> None:
            loop.call_soon_threadsafe(chunks.put_nowait, ("chunk", value))

        def produce() -> None:
            try:
                model.run(index, body, cancel, emit)
                loop.call_soon_threadsafe(chunks.put_nowait, ("end", None))
            except BaseException as exc:  # noqa: BLE001 - handed to the response, which reports it
                loop.call_soon_threadsafe(chunks.put_nowait, ("error", exc))

        loop.run_in_executor(pool, produce)
        kind, first = await chunks.get()
        if kind == "error":
            cancel.set()
            if isinstance(first, ValueError):
                return _too_long(first, body)
            return _error(500, f"{type(first).__name__}: {first}", "worker_error", "server_error")

        async def events():
            try:
                value = mark(first) if kind == "chunk" else None
                if value is not None:
                    value["moa_lab"] = {"queued": queued}
                    yield f"data: {json.dumps(value)}\n\n"
                while kind != "end":
                    what, value = await chunks.get()
                    if what == "end":
                        break
                    if what == "error":
                        why = {"message": f"{type(value).__name__}: {value}", "type": "server_error", "code": 500}
                        yield f"data: {json.dumps({'error': why})}\n\n"
                        return
                    yield f"data: {json.dumps(mark(value))}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                cancel.set()  # the client left mid-stream: the slot stops at its next token

        # The background task runs however the response ends, even when the client left before its first byte.
        return StreamingResponse(events(), media_type="text/event-stream", background=BackgroundTask(cancel.set))

    return Starlette(routes=[Route("/health", health), Route("/v1/chat/completions", chat, methods=["POST"])])


def main(config_path: str) -> None:
    import uvicorn

    config = json.loads(Path(config_path).read_text())
    from moa_lab.engine._supervisor import die_with_parent

    die_with_parent()
    try:
        model = Model(config)
        warm = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
        model.run(0, warm, threading.Event())  # the first call of a fresh process is ~50% slower (page faults)
    except Exception as exc:  # noqa: BLE001 - said in one line: the front shows the end of this log
        print(
            f"moa_lab worker: cannot load {config['name']} from {config['path']!r}: {type(exc).__name__}: {exc}",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(1)
    app = build_app(model, config["name"])
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.run(app, host="127.0.0.1", port=config["port"], log_level="warning")


if __name__ == "__main__":
    main(sys.argv[1])
