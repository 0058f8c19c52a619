"""MoA as a model: each recipe served as ``moa/NAME`` on ``/v1/chat/completions``, inside ``moa-lab serve``.

A request is one MoA run over its ``messages`` (:func:`moa_lab.run_plan`): the recipe's calls (``plan.calls``), each
layer's proposers at once, the layers in turn; the aggregator's tokens streamed as SSE chunks when ``stream`` is set,
with SSE comments every ``keepalive`` seconds while the proposers run (clients with read timeouts stay connected).
``temperature``, ``max_tokens`` (or ``max_completion_tokens``), ``seed`` change the recipe's settings for the run;
``stop`` cuts the final answer; ``n`` > 1, tools and ``logprobs`` are refused with a 400 naming the field; other
fields are ignored, as OpenAI-compatible servers do. ``usage`` counts every call of the run. The run's record (every
layer's answers, every call's time and tokens) is kept for the server's life, the last ``keep_runs`` of them, at
``GET /moa_lab/runs/{id}`` (``GET /moa_lab/runs`` lists them); the id is in the ``x-moa-lab-run-id`` header and
the body's ``moa_lab.run_id``. Every run shares one calls limit and the answers cache; a client that disconnects
cancels its run (its calls stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from moa_lab import limits
from moa_lab.budget import BudgetExceeded
from moa_lab.conversation import check_conversation
from moa_lab.endpoint._forms import (
    chunk,
    completion,
    cut_at_stop,
    error_event,
    refuse_unsupported,
    stop_list,
    usage_chunk,
)
from moa_lab.engine.local import attach
from moa_lab.estimate import check_budget
from moa_lab.moa import run_plan
from moa_lab.openai_api import BadRequest, error_json
from moa_lab.plan import RunPlan
from moa_lab.recipe import Recipe
from moa_lab.records import MoAError
from moa_lab.results import MoAResult, layers_dict, trace_dict

PREFIX = "moa/"


def _error(status: int, message: str, code: str, kind: str = "invalid_request_error", param=None) -> JSONResponse:
    return JSONResponse(error_json(message, kind, code, param), status)


def failure_message(model: str, exc: BaseException) -> str:
    """What a failed run says: the model served, and the cause (each failed model and why)."""
    if isinstance(exc, MoAError):
        return f"{model}: the MoA run failed: {exc}"
    if isinstance(exc, asyncio.TimeoutError):
        return f"{model}: the MoA run timed out upstream"
    return f"{model}: the MoA run failed: {type(exc).__name__}: {exc}"


class MoAEndpoint:
    """The recipes a ``moa-lab serve`` serves as ``moa/NAME`` models, with their runs' records.

    ``recipes``: name → :class:`~moa_lab.recipe.Recipe` (checked already); ``concurrency``: model calls at once over
    every run; ``keep_runs``: run records kept (the oldest are dropped); ``keepalive``: seconds between SSE comments
    while a streamed run has no token to send yet."""

    def __init__(
        self, recipes: Mapping[str, Recipe], *, concurrency: int = 16, keep_runs: int = 256, keepalive: float = 1.0
    ) -> None:
        self.recipes = dict(recipes)
        self.limiter = limits.CallLimiter(concurrency)
        self.keep_runs, self.keepalive = keep_runs, keepalive
        self.runs: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.active: dict[str, asyncio.Task] = {}  # the runs in progress, by id

    def handles(self, model: str) -> bool:
        return model.startswith(PREFIX) and model[len(PREFIX) :] in self.recipes

    def models(self) -> list[dict[str, Any]]:
        """The ``/v1/models`` entries: one per recipe, with the recipe itself."""
        return [
            {"id": PREFIX + name, "object": "model", "owned_by": "moa_lab", "moa_lab_recipe": recipe.to_dict()}
            for name, recipe in self.recipes.items()
        ]

    def start(self, url: str, served: list[dict], api_key: str | None) -> None:
        """Called once the server listens at ``url``: the recipes' runs on the local backend call this server's own
        models (``served``: its ``/v1/models`` list), with its key if it has one."""
        attach(url, api_key, served)
        os.environ["MOA_LAB_LOCAL_URL"] = url  # this process's local backend is this server
        if api_key:
            os.environ["MOA_LAB_LOCAL_KEY"] = api_key

    async def close(self) -> None:
        for task in list(self.active.values()):
            task.cancel()
        await asyncio.gather(*self.active.values(), return_exceptions=True)

    def routes(self) -> list[Route]:
        return [Route("/moa_lab/runs", self.run_list), Route("/moa_lab/runs/{run_id}", self.run_record)]

    async def run_list(self, request: Request) -> Response:
        """The runs kept, oldest first: each one's id, model, status and when it started."""
        keys = ("id", "model", "status", "created")
        return JSONResponse({"object": "list", "data": [{k: r.get(k) for k in keys} for r in self.runs.values()]})

    async def run_record(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        record = self.runs.get(run_id)
        if record is None:
            return _error(
                404,
                f"no run {run_id!r} here: runs are kept for the server's life, the last {self.keep_runs} of them",
                "run_not_found",
                param="run_id",
            )
        return JSONResponse(record)

    # --- one request ------------------------------------------------------------------------------------------

    def _plan(self, body: dict) -> RunPlan:
        """The request's run, checked (BadRequest / ValueError / BudgetExceeded before any call)."""
        refuse_unsupported(body)
        messages = check_conversation(body["messages"], "messages")
        options: dict[str, Any] = {}
        if body.get("temperature") is not None:
            options["temperature"] = body["temperature"]
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if limit is not None:
            options["max_tokens"] = limit
        if body.get("seed") is not None:
            options["seed"] = body["seed"]
        plan = self.recipes[body["model"][len(PREFIX) :]].plan(messages=messages, **options)
        check_budget(plan)
        return plan

    async def chat(self, request: Request, body: dict) -> Response:
        """``POST /v1/chat/completions`` for a ``moa/NAME`` model (``body`` checked by the front already)."""
        model = body["model"]
        try:
            plan = self._plan(body)
        except BadRequest as exc:
            return _error(400, str(exc), "invalid_value", param=exc.param)
        except BudgetExceeded as exc:
            return _error(400, f"{model}: {exc}", "budget_exceeded")
        except ValueError as exc:
            return _error(400, f"{model}: {exc}", "invalid_value")
        run_id, created = uuid.uuid4().hex[:24], int(time.time())
        self._keep(run_id, {"id": run_id, "model": model, "status": "running", "created": created})
        headers = {"x-moa-lab-run-id": run_id}
        if body.get("stream"):
            events = self._events(plan, run_id, created, body)
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        task = self._start(plan, run_id, model, None)
        gone = asyncio.ensure_future(_client_gone(request))
        try:
            await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():  # the client left (or this handler was cancelled): its run stops now
                task.cancel()
            gone.cancel()
            await asyncio.gather(task, gone, return_exceptions=True)
        if task.cancelled():
            return Response(b"", 499)
        failure = task.exception()
        if failure is not None:
            bad = isinstance(failure, ValueError)
            status, kind = (400, "invalid_request_error") if bad else (502, "upstream_error")
            code = "budget_exceeded" if isinstance(failure, BudgetExceeded) else "moa_run_failed"
            return JSONResponse(error_json(failure_message(model, failure), kind, code), status, headers=headers)
        result: MoAResult = task.result()
        text, _ = cut_at_stop(result.text, stop_list(body))
        return JSONResponse(
            completion(run_id, created, model, text, result.usage(), self._extra(run_id, result)), headers=headers
        )

    def _start(self, plan: RunPlan, run_id: str, model: str, on_chunk) -> asyncio.Task:
        """The run as a task of its own (cancelled when its client leaves), recorded as it ends."""

        async def run() -> MoAResult:
            limits.current.set(self.limiter)  # every run shares the server's calls limit
            try:
                result = await run_plan(plan, stream=True, on_chunk=on_chunk)
            except asyncio.CancelledError:
                self._finish(run_id, "cancelled", None, "the client disconnected: the run was cancelled")
                raise
            except BaseException as exc:
                self._finish(run_id, "failed", exc, failure_message(model, exc))
                raise
            self._finish(run_id, "ok", result, None)
            return result

        task = asyncio.ensure_future(run())
        self.active[run_id] = task
        task.add_done_callback(lambda _: self.active.pop(run_id, None))
        return task

    async def _events(self, plan: RunPlan, run_id: str, created: int, body: dict):
        """The SSE events of a streamed run: a first chunk at once, comments while the proposers run, the final
        answer's chunks, the usage chunk if asked for, ``[DONE]``; an error event (OpenAI's form) if the run fails."""
        model, stops = body["model"], stop_list(body)
        hold = max((len(s) for s in stops), default=1) - 1  # kept back: it may be the start of a stop string
        queue: asyncio.Queue[str] = asyncio.Queue()
        task = self._start(plan, run_id, model, queue.put_nowait)
        pending, stopped = "", False

        def emit(piece: str, final: bool = False) -> str | None:
            nonlocal pending, stopped
            if stopped:
                return None
            pending += piece
            text, stopped = cut_at_stop(pending, stops)
            out = text if stopped or final else text[: len(text) - hold] if hold else text
            pending = "" if stopped else pending[len(out) :]
            return chunk(run_id, created, model, {"content": out}) if out else None

        try:
            yield chunk(run_id, created, model, {"role": "assistant", "content": ""})
            while True:
                get = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({get, task}, timeout=self.keepalive, return_when=asyncio.FIRST_COMPLETED)
                if get in done:
                    event = emit(get.result())
                    if event:
                        yield event
                    continue
                get.cancel()
                if task.done() and queue.empty():
                    break
                if not done:
                    yield ": moa_lab: the proposers are running\n\n"
            exc = task.exception()
            if exc is not None:
                kind = "invalid_request_error" if isinstance(exc, ValueError) else "upstream_error"
                yield error_event(failure_message(model, exc), kind, 400 if kind == "invalid_request_error" else 502)
                return
            event = emit("", final=True)
            if event:
                yield event
            result: MoAResult = task.result()
            yield chunk(run_id, created, model, {}, "stop")
            if (body.get("stream_options") or {}).get("include_usage"):
                yield usage_chunk(run_id, created, model, result.usage(), self._extra(run_id, result))
            yield "data: [DONE]\n\n"
        finally:  # the client left, or the stream ended: no call goes on for it
            if not task.done():
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.shield(asyncio.gather(task, return_exceptions=True))

    # --- the runs' records ------------------------------------------------------------------------------------

    def _extra(self, run_id: str, result: MoAResult) -> dict[str, Any]:
        used = result.usage()
        return {"run_id": run_id, "calls": used.calls, "cached_calls": used.cached, "seconds": result.seconds}

    def _keep(self, run_id: str, record: dict[str, Any]) -> None:
        self.runs[run_id] = record
        while len(self.runs) > self.keep_runs:
            self.runs.popitem(last=False)

    def _finish(self, run_id: str, status: str, outcome: Any, error: str | None) -> None:
        record = self.runs.get(run_id)
        if record is None:  # dropped already (more runs than keep_runs)
            return
        record.update(status=status, error=error, finished=time.time())
        if isinstance(outcome, MoAResult):
            record["result"] = outcome.to_dict()
        elif outcome is not None:  # what the run computed before it failed
            layers = getattr(outcome, "layers", [])
            steps = getattr(outcome, "steps", [])
            record["result"] = {
                **layers_dict(layers),
                **trace_dict([c for layer in layers for c in layer.calls] + list(steps)),
            }


async def _client_gone(request: Request) -> None:
    """Return when the client disconnects (the body was read already: the next message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
