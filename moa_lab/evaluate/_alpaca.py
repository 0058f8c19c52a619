"""AlpacaEval's answers judged by moa_lab's own pairwise judge against a reference model's outputs (the paper's
baseline was GPT-4 Turbo's): win rate with its interval, the length-controlled estimate, and a p-value against
an even match (50%). The official number is ``alpaca_eval --model_outputs model_outputs.json``'s; this one is for
your judge, offline, and says so."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from moa_lab.evaluate._configs import Config, reference
from moa_lab.evaluate._formats import Item
from moa_lab.evaluate._generate import ConfigRun
from moa_lab.evaluate._judge import judge, prompt_scores
from moa_lab.evaluate._significance import paired_bootstrap
from moa_lab.evaluate._stats import bootstrap_ci, length_controlled, win_rate
from moa_lab.evaluate._tasks import Task


def read_baseline(path: str | os.PathLike) -> dict[str, str]:
    """A reference model's ``model_outputs.json`` (AlpacaEval's form) as instruction → output."""
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the baseline's outputs {str(path)!r}: {exc}") from None
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of {{instruction, output}} (AlpacaEval's model_outputs.json)")
    out = {}
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, Mapping) or not isinstance(row.get("instruction"), str):
            raise ValueError(f'{path} item {i}: needs "instruction" and "output" strings, got {row!r}'[:300])
        if not isinstance(row.get("output"), str):
            raise ValueError(f'{path} item {i}: "output" must be a string, got {row.get("output")!r}'[:300])
        out[row["instruction"]] = row["output"]
    return out


def baselines(items: Sequence[Item], baseline: Mapping[str, str] | None) -> dict[str, str]:
    """Each instruction's reference output: ``baseline``'s (a model_outputs file), else the item's own ``output``.
    ValueError when no instruction has one."""
    out = {}
    for item in items:
        text = (baseline or {}).get(item.turns[0], item.reference)
        if isinstance(text, str) and text.strip():
            out[item.id] = text
    if not out:
        raise ValueError(
            'judging needs a reference output per instruction: an "output" field in the instructions, or '
            "baseline= (--baseline) a reference model's model_outputs.json"
        )
    return out


async def judge_outputs(
    items: Sequence[Item],
    outputs: Mapping[str, str],
    references: Mapping[str, str],
    judge_model: str,
    *,
    label: str = "moa",
    backend=None,
    progress: bool = True,
) -> dict[str, Any]:
    """Judge ``outputs`` (id → text) against ``references`` (id → the baseline's text) on the instructions that
    have both, in both orders (2 judge calls each). Returns ``win_rate`` (percent, a tie half), its ``interval``,
    ``length_controlled``, ``p`` (paired bootstrap against 50%), ``judged`` and ``unjudged`` counts."""
    tasks = [Task(i.id, i.turns[0]) for i in items if i.id in outputs and i.id in references]
    runs = {
        label: ConfigRun(Config(label), answers=dict(outputs)),
        "reference": ConfigRun(reference(), answers=dict(references)),
    }
    judgments = await judge(tasks, runs, "reference", judge_model=judge_model, backend=backend, progress=progress)
    by_task = prompt_scores(judgments)
    scored = [(t, by_task.get((label, t.id))) for t in tasks]
    kept = [(t, s) for t, s in scored if s is not None]
    scores = [s for _, s in kept]
    if not scores:
        return {"win_rate": None, "interval": None, "length_controlled": None, "p": None, "judged": 0,
                "unjudged": len(tasks)}  # fmt: skip
    mine = [len(outputs[t.id]) for t, _ in kept]
    theirs = [len(references[t.id]) for t, _ in kept]
    return {
        "win_rate": win_rate(scores),
        "interval": bootstrap_ci(scores),
        "length_controlled": length_controlled(scores, mine, theirs),
        "p": paired_bootstrap([100 * s for s in scores], [50.0] * len(scores)).p,
        "judged": len(scores),
        "unjudged": len(tasks) - len(scores),
    }
