"""The local OpenAI-compatible server: a front on one port over single-threaded llama.cpp workers.

Why a front: llama-cpp-python's server runs one request at a time (a new stream even interrupts the
running one), answers an unknown model name with its default model, and sends no usage in streams.
The front gives every worker one request at a time (preferring a worker that has the model loaded),
rejects unknown models with the list of known ones, resolves aliases, caps requests without
max_tokens, and puts token usage on the last chunk of streams. Run it with ``moa-lab serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Mapping

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .local import BUNDLED_MODELS, LocalServerError, check_aliases, model_path, tail


#: Seconds per token relative to SmolLM2, measured on 2 cores (112 vs 61 generated tokens/s).
RELATIVE_COST = {"smollm2-135m": 1.0, "gemma3-270m": 1.8}


def _die_with_parent() -> None:  # Linux: a worker gets SIGTERM when the front dies, even by SIGKILL
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Worker:
    """One llama.cpp server process holding one model, single-threaded."""

    def __init__(self, index: int, model: str, path: Path, log_dir: Path) -> None:
        self.index, self.model, self.busy = index, model, False
        self.port = _free_port("127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"worker{index}.log"
        config = {
            "host": "127.0.0.1", "port": self.port, "interrupt_requests": False,
            "models": [{"model": str(path), "model_alias": model, "chat_format": BUNDLED_MODELS[model],
                        "n_ctx": 4096, "n_threads": 1, "n_threads_batch": 1, "verbose": False}],
        }
        cfg = log_dir / f"worker{index}.json"
        cfg.write_text(json.dumps(config))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--config_file", str(cfg)],
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         preexec_fn=_die_with_parent if sys.platform == "linux" else None)

    def wait_ready(self, deadline: float) -> None:
        while True:
            if self.proc.poll() is not None:
                raise LocalServerError(f"llama.cpp worker {self.index} exited; log {self.log}:\n{tail(self.log)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/v1/models", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise LocalServerError(f"llama.cpp worker {self.index} did not answer; log {self.log}:\n{tail(self.log)}")
            time.sleep(0.1)
        # Warm up: the first call of a fresh process is ~50% slower (page faults, buffers).
        warm = {"model": self.model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
        try:
            httpx.post(self.url + "/v1/chat/completions", json=warm, timeout=max(1.0, deadline - time.monotonic()))
        except httpx.HTTPError as exc:
            raise LocalServerError(f"llama.cpp worker {self.index} failed its first call ({exc}); log {self.log}:\n"
                                   + tail(self.log)) from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Pool:
    """At most ``slots`` requests run at once (one per core), each on an idle worker of its model.

    There are ``slots`` workers per model, so a free slot always has an idle worker for any model and no
    worker ever swaps models (a swap costs 0.5-0.8 s here). When a slot frees, the waiting request with
    the largest expected cost goes first (longest job first keeps a layer's wall time near sum / slots).
    """

    def __init__(self, workers: list[Worker], slots: int) -> None:
        self.workers, self.slots = workers, slots
        self.changed = asyncio.Condition()
        self.waiting: list[tuple[float, int]] = []
        self.tickets = itertools.count()

    @contextlib.asynccontextmanager
    async def worker_for(self, model: str, cost: float, gone=None):
        """A worker for ``model``; ``gone()`` (async, polled while waiting) says the client left: the request
        then leaves the queue (ClientGone) instead of taking a core for an answer nobody reads."""
        ticket = (-cost, next(self.tickets))
        async with self.changed:
            self.waiting.append(ticket)
            try:
                while min(self.waiting) != ticket or sum(w.busy for w in self.workers) >= self.slots:
                    try:
                        await asyncio.wait_for(self.changed.wait(), 0.25)
                    except asyncio.TimeoutError:
                        if gone is not None and await gone():
                            raise ClientGone from None
            finally:
                self.waiting.remove(ticket)
            worker = next(w for w in self.workers if not w.busy and w.model == model)
            worker.busy = True
            self.changed.notify_all()
        try:
            yield worker
        finally:
            async with self.changed:
                worker.busy = False
                self.changed.notify_all()


class ClientGone(Exception):
    """The client disconnected while its request waited for a worker (e.g. a straggler cancelled by a quorum)."""


def expected_cost(body: dict) -> float:
    """Relative seconds per token × tokens to process: prompt tokens cost about as much as generated ones on a CPU."""
    prompt_chars = sum(len(str(m.get("content", ""))) for m in body.get("messages", []) if isinstance(m, dict))
    tokens = body["max_tokens"] if isinstance(body["max_tokens"], (int, float)) else 0  # the worker rejects it
    return RELATIVE_COST.get(body["model"], 1.0) * (tokens + prompt_chars / 4)


def _error(status: int, message: str, code: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "code": code}}, status)


def build_app(workers: list[Worker], slots: int, aliases: Mapping[str, str], max_tokens_cap: int, on_ready=None) -> Starlette:
    names = {m: m for m in BUNDLED_MODELS} | dict(aliases)
    state: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state["pool"] = Pool(workers, slots)
        state["http"] = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=10))
        if on_ready:
            on_ready()
        yield
        await state["http"].aclose()

    async def models(request: Request) -> JSONResponse:
        data = [{"id": n, "object": "model", "owned_by": "moa_lab", "root": t} for n, t in names.items()]
        return JSONResponse({"object": "list", "data": data})

    async def chat(request: Request) -> Response:
        try:
            body = await request.json()
            requested = body["model"]
        except (ValueError, KeyError, TypeError):
            return _error(400, "the body must be a JSON object with a 'model' field", "invalid_body")
        if requested not in names:
            return _error(404, f"unknown model {requested!r}; this server has: {', '.join(names)}", "model_not_found")
        body["model"] = names[requested]
        if body.get("max_tokens") is None:
            body["max_tokens"] = max_tokens_cap
        if body.get("stream"):
            return StreamingResponse(_stream(state, body, requested), media_type="text/event-stream")
        try:
            async with state["pool"].worker_for(body["model"], expected_cost(body), request.is_disconnected) as worker:
                r = await state["http"].post(worker.url + "/v1/chat/completions", json=body)
        except ClientGone:
            return Response(b"", 499)  # nobody is there to read it
        content = r.content
        if r.status_code == 200:
            answer = r.json()
            answer["model"] = requested
            content = json.dumps(answer).encode()
        return Response(content, r.status_code, media_type="application/json")

    return Starlette(routes=[Route("/v1/models", models), Route("/v1/chat/completions", chat, methods=["POST"])],
                     lifespan=lifespan)


async def _stream(state, body, requested):
    """Pass a worker's SSE stream through, naming the requested model, with usage on the last chunk
    (where Together puts it: scripts that read ``chunk.choices[0]`` of every chunk keep working)."""
    completion, last = 0, None
    async with state["pool"].worker_for(body["model"], expected_cost(body)) as worker:
        async with state["http"].stream("POST", worker.url + "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                yield f"data: {json.dumps({'error': (await r.aread()).decode(errors='replace')})}\n\n"
                return
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    break
                if last is not None:
                    yield f"data: {json.dumps(last)}\n\n"
                last = json.loads(line[6:])
                last["model"] = requested
                completion += any(c.get("delta", {}).get("content") for c in last.get("choices", []))
            else:
                return  # the worker's stream broke: pass the break on, never a [DONE] that hides it
        # llama.cpp streams carry no usage: one 1-token call of the same prompt (served from the prompt
        # cache, ~free) gives the prompt's token count; completion tokens are the content chunks.
        probe = dict(body, stream=False, max_tokens=1)
        usage = (await state["http"].post(worker.url + "/v1/chat/completions", json=probe)).json().get("usage", {})
    if last is not None:
        prompt = usage.get("prompt_tokens")
        last["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion,
                         "total_tokens": (prompt or 0) + completion}
        yield f"data: {json.dumps(last)}\n\n"
    yield "data: [DONE]\n\n"


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise LocalServerError(f"cannot listen on {host}:{port}: {exc.strerror} "
                               "(choose another --port, or --port 0 for any free one)") from None
    return sock


def serve(host="127.0.0.1", port=8000, workers=2, aliases=None, max_tokens_cap=1024, ready_file=None,
          watch_stdin=False, log_dir=None, announce=print) -> None:
    """Run the server in the foreground until SIGINT/SIGTERM (or stdin closes, with ``watch_stdin``)."""
    aliases = check_aliases(aliases or {})
    sock = bind(host, port)  # before loading anything: a busy port fails at once
    url = f"http://{host}:{sock.getsockname()[1]}"
    log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="moa_lab_workers_"))
    pool: list[Worker] = []
    try:
        for model in BUNDLED_MODELS:
            path = model_path(model)
            for _ in range(workers):
                pool.append(Worker(len(pool), model, path, log_dir))
        deadline = time.monotonic() + 180
        for w in pool:
            w.wait_ready(deadline)

        def ready() -> None:
            if ready_file:
                Path(ready_file + ".tmp").write_text(url)
                Path(ready_file + ".tmp").rename(ready_file)
            announce(f"moa-lab serve: listening on {url}; {workers} call(s) at once, {len(pool)} llama.cpp workers")
            if host not in ("127.0.0.1", "localhost", "::1"):
                announce(f"WARNING: bound to {host}, not loopback: other machines can reach this server")
            announce("models: " + ", ".join(BUNDLED_MODELS))
            for name, target in aliases.items():
                announce(f"alias: {name} -> {target}")
            announce(f"use it: TOGETHER_BASE_URL={url} TOGETHER_API_KEY=local python your_script.py")

        app = build_app(pool, workers, aliases, max_tokens_cap, on_ready=ready)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=3))

        if watch_stdin:  # the embedding process died or closed our stdin: shut down
            threading.Thread(target=lambda: (sys.stdin.read(), setattr(server, "should_exit", True)),
                             daemon=True).start()
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        for w in pool:
            w.stop()
        sock.close()
