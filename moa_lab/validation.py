"""Checks of user input, run before any model is called. Each raises ValueError naming the bad value."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

from .cache import get_cache
from .calls import CallSettings
from .unicode import surrogate_error


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_text(text: str, what: str) -> str:
    """A string that can be sent: no lone surrogate (see :mod:`moa_lab.unicode`)."""
    problem = surrogate_error(text, what)
    if problem:
        raise ValueError(problem)
    return text


def check_prompt(prompt, what: str = "prompt") -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"{what} must be a non-empty string, got {prompt!r}")
    return check_text(prompt, what)


def check_system_prompt(system_prompt) -> str:
    """The aggregator's prompt: a string (None: the paper's prompt is chosen by the caller)."""
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


def check_call_settings(temperature, max_tokens, timeout, retries, default_max_tokens=None, cache=None) -> CallSettings:
    """The checked settings; ``max_tokens=None`` takes ``default_max_tokens`` (the backend's); ``cache`` as
    :func:`moa_lab.cache.get_cache` takes it."""
    if max_tokens is None:
        max_tokens = default_max_tokens
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        raise ValueError(f"temperature must be a number in [0, 2], got {temperature!r}")
    if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
        raise ValueError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0 or math.isinf(timeout):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if not _is_int(retries) or retries < 0:
        raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
    return CallSettings(float(temperature), max_tokens, float(timeout), retries, cache=get_cache(cache))


def check_min_ok(min_ok, n_models: int) -> None:
    if not _is_int(min_ok) or not 1 <= min_ok <= n_models:
        raise ValueError(f"min_ok must be an integer from 1 to the number of proposers ({n_models}), got {min_ok!r}")


def check_quorum(quorum, deadline, n_models: int, min_ok: int) -> None:
    """``quorum``: None, or an integer from ``min_ok`` to the layer's proposers; ``deadline``: None or seconds > 0."""
    if quorum is not None and (not _is_int(quorum) or not min_ok <= quorum <= n_models):
        raise ValueError(f"quorum must be None (wait for every proposer) or an integer from min_ok ({min_ok}) to the "
                         f"number of proposers ({n_models}), got {quorum!r}")
    if deadline is not None and (isinstance(deadline, bool) or not isinstance(deadline, (int, float))
                                 or not 0 < deadline < math.inf):
        raise ValueError(f"deadline must be None (no deadline) or a positive number of seconds, got {deadline!r}")


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
        raise ValueError(f"output_path must be a file path or \"\" for none, got {path!r}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"output_path {str(path)!r} is a folder; give a file path such as {str(path / 'run.json')!r}")
    existing = next((p for p in path.parents if p.exists()), Path("."))
    if not existing.is_dir():
        raise ValueError(f"output_path {str(path)!r} cannot be written: {str(existing)!r} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise ValueError(f"output_path {str(path)!r} cannot be written: no write permission in {str(existing)!r}")
    return path
