"""A recipe through one of the field's benchmarks: its file in, every answer made as a resumable batch, its own
answer format out, and for checkable sets a table with intervals, p-values and maj@k (``moa-lab eval``).

- ``gsm8k`` / ``choice``: ``k`` samples of the whole MoA per question (seeds ``seed``, ``seed + 1``, ...; one
  batch file each). Three answers come from every run at no extra call: the **first proposer** alone (the single
  model), the **vote** of the first layer's answers, and the **MoA**'s final answer; each is scored by exact match
  (:mod:`moa_lab._answers`), with a bootstrap interval, McNemar's exact test against the single model, and
  maj@k over the samples (k = 1, 2, 4, ...).
- ``alpaca-eval``: one MoA answer per instruction, written as ``model_outputs.json`` for
  ``alpaca_eval --model_outputs``.
- ``mt-bench``: two turns per question (the second run sees the first turn's final answer, as a conversation),
  written as FastChat's answer JSONL (``model_answer/NAME.jsonl``) for its judge.

Cost: ``plan.calls`` per run; ``k`` runs per question for the checkable sets, two per question for MT-Bench.
:func:`estimate_benchmark` bounds it before any call. Run again to resume (each batch file is a checkpoint).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from moa_lab._estimate import Estimate, call_bounds, estimate, total
from moa_lab._jsonl import dumps
from moa_lab._recipe import Recipe, resolve_recipe
from moa_lab.evaluate._alpaca import baselines, judge_outputs, read_baseline
from moa_lab.evaluate._benchmark_report import BenchmarkReport
from moa_lab.evaluate._checkable import score_checkable
from moa_lab.evaluate._formats import (
    Item,
    read_alpaca_eval,
    read_choice,
    read_gsm8k,
    read_mt_bench,
    write_alpaca_outputs,
    write_mt_bench_answers,
)
from moa_lab.evaluate._judge import JUDGE_SETTINGS
from moa_lab.evaluate._judge import judge_messages as pair_messages
from moa_lab.evaluate._mt_bench import grade, judge_messages, load_judge_prompts
from moa_lab.evaluate._reuse import earlier_answers, reaggregate
from moa_lab.runs._batch import run_batch
from moa_lab.runs._files import read_results

READERS: dict[str, Callable[[str | os.PathLike], list[Item]]] = {
    "gsm8k": read_gsm8k,
    "choice": read_choice,
    "alpaca-eval": read_alpaca_eval,
    "mt-bench": read_mt_bench,
}
KINDS = tuple(READERS)


def check_kind(kind: str) -> str:
    if kind not in READERS:
        raise ValueError(f"unknown benchmark {kind!r}; moa_lab reads: {', '.join(KINDS)}")
    return kind


def _check_k(kind: str, k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1 (samples per question), got {k!r}")
    if k > 1 and kind not in ("gsm8k", "choice"):
        raise ValueError(f"k={k}: several samples per question are for the checkable sets (gsm8k, choice), not {kind}")
    return k


def _check_judge(kind: str, judge: str | None, prompts, baseline, items: list[Item]) -> dict[str, Any] | None:
    """What judging needs, checked before any call: MT-Bench's judge prompts, or AlpacaEval's reference outputs."""
    if judge is None:
        if prompts is not None or baseline is not None:
            raise ValueError("judge_prompts and baseline are for a judge: give judge= (--judge) a model too")
        return None
    if kind in ("gsm8k", "choice"):
        raise ValueError(f"{kind} is scored by exact match: it takes no judge")
    if not isinstance(judge, str) or not judge.strip():
        raise ValueError(f"judge must be a model name, got {judge!r}")
    if kind == "alpaca-eval":
        if prompts is not None:
            raise ValueError("judge_prompts are MT-Bench's: AlpacaEval is judged pairwise against a baseline")
        return {"references": baselines(items, read_baseline(baseline) if baseline is not None else None)}
    if baseline is not None:
        raise ValueError("baseline (a reference model's outputs) is for alpaca-eval")
    if prompts is None:
        raise ValueError(
            "grading MT-Bench needs its judge prompts: judge_prompts= (--judge-prompts) FastChat's judge_prompts.jsonl"
        )
    return {"prompts": load_judge_prompts(prompts)}


def _check_reuse(kind: str, k: int, reuse, items: list[Item]) -> dict[str, dict] | None:
    if reuse is None:
        return None
    if kind == "mt-bench" or k != 1:
        raise ValueError("reuse takes one earlier run of single-turn questions (gsm8k, choice, alpaca-eval; k=1)")
    return earlier_answers(reuse, items)


def _seed(recipe: Recipe, j: int) -> dict[str, Any]:
    base = recipe.options.get("seed", 0)
    return {"seed": None if base is None else base + j}


def estimate_benchmark(
    kind: str,
    data: str | os.PathLike,
    recipe: Recipe | str | os.PathLike,
    *,
    k: int = 1,
    prices=None,
    judge: str | None = None,
    judge_prompts: str | os.PathLike | None = None,
    baseline: str | os.PathLike | None = None,
    reuse: str | os.PathLike | None = None,
    **options: Any,
) -> Estimate:
    """The calls and the bound of tokens (and cost, where priced) of :func:`run_benchmark`, calling nothing."""
    items, recipe_ = READERS[check_kind(kind)](data), resolve_recipe(recipe)
    assert recipe_ is not None
    k = _check_k(kind, k)
    judging = _check_judge(kind, judge, judge_prompts, baseline, items)
    plan = recipe_.plan(items[0].turns[0], **options)
    if _check_reuse(kind, k, reuse, items) is not None:  # the last layer's calls only: no proposer is called
        plans = [recipe_.plan(i.turns[0], **options) for i in items]
        return total(len(items), [b for p in plans for b in call_bounds(p)[sum(map(len, p.proposers)) :]], prices)
    prompts: list[Any] = [i.turns[0] for i in items] * k
    if kind == "mt-bench":  # the second turn reads the first's answer, of at most max_tokens tokens
        answer = "x" * (plan.max_tokens or 0)
        prompts += [_second_turn(i, answer) for i in items]
    bound = estimate(prompts, plan=plan, prices=prices)
    if judge is not None and judging is not None:  # two judge calls per question, the answers at max_tokens
        answer = "x" * (plan.max_tokens or 0)
        if "prompts" in judging:
            asked = [judge_messages(i, [answer, answer], t, judging["prompts"]) for i in items for t in (1, 2)]
            limit = None  # the backend's default, as grade() asks
        else:  # both orders of (answer, reference) for each instruction that has a reference
            refs = judging["references"]
            asked = [pair_messages(i.turns[0], answer, refs[i.id]) for i in items if i.id in refs for _ in (1, 2)]
            limit = JUDGE_SETTINGS.max_tokens
        bound = bound + estimate(
            asked, [], judge, layers=1, prices=prices, backend=recipe_.backend, temperature=0.0, max_tokens=limit
        )
    return bound


def _second_turn(item: Item, first_answer: str) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": item.turns[0]},
        {"role": "assistant", "content": first_answer},
        {"role": "user", "content": item.turns[1]},
    ]


async def run_benchmark(
    kind: str,
    data: str | os.PathLike,
    outdir: str | os.PathLike,
    recipe: Recipe | str | os.PathLike,
    *,
    k: int = 1,
    name: str | None = None,
    judge: str | None = None,
    judge_prompts: str | os.PathLike | None = None,
    baseline: str | os.PathLike | None = None,
    reuse: str | os.PathLike | None = None,
    progress: bool = True,
    concurrency: int = 16,
    retry_failed: bool = False,
    **options: Any,
) -> BenchmarkReport:
    """Put ``recipe`` (a :class:`~moa_lab._recipe.Recipe` or its file) through the benchmark file ``data`` of
    ``kind`` (one of :data:`KINDS`), writing into ``outdir``; see the module's doc for what each kind makes and
    costs. ``options``: settings that change the recipe's (``max_tokens=``...). ``judge``: a model that grades,
    on the recipe's backend, MT-Bench's two turns with its ``judge_prompts`` file (:mod:`moa_lab.evaluate._mt_bench`)
    or AlpacaEval's answers pairwise against ``baseline`` (a reference model's ``model_outputs.json``; else the
    instructions' own ``output``: :mod:`moa_lab.evaluate._alpaca`); two more calls per question. Everything is
    checked before any call; run again to resume. ``reuse``: the batch file of an earlier run of the same
    questions (``answers.jsonl``, ``answers.s0.jsonl``): its proposers' answers are combined again by this
    recipe's aggregator and ``combine`` mode, and no proposer is called (:mod:`moa_lab.evaluate._reuse`).
    ``retry_failed``: the questions whose run failed in ``outdir`` before are run again (else they are kept, as
    failed, and the report counts them)."""
    items = READERS[check_kind(kind)](data)
    k = _check_k(kind, k)
    judging = _check_judge(kind, judge, judge_prompts, baseline, items)
    earlier = _check_reuse(kind, k, reuse, items)
    base = resolve_recipe(recipe)
    assert base is not None
    chosen = replace(base, options={**base.options, **options})
    chosen.plan(items[0].turns[0])  # every setting checked before any call
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    label = name or chosen.name or "moa_lab-moa"
    report = BenchmarkReport(kind, out, len(items))

    async def batch(prompts: list[dict], path: Path, j: int = 0) -> list[dict]:
        if earlier is not None:  # the last layer only, on the earlier run's proposers' answers
            return await reaggregate(
                items,
                earlier,
                chosen,
                path.with_suffix(".reused.jsonl"),
                concurrency=concurrency,
                retry_failed=retry_failed,
            )
        arguments = {**chosen.arguments(), **_seed(chosen, j)}
        await run_batch(
            prompts, path, progress=progress, concurrency=concurrency, retry_failed=retry_failed, **arguments
        )
        return read_results(path)

    first = [{"id": i.id, "prompt": i.turns[0]} for i in items]
    if kind == "alpaca-eval":
        lines = {x["id"]: x for x in await batch(first, out / "answers.jsonl")}
        done = [i for i in items if lines[i.id]["status"] == "ok"]
        report.failed = len(items) - len(done)
        report.files["answers"] = out / "answers.jsonl"
        report.files["model_outputs"] = write_alpaca_outputs(
            out / "model_outputs.json", done, [lines[i.id]["final"] for i in done], label
        )
        if judge is not None and judging is not None and done:
            outputs = {i.id: lines[i.id]["final"] for i in done}
            report.scores = await judge_outputs(
                done, outputs, judging["references"], judge, label=label, backend=chosen.backend, progress=progress
            )
    elif kind == "mt-bench":
        one = {x["id"]: x for x in await batch(first, out / "answers.turn1.jsonl")}
        answered = [i for i in items if one[i.id]["status"] == "ok"]
        second = [{"id": i.id, "messages": _second_turn(i, one[i.id]["final"])} for i in answered]
        two = {x["id"]: x for x in await batch(second, out / "answers.turn2.jsonl")} if second else {}
        done = [i for i in answered if two[i.id]["status"] == "ok"]
        report.failed = len(items) - len(done)
        report.files["answers"] = out / "answers.turn2.jsonl"
        turns = {i.id: [one[i.id]["final"], two[i.id]["final"]] for i in done}
        report.files["model_answer"] = write_mt_bench_answers(
            out / "model_answer" / f"{label}.jsonl", done, [turns[i.id] for i in done], label
        )
        if judge is not None and judging is not None and done:
            backend = {"backend": chosen.backend} if chosen.backend else {}
            report.scores = await grade(
                done, turns, judge, judging["prompts"], out / "judgments.jsonl", progress=progress, **backend
            )
            report.files["judgments"] = out / "judgments.jsonl"
    else:
        samples = []
        for j in range(k):
            path = out / f"answers.s{j}.jsonl"
            samples.append({x["id"]: x for x in await batch(first, path, j)})
            report.files[f"sample {j}"] = path
        report.failed = sum(line["status"] != "ok" for sample in samples for line in sample.values())
        report.rows = score_checkable(kind, items, samples)
    (out / "report.json").write_text(dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    report.files["report"] = out / "report.json"
    return report
