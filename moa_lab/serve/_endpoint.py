"""MoA as a model: each recipe served as ``moa/NAME`` on ``/v1/chat/completions``, inside ``moa-lab serve``.

A request is one MoA run over its ``messages`` (:func:`moa_lab.run_plan`): the recipe's calls (``plan.calls``), each
layer's proposers at once, the layers in turn; the aggregator's tokens streamed as SSE chunks when ``stream`` is set,
with SSE comments every ``keepalive`` seconds while the proposers run (clients with read timeouts stay connected);
a non-streamed answer not ready after ``patience`` seconds is kept alive with spaces before its JSON body.
``temperature``, ``max_tokens`` (or ``max_completion_tokens``), ``seed`` change the recipe's settings for the run
(no ``seed``: a fresh sample, its drawn seed kept in the record); ``stop`` cuts the final answer; ``finish_reason``
is ``"length"`` when ``max_tokens`` cut it; ``n`` > 1, tools, ``logprobs`` and a ``response_format`` other than text
are refused with a 400 naming the field; other fields are ignored, as OpenAI-compatible servers do. ``usage`` counts
every call of the run (the cached calls' prompt tokens also in ``prompt_tokens_details``). The run's record (every
layer's answers, every call's time and tokens) is kept for the server's life, the last ``keep_runs`` of them, at
``GET /moa_lab/runs/{id}`` (``GET /moa_lab/runs`` lists them); the id is in the ``x-moa-lab-run-id`` header and
the body's ``moa_lab.run_id``. Every run shares one calls limit and the answers cache; a client that disconnects
cancels its run (its calls stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
import uuid
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from moa_lab import _limits as limits
from moa_lab._budget import BudgetExceeded
from moa_lab._conversation import check_conversation
from moa_lab._estimate import check_budget
from moa_lab._plan import RunPlan
from moa_lab._recipe import Recipe
from moa_lab._results import MoAResult
from moa_lab.engine._local import attach
from moa_lab.moa import run_plan
from moa_lab.serve._forms import (
    chunk,
    completion,
    cut_at_stop,
    error_event,
    failure_message,
    failure_status,
    refuse_unsupported,
    stop_list,
    usage_chunk,
    usage_json,
)
from moa_lab.serve._openai_api import BadRequest, error_json
from moa_lab.serve._run_records import RunRecords
from moa_lab.serve._tasks import client_gone, stop

PREFIX = "moa/"


def _error(status: int, message: str, code: str, kind: str = "invalid_request_error", param=None) -> JSONResponse:
    return JSONResponse(error_json(message, kind, code, param), status)


class MoAEndpoint:
    """The recipes a ``moa-lab serve`` serves as ``moa/NAME`` models, with their runs' records.

    ``recipes``: name → :class:`~moa_lab._recipe.Recipe` (checked already); ``concurrency``: model calls at once over
    every run; ``keep_runs``: run records kept (the oldest are dropped); ``keepalive``: seconds between SSE comments
    while a streamed run has no token to send yet (and between the spaces of a non-streamed answer kept alive);
    ``patience``: seconds a non-streamed answer is awaited before its status is sent as 200 and spaces keep the
    connection alive until its body (:meth:`_kept_alive`)."""

    def __init__(
        self,
        recipes: Mapping[str, Recipe],
        *,
        concurrency: int = 16,
        keep_runs: int = 256,
        keepalive: float = 1.0,
        patience: float = 5.0,
    ) -> None:
        self.recipes = dict(recipes)
        self.limiter = limits.CallLimiter(concurrency)
        self.keepalive, self.patience = keepalive, patience
        self.records = RunRecords(keep_runs)
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
        return self.records.routes()

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
        # No seed: a fresh sample, as OpenAI means it (a harness's epochs and pass@k get different answers); the seed
        # drawn is kept in the run's record, so the run can be replayed (and is cached under it, like any seed).
        options["seed"] = body["seed"] if body.get("seed") is not None else secrets.randbelow(2**31)
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
        seeds = {"seed": plan.settings.seed, "seed_given": body.get("seed") is not None}  # a drawn seed replays it
        self.records.add(run_id, {"id": run_id, "model": model, "status": "running", "created": created, **seeds})
        headers = {"x-moa-lab-run-id": run_id}
        if body.get("stream"):
            events = self._events(plan, run_id, created, body)
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        task = self._start(plan, run_id, model, None)
        gone = asyncio.ensure_future(client_gone(request))
        try:
            await asyncio.wait({task, gone}, timeout=self.patience, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            await stop(task, gone)
            raise
        if not task.done() and not gone.done():  # a long run: keep the client's read timeout from firing
            await stop(gone)  # from now on a client that left is found by the write of the next space
            answer = self._kept_alive(task, run_id, created, body)
            return StreamingResponse(answer, media_type="application/json", headers=headers)
        await stop(task, gone)  # the client left (its run stops now), or the run ended
        if task.cancelled():
            return Response(b"", 499)
        status, answer = self._answer(task, run_id, created, body)
        return JSONResponse(answer, status, headers=headers)

    def _answer(self, task: asyncio.Task, run_id: str, created: int, body: dict) -> tuple[int, dict[str, Any]]:
        """A finished run's status and body: the completion, or OpenAI's error JSON (400 for a budget or bad input:
        retrying it would pay for the same refusal; 502 for models that failed)."""
        model, failure = body["model"], task.exception()
        if failure is not None:
            status, kind = failure_status(failure)
            code = "budget_exceeded" if isinstance(failure, BudgetExceeded) else "moa_run_failed"
            return status, error_json(failure_message(model, failure), kind, code)
        result: MoAResult = task.result()
        text, stopped = cut_at_stop(result.text, stop_list(body))
        finish = "stop" if stopped else result.finish_reason
        used = self._usage(result)
        return 200, completion(
            run_id, created, model, text=text, usage=used, extra=self._extra(run_id, result), finish=finish
        )

    async def _kept_alive(self, task: asyncio.Task, run_id: str, created: int, body: dict):
        """A non-streamed answer whose run outlasts ``patience``: the status is sent as 200, then a space every
        ``keepalive`` seconds while the run goes on (JSON allows whitespace before a value; a client's read timeout
        sees bytes arrive), then the body: the completion, or the error object (``{"error": ...}``, OpenAI's
        form) if the run failed, as OpenRouter does. A client that leaves cancels the run."""
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=self.keepalive)
                if not task.done():
                    yield b" "
            if not task.cancelled():
                yield json.dumps(self._answer(task, run_id, created, body)[1], ensure_ascii=False).encode("utf-8")
        finally:  # the client left (the write failed, or the server saw it go): its run stops
            with contextlib.suppress(BaseException):
                await asyncio.shield(stop(task))

    def _start(self, plan: RunPlan, run_id: str, model: str, on_chunk) -> asyncio.Task:
        """The run as a task of its own (cancelled when its client leaves), recorded as it ends."""

        async def run() -> MoAResult:
            limits.current.set(self.limiter)  # every run shares the server's calls limit
            try:
                result = await run_plan(plan, stream=True, on_chunk=on_chunk)
            except asyncio.CancelledError:
                self.records.finish(run_id, "cancelled", None, "the client disconnected: the run was cancelled")
                raise
            except BaseException as exc:
                self.records.finish(run_id, "failed", exc, failure_message(model, exc))
                raise
            self.records.finish(run_id, "ok", result, None)
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
        get: asyncio.Future | None = None

        def emit(piece: str, final: bool = False) -> str | None:
            nonlocal pending, stopped
            if stopped:
                return None
            pending += piece
            text, stopped = cut_at_stop(pending, stops)
            out = text if stopped or final else text[: max(0, len(text) - hold)]
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
                status, kind = failure_status(exc)
                yield error_event(failure_message(model, exc), kind, status)
                return
            event = emit("", final=True)
            if event:
                yield event
            result: MoAResult = task.result()
            yield chunk(run_id, created, model, {}, "stop" if stopped else result.finish_reason)
            if (body.get("stream_options") or {}).get("include_usage"):
                yield usage_chunk(run_id, created, model, self._usage(result), self._extra(run_id, result))
            yield "data: [DONE]\n\n"
        finally:  # the client left, or the stream ended: no call goes on for it (nor a pending read of the queue)
            with contextlib.suppress(BaseException):
                await asyncio.shield(stop(task, *([get] if get is not None else [])))

    # --- the runs' records ------------------------------------------------------------------------------------

    def _extra(self, run_id: str, result: MoAResult) -> dict[str, Any]:
        used, cached = result.usage(), [c for c in result.trace if c.cached]
        return {
            "run_id": run_id,
            "calls": used.calls,
            "cached_calls": used.cached,
            "cached_completion_tokens": sum(c.completion_tokens or 0 for c in cached),
            "seconds": result.seconds,
        }

    def _usage(self, result: MoAResult) -> dict[str, Any]:
        """The run's ``usage``: every call, those answered from the cache too (their prompt tokens also in
        ``prompt_tokens_details.cached_tokens``)."""
        cached = sum(c.prompt_tokens or 0 for c in result.trace if c.cached)
        return usage_json(result.usage(), cached)
