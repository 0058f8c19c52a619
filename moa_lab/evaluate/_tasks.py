"""What an evaluation asks: open instructions (judged pairwise) and questions with one checkable answer (scored
exactly). A small varied set of each is built in; any JSONL file or list of dicts can replace them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from moa_lab._answers import extract_choice, extract_number
from moa_lab._answers import number as _number
from moa_lab._answers import plain as _plain
from moa_lab.runs._files import read_prompts

KINDS = ("open", "number", "choice", "text")


@dataclass(frozen=True)
class Task:
    """One prompt of an evaluation. ``kind``: ``"open"`` (no single right answer: judged against the baseline),
    ``"number"``, ``"choice"`` (a letter A-J) or ``"text"``, scored by exact match with ``answer``.
    ``reference``: an answer written elsewhere (e.g. GPT-4 Turbo's, from AlpacaEval), for the ``reference``
    configuration."""

    id: str
    prompt: str
    kind: str = "open"
    answer: str | None = None
    reference: str | None = None

    @property
    def objective(self) -> bool:
        return self.kind != "open"


BUILTIN_INSTRUCTIONS = [
    "Give three tips for staying healthy.",
    "Explain why the sky is blue to a ten-year-old.",
    "Write a haiku about autumn rain.",
    "What are some fun things to do in San Francisco?",
    "Write a short, polite email asking a colleague to review a document by Friday.",
    "Explain the difference between weather and climate.",
    "Write a Python function that returns the largest number in a list.",
    "Suggest a name for a bakery and explain the choice.",
    "Summarise the story of Cinderella in two sentences.",
    "What are the pros and cons of working from home?",
    "How do I make a good cup of tea?",
    "Describe how a bicycle works in three sentences.",
    "Give me a simple plan to learn to run 5 km in two months.",
    "Why do leaves change colour in autumn?",
    "Write a limerick about a cat who loves cheese.",
    "Explain what a database index is and when to use one.",
    "What should I pack for a weekend camping trip?",
    "Compare trains and planes for a 500 km journey.",
    "Give two arguments for and two against school uniforms.",
    "Explain compound interest with a small example.",
]

_REPLY_NUMBER = " Reply with the number only."
_REPLY_LETTER = "\nReply with the letter only."
BUILTIN_QUESTIONS = [
    ("What is 17 + 25?" + _REPLY_NUMBER, "number", "42"),
    ("What is 9 times 8?" + _REPLY_NUMBER, "number", "72"),
    ("What is 100 minus 37?" + _REPLY_NUMBER, "number", "63"),
    ("What is 144 divided by 12?" + _REPLY_NUMBER, "number", "12"),
    ("Pens cost 3 dollars each. How many dollars do 7 pens cost?" + _REPLY_NUMBER, "number", "21"),
    ("What is 15 percent of 200?" + _REPLY_NUMBER, "number", "30"),
    (
        "Which planet is the largest in the solar system?\nA) Mars\nB) Jupiter\nC) Venus\nD) Mercury" + _REPLY_LETTER,
        "choice",
        "B",
    ),
    ("What is the chemical formula of water?\nA) CO2\nB) O2\nC) H2O\nD) NaCl" + _REPLY_LETTER, "choice", "C"),
    ("How many days are there in a leap year?\nA) 365\nB) 364\nC) 366\nD) 360" + _REPLY_LETTER, "choice", "C"),
    ("Which of these animals is a mammal?\nA) Shark\nB) Dolphin\nC) Trout\nD) Octopus" + _REPLY_LETTER, "choice", "B"),
    (
        "Which gas do plants take from the air to make sugar?\nA) Carbon dioxide\nB) Oxygen\nC) Nitrogen\nD) Helium"
        + _REPLY_LETTER,
        "choice",
        "A",
    ),
    (
        "Who wrote Romeo and Juliet?\nA) Charles Dickens\nB) Jane Austen\nC) Mark Twain\nD) William Shakespeare"
        + _REPLY_LETTER,
        "choice",
        "D",
    ),
]


def builtin_tasks(n_instructions: int | None = None, n_questions: int | None = None) -> list[Task]:
    """The first ``n_instructions`` of the 20 built-in instructions (ids ``i01``...) and the first
    ``n_questions`` of the 12 built-in questions (``q01``...: 6 arithmetic, 6 multiple choice); None: all."""
    for name, value, most in (
        ("n_instructions", n_instructions, len(BUILTIN_INSTRUCTIONS)),
        ("n_questions", n_questions, len(BUILTIN_QUESTIONS)),
    ):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most):
            raise ValueError(f"{name} must be an integer from 0 to {most} (None: all {most}), got {value!r}")
    open_tasks = [Task(f"i{i:02d}", p) for i, p in enumerate(BUILTIN_INSTRUCTIONS[:n_instructions], start=1)]
    questions = [
        Task(f"q{i:02d}", p, kind, answer)
        for i, (p, kind, answer) in enumerate(BUILTIN_QUESTIONS[:n_questions], start=1)
    ]
    if not open_tasks and not questions:
        raise ValueError("n_instructions and n_questions are both 0: nothing to evaluate")
    return open_tasks + questions


def load_tasks(source: str | os.PathLike | Iterable[str | Mapping]) -> list[Task]:
    """Tasks from a JSONL file (or a list of strings or dicts): ``{"prompt": ..., "id": ...}`` per line, plus
    optionally ``"answer"`` (makes it a question scored exactly; ``"kind"``: ``number``, ``choice`` or ``text``,
    else guessed from the answer) and ``"reference"`` (an answer to compare with). Raises ValueError naming the
    line of a bad value."""
    tasks = []
    for item in read_prompts(source):
        answer, kind, reference = (item.extra.get(k) for k in ("answer", "kind", "reference"))
        if answer is not None:
            if isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or not str(answer).strip():
                raise ValueError(f'{item.where}: "answer" must be a non-empty string or a number, got {answer!r}')
            answer = str(answer).strip()
            kind = kind or _guess_kind(answer)
            if kind not in KINDS[1:]:
                raise ValueError(f'{item.where}: "kind" must be one of {", ".join(KINDS[1:])}, got {kind!r}')
            if kind == "number" and _number(answer) is None:
                raise ValueError(f'{item.where}: "answer" {answer!r} is not a number, but kind is "number"')
            if kind == "choice" and not re.fullmatch(r"[A-J]", answer.upper()):
                raise ValueError(f'{item.where}: "answer" of a choice must be one letter A-J, got {answer!r}')
        elif kind not in (None, "open"):
            raise ValueError(f'{item.where}: "kind" {kind!r} needs an "answer" to score against')
        if not isinstance(item.prompt, str):
            raise ValueError(f'{item.where}: a task is one "prompt" string ("messages" are for run_batch)')
        if reference is not None and not isinstance(reference, str):
            raise ValueError(f'{item.where}: "reference" must be a string (an answer), got {reference!r}')
        tasks.append(
            Task(
                item.id,
                item.prompt,
                kind or "open",
                answer and (answer.upper() if kind == "choice" else answer),
                reference,
            )
        )
    return tasks


def _guess_kind(answer: str) -> str:
    if _number(answer) is not None:
        return "number"
    return "choice" if re.fullmatch(r"[A-J]", answer.upper()) else "text"


def extract(task: Task, reply: str) -> str | None:
    """What the reply answers to ``task``, in the form of ``task.answer``."""
    if task.kind == "number":
        return extract_number(reply)
    if task.kind == "choice":
        return extract_choice(reply, task.prompt)
    lines = reply.strip().splitlines()
    return _plain(lines[0]) if lines else None


def is_correct(task: Task, reply: str | None) -> bool:
    """Exact match after extraction (see :func:`extract`; a ``text`` answer: the reply's first line, lower-case,
    without punctuation, equals the answer so normalised). No reply (a failed prompt) is wrong."""
    if not task.objective:
        raise ValueError(f"task {task.id!r} is open-ended: it has no answer to score")
    if reply is None:
        return False
    expected = (
        _plain(task.answer or "")
        if task.kind == "text"
        else (_number(task.answer or "") if task.kind == "number" else task.answer)
    )
    return extract(task, reply) == expected
