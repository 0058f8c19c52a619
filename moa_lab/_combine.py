"""The last layer: how the references become one answer (``combine=``, one of :data:`COMBINE_MODES`).

- ``"synthesize"`` (the paper's, the default): the aggregator rewrites them into one answer. 1 call.
- ``"select"`` (Universal Self-Consistency): the aggregator names the best by its number (:data:`SELECT_PROMPT`);
  the final answer is that reference, unchanged. 1 call. A reply that names none fails the run, saying so.
- ``"rank"`` (LLM-Blender's rank-then-fuse): the aggregator ranks them (:data:`RANK_PROMPT`), then synthesizes
  the ``top_k`` best, best first. 2 calls.
- ``"vote"``: no call; the final answers the references state (:func:`moa_lab._answers.final_answer`) are
  counted, and the majority's is the answer (a tie: the first to appear). For questions with one right answer.
- ``"sequential"`` (Self-MoA-Seq): ``window`` references at a time, each call also reading the synthesis so
  far, so the aggregator's context stays small. ``ceil(n / window)`` calls.
"""

from __future__ import annotations

import contextlib
import math
import random
import re
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from dataclasses import dataclass

from moa_lab import _calls as calls
from moa_lab._answers import final_answer
from moa_lab._budget import Budget, BudgetExceeded
from moa_lab._conversation import Prompt
from moa_lab._records import CallRecord, Combination, LayerResult, MoAError
from moa_lab._settings import COMBINE_MODES, Settings, passed_on, steps
from moa_lab._sync import iterate
from moa_lab.prompts import RANK_PROMPT, SELECT_PROMPT, build_messages

__all__ = [
    "COMBINE_MODES",
    "Aggregation",
    "LastStep",
    "combine_layer",
    "passed_on",
    "steps",
]  # the last two: from settings


@dataclass(frozen=True)
class LastStep:
    """The last layer's checked inputs, which all its calls share: the question, the references (``answers``),
    the aggregator (``model``), its place in the run (``layer``), the server, the settings and the budget."""

    prompt: Prompt
    answers: Sequence[str]
    model: str
    layer: int
    backend: object
    settings: Settings
    budget: Budget | None = None


def call_seed(seed: int | None, layer: int, index: int) -> int | None:
    """Each call's own seed, so that the same model twice in a layer gives two different samples."""
    return None if seed is None else seed + 1000 * layer + index


def reference_order(count: int, seed: int | None, shuffle: bool) -> list[int]:
    """The order a call reads ``count`` references in: as they are, or (``shuffle_references``) shuffled by the
    call's own seed (a new order per call, the same on a rerun; no seed: a new one every time)."""
    order = list(range(count))
    if shuffle:
        random.Random(seed).shuffle(order)
    return order


class Aggregation:
    """The aggregator's call, started when first iterated or awaited. Costs one model call.

    ``async for chunk in agg`` yields the text as it arrives (``for chunk in agg`` in a plain script);
    ``await agg`` returns the whole text. Afterwards ``agg.record`` holds the call's record. A failure
    raises :class:`MoAError` naming the model and cause; the text that arrived is kept in the record.
    """

    def __init__(
        self,
        backend,
        record,
        messages,
        settings,
        stream,
        layers=(),
        budget: Budget | None = None,
        references: Sequence[str] = (),
    ) -> None:
        self.backend, self.record, self.messages, self.references = backend, record, messages, references
        self.settings, self.stream, self.layers, self.budget = settings, stream, list(layers), budget
        self._started = False

    async def __aiter__(self) -> AsyncGenerator[str, None]:
        if self._started:
            raise RuntimeError("an Aggregation can be consumed once; call aggregate() again for a new answer")
        self._started = True
        chunks = calls.chat(
            self.backend,
            self.record,
            self.messages,
            self.settings,
            stream=self.stream,
            budget=self.budget,
            references=self.references,
        )
        async with contextlib.aclosing(chunks):  # a consumer that stops early closes the call at once
            async for chunk in chunks:
                yield chunk
        if not self.record.ok:
            raise MoAError("the aggregator failed", failures=[self.record], layers=self.layers)

    def __await__(self):
        return self._text().__await__()

    async def _text(self) -> str:
        async for _ in self:
            pass
        return self.record.text or ""

    def __iter__(self) -> Iterator[str]:

        return iterate(self.__aiter__())


class _Steps:
    """The calls of one last layer, made one after another; each ends in ``records`` (and ``on_call``)."""

    def __init__(self, step: LastStep, stream: bool, on_chunk, on_call, layers: list[LayerResult]) -> None:
        self.prompt, self.model, self.layer, self.backend = step.prompt, step.model, step.layer, step.backend
        self.settings, self.budget = step.settings, step.budget
        self.stream, self.on_chunk, self.on_call, self.layers = stream, on_chunk, on_call, layers
        self.records: list[CallRecord] = []

    def record(self, step: str) -> CallRecord:
        index = len(self.records)
        record = CallRecord(
            self.layer,
            index,
            self.model,
            role="aggregator",  # the same layer and seeds as aggregate()
            seed=call_seed(self.settings.seed, self.layer, index),
            step=step,
        )
        self.records.append(record)
        return record

    async def call(
        self,
        step: str,
        instructions: str,
        answers: Sequence[str],
        numbers: Sequence[int],
        last: bool,
        shuffle: bool = True,
        first: str | None = None,
    ) -> CallRecord:
        """One call reading ``answers`` (whose numbers in the layer are ``numbers``), after ``first`` (the
        running synthesis) if given; streamed to ``on_chunk`` when it is the ``last``."""
        record = self.record(step)
        order = reference_order(len(answers), record.seed, shuffle and self.settings.shuffle_references)
        record.references = [numbers[i] for i in order]
        shown = ([first] if first is not None else []) + [answers[i] for i in order]
        messages = build_messages(self.prompt, shown, instructions)
        aggregation = Aggregation(
            self.backend, record, messages, self.settings, self.stream and last, budget=self.budget, references=shown
        )
        try:
            async with contextlib.aclosing(aggregation.__aiter__()) as chunks:  # closed here even if on_chunk raises
                async for chunk in chunks:
                    if last and self.on_chunk is not None:
                        self.on_chunk(chunk)
        except BudgetExceeded as exc:  # not started: what was made before is kept
            exc.layers, exc.steps = self.layers, list(self.records)
            raise
        except MoAError as exc:
            raise self.failed(exc.args[0], record) from None
        finally:
            if self.on_call is not None:
                self.on_call(record)
        return record

    def failed(self, message: str, record: CallRecord | None = None) -> MoAError:
        return MoAError(message, failures=[record] if record else [], layers=self.layers, steps=self.records)

    def final(self, text: str) -> None:
        """A final text that no call streamed (a selected reference, a vote's answer): sent once, whole."""
        if self.on_chunk is not None and text:
            self.on_chunk(text)


def _numbers_in(reply: str, count: int) -> list[int]:
    """The distinct numbers from 1 to ``count`` in ``reply``, in the order they appear."""
    seen: list[int] = []
    for token in re.findall(r"\d+", reply):
        number = int(token)
        if 1 <= number <= count and number not in seen:
            seen.append(number)
    return seen


async def combine_layer(
    last: LastStep,
    *,
    stream: bool = True,
    on_chunk: Callable[[str], None] | None = None,
    on_call: Callable[[CallRecord], None] | None = None,
    layers: Sequence[LayerResult] = (),
) -> Combination:
    """The last layer of a run (its inputs checked: :func:`moa_lab.moa.combine_answers` is the public step): the
    ``last`` step's answers combined by its model the ``settings.combine`` way (see the module).
    ``len(steps(settings, len(answers)))`` model calls, one after another; the last one streamed to ``on_chunk``
    (a selected reference or a vote's answer is sent to it whole). Raises :class:`MoAError` naming the model and
    the cause (its ``steps`` keep the calls made before); ``layers`` are kept in it."""
    run = _Steps(last, stream, on_chunk=on_chunk, on_call=on_call, layers=list(layers))
    answers, settings = last.answers, last.settings
    mode, n, numbers = settings.combine, len(answers), list(range(1, len(answers) + 1))
    if mode == "synthesize" or (n == 0 and mode != "vote"):
        record = await run.call("synthesize", settings.instructions, answers, numbers, last=True)
        return Combination("synthesize", run.records, record.text or "")
    if mode == "vote":
        return _vote(run, answers)
    if mode == "sequential":
        w, text = settings.window, None
        windows = max(1, math.ceil(n / w))
        for i in range(windows):
            part = numbers[i * w : (i + 1) * w]
            step = f"window {i + 1} of {windows}" + (", with the synthesis so far" if text is not None else "")
            record = await run.call(
                step, settings.instructions, [answers[k - 1] for k in part], part, last=i == windows - 1, first=text
            )
            text = record.text or ""
        return Combination(
            "sequential", run.records, text or "", numbers, f"{n} answers read {w} at a time in {windows} calls"
        )
    instructions, what = (SELECT_PROMPT, "select") if mode == "select" else (RANK_PROMPT, "rank")
    record = await run.call(what, instructions, answers, numbers, last=False)
    shown = record.references or numbers
    picked = [shown[i - 1] for i in _numbers_in(record.text or "", n)]  # as numbered in the layer
    if not picked:
        record.error = f"its reply names no reference (a number from 1 to {n}): {(record.text or '')[:120]!r}"
        raise run.failed(f"the aggregator's {what} reply could not be read", record)
    if mode == "select":
        run.final(answers[picked[0] - 1])
        return Combination(
            "select",
            run.records,
            answers[picked[0] - 1],
            picked[:1],
            f"{record.model} chose reference {picked[0]} of {n}",
        )
    top = (picked + [k for k in numbers if k not in picked])[: settings.top_k]
    final = await run.call(
        f"synthesize top {len(top)}",
        settings.instructions,
        [answers[k - 1] for k in top],
        top,
        last=True,
        shuffle=False,
    )
    ranked = " > ".join(map(str, picked))
    return Combination(
        "rank",
        run.records,
        final.text or "",
        top,
        f"ranked {ranked}"
        + (" (the rest unranked, in their order)" if len(picked) < n else "")
        + f"; synthesized the top {len(top)}: {', '.join(map(str, top))}",
    )


def _vote(run: _Steps, answers: Sequence[str]) -> Combination:
    stated = [final_answer(a) for a in answers]
    counts = Counter(s[1] for s in stated if s is not None)
    if not counts:
        raise run.failed(
            f"vote: none of the {len(answers)} answers states a final answer (a number, a letter, "
            "or a short text); use combine='synthesize' or 'select' for open questions"
        )
    order = [s[1] for s in stated if s is not None]
    best = max(counts.values())
    winner = next(value for value in order if counts[value] == best)  # a tie: the first to appear
    chosen = [i + 1 for i, s in enumerate(stated) if s is not None and s[1] == winner]
    text = next(s[0] for s in stated if s is not None and s[1] == winner)
    tied = [value for value in counts if counts[value] == best and value != winner]
    note = (
        f"{text!r} by {best} of {len(answers)} answers"
        + (f" ({len(answers) - len(order)} stated none)" if len(order) < len(answers) else "")
        + (f"; a tie with {', '.join(map(repr, tied))}: the first to appear wins" if tied else "")
    )
    run.final(text)
    return Combination("vote", [], text, chosen, note)
