"""Checks of user input, run before any model is called. Each raises ValueError naming the bad value."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from moa_lab._cache import check_cache
from moa_lab._conversation import Prompt, check_conversation
from moa_lab._settings import COMBINE_MODES, DEFAULTS, NAMES, Settings
from moa_lab._similarity import MEASURES
from moa_lab._unicode import surrogate_error
from moa_lab.prompts import AGGREGATOR_PROMPT


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_text(text: str, what: str) -> str:
    """A string that can be sent: no lone surrogate (see :mod:`moa_lab._unicode`)."""
    problem = surrogate_error(text, what)
    if problem:
        raise ValueError(problem)
    return text


def check_prompt(prompt, what: str = "prompt") -> Prompt:
    """A run's input: a non-empty string, or a conversation (a list of chat messages: :mod:`moa_lab._conversation`),
    returned checked (a conversation as a tuple of ``{"role", "content"}`` with string contents)."""
    if isinstance(prompt, (list, tuple)):
        return check_conversation(prompt, what)
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(
            f"{what} must be a non-empty string, got {prompt!r} (or a list of chat messages, "
            "[{'role': 'user', 'content': '...'}])"
        )
    return check_text(prompt, what)


def pick_prompt(prompt, messages) -> Prompt:
    """``prompt=`` or ``messages=`` (one of the two), checked."""
    if messages is None:
        return check_prompt(prompt)
    if prompt is not None:
        raise ValueError("give prompt= or messages=, not both (a conversation's last user message is its prompt)")
    return check_conversation(messages, "messages")


def check_system_prompt(system_prompt) -> str:
    """The aggregator's prompt: a string (None: the paper's prompt)."""
    if system_prompt is None:
        return AGGREGATOR_PROMPT
    if not isinstance(system_prompt, str):
        raise ValueError(f"system_prompt must be a string (None: the paper's prompt), got {system_prompt!r}")
    return check_text(system_prompt, "system_prompt")


def check_models(models, backend, what: str = "models") -> list[str]:
    """A non-empty list of model names (strings), each one the backend can serve."""
    if isinstance(models, (str, bytes)) or not isinstance(models, Sequence):
        raise ValueError(f"{what} must be a list of model names, got {models!r}")
    if not models:
        raise ValueError(f"{what} is empty: give at least one model name")
    for m in models:
        if not isinstance(m, str) or not m.strip():
            raise ValueError(f"every model name must be a non-empty string; {what} holds {m!r}")
        check_text(m, f"the model name {m!r}")
    backend.check_models(models)
    return list(models)


def layer_plan(proposers, layers, backend) -> list[list[str]]:
    """The proposer models of each of the ``layers - 1`` proposer layers.

    ``proposers`` is one list for every layer or one list per layer; ``layers`` (>= 1) may be None,
    meaning 2 for one list, or ``len(proposers) + 1`` for a list per layer.
    """
    if layers is not None and (not _is_int(layers) or layers < 1):
        raise ValueError(f"layers must be an integer >= 1 (1 = the aggregator alone), got {layers!r}")
    if layers == 1 and isinstance(proposers, (list, tuple)) and not proposers:  # the aggregator alone
        return []
    per_layer = (
        isinstance(proposers, Sequence)
        and not isinstance(proposers, str)
        and len(proposers) > 0
        and all(isinstance(p, (list, tuple)) for p in proposers)
    )
    if not per_layer:
        models = check_models(proposers, backend, "proposers")
        return [list(models) for _ in range((layers or 2) - 1)]
    if layers is not None and layers != len(proposers) + 1:
        raise ValueError(
            f"proposers gives {len(proposers)} proposer layer(s), which makes layers={len(proposers) + 1}, "
            f"but layers={layers}"
        )
    return [check_models(p, backend, f"proposers of layer {i + 1}") for i, p in enumerate(proposers)]


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_settings(
    base: Settings | None = None, options: Mapping[str, Any] | None = None, default_max_tokens: int | None = None
) -> Settings:
    """``base`` (default: :data:`~moa_lab._settings.DEFAULTS`) changed by ``options`` (setting names as keys), every
    value checked (ValueError naming a bad one or an unknown name) and resolved: ``max_tokens=None`` takes
    ``default_max_tokens`` (the backend's), ``system_prompt=None`` the paper's prompt, ``cache`` the file to open
    on the first call (nothing is opened here). ``min_ok`` and ``quorum`` are checked against a layer's size by
    :func:`check_min_ok` and :func:`check_quorum`."""
    if base is not None and not isinstance(base, Settings):
        raise ValueError(f"settings must be a moa_lab.moa.Settings (or a plan), got {base!r}")
    options = dict(options or {})
    unknown = [name for name in options if name not in NAMES]
    if unknown:
        raise ValueError(f"unknown setting {unknown[0]!r}; the settings are: {', '.join(NAMES)}")
    s = replace(base or DEFAULTS, **options)
    max_tokens = default_max_tokens if s.max_tokens is None else s.max_tokens
    if not _number(s.temperature) or not 0 <= s.temperature <= 2:
        raise ValueError(f"temperature must be a number in [0, 2], got {s.temperature!r}")
    if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
        raise ValueError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
    if not _number(s.timeout) or not s.timeout > 0 or math.isinf(s.timeout):
        raise ValueError(f"timeout must be a positive number of seconds, got {s.timeout!r}")
    if not _is_int(s.retries) or s.retries < 0:
        raise ValueError(f"retries must be an integer >= 0, got {s.retries!r}")
    if not _number(s.backoff) or not 0 <= s.backoff < math.inf:
        raise ValueError(f"backoff must be a number of seconds >= 0, got {s.backoff!r}")
    check_seed(s.seed)
    if s.deadline is not None and (not _number(s.deadline) or not 0 < s.deadline < math.inf):
        raise ValueError(f"deadline must be None (no deadline) or a positive number of seconds, got {s.deadline!r}")
    check_variant(s)
    return replace(
        s,
        temperature=float(s.temperature),
        max_tokens=max_tokens,
        timeout=float(s.timeout),
        system_prompt=check_system_prompt(s.system_prompt),
        cache=check_cache(s.cache),
        roles=check_roles(s.roles),
        max_cost=None if s.max_cost is None else float(s.max_cost),
        early_stop=None if s.early_stop is None else float(s.early_stop),
        filter_outliers=None if s.filter_outliers is None else float(s.filter_outliers),
    )


def check_variant(s: Settings) -> None:
    """The settings of the variants (how the last layer combines, what proposers see, early stop, budgets),
    each on its own; :func:`check_references` checks them against a run's layers."""
    if not isinstance(s.combine, str) or s.combine not in COMBINE_MODES:
        raise ValueError(f"unknown combine mode {s.combine!r}; the modes are: {', '.join(COMBINE_MODES)}")
    for name in ("top_k", "window"):
        value = getattr(s, name)
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not isinstance(s.shuffle_references, bool):
        raise ValueError(f"shuffle_references must be True or False, got {s.shuffle_references!r}")
    if s.max_references is not None and (not _is_int(s.max_references) or s.max_references < 1):
        raise ValueError(
            f"max_references must be None (pass on every answer) or an integer >= 1, got {s.max_references!r}"
        )
    if s.early_stop is not None and (not _number(s.early_stop) or not 0 < s.early_stop <= 1):
        raise ValueError(f"early_stop must be None (never) or a similarity threshold in (0, 1], got {s.early_stop!r}")
    if s.filter_outliers is not None and (not _number(s.filter_outliers) or not 0 <= s.filter_outliers <= 1):
        raise ValueError(
            f"filter_outliers must be None (off) or a similarity margin in [0, 1], got {s.filter_outliers!r}"
        )
    if s.similarity is not None and not callable(s.similarity) and s.similarity not in MEASURES:
        raise ValueError(
            f"similarity must be None (lexical), {' or '.join(map(repr, MEASURES))} or a function f(a, b) -> [0, 1], "
            f"got {s.similarity!r}"
        )
    if s.max_cost is not None and (not _number(s.max_cost) or not 0 <= s.max_cost < math.inf):
        raise ValueError(f"max_cost must be None (no cap) or a number of USD >= 0, got {s.max_cost!r}")
    if s.max_tokens_total is not None and (not _is_int(s.max_tokens_total) or s.max_tokens_total < 1):
        raise ValueError(f"max_tokens_total must be None (no cap) or an integer >= 1, got {s.max_tokens_total!r}")


def check_roles(roles) -> tuple[str | None, ...] | None:
    """One system prompt (or None) per proposer position, as a tuple."""
    if roles is None:
        return None
    if isinstance(roles, (str, bytes)) or not isinstance(roles, Sequence) or not roles:
        raise ValueError(f"roles must be None or a list with one system prompt (or None) per proposer, got {roles!r}")
    for i, role in enumerate(roles):
        if role is not None and not isinstance(role, str):
            raise ValueError(f"roles[{i}] must be a string or None (no role), got {role!r}")
        if role is not None:
            check_text(role, f"roles[{i}]")
    return tuple(roles)


def check_references(settings: Settings, sizes: Sequence[int]) -> None:
    """The variants' settings against a run's proposer layers (``sizes``: proposers per layer)."""
    mode = settings.combine
    if mode != "synthesize" and not sizes:
        raise ValueError(f"combine={mode!r} combines the proposers' answers: it needs a proposer layer (layers >= 2)")
    fewest = min(sizes, default=0)
    last = sizes[-1] if sizes else 0
    k = settings.max_references
    if k is not None and sizes and k > fewest:
        raise ValueError(
            f"max_references={k} is more than the references there are: the smallest layer has {fewest} proposer(s)"
        )
    if mode == "rank" and settings.top_k > min(last, k or last):
        raise ValueError(
            f"top_k={settings.top_k} is more than the references ranked ({min(last, k or last)}, the "
            "last proposer layer's answers)"
        )
    if settings.roles is not None and sizes:
        if max(sizes) != len(settings.roles):
            raise ValueError(
                f"roles gives {len(settings.roles)} system prompt(s), one per proposer, but the "
                f"largest layer has {max(sizes)} proposer(s)"
            )


def check_min_ok(min_ok, n_models: int) -> None:
    if not _is_int(min_ok) or not 1 <= min_ok <= n_models:
        raise ValueError(f"min_ok must be an integer from 1 to the number of proposers ({n_models}), got {min_ok!r}")


def check_quorum(quorum, n_models: int, min_ok: int) -> None:
    """``quorum``: None, or an integer from ``min_ok`` to the layer's proposers."""
    if quorum is not None and (not _is_int(quorum) or not min_ok <= quorum <= n_models):
        raise ValueError(
            f"quorum must be None (wait for every proposer) or an integer from min_ok ({min_ok}) to the "
            f"number of proposers ({n_models}), got {quorum!r}"
        )


def check_seed(seed) -> None:
    if seed is not None and not _is_int(seed):
        raise ValueError(f"seed must be an integer or None, got {seed!r}")


def check_layer(layer) -> None:
    if not _is_int(layer) or layer < 1:
        raise ValueError(f"layer must be an integer >= 1 (or None), got {layer!r}")


def check_answers(answers, allow_empty: bool = False) -> list[str]:
    """Previous answers: a list of strings (never None: a failed call has no answer to pass on)."""
    if isinstance(answers, (str, bytes)) or not isinstance(answers, Sequence):
        raise ValueError(f"answers must be a list of strings, got {answers!r}")
    if not answers and not allow_empty:
        raise ValueError("previous answers are empty: give at least one, or previous=None for layer 1")
    for i, a in enumerate(answers):
        if not isinstance(a, str):
            raise ValueError(f"every answer must be a string; got {a!r}")
        check_text(a, f"answer {i + 1}")
    return list(answers)


def check_output_path(path) -> Path | None:
    """Where a JSON summary goes: a file path (its folders are made when writing), or "" / None for none."""
    if path is None or path == "":
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f'output_path must be a file path or "" for none, got {path!r}')
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"output_path {str(path)!r} is a folder; give a file path such as {str(path / 'run.json')!r}")
    existing = next((p for p in path.parents if p.exists()), Path("."))
    if not existing.is_dir():
        raise ValueError(f"output_path {str(path)!r} cannot be written: {str(existing)!r} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise ValueError(f"output_path {str(path)!r} cannot be written: no write permission in {str(existing)!r}")
    return path
