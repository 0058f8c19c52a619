"""Reusing proposers' answers (the reference MoA repo's ``--reference-paths``): the answers of an earlier run's
proposers, from its batch file, combined again by another aggregator or another ``combine`` mode, without calling
the proposers again. An aggregator ablation then costs only the aggregator's calls."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from moa_lab._conversation import prompt_hash
from moa_lab._limits import call_limits
from moa_lab._recipe import Recipe
from moa_lab._records import MoAError
from moa_lab.evaluate._formats import Item
from moa_lab.moa import combine_answers
from moa_lab.runs._files import BatchItem, OutputFile, read_results
from moa_lab.runs._runner import check_resume, settings_id


def earlier_answers(path: str | os.PathLike, items: Sequence[Item]) -> dict[str, dict]:
    """The lines of an earlier batch file (a benchmark's ``answers*.jsonl``, a ``run_batch`` output) for ``items``,
    by id; ValueError naming the first item it lacks, whose prompt there is another question's, or whose run
    failed before its last proposer layer."""
    lines = {str(line.get("id")): line for line in read_results(path)}
    for item in items:
        line = lines.get(item.id)
        if line is None:
            raise ValueError(f"{path}: no answers for {item.id!r} ({item.where}): it is not in that run")
        written = line.get("prompt_hash") or prompt_hash(str(line.get("prompt")))
        if written != prompt_hash(item.turns[0]):
            shown = str(line.get("prompt"))
            raise ValueError(
                f"{path}: the answers under id {item.id!r} are to another question "
                f"({shown[:60] + '...' if len(shown) > 60 else shown!r}), not to the one at {item.where}: reuse the "
                "answers of a run of this same file"
            )
        if not line.get("layers") or not line["layers"][-1].get("answers"):
            raise ValueError(f"{path}: the run of {item.id!r} has no proposer answers to reuse")
    return lines


def reuse_id(recipe: Recipe, items: Sequence[Item], earlier: dict[str, dict]) -> str:
    """The settings id of a reuse: the recipe's (:func:`moa_lab.runs.settings_id`) and the earlier runs' it reads,
    so that an OUTDIR made with another aggregator, mode or earlier file is refused, as a batch's is."""
    read = sorted({str(earlier[item.id].get("settings_id")) for item in items})
    text = settings_id(recipe.plan(items[0].turns[0])) + ":" + ",".join(read)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


async def reaggregate(
    items: Sequence[Item],
    earlier: dict[str, dict],
    recipe: Recipe,
    out: Path,
    *,
    concurrency: int = 16,
    retry_failed: bool = False,
) -> list[dict]:
    """For each item, the last proposer layer of its earlier run combined by ``recipe``'s aggregator and
    ``combine`` mode (its proposers are not called): the last layer's calls only, at most ``concurrency`` at once.
    Writes (and returns) one line per item in the batch files' form, the earlier layers and calls kept. ``out`` is
    a checkpoint as a batch's is: an item already there is not made again (a failed one only with
    ``retry_failed``), and an ``out`` made with other settings or other questions is refused (ValueError)."""
    sid = reuse_id(recipe, items, earlier)
    out.parent.mkdir(parents=True, exist_ok=True)
    output = OutputFile(out)
    try:
        asked = [BatchItem(item.id, item.turns[0], item.where) for item in items]
        existing = check_resume(output.existing(), out, asked, sid)
        if retry_failed and any(x["status"] != "ok" for x in existing):
            existing = [x for x in existing if x["status"] == "ok"]
            output.rewrite(existing)
        done = {str(x["id"]): x for x in existing}
        todo = [item for item in items if item.id not in done]

        async def one(item: Item) -> dict:
            line = earlier[item.id]
            answers = line["layers"][-1]["answers"]
            plan = recipe.plan(item.turns[0])
            kept = [c for c in line.get("trace", []) if c.get("role") != "aggregator"]
            common = {**line, "id": item.id, "settings_id": sid, "reused": True}  # the proposers' answers: earlier
            t0 = time.perf_counter()
            try:
                combination = await combine_answers(
                    item.turns[0], answers, plan.aggregator, plan=plan, layer=len(line["layers"]) + 1, stream=False
                )
            except MoAError as exc:
                made = {**common, "status": "failed", "error": str(exc), "final": "", "trace": kept}
            else:
                made = {
                    **common,
                    "status": "ok",
                    "error": None,
                    "final": combination.text,
                    "seconds": time.perf_counter() - t0,
                    "trace": kept + [asdict(c) for c in combination.calls],
                }
            output.append(made)  # each line as it finishes: a run stopped midway keeps what it made
            return made

        with call_limits(concurrency):
            made = await asyncio.gather(*(one(item) for item in todo))
    finally:
        output.close()
    lines = {**done, **{str(x["id"]): x for x in made}}
    return [lines[item.id] for item in items]
