"""Many MoA runs over a dataset: a global limit on concurrent calls, a progress bar, one JSONL line per prompt.

The output file is the checkpoint (its format: :mod:`moa_lab.runs._files`): run again with the same output and the
prompts already there are skipped, once the settings and every id's prompt are checked to be the same. Failed
prompts are written with their error and retried only with ``retry_failed=True`` (their old lines are removed
first: never two lines for one id).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from moa_lab._budget import Budget
from moa_lab._conversation import prompt_key
from moa_lab._estimate import check_budget
from moa_lab._plan import RunPlan, from_plan, plan_run
from moa_lab._sync import synced
from moa_lab._usage import get_prices
from moa_lab._validation import check_output_path
from moa_lab.runs import _ray as ray
from moa_lab.runs._files import OutputFile, probe, read_prompts
from moa_lab.runs._ray import RayOptions
from moa_lab.runs._runner import (
    BatchJob,
    BatchSummary,
    check_batch_settings,
    in_shard,
    resumable,
    run_items,
    settings_id,
)


async def run_batch(
    prompts: str | os.PathLike | Iterable[str | Mapping],
    out: str | os.PathLike,
    proposers=None,
    aggregator: str | None = None,
    *,
    concurrency: int = 16,
    rps: float | None = None,
    shard: str | Sequence[int] | None = None,
    retry_failed: bool = False,
    progress: bool = True,
    prices: Mapping | None = None,
    on_result: Callable[[dict], None] | None = None,
    plan: RunPlan | None = None,
    engine: str | RayOptions = "asyncio",
    **settings: Any,
) -> BatchSummary:
    """Run an MoA for every prompt and append one JSON line per prompt to ``out`` as it finishes.

    ``prompts``: a JSONL or text file, or a list (see :func:`read_prompts`). ``settings``: those of
    :func:`moa_lab.run_moa` (``layers``, ``max_tokens``, ``quorum``, ``cache``, ``backend``, ...), checked
    before anything runs; ``plan``: a checked plan whose models, settings and backend every prompt uses (the
    arguments given change them). Cost: ``plan.calls`` model calls per prompt (none for cached answers), at most
    ``concurrency`` at once over the whole batch and at most ``rps`` started per second. Prompts already in
    ``out`` are skipped (failed ones are run again with ``retry_failed``); ``shard="I/N"`` runs one N-th.
    ``on_result`` gets each line as it is written. A failed prompt is written with its error and does not
    stop the batch. ``max_cost``/``max_tokens_total`` cap the whole batch (what this call spends): refused before
    any call if one prompt's run may not fit; once a call could cross it, no prompt starts and no call is made,
    the prompts cut short or not begun are left (no line: a rerun goes on with them, their finished calls from
    the cache), and :class:`~moa_lab._budget.BudgetExceeded` is raised with the ``summary``.

    ``engine="ray"`` or ``engine=RayOptions(...)`` (``pip install 'moa_lab[ray]'``): the batch runs on a Ray
    cluster as :class:`~moa_lab.runs.RayOptions` says (its address, actors, calls at once per actor, prompts per
    block); ``out`` is then a folder of block files (see :mod:`moa_lab.runs._ray`); ``on_result`` gets each
    block's totals; ``shard`` is refused there, and ``concurrency`` and ``rps`` do not apply (the actors set the
    calls at once).
    """
    engine = _engine(engine, settings)
    proposers, aggregator, settings = from_plan(plan, proposers, aggregator, settings)
    items = read_prompts(prompts)
    first = plan_run(items[0].prompt, proposers, aggregator, **settings)
    plans = {item.id: replace(first, prompt=item.prompt) for item in items}  # each prompt was checked when read
    limiter, picked = check_batch_settings(concurrency, rps, shard)
    prices = get_prices(prices)  # checked before any call, resolved once for every line
    longest = max(items, key=lambda item: len(prompt_key(item.prompt).encode("utf-8", "surrogatepass")))
    check_budget(plans[longest.id], prices, runs=len(items))
    budget = Budget.of(first.settings, prices)
    job = BatchJob(
        items,
        settings_id(first),
        plans,
        prices=dict(prices),
        budget=budget,
        retry_failed=retry_failed,
        progress=progress,
        on_result=on_result,
    )
    if isinstance(engine, RayOptions):
        if shard is not None:
            raise ValueError("shard is for machines without Ray: with engine='ray' the cluster takes every prompt")
        return await _ray(job, out, first, engine)
    path = check_output_path(out)
    if path is None:
        raise ValueError("out must be a file path for the results (JSONL)")
    probe(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    output = OutputFile(path)
    try:
        existing = resumable(output, items, job.sid)
        mine = [item for item in items if in_shard(item, picked)]
        return await run_items(replace(job, items=mine), output, limiter, existing)
    finally:
        output.close()


#: ``run_batch``'s Ray keywords of the release before (now fields of RayOptions), accepted one more release.
_OLD_RAY_KEYWORDS = {
    "ray_address": "address",
    "actors": "actors",
    "actor_concurrency": "actor_concurrency",
    "block_size": "block_size",
}


def _engine(engine, settings: dict) -> str | RayOptions:
    """``engine`` checked: "asyncio", or the Ray engine's options (``"ray"``: the defaults)."""
    old = {new: settings.pop(name) for name, new in _OLD_RAY_KEYWORDS.items() if name in settings}
    if old:
        warnings.warn(
            f"run_batch({', '.join(sorted(old))}=...) is deprecated: pass engine=RayOptions(...) (the keywords go "
            "in the next release)",
            DeprecationWarning,
            stacklevel=3,
        )
    if engine == "ray":
        return RayOptions(**old)
    if isinstance(engine, RayOptions):
        return replace(engine, **old)
    if engine != "asyncio":
        raise ValueError(
            f"engine must be 'asyncio' (this process), 'ray' or RayOptions(...) (a Ray cluster), got {engine!r}"
        )
    return engine


async def _ray(job: BatchJob, out, first: RunPlan, options: RayOptions) -> BatchSummary:
    outdir = ray.check_outdir(out)
    if importlib.util.find_spec("ray") is None:
        raise ValueError("engine='ray' needs Ray: pip install 'moa_lab[ray]'")
    first.backend.portable()  # a key that cannot reach the workers is refused now, before anything is written
    summary = BatchSummary(outdir, len(job.items))
    return await ray.run_on_ray(job, outdir, first, summary, options)


run_batch_sync = synced(run_batch)
