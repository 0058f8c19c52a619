"""OpenAI's chat-completion response forms, as the endpoint writes them (a completion, a stream chunk, usage, what a
failed run says and with which status), and the request fields an MoA cannot honour."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from moa_lab._budget import BudgetExceeded
from moa_lab._records import MoAError
from moa_lab._usage import Usage
from moa_lab.serve._openai_api import BadRequest


def usage_json(used: Usage, cached_tokens: int = 0) -> dict[str, Any]:
    """OpenAI's ``usage``: every call of the run, those answered from the cache included; the prompt tokens of the
    cached calls also in ``prompt_tokens_details.cached_tokens`` (OpenAI's field for prompt tokens served from a
    cache)."""
    return {
        "prompt_tokens": used.prompt_tokens,
        "completion_tokens": used.completion_tokens,
        "total_tokens": used.prompt_tokens + used.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def completion(
    run_id: str, created: int, model: str, text: str, usage: dict, extra: dict, finish: str = "stop"
) -> dict[str, Any]:
    """A ``chat.completion`` object: the final answer as the assistant's message, why it ended (``"length"``:
    ``max_tokens`` cut it), the run's usage (:func:`usage_json`), and ``moa_lab`` (the run's id, its calls)."""
    return {
        "id": f"chatcmpl-{run_id}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": usage,
        "moa_lab": extra,
    }


def chunk(run_id: str, created: int, model: str, delta: dict, finish: str | None = None, **more: Any) -> str:
    """One SSE event of a ``chat.completion.chunk``."""
    body = {
        "id": f"chatcmpl-{run_id}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **more,
    }
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def usage_chunk(run_id: str, created: int, model: str, usage: dict, extra: dict) -> str:
    """The last chunk of a stream that asked for ``stream_options.include_usage``: no choices, the usage."""
    body = {
        "id": f"chatcmpl-{run_id}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage,
        "moa_lab": extra,
    }
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def error_event(message: str, kind: str, code: str | int) -> str:
    """An error inside a stream (the status was sent already), in OpenAI's form."""
    return f"data: {json.dumps({'error': {'message': message, 'type': kind, 'param': None, 'code': code}})}\n\n"


def refuse_unsupported(body: dict) -> None:
    """BadRequest naming a field an MoA cannot honour: ``n`` > 1, ``tools`` / ``functions`` / a forced
    ``tool_choice``, ``logprobs``, a ``response_format`` other than text; a bad ``stream_options`` or
    ``max_tokens``."""
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n != 1):
        raise BadRequest(f"'n' must be 1: an MoA run makes one final answer (got {n!r})", "n")
    for name in ("tools", "functions"):
        if body.get(name):
            raise BadRequest(f"'{name}' is not supported: an MoA answers with text, it does not call tools", name)
    choice = body.get("tool_choice")
    if choice not in (None, "none", "auto"):
        raise BadRequest(f"'tool_choice' {choice!r} is not supported: an MoA does not call tools", "tool_choice")
    if body.get("logprobs"):
        raise BadRequest("'logprobs' is not supported: the final answer is several models' work", "logprobs")
    form = body.get("response_format")
    if form is not None and form != {"type": "text"}:
        kind = form.get("type") if isinstance(form, dict) else form
        raise BadRequest(
            f"'response_format' {kind!r} is not supported: an MoA's final answer is free text, not checked against "
            'a JSON schema (leave it out, or give {"type": "text"})',
            "response_format",
        )
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest(f"'stream_options' must be an object, got {options!r}", "stream_options")
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise BadRequest(f"'{name}' must be an integer >= 1, got {value!r}", name)


def stop_list(body: dict) -> list[str]:
    stop = body.get("stop")
    return [stop] if isinstance(stop, str) and stop else [s for s in stop or [] if s]


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """``text`` up to the first of ``stops`` (and whether one was found)."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(found)], True) if found else (text, False)


def failure_message(model: str, exc: BaseException) -> str:
    """What a failed run says: the model served, and the cause (each failed model and why)."""
    if isinstance(exc, MoAError):
        return f"{model}: the MoA run failed: {exc}"
    if isinstance(exc, asyncio.TimeoutError):
        return f"{model}: the MoA run timed out upstream"
    return f"{model}: the MoA run failed: {type(exc).__name__}: {exc}"


def failure_status(exc: BaseException) -> tuple[int, str]:
    """The status and error type of a failed run: 400 for a budget that stopped it or bad input (a client that
    retries would pay for the same refusal), 502 for the models' failures."""
    if isinstance(exc, (ValueError, BudgetExceeded)):
        return 400, "invalid_request_error"
    return 502, "upstream_error"
