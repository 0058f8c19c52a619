"""moa_lab: Mixture-of-Agents, step by step, on bundled local models or any OpenAI-compatible backend.

Async first (``await run_moa(...)`` in a notebook cell); ``*_sync`` forms for plain scripts. The names here are the
ones most users call or type; the rest live in one public folder per concept: :mod:`moa_lab.moa` (the algorithm's
steps and defaults), :mod:`moa_lab.prompts`, :mod:`moa_lab.runs` (batches and their files), :mod:`moa_lab.sweeps`,
:mod:`moa_lab.evaluate`, :mod:`moa_lab.views`, :mod:`moa_lab.engine` (the local models), :mod:`moa_lab.serve`.
"""

from moa_lab import _deprecated
from moa_lab._backends import Backend, get_backend
from moa_lab._budget import BudgetExceeded
from moa_lab._cache import ResponseCache, get_cache
from moa_lab._estimate import Estimate, estimate
from moa_lab._plan import RunPlan, plan_run
from moa_lab._recipe import Recipe
from moa_lab._records import CallRecord, LayerResult, MoAError
from moa_lab._results import MoAResult
from moa_lab._usage import Usage, set_prices
from moa_lab.moa import aggregate, run_layer, run_layer_sync, run_moa, run_moa_sync, run_plan
from moa_lab.runs import read_results, run_batch, run_batch_sync

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BudgetExceeded",
    "CallRecord",
    "Estimate",
    "LayerResult",
    "MoAError",
    "MoAResult",
    "Recipe",
    "ResponseCache",
    "RunPlan",
    "Usage",
    "aggregate",
    "estimate",
    "get_backend",
    "get_cache",
    "plan_run",
    "read_results",
    "run_batch",
    "run_batch_sync",
    "run_layer",
    "run_layer_sync",
    "run_moa",
    "run_moa_sync",
    "run_plan",
    "set_prices",
]

_deprecated.install()


def __getattr__(name: str) -> object:
    """The names this package exported in the release before, found where they are now (with a warning)."""
    return _deprecated.moved_name(name)
