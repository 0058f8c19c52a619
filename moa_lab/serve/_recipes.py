"""The recipes ``moa-lab serve --recipe NAME=FILE`` serves, checked before the server starts."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

from moa_lab._backends import LOCAL_AGGREGATOR, LOCAL_MAX_TOKENS, LOCAL_PROPOSERS, Backend, get_backend
from moa_lab._config_files import load_file
from moa_lab._recipe import Recipe

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def load_recipes(specs: Sequence[str], served: Sequence[str]) -> dict[str, Recipe]:
    """``NAME=FILE`` entries as recipes, each checked as ``plan_run`` checks a run: on the local backend against
    the models this server serves (``served``: bundled, yours, aliases), elsewhere against its own backend. A
    recipe ``default`` (the backend's default models and settings) is added unless one is given. ValueError naming
    the bad entry (a default recipe that the environment makes unusable is left out, saying why)."""
    local = Backend(
        "local",
        known_models=tuple(served),
        default_proposers=LOCAL_PROPOSERS,
        default_aggregator=LOCAL_AGGREGATOR,
        default_max_tokens=LOCAL_MAX_TOKENS,
    )
    recipes: dict[str, Recipe] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not _NAME.fullmatch(name) or not path:
            raise ValueError(f"--recipe {spec!r}: expected NAME=FILE (NAME: letters, digits, '.', '_' or '-')")
        if name in recipes:
            raise ValueError(f"--recipe {spec!r}: the name {name!r} is given twice")
        raw = load_file(Path(path), "recipe")
        wanted = raw.get("backend") if isinstance(raw, dict) else None
        backend = local if get_backend(wanted).kind == "local" else None  # None: the recipe's own
        recipes[name] = Recipe.from_dict(raw, where=path, backend=backend, name=name)
    if "default" not in recipes:
        try:
            backend = local if get_backend().kind == "local" else None
            recipes["default"] = Recipe.from_dict({}, where="the default recipe", backend=backend, name="default")
        except ValueError as exc:  # the environment names no usable backend: the models are served all the same
            print(f"moa-lab serve: moa/default is not served: {exc}", file=sys.stderr)
    return recipes
