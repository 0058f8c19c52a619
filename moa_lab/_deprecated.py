"""The import paths of the release before this one, kept one release: each still works and warns
(``DeprecationWarning``) naming its new path. Remove this module, and ``moa_lab.__getattr__``, in the next release.

Modules that were public in practice are private now (``moa_lab._cache``...): import what they had from the public
packages instead (``moa_lab``, ``moa_lab.runs``, ``moa_lab.evaluate``...), as the API reference lists them."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

#: Old module path → the module that has its code now.
MODULES = {
    "moa_lab.answers": "moa_lab._answers",
    "moa_lab.attribution": "moa_lab._attribution",
    "moa_lab.backends": "moa_lab._backends",
    "moa_lab.budget": "moa_lab._budget",
    "moa_lab.cache": "moa_lab._cache",
    "moa_lab.calls": "moa_lab._calls",
    "moa_lab.chat": "moa_lab._terminal_chat",
    "moa_lab.cli": "moa_lab._cli",
    "moa_lab.combine": "moa_lab._combine",
    "moa_lab.config_files": "moa_lab._config_files",
    "moa_lab.conversation": "moa_lab._conversation",
    "moa_lab.endpoint": "moa_lab.serve",
    "moa_lab.endpoint._endpoint": "moa_lab.serve._endpoint",
    "moa_lab.endpoint._forms": "moa_lab.serve._forms",
    "moa_lab.endpoint._recipes": "moa_lab.serve._recipes",
    "moa_lab.endpoint._records": "moa_lab.serve._run_records",
    "moa_lab.endpoint._tasks": "moa_lab.serve._tasks",
    "moa_lab.engine.local": "moa_lab.engine._local",
    "moa_lab.engine.models": "moa_lab.engine._models",
    "moa_lab.engine.pack": "moa_lab.engine._pack",
    "moa_lab.engine.policy": "moa_lab.engine._policy",
    "moa_lab.engine.server": "moa_lab.serve._front",
    "moa_lab.engine.supervisor": "moa_lab.engine._supervisor",
    "moa_lab.engine.worker": "moa_lab.engine._worker",
    "moa_lab.estimate": "moa_lab._estimate",
    "moa_lab.evaluate.alpaca": "moa_lab.evaluate._alpaca",
    "moa_lab.evaluate.benchmark": "moa_lab.evaluate._benchmark",
    "moa_lab.evaluate.benchmark_report": "moa_lab.evaluate._benchmark_report",
    "moa_lab.evaluate.checkable": "moa_lab.evaluate._checkable",
    "moa_lab.evaluate.configs": "moa_lab.evaluate._configs",
    "moa_lab.evaluate.formats": "moa_lab.evaluate._formats",
    "moa_lab.evaluate.generate": "moa_lab.evaluate._generate",
    "moa_lab.evaluate.judge": "moa_lab.evaluate._judge",
    "moa_lab.evaluate.mt_bench": "moa_lab.evaluate._mt_bench",
    "moa_lab.evaluate.pipeline": "moa_lab.evaluate._pipeline",
    "moa_lab.evaluate.plots": "moa_lab.evaluate._plots",
    "moa_lab.evaluate.report": "moa_lab.evaluate._report",
    "moa_lab.evaluate.reuse": "moa_lab.evaluate._reuse",
    "moa_lab.evaluate.samples": "moa_lab.evaluate._samples",
    "moa_lab.evaluate.significance": "moa_lab.evaluate._significance",
    "moa_lab.evaluate.stats": "moa_lab.evaluate._stats",
    "moa_lab.evaluate.tasks": "moa_lab.evaluate._tasks",
    "moa_lab.jsonl": "moa_lab._jsonl",
    "moa_lab.limits": "moa_lab._limits",
    "moa_lab.logs": "moa_lab._logs",
    "moa_lab.openai_api": "moa_lab.serve._openai_api",
    "moa_lab.plan": "moa_lab._plan",
    "moa_lab.recipe": "moa_lab._recipe",
    "moa_lab.records": "moa_lab._records",
    "moa_lab.rendering": "moa_lab._rendering",
    "moa_lab.results": "moa_lab._results",
    "moa_lab.runs.batch": "moa_lab.runs._batch",
    "moa_lab.runs.files": "moa_lab.runs._files",
    "moa_lab.runs.ray": "moa_lab.runs._ray",
    "moa_lab.settings": "moa_lab._settings",
    "moa_lab.similarity": "moa_lab._similarity",
    "moa_lab.sweep": "moa_lab.sweeps",
    "moa_lab.sweeps.kernel": "moa_lab.sweeps._kernel",
    "moa_lab.sweeps.plan": "moa_lab.sweeps._grid",
    "moa_lab.sweeps.results": "moa_lab.sweeps._table",
    "moa_lab.sweeps.run": "moa_lab.sweeps._run",
    "moa_lab.trace": "moa_lab._trace",
    "moa_lab.unicode": "moa_lab._unicode",
    "moa_lab.usage": "moa_lab._usage",
    "moa_lab.validation": "moa_lab._validation",
    "moa_lab.views.display": "moa_lab.views._display",
    "moa_lab.views.widgets": "moa_lab.views._playground",
    "moa_lab.widgets": "moa_lab.views",
}

#: Names that ``moa_lab`` exported and no longer does → where they are now.
NAMES = {
    "AGGREGATOR_PROMPT": "moa_lab.prompts",
    "AGGREGATOR_PROMPT_EN": "moa_lab.prompts",
    "AGGREGATOR_PROMPT_ZH": "moa_lab.prompts",
    "BUNDLED_MODELS": "moa_lab.engine",
    "BatchSummary": "moa_lab.runs",
    "CallLimiter": "moa_lab.runs",
    "Combination": "moa_lab.moa",
    "Aggregation": "moa_lab.moa",
    "DEFAULTS": "moa_lab.moa",
    "LOCAL_AGGREGATOR": "moa_lab.moa",
    "LOCAL_PROPOSERS": "moa_lab.moa",
    "LocalServer": "moa_lab.engine",
    "LocalServerError": "moa_lab.engine",
    "OutputError": "moa_lab.runs",
    "Settings": "moa_lab.moa",
    "build_messages": "moa_lab.prompts",
    "call_limits": "moa_lab.runs",
    "call_seed": "moa_lab.moa",
    "check_output_path": "moa_lab.runs",
    "combine_answers": "moa_lab.moa",
    "early_stop_reason": "moa_lab.moa",
    "format_trace": "moa_lab.views",
    "get_prices": "moa_lab.runs",
    "read_prompts": "moa_lab.runs",
    "references_prompt": "moa_lab.prompts",
    "results_frame": "moa_lab.runs",
    "run_sync": "moa_lab.moa",
    "trace_rows": "moa_lab.views",
}
#: Renamed: old name → (module, new name).
RENAMED = {
    "SEED_AGGREGATOR": ("moa_lab.moa", "REFERENCE_AGGREGATOR"),
    "SEED_PROPOSERS": ("moa_lab.moa", "REFERENCE_PROPOSERS"),
}


def moved_name(name: str) -> object:
    """``moa_lab.NAME`` for a name it no longer exports: the object, with a DeprecationWarning naming its path."""
    if name in NAMES:
        where, new = NAMES[name], name
    elif name in RENAMED:
        where, new = RENAMED[name]
    else:
        raise AttributeError(f"module 'moa_lab' has no attribute {name!r}")
    warnings.warn(
        f"moa_lab.{name} moved: use {where}.{new} (the old name goes in the next release)",
        DeprecationWarning,
        stacklevel=3,
    )
    return getattr(importlib.import_module(where), new)


class _OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module path and gives the module at its new path (the same module object), warning once."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: ARG002 - the finder protocol
        if fullname not in MODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec) -> ModuleType:
        new = MODULES[spec.name]
        public = new if not any(p.startswith("_") for p in new.split(".")) else new.rpartition(".")[0]
        warnings.warn(
            f"{spec.name} is no longer a public module: import its names from {public} "
            f"(the old path goes in the next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        pass


def install() -> None:
    if not any(isinstance(f, _OldPaths) for f in sys.meta_path):
        sys.meta_path.insert(0, _OldPaths())  # before the path finder, which would load a second copy
