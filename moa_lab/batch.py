"""Many MoA runs over a dataset: a global limit on concurrent calls, a progress bar, one JSONL line per prompt.

The output file is the checkpoint (its format: :mod:`moa_lab.files`): run again with the same output and the
prompts already there are skipped, once the settings and every id's prompt are checked to be the same. Failed
prompts are written with their error and retried only with ``retry_failed=True`` (their old lines are removed
first: never two lines for one id).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from . import limits
from .display import progress_bar
from .files import BatchItem, OutputError, OutputFile, probe, prompt_hash, read_prompts
from .moa import run_plan
from .budget import Budget, BudgetExceeded, check_budget
from .plan import BUDGET_SETTINGS, RunPlan, from_plan, plan_run
from .records import MoAError, MoAResult, layers_dict, trace_dict
from .usage import Usage, get_prices, usage
from .validation import check_output_path


def parse_shard(shard: str | Sequence[int] | None) -> tuple[int, int] | None:
    """``"I/N"`` or ``(I, N)``: this machine takes the prompts whose :func:`prompt_hash` is I modulo N
    (0 <= I < N). The key is the prompt's text, not its position: adding or removing prompts moves no other
    prompt to another shard."""
    if shard is None:
        return None
    try:
        i, n = (int(x) for x in (shard.split("/") if isinstance(shard, str) else shard))
    except (ValueError, TypeError):
        raise ValueError(f"shard must be 'I/N' (e.g. '0/4'), got {shard!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"shard {i}/{n}: I must be from 0 to N-1 ({n - 1})")
    return i, n


def in_shard(item: BatchItem, shard: tuple[int, int] | None) -> bool:
    return shard is None or int(prompt_hash(item.prompt), 16) % shard[1] == shard[0]


def check_batch_settings(concurrency: int = 16, rps: float | None = None, shard=None):
    """Check a batch's own settings (ValueError naming a bad one); returns its call limiter and its shard."""
    return limits.CallLimiter(concurrency, rps), parse_shard(shard)


def settings_id(plan: RunPlan) -> str:
    """A short fingerprint of a batch's settings (everything but the prompt), and of what answers each model
    (its server's URL, or the embedded server's model file: :meth:`moa_lab.Backend.scope`); stored in every
    output line, so that a resume with other settings, or other models behind the same names, is refused."""
    settings = {k: v for k, v in plan.to_dict().items() if k != "prompt" and k not in BUDGET_SETTINGS}
    models = sorted({m for layer in plan.proposers for m in layer} | {plan.aggregator})
    settings["served_by"] = {model: plan.backend.scope(model) for model in models}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class BatchSummary:
    """What one ``run_batch`` call did. ``usage`` covers the prompts run now (not the skipped ones)."""

    path: Path
    total: int
    skipped: int = 0
    done: int = 0
    failed: int = 0
    seconds: float = 0.0
    usage: Usage = field(default_factory=Usage)
    left: int = 0  # prompts not run because the budget was reached (run again, with a larger budget, for them)

    def __str__(self) -> str:
        left = f", {self.left} left by the budget" if self.left else ""
        return (f"{self.path}: {self.done} done, {self.failed} failed, {self.skipped} already there{left}, of "
                f"{self.total} prompts, in {self.seconds:.1f}s; {self.usage}")


def _failed_trace(error: BaseException) -> list:
    """The calls a failed run made: its finished layers, then the last layer's calls (if it got there)."""
    layers = getattr(error, "layers", [])
    steps = getattr(error, "steps", []) or [c for c in getattr(error, "failures", []) if c.role == "aggregator"]
    return [c for layer in layers for c in layer.calls] + steps


def _line(item: BatchItem, sid: str, result: MoAResult | None, error: BaseException | None, seconds: float,
          prices) -> dict:
    """One output line: what ``MoAResult.to_dict`` holds, with the id, status and error; for a failed prompt
    the layers computed before the failure and any partial final text."""
    if result is not None:
        final, layers, trace = result.text, result.layers, result.trace
    else:
        final, layers, trace = getattr(error, "partial", ""), getattr(error, "layers", []), _failed_trace(error)
    return {"id": item.id, "prompt": item.prompt, "prompt_hash": prompt_hash(item.prompt),
            "status": "ok" if error is None else "failed",
            "error": None if error is None else (str(error) if isinstance(error, MoAError)
                                                 else f"{type(error).__name__}: {error}"),
            "final": final, "seconds": seconds, "settings_id": sid,
            **(result.decisions() if result is not None else {}),
            **layers_dict(layers, prices), **trace_dict(trace, prices)}


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
    engine: str = "asyncio",
    ray_address: str | None = "auto",
    actors: int = 2,
    actor_concurrency: int = 8,
    block_size: int = 64,
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
    the cache), and :class:`~moa_lab.budget.BudgetExceeded` is raised with the ``summary``.

    ``engine="ray"`` (``pip install 'moa_lab[ray]'``): the batch runs on a Ray cluster (``ray_address``:
    ``"auto"``, a running cluster or else a local one; ``"local"``; or an address), in ``actors`` actors of
    ``actor_concurrency`` calls at once each, ``block_size`` prompts per block; ``out`` is then a folder of block
    files (see :mod:`moa_lab.ray_batch`); ``on_result`` gets each block's totals; ``concurrency``, ``rps`` and
    ``shard`` do not apply.
    """
    proposers, aggregator, settings = from_plan(plan, proposers, aggregator, settings)
    items = read_prompts(prompts)
    first = plan_run(items[0].prompt, proposers, aggregator, **settings)
    plans = {item.id: replace(first, prompt=item.prompt) for item in items}  # each prompt was checked when read
    limiter, picked = check_batch_settings(concurrency, rps, shard)
    prices = get_prices(prices)  # checked before any call, resolved once for every line
    longest = max(items, key=lambda item: len(item.prompt.encode("utf-8", "surrogatepass")))
    check_budget(plans[longest.id], prices, runs=len(items))
    budget = Budget.of(first.settings, prices)
    if engine == "ray":
        return await _ray(items, out, first, prices, budget, shard, ray_address, actors, actor_concurrency,
                          block_size, progress, retry_failed, on_result)
    if engine != "asyncio":
        raise ValueError(f"engine must be 'asyncio' (this process) or 'ray' (a Ray cluster), got {engine!r}")
    path = check_output_path(out)
    if path is None:
        raise ValueError("out must be a file path for the results (JSONL)")
    probe(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    output = OutputFile(path)
    try:
        sid = settings_id(first)
        existing = _resumable(output, items, sid)
        mine = [item for item in items if in_shard(item, picked)]
        return await _run(mine, sid, existing, plans, output, limiter, retry_failed, progress, prices, on_result,
                          budget)
    finally:
        output.close()


async def _ray(items, out, first, prices, budget, shard, address, actors, actor_concurrency, block_size,
               progress, retry_failed, on_result) -> BatchSummary:
    from . import ray_batch

    outdir = ray_batch.check_outdir(out)
    ray_batch.check_ray_options(actors, actor_concurrency, block_size, address)
    if shard is not None:
        raise ValueError("shard is for machines without Ray: with engine='ray' the cluster takes every prompt")
    if importlib.util.find_spec("ray") is None:
        raise ValueError("engine='ray' needs Ray: pip install 'moa_lab[ray]'")
    first.backend.portable()  # a key that cannot reach the workers is refused now, before anything is written
    summary = BatchSummary(outdir, len(items))
    return await ray_batch.run_on_ray(items, outdir, first, settings_id(first), summary, address=address, actors=actors,
                                      actor_concurrency=actor_concurrency, block_size=block_size, progress=progress,
                                      prices=prices, retry_failed=retry_failed, budget=budget, on_result=on_result)


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _resumable(output: OutputFile, items: list[BatchItem], sid: str) -> list[dict]:
    """The output's lines, if this batch may go on from them (see :func:`check_resume`)."""
    return check_resume(output.existing(), output.path, items, sid)


def check_resume(existing: list[dict], where: Path, items: list[BatchItem], sid: str) -> list[dict]:
    """``existing`` (the lines in ``where``, a file or a folder), if this batch may go on from them: the same
    settings, and the same prompt under every id (checked against the whole input, every shard's prompts
    included); else ValueError saying what differs."""
    other = sorted({str(v.get("settings_id")) for v in existing} - {sid})
    if other:
        raise ValueError(f"{str(where)!r} holds results made with other settings, or with other servers or "
                         f"model files behind the same model names (settings_id {', '.join(other)}, now {sid}); "
                         "give a new output file, or the same settings to resume")
    order = {item.id: (position, item) for position, item in enumerate(items)}
    changed = []
    for line in existing:
        position, item = order.get(str(line["id"]), (None, None))
        written = line.get("prompt_hash") or prompt_hash(str(line.get("prompt")))
        if item is not None and written != prompt_hash(item.prompt):
            changed.append((position, line, item))
    if changed:
        _, line, item = min(changed, key=lambda c: c[0])  # the first in the input
        raise ValueError(
            f"{str(where)!r} holds answers to other prompts under the same ids ({len(changed)} id(s) differ): "
            f"id {item.id!r} was {_short(str(line.get('prompt')))} there but is {_short(item.prompt)} in "
            f"{item.where}. Prompts without an \"id\" are numbered by their line, so adding or removing a line "
            "renumbers the ones after it. Give a new output file (answers made before come from the cache, with "
            "no call), or give every prompt its own \"id\"")
    return existing


async def _run(items, sid: str, existing, plans: dict[str, RunPlan], output: OutputFile, limiter, retry_failed, progress,
               prices, on_result, budget: Budget | None = None):
    first = plans[items[0].id] if items else next(iter(plans.values()))
    if retry_failed and any(v["status"] != "ok" for v in existing):
        existing = [v for v in existing if v["status"] == "ok"]
        output.rewrite(existing)
    done_ids = {v["id"] for v in existing}
    todo = [item for item in items if item.id not in done_ids]
    summary = BatchSummary(output.path, len(items), skipped=len(items) - len(todo))
    bar = progress_bar(len(items), summary.skipped, progress)
    await first.backend.ready()
    queue: asyncio.Queue = asyncio.Queue()
    for item in todo:
        queue.put_nowait(item)
    t0 = time.perf_counter()
    reached: list[BudgetExceeded] = []

    async def worker() -> None:
        while not queue.empty() and not reached:
            item = queue.get_nowait()
            result = error = None
            started = time.perf_counter()
            try:
                result = await run_plan(plans[item.id], stream=False, budget=budget)
            except BudgetExceeded as exc:  # no line: the prompt is left for a rerun (its calls are cached)
                reached.append(exc)
                summary.usage.add(usage(_failed_trace(exc), prices))
                continue
            except Exception as exc:  # noqa: BLE001 - a failed prompt is a line with its error, not the batch's end
                error = exc
            line = _line(item, sid, result, error, time.perf_counter() - started, prices)
            try:
                output.append(line)
            except OSError as exc:
                written = summary.done + summary.failed
                raise OutputError(exc.errno, f"cannot write to {str(output.path)!r}: {exc.strerror}; the batch "
                                  f"stopped ({written} new lines kept, {summary.skipped} there before); run it again "
                                  "to go on") from None
            summary.done += error is None
            summary.failed += error is not None
            summary.usage.add(usage(result.trace if result else _failed_trace(error), prices))
            if bar is not None:
                bar.set_postfix(done=summary.done, failed=summary.failed,
                                tokens=summary.usage.prompt_tokens + summary.usage.completion_tokens, refresh=False)
                bar.update(1)
            if on_result is not None:
                on_result(line)

    token = limits.current.set(limiter)
    try:
        await _all_or_none([worker() for _ in range(min(limiter.concurrency, len(todo)))])
    finally:
        limits.current.reset(token)
        summary.seconds = time.perf_counter() - t0
        if bar is not None:
            bar.close()
    if reached:
        summary.left = len(todo) - summary.done - summary.failed
        error = BudgetExceeded(f"the batch stopped at its budget ({budget}): {summary.done} prompt(s) done, "
                               f"{summary.failed} failed, {summary.left} left for a rerun with a larger budget "
                               f"(their finished calls come from the cache); first refused: {reached[0].args[0]}")
        error.budget, error.summary = budget, summary
        raise error
    return summary


async def _all_or_none(coros) -> None:
    """Run the workers; the first that raises (an output that cannot be written, on_result raising) stops the
    others at once: no call is made, and no line written, after it."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    if not tasks:
        return
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()


def run_batch_sync(*args, **kwargs) -> BatchSummary:
    """:func:`run_batch` from synchronous code (a script, or a cell without ``await``)."""
    from ._sync import run_sync

    return run_sync(run_batch(*args, **kwargs))
