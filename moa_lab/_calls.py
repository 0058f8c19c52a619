"""One chat call: the single place a model is called. Retries, timeout, seed, usage, error text.

A call never raises for a model's failure: it fills its :class:`CallRecord` (``error`` set, partial text
kept) and the layers above decide what a failure means. Cancellation is never swallowed.

Over 300 lines: the one place a model is called: attempts and their failures, timeouts, streams, the cache and the
trace record.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import math
import random
import re
import time
from collections.abc import AsyncGenerator, Sequence

import httpx
import together

from moa_lab import _limits as limits
from moa_lab._backends import Backend
from moa_lab._budget import Budget, BudgetExceeded
from moa_lab._cache import ResponseCache, cache_key, get_cache
from moa_lab._logs import log
from moa_lab._records import CallRecord
from moa_lab._settings import Settings
from moa_lab._unicode import repair

RETRY_STATUS = {408, 409, 429}
#: The longest wait before a retry: a server that asks for more (Retry-After) gets no retry; the call fails at
#: once, saying so, rather than holding a layer for minutes.
MAX_RETRY_WAIT = 60.0


class _Failure(Exception):
    def __init__(self, message: str, retry: bool, wait: float | None = None) -> None:
        super().__init__(message)
        self.retry, self.wait = retry, wait


def _retry_after(response) -> float | None:
    """Seconds to wait from a Retry-After header (a number of seconds, or an HTTP date); None if absent or
    unreadable. May be huge (a date years ahead): the caller decides."""
    value = response.headers.get("retry-after") if response is not None else None
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        try:
            seconds = email.utils.mktime_tz(parsed) - time.time()
        except (OverflowError, ValueError):  # a year past 9999: Python's dates end there, the wait does not
            seconds = math.inf
    return None if math.isnan(seconds) else max(0.0, seconds)


def _status_failure(status: int, message: str, wait: float | None = None, where: str = "") -> _Failure:
    """An HTTP error status (``where``: " in the stream" for an error event): 429, 408, 409 and 5xx are retried,
    after ``wait`` seconds when the server said (Retry-After), unless that is more than MAX_RETRY_WAIT."""
    retry = status in RETRY_STATUS or status >= 500
    if retry and wait is not None and wait > MAX_RETRY_WAIT:
        how_long = f"{wait:,.0f}s" if math.isfinite(wait) else "indefinitely"
        return _Failure(
            f"HTTP {status}{where}: {message} (the server asks to wait {how_long} before trying again, "
            f"more than the {MAX_RETRY_WAIT:g}s moa_lab waits: not retried)",
            retry=False,
        )
    return _Failure(f"HTTP {status}{where}: {message}", retry, wait if retry else None)


def _server_message(exc: together.APIStatusError) -> str:
    """What the server said: the ``message`` of an OpenAI-style error body, else the SDK's text (which is
    ``Error code: N - <the whole body>``)."""
    error = exc.body.get("error", exc.body) if isinstance(exc.body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str) and error["message"].strip():
        return error["message"]
    return error if isinstance(error, str) and error.strip() else exc.message


def _stream_error(exc: together.APIError, where: str = "the stream") -> _Failure:
    """An error event inside a stream (``data: {"error": {...}}``), or an error object as the body of a 200: its
    message, and its code when it has one (retried as that HTTP status would be; an error without a code is not
    retried)."""
    body = exc.body if isinstance(exc.body, dict) else {"message": exc.body}
    given = body.get("message")
    message = given if isinstance(given, str) else str(exc.message)
    code = body.get("code")
    if isinstance(code, int) and not isinstance(code, bool) and 100 <= code < 600:
        return _status_failure(code, message, where=f" in {where}")
    return _Failure(f"error in {where}: {message}", retry=False)


def _classify(exc: Exception, timeout: float) -> _Failure:
    if isinstance(exc, _Failure):
        return exc
    if isinstance(exc, (together.APITimeoutError, httpx.TimeoutException)):  # mid-stream, httpx's own errors
        return _Failure(f"timed out after {timeout:g}s", retry=True)
    if isinstance(exc, httpx.TransportError):
        return _Failure(f"connection error: {type(exc).__name__}: {exc}", retry=True)
    if isinstance(exc, together.APIStatusError):
        return _status_failure(exc.status_code, _server_message(exc), _retry_after(exc.response))
    if isinstance(exc, together.APIConnectionError):
        cause = exc.__cause__ or exc
        return _Failure(f"connection error: {type(cause).__name__}: {cause}", retry=True)
    if isinstance(exc, together.APIError):  # raised by the SDK for an error event in a stream
        return _stream_error(exc)
    if isinstance(exc, json.JSONDecodeError):  # a 200 whose body is garbled or missing: a glitch worth a retry
        if not exc.doc.strip():
            return _Failure("empty response body", retry=True)
        return _Failure(f"malformed response: the body is not JSON ({exc})", retry=True)
    return _Failure(f"malformed response: {type(exc).__name__}: {exc}", retry=False)


def _scrub(text: str, secrets: tuple[str, ...], limit: int = 500) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text if len(text) <= limit else text[:limit] + "..."


async def _one_attempt(client, model, messages, seed, settings: Settings, stream: bool, record: CallRecord):
    """Yield text chunks of one request; fill the record's usage. ``settings.timeout`` bounds the wait for the
    whole answer, or for each token of a stream (only time spent waiting on the server counts)."""
    kwargs = dict(model=model, messages=messages, temperature=settings.temperature, timeout=settings.timeout)
    if settings.max_tokens is not None:
        kwargs["max_tokens"] = settings.max_tokens
    if seed is not None:
        kwargs["seed"] = seed
    if not stream:
        try:
            async with asyncio.timeout(settings.timeout):
                response = await client.chat.completions.create(**kwargs)
        except TimeoutError:
            raise _Failure(f"timed out after {settings.timeout:g}s waiting for the answer", retry=True) from None
        error = getattr(response, "error", None)  # a 200 whose body is an error object (a server that sent its
        if isinstance(error, dict):  # status before the answer was made, as OpenRouter and moa-lab serve do)
            raise _stream_error(together.APIError(str(error.get("message")), None, body=error), "the body")  # type: ignore[arg-type]
        try:
            content = response.choices[0].message.content
            usage = response.usage
            record.finish_reason = getattr(response.choices[0], "finish_reason", None)
        except (AttributeError, IndexError, TypeError, KeyError) as exc:
            raise _Failure(f"malformed response: {type(exc).__name__}: {exc}", retry=False) from None
        _set_usage(record, usage)
        _add_queued(record, response)
        yield repair(content or "")
        return
    loop = asyncio.get_running_loop()
    left, waiting_for = settings.timeout, "the first token"  # seconds of waiting left before the next token

    async def wait(step):
        nonlocal left
        started = loop.time()
        try:
            async with asyncio.timeout(max(left, 0.0)):
                return await step
        except TimeoutError:
            raise _Failure(f"timed out after {settings.timeout:g}s waiting for {waiting_for}", retry=True) from None
        finally:
            left -= loop.time() - started

    response = await wait(client.chat.completions.create(stream=True, **kwargs))
    finished = False
    try:
        while True:
            try:
                chunk = await wait(response.__anext__())
            except StopAsyncIteration:
                break
            _set_usage(record, getattr(chunk, "usage", None))
            _add_queued(record, chunk)
            choices = getattr(chunk, "choices", None)
            if choices is None:
                raise _Failure("malformed stream chunk: no choices", retry=False)
            reason = next((c.finish_reason for c in choices if getattr(c, "finish_reason", None)), None)
            if reason:
                finished, record.finish_reason = True, reason
            if choices and choices[0].delta is not None and choices[0].delta.content:
                left, waiting_for = settings.timeout, "the next token"
                yield repair(choices[0].delta.content)
    finally:
        await response.close()
    if not finished:  # the SDK ends a dropped stream quietly: a truncated answer must not pass as whole
        raise _Failure("the stream ended before the model finished (no finish_reason)", retry=True)


def _add_queued(record: CallRecord, answer) -> None:
    """The embedded server says how long the call waited for a core (``moa_lab.queued``, first chunk only)."""
    extra = getattr(answer, "moa_lab", None)
    if isinstance(extra, dict) and isinstance(extra.get("queued"), (int, float)):
        record.queued += max(0.0, float(extra["queued"]))


def _set_usage(record: CallRecord, usage) -> None:
    if usage is not None:
        record.prompt_tokens = getattr(usage, "prompt_tokens", None)
        record.completion_tokens = getattr(usage, "completion_tokens", None)


async def chat(
    backend: Backend,
    record: CallRecord,
    messages: list[dict[str, str]],
    settings: Settings,
    *,
    stream: bool = False,
    budget: Budget | None = None,
    references: Sequence[str] = (),
) -> AsyncGenerator[str, None]:
    """Call ``record.model`` with ``messages``; yield the answer's text as it arrives (one chunk if not
    streaming). Fills ``record`` (text, tokens, seconds, attempts, error). One HTTP request per attempt,
    at most ``1 + settings.retries`` attempts; a stream that already yielded text is never retried.
    ``budget``: the call starts only if its bound fits (else :class:`BudgetExceeded` is raised, no request made);
    ``references``: the previous answers the messages hold, each bounded at ``max_tokens`` as the estimate does."""
    parts: list[str] = []
    hold = None
    record.started, t0 = time.time(), time.perf_counter()
    limiter = limits.current.get()
    try:
        cache = get_cache(settings.cache) if record.seed is not None else None  # opened by the first call
        key = _key(backend, record, messages, settings, cache)
        hit = cache.get(key) if key and cache is not None else None
        if hit is not None:  # answered before: replayed, no model call
            record.cached, record.prompt_tokens, record.completion_tokens = (
                True,
                hit.prompt_tokens,
                hit.completion_tokens,
            )
            full = settings.max_tokens is not None and (hit.completion_tokens or 0) >= settings.max_tokens
            record.finish_reason = "length" if full else "stop"
            for piece in _replay(hit.text) if stream else [hit.text]:
                parts.append(piece)
                yield piece
            return
        for attempt in range(settings.retries + 1):
            # Looked up per attempt: an embedded server that died is started again here. Its first start may take
            # a few seconds: not the call's time.
            client = await backend.client(record.model)
            if attempt == 0:
                record.started, t0 = time.time(), time.perf_counter()
            record.attempts = attempt + 1
            try:
                async with contextlib.AsyncExitStack() as stack:
                    if limiter is not None:  # a slot per attempt: none is held while backing off
                        await stack.enter_async_context(limiter.slot(-record.layer))
                        if attempt == 0:  # the call starts when it has its slot: waiting for one is not its time
                            record.started, t0 = time.time(), time.perf_counter()
                    if budget is not None and hold is None:  # held from its start to its end, retries included
                        hold = budget.reserve(record, messages, settings.max_tokens, references)
                    attempt_stream = _one_attempt(
                        client,
                        record.model,
                        messages,
                        seed=record.seed,
                        settings=settings,
                        stream=stream,
                        record=record,
                    )
                    pieces = await stack.enter_async_context(contextlib.aclosing(attempt_stream))  # closed in this task
                    async for piece in pieces:
                        parts.append(piece)
                        yield piece
                if not "".join(parts).strip():
                    raise _Failure("the model returned an empty answer", retry=False)
                record.error = None
                log.debug("%s: answered, attempt %d, %.2fs", record.where, record.attempts, time.perf_counter() - t0)
                if key and cache is not None:
                    cache.put(key, record.model, "".join(parts), record.prompt_tokens, record.completion_tokens)
                return
            except BudgetExceeded:  # refused by the budget: no request was made
                record.attempts = 0
                raise
            except Exception as exc:  # noqa: BLE001 - every failure becomes a typed record (cancellation is not one)
                failure = _classify(exc, settings.timeout)
                received = "".join(parts)
                if received.strip():
                    failure = _Failure(f"stream broke after {len(received)} characters: {failure}", False)
                record.error = _scrub(str(failure), backend.secrets())
                log.debug("%s: attempt %d failed: %s", record.where, attempt + 1, record.error)
                if not failure.retry or parts or attempt == settings.retries:
                    return
                if failure.wait is not None:  # as the server said
                    await asyncio.sleep(failure.wait)
                else:  # backing off, with jitter
                    await asyncio.sleep(min(settings.backoff * 2**attempt, MAX_RETRY_WAIT) * random.uniform(0.8, 1.2))
    except (asyncio.CancelledError, GeneratorExit):  # cancelled, or the consumer stopped reading the stream
        record.error = "cancelled"
        raise
    except BudgetExceeded:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. the local server failed to start, or a model file is missing
        record.error = _scrub(f"{type(exc).__name__}: {exc}", backend.secrets())
    finally:
        record.text = "".join(parts) if parts else None
        record.seconds = time.perf_counter() - t0
        if hold is not None and budget is not None:
            budget.settle(hold, record)


def _key(backend: Backend, record: CallRecord, messages, settings: Settings, cache: ResponseCache | None) -> str | None:
    """The call's cache key; None when not cached (no cache, or no seed: a new sample is asked for)."""
    if cache is None or record.seed is None:
        return None
    return cache_key(
        backend.scope(record.model), record.model, messages, settings.temperature, settings.max_tokens, record.seed
    )


def _replay(text: str) -> list[str]:
    """A cached answer as stream chunks: one word (with the spaces after it) per chunk."""
    return re.findall(r"\S+\s*|\s+", text) or [text]


async def complete(
    backend: Backend,
    record: CallRecord,
    messages,
    settings: Settings,
    budget: Budget | None = None,
    references: Sequence[str] = (),
) -> CallRecord:
    """A plain (non-streamed) call; returns the filled record."""
    async for _ in chat(backend, record, messages, settings, budget=budget, references=references):
        pass
    return record
