"""The local OpenAI-compatible server: a front on one port over one llama.cpp worker process per model.

The front admits calls (longest expected job first), gives each the cores it may use (:mod:`moa_lab.engine._policy`:
a call alone gets every core, the calls running share them, never more threads than cores), rejects unknown
models with the list of known ones and bad ``max_tokens`` with a 400, resolves aliases and caps requests without
max_tokens. The workers (:mod:`moa_lab.engine._worker`) load each model once and answer in OpenAI's form, usage on the
last chunk of streams, a prompt longer than the context as a 400 before the stream starts. A worker that dies
is logged and started again, and a request it held waits for it and is sent again, once; one that cannot be
started again is given up on (its model answers 503). Run it with ``moa-lab serve``.

Over 300 lines: the front whole: its routes, request checks, the relay of streams, and serve().
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import anyio
import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from moa_lab.engine._local import LocalServerError, check_aliases, fingerprint
from moa_lab.engine._models import ModelSpec
from moa_lab.engine._policy import Board, ClientGone, Engine, Lease, NoWorker
from moa_lab.engine._supervisor import Dormant, Worker, start_worker, status, supervise, watchdog, worker_timeout
from moa_lab.serve._openai_api import BadRequest, check_chat_body, error_json

log = logging.getLogger("moa_lab.serve._front")

#: Seconds per token relative to SmolLM2, measured on 2 cores (112 vs 61 generated tokens/s); another model's
#: is its file's size relative to SmolLM2's.
LOOPBACK = ("127.0.0.1", "localhost", "::1")
RELATIVE_COST = {"smollm2-135m": 1.0, "gemma3-270m": 1.8}
SMOLLM2_BYTES = 100e6


def expected_cost(body: dict, per_token: float) -> float:
    """Relative seconds per token × tokens to process: prompt tokens cost about as much as generated ones on a CPU."""
    prompt_chars = sum(len(str(m.get("content", ""))) for m in body.get("messages", []) if isinstance(m, dict))
    return per_token * (body["max_tokens"] + prompt_chars / 4)


def _error(
    status: int, message: str, code: str, kind: str = "invalid_request_error", param: str | None = None
) -> JSONResponse:
    return JSONResponse(error_json(message, kind, code, param), status)


def _event(value: dict) -> str:
    return f"data: {json.dumps(value)}\n\n"


class _Relay(StreamingResponse):
    """A streamed answer that gives its slot back, and closes the worker's stream, however it ends: finished,
    the client gone, or never started."""

    def __init__(self, chunks, cleanup) -> None:
        super().__init__(chunks, media_type="text/event-stream")
        self._cleanup = cleanup

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._cleanup()


class KeyRequired:
    """ASGI: every request must carry ``Authorization: Bearer KEY`` (the scheme in any case, as RFC 7235 says;
    else a 401 in OpenAI's error form)."""

    def __init__(self, app, key: str) -> None:
        self.app, self.expected = app, key.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            scheme, _, given = dict(scope["headers"]).get(b"authorization", b"").strip().partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.expected):
                message = "this server requires an API key: send it as 'Authorization: Bearer KEY'"
                await _error(401, message, "invalid_api_key")(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_app(
    workers: list[Worker | Dormant],
    threads: int,
    board: Board,
    aliases: Mapping[str, str],
    max_tokens_cap: int,
    on_ready=None,
    extension=None,
    url: str = "",
    api_key: str | None = None,
    max_tokens_limit: int | None = None,
) -> Starlette:
    """The front. ``extension``: more models served here (the MoA endpoint, :mod:`moa_lab.serve`): its
    ``models()`` are listed, a request for a model it ``handles()`` goes to its ``chat(request, body)``, its
    ``routes()`` are added; ``start(url, served, api_key)`` and ``close()`` bracket the server's life.
    ``api_key``: every request must carry it. ``max_tokens_limit``: no request generates more (one that asks
    for more gets this many, and ``finish_reason`` "length" where they are all used)."""
    names = {w.model: w.model for w in workers} | dict(aliases)
    hung_after = worker_timeout()
    costs = {
        w.model: 1.0 if w.spec.broken else RELATIVE_COST.get(w.model) or w.spec.path.stat().st_size / SMOLLM2_BYTES
        for w in workers
    }
    state: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state["engine"] = engine = Engine(workers, threads, board)
        state["http"] = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=10))
        tasks = [
            asyncio.ensure_future(engine.run()),
            asyncio.ensure_future(supervise(engine)),
            asyncio.ensure_future(watchdog(engine, hung_after)),
        ]
        if extension is not None:  # its runs call this server's models: over loopback when it listens on all
            extension.start(_reachable(url), served(), api_key)
        if on_ready:
            on_ready()
        yield
        if extension is not None:
            await extension.close()
        for task in tasks:
            task.cancel()
        await state["http"].aclose()

    # What answers each name (the model, its file's fingerprint, its chat format): a client attached through
    # MOA_LAB_LOCAL_URL keys its answers cache by it, as it would for a server of its own.
    identity = {
        w.model: f"{w.model}:{'broken' if w.spec.broken else fingerprint(w.spec.path)}:"
        f"{w.spec.chat_format or 'gguf-template'}"
        for w in workers
    }

    def served() -> list[dict]:
        return [
            {"id": n, "object": "model", "owned_by": "moa_lab", "root": t, "moa_lab_identity": identity[t]}
            for n, t in names.items()
        ]

    async def models(request: Request) -> JSONResponse:
        more = extension.models() if extension is not None else []
        return JSONResponse({"object": "list", "data": served() + more})

    async def status_route(request: Request) -> JSONResponse:
        return JSONResponse(status(state["engine"]))

    async def chat(request: Request) -> Response:
        try:
            body = check_chat_body(await request.json())
        except BadRequest as exc:
            return _error(400, str(exc), "invalid_value", param=exc.param)
        except ValueError:  # not JSON (or not UTF-8)
            return _error(400, "the body must be a JSON object (it is not valid JSON)", "invalid_body", param="body")
        requested = body["model"]
        if extension is not None and extension.handles(requested):
            return await extension.chat(request, body)
        if requested not in names:
            more = [m["id"] for m in extension.models()] if extension is not None else []
            return _error(
                404,
                f"unknown model {requested!r}; this server has: {', '.join([*names, *more])}",
                "model_not_found",
                param="model",
            )
        target = names[requested]
        limit = body.get("max_tokens")
        if limit is None:
            body["max_tokens"] = max_tokens_cap
        elif isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:  # llama.cpp: <= 0 means no limit
            return _error(
                400,
                f"max_tokens must be an integer >= 1 (or left out: {max_tokens_cap}), got {limit!r}",
                "invalid_max_tokens",
                param="max_tokens",
            )
        if max_tokens_limit is not None:
            body["max_tokens"] = min(body["max_tokens"], max_tokens_limit)
        cost = expected_cost(body, costs[target])
        try:
            if body.get("stream"):
                return await _open_stream(state, target, body, cost, request.is_disconnected)
            return await _complete(state, target, body, cost, request.is_disconnected)
        except ClientGone:
            return Response(b"", 499)  # nobody is there to read it
        except NoWorker as exc:
            return _error(503, str(exc), "no_worker", "server_error")

    routes = [
        Route("/v1/models", models),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/moa_lab/status", status_route),
        *(extension.routes() if extension is not None else []),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: _no_route, 405: _no_route})
    return KeyRequired(app, api_key) if api_key else app  # type: ignore[return-value]


async def _no_route(request: Request, exc: Exception) -> JSONResponse:
    """An unknown path (404) or a method a path does not take (405), in OpenAI's error JSON naming them."""
    status = getattr(exc, "status_code", 404)
    method, path = request.method, request.url.path
    if status == 405:
        message = f"{method} is not allowed on {path}"
    else:
        message = f"no route {method} {path} on this server; it serves POST /v1/chat/completions and GET /v1/models"
        if path.endswith("/responses"):
            message += " (OpenAI's Responses API is not served here: use the chat completions API)"
    code = "method_not_allowed" if status == 405 else "not_found"
    headers = getattr(exc, "headers", None)
    return JSONResponse(error_json(message, "invalid_request_error", code, None), status, headers=headers)


def _reachable(url: str) -> str:
    """The URL this process reaches its own server at: loopback for a wildcard address (0.0.0.0, ::)."""
    return url.replace("//0.0.0.0:", "//127.0.0.1:").replace("//[::]:", "//[::1]:").replace("//:::", "//[::1]:")


def _headers(lease: Lease, queued: float) -> dict:
    return {"x-moa-slot": str(lease.slot), "x-moa-queued": f"{queued:.4f}"}


async def _complete(state, target, body, cost, gone) -> Response:
    """A non-streamed answer; a worker that dies under it is started again and answers it, once."""
    engine, url, queued = state["engine"], "/v1/chat/completions", 0.0
    for attempt in (1, 2):
        lease = await engine.acquire(target, cost, gone)
        queued += lease.queued
        worker = lease.worker
        try:
            r = await state["http"].post(worker.url + url, json=body, headers=_headers(lease, queued))
        except httpx.TransportError as exc:
            if attempt == 1 and await worker.died():
                continue
            return _error(502, f"{worker} failed: {type(exc).__name__}: {exc}", "worker_failed", "server_error")
        finally:
            engine.release(lease)
        return Response(r.content, r.status_code, media_type="application/json")
    raise AssertionError("unreachable")


async def _open_stream(state, target, body, cost, gone) -> Response:
    """A streamed answer whose status is decided before the first byte goes out (the worker answers an error,
    such as a prompt longer than the context, with an HTTP error); a worker that dies first is started again
    and answers it, once."""
    engine, http, queued = state["engine"], state["http"], 0.0
    for attempt in (1, 2):
        lease = await engine.acquire(target, cost, gone)
        queued += lease.queued
        worker, r, handed_over = lease.worker, None, False
        try:
            try:
                request = http.build_request(
                    "POST", worker.url + "/v1/chat/completions", json=body, headers=_headers(lease, queued)
                )
                r = await http.send(request, stream=True)
            except httpx.TransportError as exc:
                if attempt == 1 and await worker.died():
                    continue
                return _error(502, f"{worker} failed: {type(exc).__name__}: {exc}", "worker_failed", "server_error")
            if r.status_code != 200:
                return Response(await r.aread(), r.status_code, media_type="application/json")

            async def cleanup(lease=lease, r=r) -> None:
                engine.release(lease)
                await _close(r)

            handed_over = True
            return _Relay(_relay(worker, r), cleanup)
        finally:
            if not handed_over:
                engine.release(lease)
                with anyio.CancelScope(shield=True):
                    await _close(r)
    raise AssertionError("unreachable")


async def _close(response) -> None:
    if response is not None and not response.is_closed:
        await response.aclose()


async def _relay(worker, r):
    """Pass a worker's SSE stream through. A stream that breaks (the worker died) ends with an error event that
    says so (OpenAI's form), never with a [DONE] that hides it."""
    try:
        async for line in r.aiter_lines():
            if line:
                yield line + "\n\n"
            if line == "data: [DONE]":
                return
        raise httpx.RemoteProtocolError("the stream ended without [DONE]")
    except httpx.TransportError as exc:
        why = f"{worker} stopped mid-answer ({type(exc).__name__}: {exc}); see its log {worker.log}"
        yield _event({"error": {"message": why, "type": "server_error", "code": 502}})


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise LocalServerError(
            f"cannot listen on {host}:{port}: {exc.strerror} (choose another --port, or --port 0 for any free one)"
        ) from None
    # Listening from now on: a client that connects as soon as the ready file appears (written during start-up,
    # a moment before uvicorn serves the socket) waits in the backlog instead of being refused.
    sock.listen(2048)
    return sock


def serve(
    models: list[ModelSpec],
    *,
    host="127.0.0.1",
    port=8000,
    threads=2,
    aliases=None,
    max_tokens_cap=1024,
    ready_file=None,
    watch_stdin=False,
    log_dir=None,
    announce=print,
    extension=None,
    api_key: str | None = None,
    max_tokens_limit: int | None = None,
) -> None:
    """Run the server in the foreground until SIGINT/SIGTERM (or stdin closes, with ``watch_stdin``).
    ``models``: checked already (:func:`moa_lab.engine._models.check_models`); one worker process each, started at once
    and warmed in parallel. The folder of worker logs is removed at the end, unless ``log_dir`` was given and the
    parent is alive."""
    aliases = check_aliases(aliases or {}, [m.name for m in models])
    if host not in LOOPBACK and not api_key:
        raise LocalServerError(
            f"refusing to listen on {host} without an API key: other machines could use these models (and the "
            "recipes' upstream keys); give --api-key, or set MOA_LAB_SERVE_KEY, or keep the default 127.0.0.1"
        )
    sock = bind(host, port)  # before loading anything: a busy port fails at once
    url = f"http://{host}:{sock.getsockname()[1]}"
    own_dir = not log_dir
    log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="moa_lab_workers_"))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s moa-lab serve %(levelname)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    orphaned = threading.Event()
    pool: list[Worker | Dormant] = []
    cells = len(models) * threads
    board = Board.create(log_dir / "threads.board", cells)
    try:
        for spec in models:
            pool.append(start_worker(len(pool), spec, log_dir, board.path, threads, cells))
            if spec.broken:  # never started: each call to it is answered 503 with the reason
                pool[-1].failed = spec.broken
        deadline = time.monotonic() + 180
        for w in pool:  # they load and warm up in parallel (a lazy model's on its first call)
            if not isinstance(w, Worker):
                continue
            try:
                w.wait_ready(deadline)
            except LocalServerError as exc:
                if w.spec.bundled:
                    raise
                # one of your models that does not load (a truncated or damaged GGUF): the others are served, and
                # each call to it is answered with a 503 that names it and the cause
                w.stop()
                w.failed = (
                    f"its model file {str(w.spec.path)!r} could not be loaded (a truncated or damaged GGUF?): {exc}"
                )
                log.error("model %s: %s", w.model, w.failed)

        def ready() -> None:
            if ready_file:
                Path(ready_file + ".tmp").write_text(url)
                Path(ready_file + ".tmp").rename(ready_file)
            announce(
                f"moa-lab serve: listening on {url}; {threads} core(s) shared by the calls running, "
                f"{len(pool)} llama.cpp worker(s), one per model"
            )
            if host not in LOOPBACK:
                announce(f"WARNING: bound to {host}, not loopback: other machines can reach this server (key required)")
            if api_key:
                announce("every request must carry the API key (Authorization: Bearer ...)")
            for entry in extension.models() if extension is not None else []:
                announce(f"MoA model: {entry['id']} (a recipe: {len(entry['moa_lab_recipe'])} setting(s) given)")
            for w in pool:
                spec = w.spec
                announce(
                    f"model: {spec.name} ({spec.path}, chat format: {spec.chat_format or 'from the GGUF'})"
                    + (f" NOT SERVED: {w.failed}" if spec.broken else "")
                    + (" NOT SERVED: it could not be loaded (see above)" if w.failed and not spec.broken else "")
                    + (" loaded on its first call" if spec.lazy else "")
                )
            for name, target in aliases.items():
                announce(f"alias: {name} -> {target}")
            announce(f"use it: MOA_LAB_BASE_URL={url} python your_script.py")

        app = build_app(
            pool,
            threads,
            board,
            aliases,
            max_tokens_cap,
            ready,
            extension=extension,
            url=url,
            api_key=api_key,
            max_tokens_limit=max_tokens_limit,
        )
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=3))

        if watch_stdin:  # the embedding process died or closed our stdin: shut down

            def watch() -> None:
                sys.stdin.read()
                orphaned.set()
                server.should_exit = True

            threading.Thread(target=watch, daemon=True).start()
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        for w in pool:
            w.stop()
        sock.close()
        log.removeHandler(handler)
        if own_dir or orphaned.is_set():  # nobody will read these logs
            shutil.rmtree(log_dir, ignore_errors=True)
