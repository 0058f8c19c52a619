"""The Mixture-of-Agents algorithm (the reference script's recipe): proposer layers, then one aggregator.

Pure orchestration: the calls themselves are in :mod:`moa_lab._calls`, the servers in :mod:`moa_lab._backends`.

Over 300 lines: the algorithm's public steps (run_layer, aggregate, combine_answers, run_moa) and their docstrings,
readable in one file on purpose.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from moa_lab import _calls as calls
from moa_lab._backends import LOCAL_AGGREGATOR, LOCAL_PROPOSERS, REFERENCE_AGGREGATOR, REFERENCE_PROPOSERS, Backend
from moa_lab._budget import Budget, BudgetExceeded
from moa_lab._combine import Aggregation, LastStep, call_seed, combine_layer, reference_order
from moa_lab._conversation import PromptInput
from moa_lab._estimate import check_budget
from moa_lab._plan import RunPlan, plan_run, resolve
from moa_lab._records import CallRecord, Combination, LayerResult, MoAError
from moa_lab._results import MoAResult
from moa_lab._settings import DEFAULTS, Settings
from moa_lab._similarity import mean_similarity, measure_name, most_different, outliers
from moa_lab._sync import run_sync, synced
from moa_lab._validation import (
    check_answers,
    check_layer,
    check_min_ok,
    check_models,
    check_prompt,
    check_quorum,
    check_references,
)
from moa_lab.prompts import build_messages

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from moa_lab._settings import Options

__all__ = [
    "Aggregation",
    "Combination",
    "DEFAULTS",
    "LOCAL_AGGREGATOR",
    "LOCAL_PROPOSERS",
    "REFERENCE_AGGREGATOR",
    "REFERENCE_PROPOSERS",
    "Settings",
    "aggregate",
    "call_seed",
    "check_budget",
    "combine_answers",
    "early_stop_reason",
    "run_layer",
    "run_layer_sync",
    "run_moa",
    "run_moa_sync",
    "run_plan",
    "run_sync",
]

OnCall = Callable[[CallRecord], None]


async def run_layer(
    prompt: PromptInput,
    models: Sequence[str],
    *,
    previous: Sequence[str] | None = None,
    layer: int = 1,
    plan: RunPlan | Settings | None = None,
    backend: Backend | str | None = None,
    on_call: OnCall | None = None,
    **options: Unpack[Options],
) -> LayerResult:
    """One proposer layer: ``len(models)`` calls, all at once (concurrently).

    Layer 1 sends the user prompt alone; with ``previous`` (the answers of the layer before) every call
    also gets the system message ``system_prompt + "\\n" + "1. ...\\n2. ..."``. ``on_call`` is called with
    each call's record as soon as it finishes. Settings: ``plan``'s (a :class:`RunPlan` from ``plan_run``, or a
    :class:`Settings`; its backend too), changed by ``options`` (``temperature=``, ``max_tokens=``, ``seed=``,
    ``min_ok=``...: the :class:`Settings` fields; ``max_tokens=None``: the backend's default). Raises
    :class:`MoAError` if fewer than ``min_ok`` calls succeed (failed calls are kept in the result and
    in the error, never passed on as text).
    ``quorum=k``: move on as soon as k answers arrived; ``deadline``: move on after that many seconds.
    Either way the calls still running are cancelled and kept in the trace as stragglers.
    ``cache``: answers already cached are replayed without a call (see :mod:`moa_lab._cache`).
    ``roles``, ``shuffle_references`` and ``max_references`` (which answers the result passes on, in
    ``kept``) as in :class:`Settings`; ``max_cost``/``max_tokens_total``: this layer's budget.
    """
    backend, settings = resolve(plan, backend, options)
    question = check_prompt(prompt)
    models = check_models(models, backend, "models")
    check_min_ok(settings.min_ok, len(models))
    check_quorum(settings.quorum, len(models), settings.min_ok)
    check_references(replace(settings, combine="synthesize"), [len(models)])
    check_layer(layer)
    if previous is not None:
        check_answers(previous)
    budget = Budget.of(settings)
    if budget is not None:
        budget.check_priced(models)
    return await _layer(
        question, models, previous, layer=layer, backend=backend, settings=settings, on_call=on_call, budget=budget
    )


async def _layer(
    prompt, models, previous, layer: int, backend: Backend, settings: Settings, on_call, budget: Budget | None = None
) -> LayerResult:
    result = LayerResult(
        layer, [CallRecord(layer, i, m, seed=call_seed(settings.seed, layer, i)) for i, m in enumerate(models)]
    )
    roles = settings.roles or ()

    async def one(record: CallRecord) -> None:
        order = reference_order(len(previous or ()), record.seed, settings.shuffle_references)
        if previous:
            record.references = [i + 1 for i in order]
        role = roles[record.index] if record.index < len(roles) else None
        shown = [previous[i] for i in order] if previous else None
        messages = build_messages(prompt, shown, settings.instructions, role)
        await calls.complete(backend, record, messages, settings, budget, shown or ())
        if on_call is not None:
            on_call(record)

    tasks = [asyncio.ensure_future(one(record)) for record in result.calls]
    try:
        why = await _wait_for_answers(tasks, result.calls, settings.quorum, settings.deadline)
    finally:  # moving on early, or cancelled: the calls still running stop now
        late = [task for task in tasks if not task.done()]
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
    raised = None
    for task, record in zip(tasks, result.calls):
        if task.cancelled():  # a straggler: recorded as such, never passed on
            record.error, record.straggler = f"straggler: cancelled, {why}", True
            if on_call is not None:
                on_call(record)
        elif task.exception() is not None and raised is None:  # e.g. on_call raised (every one is retrieved)
            raised = task.exception()
    if isinstance(raised, BudgetExceeded):  # the calls that finished are kept
        raised.layers = [result]
    if raised is not None:
        raise raised
    if settings.filter_outliers is not None or settings.max_references is not None:
        await asyncio.to_thread(choose_references, result, settings)  # an embedding model may load: not on the loop
    if len(result.answers) < settings.min_ok:
        raise MoAError(
            f"layer {layer}: only {len(result.answers)} of {len(models)} proposers answered (min_ok={settings.min_ok})",
            failures=result.failures,
            layers=[result],
        )
    return result


def choose_references(result: LayerResult, settings: Settings) -> None:
    """Which of a layer's answers the next layer reads (``result.kept``; no model call): those ``filter_outliers``
    does not leave out (each with its reason in ``result.left_out``), then the ``max_references`` most different."""
    answers, models = result.answers, [c.model for c in result.calls if c.ok]
    chosen = list(range(len(answers)))
    if settings.filter_outliers is not None:
        for i, (mean, median) in outliers(answers, settings.filter_outliers, settings.similarity).items():
            result.left_out[i] = (
                f"left out answer {i + 1} ({models[i]}): {mean:.2f} alike to the others on average, the median "
                f"answer {median:.2f} (filter_outliers {settings.filter_outliers:g}, "
                f"{measure_name(settings.similarity)} similarity)"
            )
        chosen = [i for i in chosen if i not in result.left_out]
    if settings.max_references is not None and len(chosen) > settings.max_references:
        picked = most_different([answers[i] for i in chosen], settings.max_references, settings.similarity)
        chosen = [chosen[j] for j in picked]
    if len(chosen) < len(answers):
        result.kept = chosen


async def _wait_for_answers(tasks, records, quorum: int | None, deadline: float | None) -> str | None:
    """Wait for every call, or until ``quorum`` answers arrived or ``deadline`` seconds passed; say which."""
    loop = asyncio.get_running_loop()
    end = None if deadline is None else loop.time() + deadline
    pending = set(tasks)
    while pending:
        answered = sum(task.done() and record.ok for task, record in zip(tasks, records))
        if quorum is not None and answered >= quorum:
            return f"the layer had its quorum ({quorum} of {len(tasks)} answered)"
        left = None if end is None else end - loop.time()
        if left is not None and left <= 0:
            return f"the layer's deadline of {deadline:g}s passed"
        _, pending = await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
    return None


def aggregate(
    prompt: PromptInput,
    answers: Sequence[str],
    model: str,
    *,
    layer: int | None = None,
    stream: bool = True,
    plan: RunPlan | Settings | None = None,
    backend: Backend | str | None = None,
    **options: Unpack[Options],
) -> Aggregation:
    """The final call: ``model`` gets ``system_prompt`` with the numbered ``answers``, and the user prompt.
    (This is ``combine="synthesize"``; :func:`combine_answers` does every mode.)

    Returns an :class:`Aggregation` (iterate it for streamed chunks, or await it for the text). With an empty
    ``answers`` list the model answers the prompt alone (a single-model baseline). ``layer``: the
    aggregator's place in the run (its seed and trace depend on it); None: ``plan.layers`` when a plan is
    given, else 2 after one proposer layer (1 without answers), as in ``run_moa``. Settings as for
    :func:`run_layer` (``plan``, then ``options``). One model call (none when the answer is cached).
    """
    step = _last_step(prompt, answers, model, layer=layer, plan=plan, backend=backend, options=options)
    settings, layer = step.settings, step.layer
    record = CallRecord(layer, 0, step.model, role="aggregator", seed=call_seed(settings.seed, layer, 0))
    record.step = "synthesize"
    order = reference_order(len(step.answers), record.seed, settings.shuffle_references)
    record.references = [i + 1 for i in order] if step.answers else None
    shown = [step.answers[i] for i in order]
    messages = build_messages(step.prompt, shown, settings.instructions)
    return Aggregation(step.backend, record, messages, settings, stream, budget=step.budget, references=shown)


def _last_step(prompt, answers, model, layer, plan, backend, options) -> LastStep:
    """The checked inputs of the last layer's step."""
    backend, settings = resolve(plan, backend, options)
    prompt = check_prompt(prompt)
    (model,) = check_models([model], backend, "model")
    answers = check_answers(answers, allow_empty=True)
    if layer is None:
        layer = plan.layers if isinstance(plan, RunPlan) else 2 if answers else 1
    check_layer(layer)
    budget = Budget.of(settings)
    if budget is not None:
        budget.check_priced([model])
    return LastStep(prompt, answers, model, layer, backend=backend, settings=settings, budget=budget)


async def combine_answers(
    prompt: PromptInput,
    answers: Sequence[str],
    model: str,
    *,
    on_chunk: Callable[[str], None] | None = None,
    layer: int | None = None,
    stream: bool = True,
    plan: RunPlan | Settings | None = None,
    backend: Backend | str | None = None,
    on_call: OnCall | None = None,
    **options: Unpack[Options],
) -> Combination:
    """The last layer as its own step: ``answers`` combined by ``model`` the ``combine`` way of ``plan`` (or of
    ``options``): ``"synthesize"`` is :func:`aggregate`; see :mod:`moa_lab._combine` for the others. Returns a
    :class:`Combination` (``text``, ``calls``, ``chosen``, ``note``). ``layer`` as for :func:`aggregate`. Cost:
    one call (``synthesize``, ``select``), two (``rank``), one per window (``sequential``) or none (``vote``),
    one after another, the last streamed to ``on_chunk``."""
    step = _last_step(prompt, answers, model, layer=layer, plan=plan, backend=backend, options=options)
    check_references(replace(step.settings, max_references=None), [len(step.answers)] if step.answers else [])
    return await combine_layer(step, stream=stream, on_chunk=on_chunk, on_call=on_call)


async def run_moa(
    prompt: PromptInput | None = None,
    proposers: Sequence[str] | Sequence[Sequence[str]] | None = None,
    aggregator: str | None = None,
    *,
    stream: bool = True,
    messages: PromptInput | None = None,
    layers: int | None = None,
    settings: Settings | None = None,
    backend: Backend | str | None = None,
    on_call: OnCall | None = None,
    on_chunk: Callable[[str], None] | None = None,
    **options: Unpack[Options],
) -> MoAResult:
    """The whole MoA: ``layers - 1`` proposer layers, then the aggregator (``layers=3`` is the reference script's
    "3 layers": proposers, one refinement layer, aggregator; ``layers=1`` is the aggregator alone).

    ``prompt``: a string, or a conversation (OpenAI-style chat messages ending with the user's turn; also as
    ``messages=``): every call sees the whole conversation, the user's own system message first in its system
    message, before the references (see :mod:`moa_lab._conversation`).

    ``proposers``: one list for every layer, or one list per proposer layer (then ``layers`` may be
    left out). ``None`` for ``proposers``, ``aggregator`` or ``max_tokens``: the backend's default.
    ``options``: the :class:`Settings` fields (``temperature``, ``max_tokens``, ``seed``, ``timeout``,
    ``retries``, ``cache``, ``system_prompt``, ``min_ok``, ``quorum``, ``deadline``, and the variants':
    ``combine``, ``top_k``, ``window``, ``roles``, ``shuffle_references``, ``max_references``, ``early_stop``,
    ``similarity``, ``max_cost``, ``max_tokens_total``), changing ``settings``.
    Settings are checked first (:func:`moa_lab.plan_run`), before any call. Cost: ``sum(len(layer))``
    proposer calls, each layer's calls at once and the layers one after another, then the last layer's:
    one aggregator call (streamed to ``on_chunk``) for ``combine="synthesize"`` or ``"select"``, two for
    ``"rank"``, one per window for ``"sequential"``, none for ``"vote"`` (``plan_run(...).calls`` counts them;
    an ``early_stop`` makes fewer). Cached answers cost no call (``cache``, on by default: see
    :mod:`moa_lab._cache`); ``quorum``/``deadline`` let each proposer layer move on without its stragglers.
    Raises :class:`MoAError` (:class:`~moa_lab._budget.BudgetExceeded` at a budget); its ``layers`` keep what
    was computed, so nothing is lost.
    """
    plan = plan_run(
        prompt, proposers, aggregator, messages=messages, layers=layers, settings=settings, backend=backend, **options
    )
    return await run_plan(plan, stream=stream, on_call=on_call, on_chunk=on_chunk)


async def run_plan(
    plan: RunPlan,
    *,
    stream: bool = True,
    on_call: OnCall | None = None,
    on_chunk: Callable[[str], None] | None = None,
    budget: Budget | None = None,
) -> MoAResult:
    """:func:`run_moa` for settings already checked by :func:`moa_lab.plan_run`: at most ``plan.calls`` model
    calls (fewer after an early stop). ``budget``: one shared with other runs (a batch's); None: the plan's own
    (``max_cost``, ``max_tokens_total``), whose bound is checked here before any call."""
    backend, settings = plan.backend, plan.settings
    if budget is None:
        check_budget(plan)
        budget = Budget.of(settings)
    await backend.ready()
    t0 = time.perf_counter()
    done: list[LayerResult] = []
    previous, stopped = None, None
    for number, models in enumerate(plan.proposers, start=1):
        try:
            layer = await _layer(
                plan.prompt,
                models,
                previous,
                layer=number,
                backend=backend,
                settings=settings,
                on_call=on_call,
                budget=budget,
            )
        except MoAError as exc:
            exc.layers = done + exc.layers
            raise
        done.append(layer)
        previous = layer.passed_on
        if number < len(plan.proposers):
            stopped = early_stop_reason(layer, plan)
            if stopped:
                break
    last = LastStep(plan.prompt, previous or [], plan.aggregator, len(done) + 1, backend, settings, budget=budget)
    combination = await combine_layer(last, stream=stream, on_chunk=on_chunk, on_call=on_call, layers=done)
    final = combination.calls[-1] if combination.calls else None
    return MoAResult(
        plan.prompt,
        done,
        final,
        seconds=time.perf_counter() - t0,
        combination=combination,
        early_stop=stopped,
        similarity=plan.similarity,
    )


def early_stop_reason(layer: LayerResult, plan: RunPlan) -> str | None:
    """Why a run adds no more proposer layers after ``layer``: its answers are ``plan.early_stop`` alike (by
    ``plan.similarity``, lexical by default); None to go on (also when ``early_stop`` is None). No model call."""
    settings, layers = plan.settings, len(plan.proposers)
    alike = None if settings.early_stop is None else mean_similarity(layer.answers, settings.similarity)
    if alike is None or settings.early_stop is None or alike < settings.early_stop:
        return None
    measure = measure_name(settings.similarity)
    skipped = f"layer {layer.layer + 1}" if layer.layer + 1 == layers else f"layers {layer.layer + 1}-{layers}"
    return (
        f"early stop after layer {layer.layer}: its {len(layer.answers)} answers were {alike:.2f} alike (mean "
        f"pairwise {measure} similarity >= early_stop {settings.early_stop:g}); proposer {skipped} skipped"
    )


run_moa_sync = synced(run_moa)
run_layer_sync = synced(run_layer)
