"""The local OpenAI-compatible server: a front on one port over single-threaded llama.cpp workers.

Why a front: llama-cpp-python's server runs one request at a time (a new stream even interrupts the
running one), answers an unknown model name with its default model, sends no usage in streams, treats
``max_tokens <= 0`` as "no limit", and reports an error of a stream (a prompt longer than the context window)
only in its log. The front gives every worker one request at a time, rejects unknown models with the list of
known ones and bad ``max_tokens`` with a 400, resolves aliases, caps requests without max_tokens, answers a
stream's early failure with an HTTP error (llama.cpp's own message), and puts token usage on the last chunk
of streams. A worker that dies is left out, restarted, and its end logged; a request it held goes to another
worker. Run it with ``moa-lab serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import json
import logging
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Mapping

import anyio
import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .local import BUNDLED_MODELS, LocalServerError, check_aliases, model_path, tail

log = logging.getLogger("moa_lab.server")

#: Seconds per token relative to SmolLM2, measured on 2 cores (112 vs 61 generated tokens/s).
RELATIVE_COST = {"smollm2-135m": 1.0, "gemma3-270m": 1.8}
#: Times a dead worker is started again before the front gives up on it (its model then answers 503).
MAX_RESTARTS = 3


def _die_with_parent() -> None:  # Linux: a worker gets SIGTERM when the front dies, even by SIGKILL
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Worker:
    """One llama.cpp server process holding one model, single-threaded. ``generation`` counts its restarts."""

    def __init__(self, index: int, model: str, path: Path, log_dir: Path, generation: int = 0) -> None:
        self.index, self.model, self.path, self.log_dir, self.generation = index, model, path, log_dir, generation
        self.busy = self.restarting = False
        self.failed_starts = 0  # restarts that failed in a row
        self.failed: str | None = None  # why it could not be restarted (it is given up on)
        self.port = _free_port("127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port}"
        name = f"worker{index}" + (f".{generation}" if generation else "")
        self.log = log_dir / f"{name}.log"
        config = {
            "host": "127.0.0.1", "port": self.port, "interrupt_requests": False,
            "models": [{"model": str(path), "model_alias": model, "chat_format": BUNDLED_MODELS[model],
                        "n_ctx": 4096, "n_threads": 1, "n_threads_batch": 1, "verbose": False}],
        }
        cfg = log_dir / f"{name}.json"
        cfg.write_text(json.dumps(config))
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--config_file", str(cfg)],
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         preexec_fn=_die_with_parent if sys.platform == "linux" else None)

    def __repr__(self) -> str:
        return f"llama.cpp worker {self.index} ({self.model}, pid {self.proc.pid})"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    async def died(self) -> bool:
        """After a failed request: whether the process has ended (its exit is seen within half a second)."""
        for _ in range(10):
            if not self.alive:
                return True
            await asyncio.sleep(0.05)
        return False

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


class ClientGone(Exception):
    """The client disconnected while its request waited for a worker (e.g. a straggler cancelled by a quorum)."""


class NoWorker(Exception):
    """Every worker of the model is dead and could not be restarted."""


class Pool:
    """At most ``slots`` requests run at once (one per core), each on an idle live worker of its model.

    There are ``slots`` workers per model, so a free slot always has an idle worker for any model and no
    worker ever swaps models (a swap costs 0.5-0.8 s here). When a slot frees, the waiting request with
    the largest expected cost goes first (longest job first keeps a layer's wall time near sum / slots),
    among those whose model has an idle live worker. Taking and giving back a worker never waits (nothing
    can be lost to a cancellation); a dead worker is skipped until :meth:`supervise` has started it again.
    """

    def __init__(self, workers: list[Worker], slots: int) -> None:
        self.workers, self.slots = workers, slots
        self.waiting: dict[tuple[float, int], str] = {}  # ticket (-cost, order) -> model
        self.tickets = itertools.count()
        self._wakeups: set[asyncio.Future] = set()
        self._restarts: set[asyncio.Task] = set()  # held here: the loop keeps only weak references to tasks

    @property
    def busy(self) -> int:
        return sum(w.busy for w in self.workers)

    def _idle(self, model: str) -> Worker | None:
        return next((w for w in self.workers if w.model == model and not w.busy and w.alive), None)

    def _turn(self, ticket) -> Worker | None:
        """The worker this ticket may take now: none while every slot is busy or a costlier request can go."""
        if self.busy >= self.slots:
            return None
        for other in sorted(self.waiting):
            worker = self._idle(self.waiting[other])
            if worker is not None:
                return worker if other == ticket else None
        return None

    def _wake(self) -> None:
        for future in self._wakeups:
            if not future.done():
                future.set_result(None)
        self._wakeups.clear()

    async def acquire(self, model: str, cost: float, gone=None) -> Worker:
        """A worker for ``model``, marked busy; give it back with :meth:`release`. ``gone()`` (async, polled
        while waiting) says the client left: the request then leaves the queue (ClientGone) instead of taking
        a core for an answer nobody reads. NoWorker when no worker of the model can ever answer."""
        ticket = (-cost, next(self.tickets))
        self.waiting[ticket] = model
        try:
            while (worker := self._turn(ticket)) is None:
                given_up = [w.failed for w in self.workers if w.model == model and w.failed]
                if len(given_up) == sum(w.model == model for w in self.workers):
                    raise NoWorker(f"every llama.cpp worker of {model} died and could not be started again: "
                                   f"{given_up[0]}")
                wakeup = asyncio.get_running_loop().create_future()
                self._wakeups.add(wakeup)
                try:
                    await asyncio.wait_for(wakeup, 0.25)
                except asyncio.TimeoutError:
                    if gone is not None and await gone():
                        raise ClientGone from None
            worker.busy = True
            return worker
        finally:
            del self.waiting[ticket]
            self._wake()  # the head of the queue may have changed

    def release(self, worker: Worker) -> None:
        worker.busy = False
        self._wake()

    async def supervise(self, every: float = 0.5) -> None:
        """Forever: a worker whose process ended is logged (exit code and the end of its log) and started
        again, at most MAX_RESTARTS times in a row; until then its requests go to the model's other workers."""
        while True:
            await asyncio.sleep(every)
            for position, worker in enumerate(self.workers):
                if not worker.alive and not worker.restarting and not worker.failed:
                    worker.restarting = True
                    task = asyncio.ensure_future(self._restart(position, worker))
                    self._restarts.add(task)
                    task.add_done_callback(self._restarts.discard)

    async def _restart(self, position: int, dead: Worker) -> None:
        log.warning("%s exited with code %s; starting it again. The end of its log:\n%s", dead,
                    dead.proc.returncode, tail(dead.log, 10))
        try:
            fresh = await asyncio.to_thread(Worker, dead.index, dead.model, dead.path, dead.log_dir,
                                            dead.generation + 1)
            try:
                await asyncio.to_thread(fresh.wait_ready, time.monotonic() + 180)
            except LocalServerError:
                fresh.stop()
                raise
        except (LocalServerError, OSError) as exc:
            dead.failed_starts += 1
            if dead.failed_starts >= MAX_RESTARTS:
                dead.failed = f"{dead} could not be started again ({dead.failed_starts} tries): {exc}"
                log.error("%s", dead.failed)
            else:
                log.warning("%s could not be started again (%s); trying again", dead, exc)
                dead.restarting = False
            self._wake()
            return
        log.warning("%s started again as %s", dead, fresh)
        self.workers[position] = fresh
        self._wake()

    def status(self) -> dict:
        return {"slots": self.slots, "busy": self.busy, "waiting": len(self.waiting),
                "workers": [{"index": w.index, "model": w.model, "pid": w.proc.pid, "alive": w.alive, "busy": w.busy,
                             "generation": w.generation, "failed": w.failed} for w in self.workers]}


def expected_cost(body: dict) -> float:
    """Relative seconds per token × tokens to process: prompt tokens cost about as much as generated ones on a CPU."""
    prompt_chars = sum(len(str(m.get("content", ""))) for m in body.get("messages", []) if isinstance(m, dict))
    return RELATIVE_COST.get(body["model"], 1.0) * (body["max_tokens"] + prompt_chars / 4)


def _error(status: int, message: str, code: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, status)


def _event(value: dict) -> str:
    return f"data: {json.dumps(value)}\n\n"


class _Relay(StreamingResponse):
    """A streamed answer that gives its worker back, and closes the worker's stream, however it ends: finished,
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


def build_app(workers: list[Worker], slots: int, aliases: Mapping[str, str], max_tokens_cap: int, on_ready=None) -> Starlette:
    names = {m: m for m in BUNDLED_MODELS} | dict(aliases)
    state: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state["pool"] = pool = Pool(workers, slots)
        # A new loopback connection per request (~0.1 ms): llama.cpp closes a connection whose stream failed, and a
        # request sent on it would fail as if the worker had died.
        state["http"] = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=10),
                                          limits=httpx.Limits(max_keepalive_connections=0))
        supervisor = asyncio.ensure_future(pool.supervise())
        if on_ready:
            on_ready()
        yield
        supervisor.cancel()
        await state["http"].aclose()

    async def models(request: Request) -> JSONResponse:
        data = [{"id": n, "object": "model", "owned_by": "moa_lab", "root": t} for n, t in names.items()]
        return JSONResponse({"object": "list", "data": data})

    async def status(request: Request) -> JSONResponse:
        return JSONResponse(state["pool"].status())

    async def chat(request: Request) -> Response:
        try:
            body = await request.json()
            requested = body["model"]
        except (ValueError, KeyError, TypeError):
            return _error(400, "the body must be a JSON object with a 'model' field", "invalid_body")
        if requested not in names:
            return _error(404, f"unknown model {requested!r}; this server has: {', '.join(names)}", "model_not_found")
        body["model"] = names[requested]
        limit = body.get("max_tokens")
        if limit is None:
            body["max_tokens"] = max_tokens_cap
        elif isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:  # llama.cpp: <= 0 means no limit
            return _error(400, f"max_tokens must be an integer >= 1 (or left out: {max_tokens_cap}), got {limit!r}",
                          "invalid_max_tokens")
        try:
            if body.get("stream"):
                return await _open_stream(state, body, requested, request.is_disconnected)
            return await _complete(state, body, requested, request.is_disconnected)
        except ClientGone:
            return Response(b"", 499)  # nobody is there to read it
        except NoWorker as exc:
            return _error(503, str(exc), "no_worker", "server_error")

    routes = [Route("/v1/models", models), Route("/v1/chat/completions", chat, methods=["POST"]),
              Route("/moa_lab/status", status)]
    return Starlette(routes=routes, lifespan=lifespan)


async def _complete(state, body, requested, gone) -> Response:
    """A non-streamed answer; a worker that dies under it is replaced by another, once."""
    pool, url = state["pool"], "/v1/chat/completions"
    for attempt in (1, 2):
        worker = await pool.acquire(body["model"], expected_cost(body), gone)
        try:
            r = await state["http"].post(worker.url + url, json=body)
        except httpx.TransportError as exc:
            if attempt == 1 and await worker.died():
                continue
            return _error(502, f"{worker} failed: {type(exc).__name__}: {exc}", "worker_failed", "server_error")
        finally:
            pool.release(worker)
        if r.status_code != 200:
            return Response(r.content, r.status_code, media_type="application/json")
        answer = r.json()
        answer["model"] = requested
        return JSONResponse(answer)
    raise AssertionError("unreachable")


async def _first_event(lines) -> str | None:
    """The first ``data:`` line of a stream (llama.cpp's keep-alive comments skipped), None if it ends first."""
    async for line in lines:
        if line.startswith("data: "):
            return line
    return None


async def _open_stream(state, body, requested, gone) -> Response:
    """A streamed answer whose status is decided before the first byte goes out: a worker's error (or an early
    failure that llama.cpp only logs, such as a prompt longer than the context) is an HTTP error with
    llama.cpp's own message, never a stream that quietly ends; a worker that dies first is replaced, once."""
    pool, http = state["pool"], state["http"]
    for attempt in (1, 2):
        worker = await pool.acquire(body["model"], expected_cost(body), gone)
        r, handed_over = None, False
        try:
            try:
                request = http.build_request("POST", worker.url + "/v1/chat/completions", json=body)
                r = await http.send(request, stream=True)
                if r.status_code != 200:
                    return Response(await r.aread(), r.status_code, media_type="application/json")
                lines = r.aiter_lines()
                first = await _first_event(lines)
                why = f"{worker} ended the stream before its first token"
            except httpx.TransportError as exc:
                if attempt == 1 and await worker.died():
                    continue
                first, why = None, f"{worker} failed: {type(exc).__name__}: {exc}"
            if first is None:  # failed before its first token: the same request, not streamed, says why
                await _close(r)
                probe = await _probe(http, worker, body, body["max_tokens"])  # its error names the request's numbers
                if probe.status_code != 200:
                    return Response(probe.content, probe.status_code, media_type="application/json")
                return _error(502, f"{why}; see its log {worker.log}", "worker_failed", "server_error")

            async def cleanup(worker=worker, r=r) -> None:
                pool.release(worker)
                await _close(r)

            handed_over = True
            return _Relay(_relay(http, worker, body, requested, r, lines, first), cleanup)
        except httpx.TransportError as exc:  # the probe failed too
            return _error(502, f"{worker} failed: {type(exc).__name__}: {exc}", "worker_failed", "server_error")
        finally:
            if not handed_over:
                pool.release(worker)
                with anyio.CancelScope(shield=True):
                    await _close(r)
    raise AssertionError("unreachable")


async def _probe(http, worker, body, max_tokens: int = 1) -> httpx.Response:
    """The same request, not streamed: what llama.cpp says of it (an error, or with 1 token, the prompt's usage,
    from its prompt cache)."""
    return await http.post(worker.url + "/v1/chat/completions", json=dict(body, stream=False, max_tokens=max_tokens))


async def _close(response) -> None:
    if response is not None and not response.is_closed:
        await response.aclose()


async def _relay(http, worker, body, requested, r, lines, first):
    """Pass a worker's SSE stream through, naming the requested model, with usage on the last chunk
    (where Together puts it: scripts that read ``chunk.choices[0]`` of every chunk keep working). A stream
    that breaks ends with an error event that says so (OpenAI's form), never with a [DONE] that hides it."""
    completion, last = 0, None
    line: str | None = first
    try:
        while line is not None:
            if line == "data: [DONE]":
                break
            if line.startswith("data: "):
                if last is not None:
                    yield _event(last)
                last = json.loads(line[6:])
                last["model"] = requested
                completion += any(c.get("delta", {}).get("content") for c in last.get("choices", []))
            line = await anext(lines, None)
        else:
            raise httpx.RemoteProtocolError("the stream ended without [DONE]")
    except (httpx.TransportError, ValueError) as exc:
        if last is not None:
            yield _event(last)
        why = f"{worker} stopped mid-answer ({type(exc).__name__}: {exc}); see its log {worker.log}"
        yield _event({"error": {"message": why, "type": "server_error", "code": 502}})
        return
    # llama.cpp streams carry no usage: one 1-token call of the same prompt (served from the prompt
    # cache, ~free) gives the prompt's token count; completion tokens are the content chunks.
    usage = (await _probe(http, worker, body)).json().get("usage", {})
    if last is not None:
        prompt = usage.get("prompt_tokens")
        last["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion,
                         "total_tokens": (prompt or 0) + completion}
        yield _event(last)
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
          watch_stdin=False, log_dir=None, announce=print, model_files: Mapping[str, Path] | None = None) -> None:
    """Run the server in the foreground until SIGINT/SIGTERM (or stdin closes, with ``watch_stdin``).
    ``model_files``: each bundled model's GGUF file (default: found as :func:`moa_lab.local.model_path` does).
    The folder of worker logs is removed at the end, unless ``log_dir`` was given and the parent is alive."""
    aliases = check_aliases(aliases or {})
    sock = bind(host, port)  # before loading anything: a busy port fails at once
    url = f"http://{host}:{sock.getsockname()[1]}"
    own_dir = not log_dir
    log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="moa_lab_workers_"))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s moa-lab serve %(levelname)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    orphaned = threading.Event()
    pool: list[Worker] = []
    try:
        for model in BUNDLED_MODELS:
            path = Path(model_files[model]) if model_files else model_path(model)
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
