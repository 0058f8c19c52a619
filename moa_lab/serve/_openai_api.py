"""OpenAI's chat-completions request body, checked as its API checks it: a 400 in OpenAI's error JSON naming the
field, never a 500 that a client would retry. Used by ``moa-lab serve`` before a request reaches a worker."""

from __future__ import annotations

from typing import Any

from moa_lab._conversation import BadRequest, text_content

#: Fields whose type is checked (the rest are passed on, or ignored, as OpenAI-compatible servers do).
_NUMBERS = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}
ROLES = ("system", "user", "assistant", "developer", "tool")


def error_json(
    message: str, kind: str = "invalid_request_error", code: str | None = None, param: str | None = None
) -> dict:
    """OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def check_chat_body(body: Any) -> dict:
    """The body of ``POST /v1/chat/completions``, checked: a JSON object with a string ``model`` and a non-empty
    list of ``messages`` (each a role and a text ``content``: a string, or a list of text parts, which is joined
    into one string here), and ``temperature``, ``top_p``, ``seed``, ``stream``, ``stop`` of their types (the
    server checks ``max_tokens`` against its own cap). Returns the body with text contents; raises
    :class:`BadRequest` naming the first bad field."""
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, got {type(body).__name__}", "body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest(f"'model' must be a model name (a non-empty string), got {model!r}"[:300], "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest(f"'messages' must be a non-empty list of messages, got {messages!r}"[:300], "messages")
    checked = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise BadRequest(f"{where} must be an object with 'role' and 'content', got {message!r}"[:300], where)
        if message.get("role") not in ROLES:
            raise BadRequest(
                f"{where}.role must be one of {', '.join(ROLES)}, got {message.get('role')!r}"[:300], f"{where}.role"
            )
        checked.append({**message, "content": text_content(message.get("content"), f"{where}.content")})
    for name, (low, high) in _NUMBERS.items():
        value = body.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high
        ):
            raise BadRequest(f"'{name}' must be a number from {low:g} to {high:g}, got {value!r}"[:300], name)
    seed = body.get("seed")  # max_tokens: its server checks it (its own cap, and llama.cpp's "no limit" below 1)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadRequest(f"'seed' must be an integer, got {seed!r}"[:300], "seed")
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise BadRequest(f"'stream' must be true or false, got {body['stream']!r}"[:300], "stream")
    stop = body.get("stop")
    if (
        stop is not None
        and not isinstance(stop, str)
        and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise BadRequest(f"'stop' must be a string or a list of strings, got {stop!r}"[:300], "stop")
    return {**body, "messages": checked}
