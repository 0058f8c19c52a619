"""Pairwise LLM judging, AlpacaEval-style: a judge model reads an instruction and two answers, A and B, and says
which is better, or TIE. Each pair is judged in both orders (the configuration's answer first, then the
baseline's first), so a judge that favours a position cancels out instead of deciding the result. A reply with
no clear verdict is counted as unparseable, never guessed."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from moa_lab import _calls as calls
from moa_lab._backends import get_backend
from moa_lab._limits import CallLimiter, call_limits
from moa_lab._records import CallRecord
from moa_lab._rendering import progress_bar
from moa_lab._settings import Settings
from moa_lab._validation import check_models, check_settings
from moa_lab.evaluate._generate import ConfigRun
from moa_lab.evaluate._tasks import Task

JUDGE_PROMPT = """Instruction: {instruction}

Answer A: {a}

Answer B: {b}

Which answer follows the instruction better: more helpful, correct and clear? The order of the answers does not \
matter, and an answer is not better for being longer. Reply with one word: A, B, or TIE."""

_MARK = re.compile(r"\[\[\s*(A|B|C|(?i:tie))\s*\]\]")
_LEAD = re.compile(
    r"^(?:(?i:the\s+)?(?i:verdict|answer|winner|better\s+answer|better|output|response)\s*"
    r"(?i:is)?\s*[:\-]?\s*)?\(?(A|B|(?i:tie|tied|equal))\)?(?!\w)"
)
_SECOND = re.compile(r"^\s*(?:,|/|(?i:and|or))\s*\(?(A|B)\b")
_BETTER = re.compile(r"\b(?i:answer|response|output)\s*\(?(A|B)\)?\s+(?i:is)\s+(?:\w+\s+){0,2}(?i:better)\b")


def _verdict(word: str) -> str:
    return word if word in ("A", "B") else "tie"


def parse_verdict(reply: str | None) -> tuple[str | None, str]:
    """A judge's reply → ``("A" | "B" | "tie", "")``, or ``(None, why)`` when it gives no single verdict.

    Accepted, in this order: ``[[A]]`` / ``[[B]]`` / ``[[TIE]]`` (or MT-Bench's ``[[C]]`` for a tie) anywhere,
    all marks agreeing; a reply that starts with the verdict (``"B"``, ``"Tie."``, ``"**A**"``,
    ``"Verdict: B"``, ``"Answer A"``); ``"answer B is (much) better"``. The letters must be capitals (a reply
    starting "a good answer" is not A). ``"A, B"`` or ``"A or B"`` is conflicting, hence unparseable."""
    text = (reply or "").strip()
    if not text:
        return None, "empty reply"
    marks = {_verdict("tie" if m.upper() == "C" else m) for m in _MARK.findall(text)}
    if marks:
        return (marks.pop(), "") if len(marks) == 1 else (None, "conflicting verdicts")
    first = text.splitlines()[0].strip().lstrip("*#>_ \t").strip()
    lead = _LEAD.match(first)
    if lead:
        second = _SECOND.match(first[lead.end() :].lstrip("*_.) "))
        if second and _verdict(second.group(1)) != _verdict(lead.group(1)):
            return None, "conflicting verdicts"
        return _verdict(lead.group(1)), ""
    better = {m for m in _BETTER.findall(text)}
    if len(better) == 1:
        return better.pop(), ""
    return None, "conflicting verdicts" if better else "no verdict found"


@dataclass
class Judgment:
    """One judge call: ``config``'s answer to ``task`` against the baseline's, the configuration's answer shown
    first (as A) or second (as B). ``verdict``: A, B, tie, or None (``note`` says why: unparseable, or the
    judge call failed). ``record``: the call (time, tokens, error)."""

    task: str
    config: str
    config_first: bool
    verdict: str | None
    note: str
    record: CallRecord

    @property
    def winner(self) -> str | None:
        """``"config"``, ``"baseline"``, ``"tie"``, or None (no verdict)."""
        if self.verdict in (None, "tie"):
            return self.verdict
        return "config" if (self.verdict == "A") == self.config_first else "baseline"

    @property
    def score(self) -> float | None:
        """The configuration's score: 1 for a win, 0.5 for a tie, 0 for a loss; None without a verdict."""
        return None if self.winner is None else {"config": 1.0, "tie": 0.5, "baseline": 0.0}.get(self.winner)

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "config": self.config,
            "config_first": self.config_first,
            "verdict": self.verdict,
            "winner": self.winner,
            "note": self.note,
            "reply": self.record.text,
            "error": self.record.error,
            "cached": self.record.cached,
        }


def orders(config: str, task: str, n: int = 2, seed: int = 0) -> list[bool]:
    """Whether the configuration's answer goes first, for each of the ``n`` judgments of one pair: both orders
    for ``n=2`` (in a random sequence); one random order for ``n=1``. Seeded by (seed, config, task)."""
    if n not in (1, 2):
        raise ValueError(f"orders must be 1 (one random order) or 2 (both orders), got {n!r}")
    first = random.Random(f"{seed}:{config}:{task}").random() < 0.5
    return [first, not first][:n]


def judge_messages(instruction: str, a: str, b: str) -> list[dict[str, str]]:
    """What the judge receives: one user message, :data:`JUDGE_PROMPT` filled in."""
    return [{"role": "user", "content": JUDGE_PROMPT.format(instruction=instruction, a=a.strip(), b=b.strip())}]


def prompt_scores(judgments: Sequence[Judgment]) -> dict[tuple[str, str], float | None]:
    """Each (configuration, task)'s score: the mean of its judgments' scores (1 win, 0.5 tie, 0 loss), so a
    pair won in one order and lost in the other is a tie. None unless **every** order gave a verdict: one
    order alone would let the judge's position bias back in."""
    scores: dict[tuple[str, str], list[float | None]] = {}
    for j in judgments:
        scores.setdefault((j.config, j.task), []).append(j.score)
    return {key: (None if None in s else sum(v or 0.0 for v in s) / len(s)) for key, s in scores.items()}


#: The judge's settings unless changed: greedy (temperature 0), a one-word verdict (16 tokens at most).
JUDGE_SETTINGS = Settings(temperature=0.0, max_tokens=16)


def check_judge(judge_model: str | None = None, n_orders: int = 2, *, backend=None, **options) -> tuple[str, Settings]:
    """The judge's model (None: the backend's default aggregator) and call settings (:data:`JUDGE_SETTINGS`
    changed by ``options``), checked (ValueError)."""
    backend = get_backend(backend)
    settings = check_settings(JUDGE_SETTINGS, options, backend.default_max_tokens)
    (judge_model,) = check_models([judge_model or backend.default_aggregator], backend, "judge_model")
    orders("", "", n_orders)  # checks n_orders
    return judge_model, settings


async def judge(
    tasks: Sequence[Task],
    runs: Mapping[str, ConfigRun],
    baseline: str,
    *,
    judge_model: str | None = None,
    n_orders: int = 2,
    concurrency: int = 8,
    backend=None,
    progress: bool = True,
    **options,
) -> list[Judgment]:
    """Judge every configuration's answer to every open task against ``baseline``'s answer to it.

    Costs ``n_orders`` judge calls per (configuration, open task) where both have an answer, ``concurrency`` at
    once; none for verdicts already in the cache (the judge's replies are cached like any answer: ``seed=None``
    turns that off). ``judge_model``: None takes the backend's default aggregator. ``options``: the judge's
    :class:`moa_lab.moa.Settings` (:data:`JUDGE_SETTINGS` unless changed: ``max_tokens=``, ``seed=``, ``cache=``...).
    Returns the judgments in (configuration, task, order) order."""
    backend = get_backend(backend)
    judge_model, settings = check_judge(judge_model, n_orders, backend=backend, **options)
    seed = settings.seed
    CallLimiter(concurrency)  # checks concurrency now, before the server is started
    if baseline not in runs:
        raise ValueError(f"baseline {baseline!r} has no answers; configurations: {', '.join(map(repr, runs))}")
    base = runs[baseline].answers
    todo: list[tuple[Judgment, list[dict[str, str]]]] = []
    for name, run in runs.items():
        for task in tasks:
            if name == baseline or task.objective or task.id not in run.answers or task.id not in base:
                continue
            for first in orders(name, task.id, n_orders, seed or 0):
                a, b = (run.answers[task.id], base[task.id]) if first else (base[task.id], run.answers[task.id])
                record = CallRecord(0, len(todo), judge_model, role="judge", seed=seed)
                todo.append((Judgment(task.id, name, first, None, "", record), judge_messages(task.prompt, a, b)))
    bar = progress_bar(len(todo), 0, progress and bool(todo), "judging", "call")

    async def one(judgment: Judgment, messages) -> None:
        await calls.complete(backend, judgment.record, messages, settings)
        if judgment.record.ok:
            judgment.verdict, judgment.note = parse_verdict(judgment.record.text)
        else:
            judgment.note = f"judge call failed: {judgment.record.error}"
        if bar is not None:
            bar.update(1)

    await backend.ready()
    try:
        with call_limits(concurrency):
            await asyncio.gather(*(one(j, m) for j, m in todo))
    finally:
        if bar is not None:
            bar.close()
    return [j for j, _ in todo]
