"""An evaluation in one call, and what it will cost before it runs."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moa_lab._backends import get_backend
from moa_lab._estimate import estimate
from moa_lab._sync import synced
from moa_lab._usage import TEMPLATE_TOKENS_PER_MESSAGE, TEMPLATE_TOKENS_PER_REQUEST, get_prices
from moa_lab.evaluate._configs import Config, check_configs
from moa_lab.evaluate._generate import generate, plans
from moa_lab.evaluate._judge import JUDGE_PROMPT, check_judge, judge
from moa_lab.evaluate._report import EvalReport, summarize
from moa_lab.evaluate._tasks import Task, builtin_tasks, load_tasks


def as_tasks(tasks: Sequence[Task] | str | os.PathLike | Iterable[str | Mapping] | None) -> list[Task]:
    """Tasks as given, from a JSONL file or a list of prompts or dicts (:func:`load_tasks`), or None: the
    built-in 20 instructions and 12 questions."""
    if tasks is None:
        return builtin_tasks()
    if isinstance(tasks, Sequence) and tasks and all(isinstance(t, Task) for t in tasks):
        return list(tasks)
    return load_tasks(tasks)  # type: ignore[arg-type]  # a list of Task was returned above


@dataclass(frozen=True)
class EvalEstimate:
    """Before an evaluation: its model calls and an upper bound of their cost (None: some model has no price)."""

    answer_calls: int
    judge_calls: int
    max_cost: float | None

    def __str__(self) -> str:
        cost = "unknown (a model has no price)" if self.max_cost is None else f"≤ ${self.max_cost:.4f}"
        return (
            f"{self.answer_calls} calls for the answers + at most {self.judge_calls} judge calls, "
            f"cost {cost} (fewer where answers are already in the folder or the cache)"
        )


def estimate_evaluation(
    tasks: Sequence[Task],
    configs: Sequence[Config],
    *,
    judge_model: str,
    n_orders: int = 2,
    judge_max_tokens: int = 16,
    prices=None,
    **settings: Any,
) -> EvalEstimate:
    """The calls of :func:`evaluate` and an upper bound of their cost (as :func:`moa_lab._estimate` bounds them;
    a judge call reads the instruction and two answers of at most ``max_tokens`` each, or a reference answer's
    bytes). No model is called."""
    table, bound, priced, answer_calls = get_prices(prices), 0.0, True, 0
    checked = plans(tasks, configs, **settings)
    for plan in checked.values():
        cost = estimate([t.prompt for t in tasks], plan=plan, prices=table)
        answer_calls += cost.calls
        priced, bound = priced and cost.max_cost is not None, bound + (cost.max_cost or 0.0)
    open_tasks = [t for t in tasks if not t.objective]
    pairs = len(configs) - 1
    limit = max((plan.max_tokens or 0 for plan in checked.values()), default=0)
    with_reference = any(c.kind == "reference" for c in configs)
    price = table.get(judge_model)
    for task in open_tasks:
        answers = 2 * limit + (len((task.reference or "").encode()) if with_reference else 0)
        prompt = (
            len((JUDGE_PROMPT + task.prompt).encode())
            + answers
            + TEMPLATE_TOKENS_PER_REQUEST
            + TEMPLATE_TOKENS_PER_MESSAGE
        )
        bound += n_orders * pairs * (prompt * price[0] + judge_max_tokens * price[1]) / 1e6 if price else 0.0
    priced = priced and (price is not None or not open_tasks)
    return EvalEstimate(answer_calls, n_orders * pairs * len(open_tasks), bound if priced else None)


def _needs_matplotlib() -> None:
    """The report's plots need matplotlib: say so before the first call, not after the last."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise ImportError(
            "evaluate() draws its plots with matplotlib, which is not installed: "
            "pip install 'moa_lab[notebooks]' (or matplotlib); nothing was run"
        )


async def evaluate(
    tasks: Sequence[Task] | str | os.PathLike | None,
    configs: Sequence[Config],
    folder: str | os.PathLike,
    *,
    baseline: str | None = None,
    judge_model: str | None = None,
    n_orders: int = 2,
    judge_max_tokens: int = 16,
    concurrency: int = 8,
    progress: bool = True,
    **settings: Any,
) -> EvalReport:
    """The whole evaluation: :func:`generate`, :func:`judge`, :func:`summarize`, then ``report.save(folder)``.

    ``tasks``: a list of :class:`Task`, a JSONL file, or None for the built-in ones. ``baseline``: the name of
    the configuration the others are judged against (None: the first). ``settings``: those of
    :func:`moa_lab.run_moa` for the answers (``max_tokens``, ``temperature``, ``seed``, ``cache``, ``backend``...).
    Everything is checked before any call. Cost: ``config.calls`` calls per task and configuration, plus
    ``n_orders`` judge calls per open task and configuration other than the baseline, at most ``concurrency``
    at once; none for what ``folder`` or the cache already holds (run it again to go on after a stop)."""
    tasks = as_tasks(tasks)
    _needs_matplotlib()
    backend = get_backend(settings.pop("backend", None))
    configs, base = check_configs(configs, baseline, backend)
    same = {name: settings[name] for name in ("seed", "cache") if name in settings}  # the judge's too
    judge_model, _ = check_judge(judge_model, n_orders, backend=backend, max_tokens=judge_max_tokens, **same)
    runs = await generate(
        tasks, configs, folder, concurrency=concurrency, progress=progress, backend=backend, **settings
    )
    judgments = await judge(
        tasks,
        runs,
        base.name,
        judge_model=judge_model,
        n_orders=n_orders,
        concurrency=concurrency,
        backend=backend,
        progress=progress,
        max_tokens=judge_max_tokens,
        **same,
    )
    report = summarize(
        tasks, configs, runs, judgments, base.name, judge_model=judge_model, n_orders=n_orders, backend=backend
    )
    report.save(Path(folder))
    return report


evaluate_sync = synced(evaluate)
