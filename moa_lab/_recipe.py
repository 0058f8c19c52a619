"""Recipes: a run's plan without its prompt (proposers per layer, aggregator, combine mode, every setting), saved
as a YAML or JSON file, loaded and checked exactly as :func:`moa_lab.plan_run` checks a run.

A recipe file is a mapping of ``proposers`` (one list for every layer, or one list per layer), ``aggregator``,
``layers``, ``backend`` (``"local"``, ``"together"`` or a base URL; left out: chosen from the environment, as for a
run) and any :class:`~moa_lab.moa.Settings` field (``similarity`` by name: ``lexical`` or ``semantic``; ``cache``
only as true, false or a path). Left out: the default. Used by ``moa-lab ask --recipe``, ``moa-lab chat``,
``moa-lab serve --recipe`` (as the model ``moa/NAME``), the notebooks' ``recipe`` parameter and the playground's
"Settings as" box.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moa_lab._backends import Backend, get_backend
from moa_lab._config_files import load_file
from moa_lab._conversation import PromptInput
from moa_lab._plan import RunPlan, plan_run
from moa_lab._settings import NAMES

#: The keys of a recipe file, besides the settings'.
RUN_KEYS = ("proposers", "aggregator", "layers", "backend")
#: Every key a recipe file may hold.
RECIPE_KEYS = RUN_KEYS + NAMES
_PLACEHOLDER = "(a recipe is checked with this prompt)"


@dataclass(frozen=True)
class Recipe:
    """A plan without its prompt. Build it with :meth:`from_file`, :meth:`from_dict` or :meth:`from_plan` (each
    checks it as ``plan_run`` would, calling no model); run it with :meth:`plan` and :func:`moa_lab.run_plan`, or
    ``run_moa(prompt, **recipe.arguments())``."""

    proposers: Any = None
    aggregator: str | None = None
    layers: int | None = None
    backend: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None

    def arguments(self) -> dict[str, Any]:
        """The recipe as keyword arguments of :func:`moa_lab.run_moa` / :func:`moa_lab.plan_run` (no prompt)."""
        out: dict[str, Any] = {"proposers": self.proposers, "aggregator": self.aggregator, "layers": self.layers}
        if self.backend is not None:
            out["backend"] = self.backend
        return {**out, **self.options}

    def plan(
        self,
        prompt: PromptInput | None = None,
        *,
        messages: PromptInput | None = None,
        backend: Backend | str | None = None,
        **options: Any,
    ) -> RunPlan:
        """The run of ``prompt`` (or ``messages``, a conversation) with this recipe, checked; ``backend`` and
        ``options`` change the recipe's. Calls no model: ``plan.calls`` say what a run costs."""
        arguments = self.arguments()
        if backend is not None:
            arguments["backend"] = backend
        return plan_run(prompt, messages=messages, **{**arguments, **options})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, as its file holds it (keys left out: their defaults)."""
        out = {k: v for k, v in zip(RUN_KEYS, (self.proposers, self.aggregator, self.layers, self.backend))}
        return {k: v for k, v in {**out, **self.options}.items() if v is not None or k in self.options}

    def text(self, fmt: str = "yaml") -> str:
        """The recipe file's text: YAML (``fmt="yaml"``) or JSON."""
        if fmt == "json":
            return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=110)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the recipe to ``path``: JSON for a ``.json`` name, YAML for any other. Returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.text("json" if path.suffix.lower() == ".json" else "yaml"), encoding="utf-8")
        return path

    @classmethod
    def from_dict(
        cls, value: Any, *, where: str = "recipe", backend: Backend | str | None = None, name: str | None = None
    ) -> Recipe:
        """A recipe from a mapping (a parsed file), checked as ``plan_run`` checks a run (models against
        ``backend``, or the recipe's, or the environment's): ValueError naming ``where`` and the bad key or value,
        an unknown key with the list of known ones."""
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: a recipe must be a mapping of settings, got {value!r}")
        unknown = [k for k in value if k not in RECIPE_KEYS]
        if unknown:
            raise ValueError(f"{where}: unknown key {unknown[0]!r}; a recipe's keys are: {', '.join(RECIPE_KEYS)}")
        given = value.get("backend")
        if given is not None and not isinstance(given, str):
            raise ValueError(f"{where}: backend must be 'local', 'together' or a base URL, got {given!r}")
        recipe = cls(
            value.get("proposers"),
            value.get("aggregator"),
            value.get("layers"),
            given,
            {k: v for k, v in value.items() if k not in RUN_KEYS},
            name,
        )
        try:
            recipe.plan(_PLACEHOLDER, backend=backend)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        return recipe

    @classmethod
    def from_file(
        cls, path: str | os.PathLike, *, backend: Backend | str | None = None, name: str | None = None
    ) -> Recipe:
        """A recipe file (JSON for ``.json``, else YAML), checked (see :meth:`from_dict`); a name given twice in
        one mapping is refused, naming its lines."""
        path = Path(path)
        return cls.from_dict(load_file(path, "recipe"), where=str(path), backend=backend, name=name)

    @classmethod
    def from_plan(cls, plan: RunPlan) -> Recipe:
        """The recipe of a checked plan: its models, layers, backend (by kind or URL) and settings that differ
        from the defaults (the cache only when it is off: a resolved cache path belongs to this machine)."""
        same = all(models == plan.proposers[0] for models in plan.proposers)
        proposers = (list(plan.proposers[0]) if same else [list(p) for p in plan.proposers]) if plan.proposers else []
        backend = plan.backend.base_url if plan.backend.kind == "url" else plan.backend.kind
        options = plan.settings.to_dict()
        if options.get("cache") is not False:
            options.pop("cache", None)
        return cls(proposers, plan.aggregator, plan.layers, backend, options)


def resolve_recipe(recipe: Recipe | str | os.PathLike | None, backend: Backend | str | None = None) -> Recipe | None:
    """A recipe given as an object or a file path (None stays None)."""
    if recipe is None or isinstance(recipe, Recipe):
        return recipe
    return Recipe.from_file(recipe, backend=get_backend(backend) if backend is not None else None)
