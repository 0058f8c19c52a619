"""The field's benchmark files, read and written as their own tools read and write them, each checked before any
call (a bad file is refused naming its line and field).

- **AlpacaEval**: instructions from its JSON list (or JSONL) of ``{"instruction", "dataset", "output"?,
  "generator"?}``; ``model_outputs.json`` out, a JSON list of ``{"instruction", "dataset", "output", "generator"}``
  (what ``alpaca_eval --model_outputs`` reads).
- **MT-Bench**: FastChat's ``question.jsonl`` (``question_id``, ``category``, ``turns`` (two), ``reference``?); its
  answer JSONL out, one line per question: ``{"question_id", "answer_id", "model_id", "choices": [{"index": 0,
  "turns": [first, second]}], "tstamp"}`` (what FastChat's ``load_model_answers`` reads, by ``question_id``).
- **GSM8K-style**: ``{"question", "answer"}`` whose answer ends in ``#### N``.
- **Multiple choice** (MMLU/ARC style): ``{"question", "choices": [...], "answer": "B"}`` (a letter, or the
  choice's index).

Each reader takes a file, a Hugging Face dataset saved with ``save_to_disk`` (a folder), or ``hf:NAME[:CONFIG]@SPLIT``
(``datasets.load_dataset``, online; e.g. ``hf:openai/gsm8k:main@test``); ``datasets`` is needed only for those.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moa_lab._answers import number
from moa_lab._jsonl import dumps, split_lines
from moa_lab.runs._files import check_unique

LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class Item:
    """One benchmark item: its ``id``, the ``turns`` a run answers (one, or MT-Bench's two), the ``answer`` a
    checkable item is scored against (None otherwise), a ``reference`` (MT-Bench's, or AlpacaEval's reference
    output), its ``category``/``dataset``, and ``where`` it came from (file and line)."""

    id: str
    turns: tuple[str, ...]
    where: str
    answer: str | None = None
    reference: Any = None
    category: str | None = None
    #: the id as the file wrote it (MT-Bench's ``question_id``: 81, "081"), written back unchanged
    source_id: int | str | None = None


def _records(source: str | os.PathLike) -> list[tuple[str, Any]]:
    """The records of a benchmark's file with where each is: a JSON list (``.json``), one JSON value per line, a
    Hugging Face dataset saved with ``save_to_disk`` (a folder), or ``hf:NAME[:CONFIG]@SPLIT`` from the Hub."""
    if isinstance(source, str) and source.startswith("hf:"):
        return _hub(source)
    path = Path(source)
    if path.is_dir():
        datasets = _datasets(str(path))
        return [(f"{path} row {i + 1}", dict(row)) for i, row in enumerate(datasets.load_from_disk(str(path)))]
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {str(path)!r}: {exc}") from None
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(values, list) or not values:
            raise ValueError(f"{path}: no items (an empty JSON list)")
        return [(f"{path} item {i + 1}", v) for i, v in enumerate(values)]
    out = []
    for row, line in enumerate(split_lines(text), start=1):
        if line.strip():
            try:
                out.append((f"{path}:{row}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{row}: not valid JSON ({exc.msg})") from None
    if not out:
        raise ValueError(f"{path}: no items")
    return out


def _datasets(what: str):
    try:
        import datasets
    except ImportError:
        raise ValueError(f"{what}: reading a Hugging Face dataset needs `pip install datasets`") from None
    return datasets


def _hub(spec: str) -> list[tuple[str, Any]]:
    """``hf:NAME[:CONFIG]@SPLIT`` (e.g. ``hf:openai/gsm8k:main@test``) with ``datasets.load_dataset`` (online)."""
    name, _, split = spec[3:].partition("@")
    name, _, config = name.partition(":")
    if not name or not split:
        raise ValueError(f"{spec!r}: expected hf:NAME[:CONFIG]@SPLIT, e.g. hf:openai/gsm8k:main@test")
    datasets = _datasets(spec)
    rows = datasets.load_dataset(name, config or None, split=split)
    return [(f"{spec} row {i + 1}", dict(row)) for i, row in enumerate(rows)]


def _text(record: Mapping, key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f'{where}: "{key}" must be a non-empty string, got {value!r}')
    return value


def _object(value: Any, where: str, kind: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected a {kind} object, got {value!r}")
    return value


def read_alpaca_eval(path: str | os.PathLike) -> list[Item]:
    """AlpacaEval instructions (its ``alpaca_eval.json`` form, or JSONL); ``output`` (a reference model's) is kept
    as ``reference``. An instruction given twice is refused (AlpacaEval matches outputs by instruction)."""
    items = []
    for where, value in _records(path):
        record = _object(value, where, "AlpacaEval")
        instruction = _text(record, "instruction", where)
        output = record.get("output")
        if output is not None and not isinstance(output, str):
            raise ValueError(f'{where}: "output" must be a string (a reference answer), got {output!r}')
        dataset = record.get("dataset")
        items.append(Item(instruction, (instruction,), where, reference=output, category=dataset))
    return check_unique(items, "the instruction")


def write_alpaca_outputs(
    path: str | os.PathLike, items: Sequence[Item], outputs: Sequence[str], generator: str
) -> Path:
    """``model_outputs.json``: one ``{"instruction", "dataset", "output", "generator"}`` per item, in order."""
    if len(items) != len(outputs):
        raise ValueError(f"{len(items)} instructions but {len(outputs)} outputs")
    rows = [
        {"instruction": i.turns[0], "dataset": i.category or "moa_lab", "output": o, "generator": generator}
        for i, o in zip(items, outputs)
    ]
    return _write(Path(path), json.dumps(rows, ensure_ascii=False, indent=2) + "\n")


def read_mt_bench(path: str | os.PathLike) -> list[Item]:
    """MT-Bench questions (FastChat's ``question.jsonl``): two turns each; ``reference`` (a list of reference
    answers, for math and reasoning) kept. A turn count other than 2 or a repeated ``question_id`` is refused."""
    items = []
    for where, value in _records(path):
        record = _object(value, where, "MT-Bench question")
        qid = record.get("question_id")
        if isinstance(qid, bool) or not isinstance(qid, (int, str)) or not str(qid).strip():
            raise ValueError(f'{where}: "question_id" must be an integer or a string, got {qid!r}')
        turns = record.get("turns")
        if not isinstance(turns, list) or len(turns) != 2 or not all(isinstance(t, str) and t.strip() for t in turns):
            raise ValueError(
                f'{where}: "turns" must be a list of 2 non-empty strings (MT-Bench has two), got {turns!r}'
            )
        category = _text(record, "category", where)
        items.append(
            Item(str(qid), tuple(turns), where, reference=record.get("reference"), category=category, source_id=qid)
        )
    return check_unique(items, "question_id")


def write_mt_bench_answers(
    path: str | os.PathLike, items: Sequence[Item], answers: Sequence[Sequence[str]], model_id: str
) -> Path:
    """FastChat's answer JSONL: per question ``{"question_id", "answer_id", "model_id", "choices": [{"index": 0,
    "turns": [...]}], "tstamp"}``; each ``question_id`` as the questions file wrote it (81 stays 81, "081" stays
    "081"), since FastChat's judge matches answers to questions by it."""
    if len(items) != len(answers):
        raise ValueError(f"{len(items)} questions but {len(answers)} answers")
    lines = []
    for item, turns in zip(items, answers):
        if len(turns) != len(item.turns):
            raise ValueError(f"question {item.id}: {len(item.turns)} turns but {len(turns)} answers")
        qid = item.source_id if item.source_id is not None else item.id
        lines.append(
            dumps(
                {
                    "question_id": qid,
                    "answer_id": uuid.uuid4().hex[:22],
                    "model_id": model_id,
                    "choices": [{"index": 0, "turns": list(turns)}],
                    "tstamp": time.time(),
                }
            )
        )
    return _write(Path(path), "".join(line + "\n" for line in lines))


_FINAL = re.compile(r"####\s*(.+?)\s*$", re.S)


def gsm8k_answer(text: str) -> str | None:
    """The number after ``####`` at the end of a GSM8K answer, normalised as a model's answer is
    (:func:`moa_lab._answers.number`); what follows ``####`` as it is when that is not a number; None when there is
    no ``####``."""
    match = _FINAL.search(text)
    if not match:
        return None
    raw = match.group(1).strip()
    return number(raw) or raw


def read_gsm8k(path: str | os.PathLike) -> list[Item]:
    """GSM8K-style items (``question``, ``answer`` ending in ``#### N``); ``id`` from the line's ``id`` field, else
    its number. The reference N is normalised as a model's answer is (:func:`moa_lab._answers.number`: ``#### 5.50``,
    ``#### $1,000`` and ``#### 3.`` are 5.5, 1000 and 3). An answer without ``####``, or whose N is not a number,
    is refused."""
    items = []
    for line, (where, value) in enumerate(_records(path), start=1):
        record = _object(value, where, "GSM8K")
        question, answer = _text(record, "question", where), _text(record, "answer", where)
        final = gsm8k_answer(answer)
        if final is None:
            raise ValueError(f'{where}: "answer" must end with "#### N" (the final answer), got {answer[-60:]!r}')
        if number(final) is None:
            raise ValueError(f'{where}: the answer after "####" must be a number (as 42, 5.50, $1,000), got {final!r}')
        items.append(Item(str(record.get("id", line)), (question,), where, answer=final, reference=answer))
    return check_unique(items, "id")


def read_choice(path: str | os.PathLike) -> list[Item]:
    """Multiple-choice items (``question``, ``choices``: 2 to 10 strings, ``answer``: a letter or an index); the
    prompt lists the choices lettered A, B, ... and asks for the letter."""
    items = []
    for line, (where, value) in enumerate(_records(path), start=1):
        record = _object(value, where, "multiple-choice")
        question = _text(record, "question", where)
        choices = record.get("choices")
        if not isinstance(choices, list) or not 2 <= len(choices) <= len(LETTERS):
            raise ValueError(f'{where}: "choices" must be a list of 2 to {len(LETTERS)} strings, got {choices!r}')
        letters = LETTERS[: len(choices)]
        answer = record.get("answer")
        if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(choices):
            answer = letters[answer]
        if not isinstance(answer, str) or answer.strip().upper() not in letters:
            raise ValueError(f'{where}: "answer" must be one of {", ".join(letters)} (or an index), got {answer!r}')
        lines = [question, ""] + [f"{letter}. {choice}" for letter, choice in zip(letters, choices)]
        prompt = "\n".join(lines + ["", "Answer with the letter of the correct choice."])
        items.append(Item(str(record.get("id", line)), (prompt,), where, answer=answer.strip().upper()))
    return check_unique(items, "id")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
