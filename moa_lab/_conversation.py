"""Conversations: a run's input as OpenAI-style chat messages, checked once.

A run's prompt is a string (one user turn: the reference script's case) or a conversation, a list of messages
``{"role": "system" | "user" | "assistant", "content": ...}`` that ends with a user turn (``"developer"``, OpenAI's
newer name, is a system message); ``content`` is a string or a list of text parts (``{"type": "text", "text":
...}``, joined). Checked, a conversation is a tuple of ``{"role", "content"}`` dicts with string contents (other
keys, such as ``name``, are dropped).

What every call of the run sees (:func:`moa_lab.prompts.build_messages`): the whole conversation. The user's own
system message (the ones at its start) is kept, first in the call's system message, then a proposer's role, then
the numbered references: never dropped, never after the references. The other turns follow in order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from moa_lab._unicode import surrogate_error

Message = dict[str, str]
Conversation = tuple[Message, ...]
#: What a run answers: a prompt string, or a checked conversation.
Prompt = str | Conversation
#: What the public calls accept: a string, or a list of chat messages (checked into a :data:`Prompt`).
PromptInput = str | Sequence[Mapping[str, Any]]


#: The roles a conversation's messages may have.
class BadRequest(ValueError):
    """A request body that OpenAI's API would refuse: ``param`` names the field, ``str()`` says why."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def text_content(content: Any, where: str) -> str:
    """A message's ``content``: a string, or OpenAI's list of text parts (``[{"type": "text", "text": ...}]``),
    joined; BadRequest for anything else (an image part, a number...)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise BadRequest(
                    f'{where}[{i}] must be a text part {{"type": "text", "text": "..."}} (this '
                    f"server takes text only), got {part!r}"[:300],
                    f"{where}[{i}]",
                )
            texts.append(part["text"])
        return "".join(texts)
    raise BadRequest(f"{where} must be a string or a list of text parts, got {content!r}"[:300], where)


ROLES = ("system", "developer", "user", "assistant")


def check_conversation(messages, what: str = "messages") -> Conversation:
    """``messages`` checked: a non-empty list of messages with a known role and text content, the last one the
    user's. Raises :class:`~moa_lab.serve._openai_api.BadRequest` (a ValueError) naming the message and its field."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, (list, tuple)) or not messages:
        raise BadRequest(
            f"{what} must be a non-empty list of messages ({{'role': 'user', 'content': '...'}}), got {messages!r}",
            what,
        )
    out = []
    for k, message in enumerate(messages):
        where = f"{what}[{k}]"
        if not isinstance(message, Mapping):
            raise BadRequest(f"{where} must be an object with 'role' and 'content', got {message!r}", where)
        role = message.get("role")
        if role not in ROLES:
            raise BadRequest(
                f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}"
                + (" (tool calls are not supported)" if role == "tool" else ""),
                f"{where}.role",
            )
        if "content" not in message or message["content"] is None:
            raise BadRequest(f"{where}.content is missing: every message needs its text", f"{where}.content")
        content = text_content(message["content"], f"{where}.content")
        if not content.strip():
            raise BadRequest(f"{where}.content is empty (a {role} message needs text)", f"{where}.content")
        problem = surrogate_error(content, f"{where}.content")
        if problem:
            raise BadRequest(problem, f"{where}.content")
        out.append({"role": "system" if role == "developer" else role, "content": content})
    if out[-1]["role"] != "user":
        raise BadRequest(
            f"the last message of {what} must be the user's (the turn the run answers), got a "
            f"{out[-1]['role']!r} message",
            f"{what}[{len(out) - 1}].role",
        )
    return tuple(out)


def is_conversation(value) -> bool:
    """Whether ``value`` is one conversation (a list of messages), not a list of prompts."""
    return isinstance(value, (list, tuple)) and bool(value) and isinstance(value[0], Mapping) and "role" in value[0]


def turns(prompt: Prompt) -> list[Message]:
    """The prompt as chat messages: a string is one user turn."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]


def last_user(prompt: Prompt) -> str:
    """The text of the turn the run answers: the prompt string, or the conversation's last (user) message."""
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


def prompt_text(prompt: Prompt) -> str:
    """One line for tables and progress: the string, or the last user turn after how many turns came before."""
    if isinstance(prompt, str):
        return prompt
    return f"[{len(prompt) - 1} earlier message(s)] {last_user(prompt)}" if len(prompt) > 1 else last_user(prompt)


def prompt_key(prompt: Prompt) -> str:
    """A string that identifies the prompt exactly (the string itself; a conversation as compact JSON)."""
    if isinstance(prompt, str):
        return prompt
    return json.dumps(list(prompt), ensure_ascii=False, separators=(",", ":"))


def prompt_hash(prompt: Prompt) -> str:
    """A short stable hash of the prompt (a batch line's ``prompt_hash``)."""
    return hashlib.sha256(prompt_key(prompt).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def to_json(prompt: Prompt) -> str | list[Message]:
    """JSON-ready: the string, or the list of messages."""
    return prompt if isinstance(prompt, str) else [dict(m) for m in prompt]
