"""What a batch runs, whichever engine schedules it: the prompts of a batch (or of a Ray block) as MoA runs under
one call limit and budget, one output line per prompt, written when it finishes; the checks that make a resume
exactly-once (:func:`check_resume`); the settings id; shards. :func:`moa_lab.runs.run_batch` is the entry point.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from moa_lab import _limits as limits
from moa_lab._budget import Budget, BudgetExceeded
from moa_lab._conversation import last_user, prompt_hash, prompt_text
from moa_lab._plan import BUDGET_SETTINGS, RunPlan
from moa_lab._records import MoAError
from moa_lab._rendering import progress_bar
from moa_lab._results import MoAResult, layers_dict, trace_dict
from moa_lab._usage import Usage, usage
from moa_lab.moa import run_plan
from moa_lab.runs._files import BatchItem, OutputError, OutputFile


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
        return (
            f"{self.path}: {self.done} done, {self.failed} failed, {self.skipped} already there{left}, of "
            f"{self.total} prompts, in {self.seconds:.1f}s; {self.usage}"
        )


def _failed_trace(error: BaseException) -> list:
    """The calls a failed run made: its finished layers, then the last layer's calls (if it got there)."""
    layers = getattr(error, "layers", [])
    steps = getattr(error, "steps", []) or [c for c in getattr(error, "failures", []) if c.role == "aggregator"]
    return [c for layer in layers for c in layer.calls] + steps


def _line(
    item: BatchItem, sid: str, result: MoAResult | None, error: BaseException | None, seconds: float, prices
) -> dict:
    """One output line: what ``MoAResult.to_dict`` holds, with the id, status and error; for a failed prompt
    the layers computed before the failure and any partial final text."""
    if result is not None:
        final, layers, trace = result.text, result.layers, result.trace
    else:
        assert error is not None  # a line has a result or an error
        final, layers, trace = getattr(error, "partial", ""), getattr(error, "layers", []), _failed_trace(error)
    return {
        "id": item.id,
        "prompt": last_user(item.prompt),  # a conversation's last user turn; the whole one in "messages"
        **({} if isinstance(item.prompt, str) else {"messages": [dict(m) for m in item.prompt]}),
        "prompt_hash": prompt_hash(item.prompt),
        "status": "ok" if error is None else "failed",
        "error": None
        if error is None
        else (str(error) if isinstance(error, MoAError) else f"{type(error).__name__}: {error}"),
        "final": final,
        "seconds": seconds,
        "settings_id": sid,
        **(result.decisions() if result is not None else {}),
        # what the final answer took from each reference (moa_lab._attribution), by the run's similarity
        **({"attribution": result.attribution().columns()} if result is not None else {}),
        **layers_dict(layers, prices),
        **trace_dict(trace, prices),
    }


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def resumable(output: OutputFile, items: list[BatchItem], sid: str) -> list[dict]:
    """The output's lines, if this batch may go on from them (see :func:`check_resume`)."""
    return check_resume(output.existing(), output.path, items, sid)


def check_resume(existing: list[dict], where: Path, items: list[BatchItem], sid: str) -> list[dict]:
    """``existing`` (the lines in ``where``, a file or a folder), if this batch may go on from them: the same
    settings, and the same prompt under every id (checked against the whole input, every shard's prompts
    included); else ValueError saying what differs."""
    other = sorted({str(v.get("settings_id")) for v in existing} - {sid})
    if other:
        raise ValueError(
            f"{str(where)!r} holds results made with other settings, or with other servers or "
            f"model files behind the same model names (settings_id {', '.join(other)}, now {sid}); "
            "give a new output file, or the same settings to resume"
        )
    order = {item.id: (position, item) for position, item in enumerate(items)}
    changed = []
    for line in existing:
        position, item = order.get(str(line["id"]), (None, None))
        written = line.get("prompt_hash") or prompt_hash(str(line.get("prompt")))
        if item is not None and written != prompt_hash(item.prompt):
            changed.append((position, line, item))
    if changed:
        _, line, item = min(changed, key=lambda c: c[0] or 0)  # the first in the input (each has a position)
        raise ValueError(
            f"{str(where)!r} holds answers to other prompts under the same ids ({len(changed)} id(s) differ): "
            f"id {item.id!r} was {_short(str(line.get('prompt')))} there but is {_short(prompt_text(item.prompt))} in "
            f'{item.where}. Prompts without an "id" are numbered by their line, so adding or removing a line '
            "renumbers the ones after it. Give a new output file (answers made before come from the cache, with "
            'no call), or give every prompt its own "id"'
        )
    return existing


@dataclass(frozen=True)
class BatchJob:
    """One batch's work as an engine hands it to :func:`run_items`: its prompts, each one's plan (``plans`` by
    id), the settings id, the prices, and what the whole batch shares (its budget, whether failed lines are run
    again, the progress bar, the per-line callback)."""

    items: list[BatchItem]
    sid: str
    plans: dict[str, RunPlan]
    prices: dict
    budget: Budget | None = None
    retry_failed: bool = False
    progress: bool = False
    on_result: Callable[[dict], None] | None = None


async def run_items(job: BatchJob, output: OutputFile, limiter, existing: Sequence[dict] = ()):
    """Run ``job``'s prompts not in ``existing`` (the lines already in ``output``) under ``limiter``, appending a
    line to ``output`` as each finishes. Cost: each plan's calls, at most ``limiter.concurrency`` at once."""
    items, sid, plans, prices, budget = job.items, job.sid, job.plans, job.prices, job.budget
    retry_failed, progress, on_result = job.retry_failed, job.progress, job.on_result
    existing = list(existing)
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
                raise OutputError(
                    exc.errno,
                    f"cannot write to {str(output.path)!r}: {exc.strerror}; the batch "
                    f"stopped ({written} new lines kept, {summary.skipped} there before); run it again "
                    "to go on",
                ) from None
            summary.done += error is None
            summary.failed += error is not None
            trace = result.trace if result is not None else _failed_trace(error) if error is not None else []
            summary.usage.add(usage(trace, prices))
            if bar is not None:
                bar.set_postfix(
                    done=summary.done,
                    failed=summary.failed,
                    tokens=summary.usage.prompt_tokens + summary.usage.completion_tokens,
                    refresh=False,
                )
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
        error = BudgetExceeded(
            f"the batch stopped at its budget ({budget}): {summary.done} prompt(s) done, "
            f"{summary.failed} failed, {summary.left} left for a rerun with a larger budget "
            f"(their finished calls come from the cache); first refused: {reached[0].args[0]}"
        )
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
