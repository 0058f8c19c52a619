"""Every configuration's answers to every task, made with the batch runner: one JSONL file per configuration
(and settings), so a run stopped at any point goes on where it stopped, and every answer is cached."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any

from moa_lab._plan import plan_run
from moa_lab._usage import Usage
from moa_lab.evaluate._configs import Config
from moa_lab.evaluate._tasks import Task
from moa_lab.runs._batch import run_batch, settings_id
from moa_lab.runs._files import read_results


@dataclass
class ConfigRun:
    """One configuration's answers (task id → final text; failed prompts in ``failed`` with their error), what
    they cost (``usage``: calls, tokens, estimated cost; ``calls``, ``tokens``, ``cost`` read it) and ``seconds``
    per prompt (the time of one MoA, end to end)."""

    config: Config
    answers: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    seconds: list[float] = field(default_factory=list)
    path: Path | None = None

    calls = property(lambda self: self.usage.calls, doc="Calls made or answered from the cache.")
    tokens = property(lambda self: self.usage.tokens, doc="Prompt and completion tokens.")
    cost = property(lambda self: self.usage.cost, doc="Estimated USD of the priced calls.")

    @property
    def seconds_per_prompt(self) -> float | None:
        return mean(self.seconds) if self.seconds else None


def from_lines(config: Config, lines: Sequence[dict], path: Path | None = None) -> ConfigRun:
    """A :class:`ConfigRun` from a batch output file's lines (:func:`moa_lab.read_results`)."""
    run = ConfigRun(config, path=path)
    for line in lines:
        if line["status"] == "ok":
            run.answers[line["id"]] = line["final"]
        else:
            run.failed[line["id"]] = line["error"]
        run.usage.add(Usage.from_dict(line))
        run.seconds.append(line["seconds"])
    return run


def _reference_run(config: Config, tasks: Sequence[Task]) -> ConfigRun:
    """The tasks' reference answers (questions without one are left unanswered: they score as wrong)."""
    return ConfigRun(config, {t.id: t.reference for t in tasks if t.reference is not None})


def plans(tasks: Sequence[Task], configs: Sequence[Config], **settings: Any) -> dict[str, Any]:
    """Each model configuration's checked run plan (for its first task): raises ValueError before any call, also
    when a ``reference`` configuration is asked for and an open task has no ``reference`` answer."""
    missing = [t.id for t in tasks if not t.objective and t.reference is None]
    if missing and any(c.kind == "reference" for c in configs):
        raise ValueError(
            f'the reference configuration needs a "reference" answer for every open task; task '
            f"{missing[0]!r} has none ({len(missing)} without one)"
        )
    return {
        c.name: plan_run(
            tasks[0].prompt, [list(m) for m in c.proposers], c.aggregator, layers=c.layers, **{**settings, **c.settings}
        )
        for c in configs
        if c.kind != "reference"
    }


async def generate(
    tasks: Sequence[Task],
    configs: Sequence[Config],
    folder: str | os.PathLike,
    *,
    concurrency: int = 8,
    progress: bool = True,
    **settings: Any,
) -> dict[str, ConfigRun]:
    """Answer every task with every configuration, one configuration after another, with
    :func:`moa_lab.run_batch` (``concurrency`` calls at once). ``settings``: those of :func:`moa_lab.run_moa`
    (``max_tokens``, ``temperature``, ``seed``, ``cache``, ``backend``, ...), the same for every configuration.

    Costs ``config.calls`` model calls per task and configuration, none for answers already in ``folder``
    (``answers/<config>-<settings>.jsonl``: run again to go on after a stop) or in the cache. Returns each
    configuration's :class:`ConfigRun`, by name."""
    folder = Path(folder) / "answers"
    checked = plans(tasks, configs, **settings)
    prompts = [{"id": t.id, "prompt": t.prompt} for t in tasks]
    runs = {}
    for config in configs:
        if config.kind == "reference":
            runs[config.name] = _reference_run(config, tasks)
            continue
        plan = checked[config.name]
        path = folder / f"{config.slug}-{settings_id(plan)}.jsonl"
        if progress:
            print(config.describe())
        await run_batch(
            prompts,
            path,
            plan.proposers,
            plan.aggregator,
            concurrency=concurrency,
            progress=progress,
            **{**settings, **config.settings, "backend": plan.backend, "layers": plan.layers},
        )
        runs[config.name] = from_lines(config, read_results(path), path)
    return runs
