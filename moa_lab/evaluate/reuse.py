"""Reusing proposers' answers (the reference MoA repo's ``--reference-paths``): the answers of an earlier run's
proposers, from its batch file, combined again by another aggregator or another ``combine`` mode, without calling
the proposers again. An aggregator ablation then costs only the aggregator's calls."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from moa_lab.evaluate.formats import Item
from moa_lab.jsonl import dumps
from moa_lab.limits import call_limits
from moa_lab.moa import combine_answers
from moa_lab.recipe import Recipe
from moa_lab.records import MoAError
from moa_lab.runs.files import read_results


def earlier_answers(path: str | os.PathLike, items: Sequence[Item]) -> dict[str, dict]:
    """The lines of an earlier batch file (a benchmark's ``answers*.jsonl``, a ``run_batch`` output) for ``items``,
    by id; ValueError naming the first item it lacks, or whose run failed before its last proposer layer."""
    lines = {str(line.get("id")): line for line in read_results(path)}
    for item in items:
        line = lines.get(item.id)
        if line is None:
            raise ValueError(f"{path}: no answers for {item.id!r} ({item.where}): it is not in that run")
        if not line.get("layers") or not line["layers"][-1].get("answers"):
            raise ValueError(f"{path}: the run of {item.id!r} has no proposer answers to reuse")
    return lines


async def reaggregate(
    items: Sequence[Item], earlier: dict[str, dict], recipe: Recipe, out: Path, *, concurrency: int = 16
) -> list[dict]:
    """For each item, the last proposer layer of its earlier run combined by ``recipe``'s aggregator and
    ``combine`` mode (its proposers are not called): the last layer's calls only, at most ``concurrency`` at once.
    Writes (and returns) one line per item in the batch files' form, the earlier layers and calls kept; an item
    already in ``out`` with status ok is not made again."""
    done = {str(x["id"]): x for x in read_results(out) if x.get("status") == "ok"} if out.exists() else {}
    todo = [item for item in items if item.id not in done]

    async def one(item: Item) -> dict:
        line = earlier[item.id]
        answers = line["layers"][-1]["answers"]
        plan = recipe.plan(item.turns[0])
        kept = [c for c in line.get("trace", []) if c.get("role") != "aggregator"]
        t0 = time.perf_counter()
        try:
            combination = await combine_answers(
                item.turns[0], answers, plan.aggregator, plan=plan, layer=len(line["layers"]) + 1, stream=False
            )
        except MoAError as exc:
            return {**line, "id": item.id, "status": "failed", "error": str(exc), "final": "", "trace": kept}
        return {
            **line,
            "id": item.id,
            "status": "ok",
            "error": None,
            "final": combination.text,
            "seconds": time.perf_counter() - t0,
            "reused": True,  # the proposers' answers came from the earlier run
            "trace": kept + [asdict(c) for c in combination.calls],
        }

    with call_limits(concurrency):
        made = await asyncio.gather(*(one(item) for item in todo))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as f:
        for line in made:
            f.write(dumps(line) + "\n")
    lines = {**done, **{str(x["id"]): x for x in made}}
    return [lines[item.id] for item in items]
