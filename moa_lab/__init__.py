"""moa_lab: Mixture-of-Agents, step by step, on bundled local models or any OpenAI-compatible backend.

Async first (``await run_moa(...)`` in a notebook cell); ``*_sync`` forms for plain scripts.
"""

from __future__ import annotations

from moa_lab._sync import run_sync
from moa_lab.backends import LOCAL_AGGREGATOR, LOCAL_PROPOSERS, SEED_AGGREGATOR, SEED_PROPOSERS, Backend, get_backend
from moa_lab.budget import BudgetExceeded
from moa_lab.cache import ResponseCache, get_cache
from moa_lab.engine.local import BUNDLED_MODELS, LocalServer, LocalServerError
from moa_lab.estimate import Estimate, estimate
from moa_lab.limits import CallLimiter, call_limits
from moa_lab.moa import (
    Aggregation,
    aggregate,
    call_seed,
    combine_answers,
    early_stop_reason,
    run_layer,
    run_moa,
    run_plan,
)
from moa_lab.plan import RunPlan, plan_run
from moa_lab.prompts import (
    AGGREGATOR_PROMPT,
    AGGREGATOR_PROMPT_EN,
    AGGREGATOR_PROMPT_ZH,
    build_messages,
    references_prompt,
)
from moa_lab.recipe import Recipe
from moa_lab.records import CallRecord, Combination, LayerResult, MoAError
from moa_lab.results import MoAResult
from moa_lab.runs.batch import BatchSummary, run_batch, run_batch_sync
from moa_lab.runs.files import OutputError, read_prompts, read_results, results_frame
from moa_lab.settings import DEFAULTS, Settings
from moa_lab.trace import format_trace, trace_rows
from moa_lab.usage import Usage, get_prices, set_prices
from moa_lab.validation import check_output_path

__version__ = "0.1.0"


def run_moa_sync(*args, **kwargs) -> MoAResult:
    """:func:`run_moa` from synchronous code (a script, or a Jupyter cell without ``await``)."""
    return run_sync(run_moa(*args, **kwargs))


def run_layer_sync(*args, **kwargs) -> LayerResult:
    """:func:`run_layer` from synchronous code."""
    return run_sync(run_layer(*args, **kwargs))


__all__ = [
    "Recipe",
    "BatchSummary",
    "BudgetExceeded",
    "CallLimiter",
    "Estimate",
    "OutputError",
    "ResponseCache",
    "Usage",
    "call_limits",
    "estimate",
    "get_cache",
    "get_prices",
    "read_prompts",
    "read_results",
    "results_frame",
    "run_batch",
    "run_batch_sync",
    "set_prices",
    "Aggregation",
    "AGGREGATOR_PROMPT",
    "AGGREGATOR_PROMPT_EN",
    "AGGREGATOR_PROMPT_ZH",
    "Backend",
    "BUNDLED_MODELS",
    "CallRecord",
    "Combination",
    "DEFAULTS",
    "LayerResult",
    "LOCAL_AGGREGATOR",
    "LOCAL_PROPOSERS",
    "LocalServer",
    "LocalServerError",
    "MoAError",
    "MoAResult",
    "RunPlan",
    "SEED_AGGREGATOR",
    "SEED_PROPOSERS",
    "Settings",
    "aggregate",
    "build_messages",
    "call_seed",
    "check_output_path",
    "combine_answers",
    "early_stop_reason",
    "format_trace",
    "get_backend",
    "plan_run",
    "references_prompt",
    "run_layer",
    "run_layer_sync",
    "run_moa",
    "run_moa_sync",
    "run_plan",
    "run_sync",
    "trace_rows",
]
