"""Reading a final answer out of a model's reply: a number, a choice letter, a short text. Used to score
questions with one right answer (:mod:`moa_lab.evaluate`) and by ``combine="vote"`` to count agreeing answers."""

from __future__ import annotations

import re

_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?")


def number(text: str) -> str | None:
    """A number written as text, normalised (``"1,000"`` and ``"1000.0"`` are ``"1000"``); None if not one."""
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        return None
    return str(int(value)) if value.is_integer() else repr(value)


def extract_number(reply: str) -> str | None:
    """The answer of a numeric question: the **last** number in the reply (as GSM8K scorers do: "17 + 25 = 42"
    gives 42), normalised; None when the reply holds no number."""
    found = _NUMBER.findall(reply)
    return number(found[-1]) if found else None


def extract_choice(reply: str, prompt: str = "") -> str | None:
    """The letter a multiple-choice reply picked, by the first rule that matches: the reply is a letter alone
    (``"B"``, ``"(B)."``, ``"**B**"``); ``"answer is B"`` / ``"Answer: B"``; the reply starts with ``"B)"``,
    ``"B."`` or ``"B:"``; a ``"(B)"`` or ``"B)"`` anywhere; else the text of exactly one of the prompt's options
    (``"B) Jupiter"`` lines) appears in the reply. None when nothing matches (scored as wrong)."""
    rules = (
        r"^\W*([A-J])\W*$",
        r"(?i:answer)\s*(?:is|:)?\s*\W{0,3}([A-J])\b",
        r"^\W*([A-J])[).:]",
        r"\(([A-J])\)",
        r"\b([A-J])\)",
    )
    for rule in rules:
        match = re.search(rule, reply.strip())
        if match:
            return match.group(1)
    options = re.findall(r"^\s*([A-J])\)\s*(.+?)\s*$", prompt, re.M)
    named = {letter for letter, text in options if re.search(rf"\b{re.escape(text)}\b", reply, re.I)}
    return named.pop() if len(named) == 1 else None


def plain(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


_STATED = re.compile(r"(?i:\b(?:the|final|correct)\s+answer\s*(?:is|:|=)|\banswer\s*:)\s*(.+)")
_SHORT_WORDS = 8


def final_answer(reply: str) -> tuple[str, str] | None:
    """The final answer a reply states, as ``(as written, normalised)``; None when it states none. The first
    rule that matches: the last ``"the (final) answer is X"`` / ``"Answer: X"`` (X up to the end of its sentence;
    longer than 8 words, its first number); the reply's last number; the whole reply, when it is one line of at
    most 8 words. Normalised: a number as
    :func:`number` writes it, a letter A-J alone (``"(B)."``) upper-case, else :func:`plain` (lower-case, no
    punctuation), so that ``"42."``, ``"42.0"`` and ``"The answer is 42"`` agree."""
    text = reply.strip()
    stated = _STATED.findall(text)
    written = re.split(r"(?<=[^\d])[.!?](?:\s|$)|\n", stated[-1].strip())[0].strip() if stated else ""
    if len(written.split()) > _SHORT_WORDS:  # a clause, not an answer: its first number, if any
        written = (_NUMBER.findall(written) or [""])[0]
    if not written and _NUMBER.search(text):
        written = _NUMBER.findall(text)[-1]
    elif not written and "\n" not in text and len(text.split()) <= _SHORT_WORDS:
        written = text
    written = written.strip().strip("*_`\"'").rstrip(".!?,;:").strip()
    if not written:
        return None
    letter = re.fullmatch(r"\W*([A-Ja-j])\W*", written)
    normalised = number(written) or (letter.group(1).upper() if letter else plain(written))
    return (written, normalised) if normalised else None
