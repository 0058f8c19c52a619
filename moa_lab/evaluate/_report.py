"""An evaluation's results: one row per configuration (win rate vs the baseline with its bootstrap interval, the
length-controlled estimate, answer length, exact-match accuracy, calls, tokens, cost, time), as a table, files
and two plots. Every number is computed here once, from the answers and the judgments; the views only render.

Over 300 lines: the report's rows, their statistics and every rendering of them (markdown, CSV, plots).
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from statistics import mean
from typing import Any

from moa_lab._jsonl import dumps
from moa_lab._rendering import View, html_table
from moa_lab._usage import Usage, usage
from moa_lab.evaluate._configs import Config
from moa_lab.evaluate._generate import ConfigRun
from moa_lab.evaluate._judge import Judgment, prompt_scores
from moa_lab.evaluate._plots import quality_vs_cost, win_rate_vs_proposers
from moa_lab.evaluate._stats import bootstrap_ci, first_position_rate, length_controlled, win_rate
from moa_lab.evaluate._tasks import Task, is_correct

LOCAL_CAVEAT = (
    "These answers and verdicts come from the bundled SmolLM2-135M and Gemma-3-270M: models this small "
    "answer poorly and judge worse. The numbers demonstrate the method, not the value of MoA. With "
    "TOGETHER_API_KEY (or TOGETHER_BASE_URL and a real model fleet) the same code runs the real experiment."
)


@dataclass
class Row:
    """One configuration's results. ``win_rate`` / ``lc_win_rate`` in percent (None for the baseline, or with
    no verdict); ``verdicts``: the judgments won, tied, lost and without a verdict; ``accuracy`` in percent
    over the objective questions; ``usage`` (``calls``, ``tokens``, ``cost``, ``unpriced`` read it) over every
    task."""

    config: str
    kind: str
    n: int
    layers: int
    calls_per_prompt: int
    win_rate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    lc_win_rate: float | None = None
    compared: int = 0
    wins: int = 0
    ties: int = 0
    losses: int = 0
    unparseable: int = 0
    length: float | None = None
    correct: int = 0
    questions: int = 0
    failed: int = 0
    usage: Usage = field(default_factory=Usage)
    seconds_per_prompt: float | None = None

    calls = property(lambda self: self.usage.calls)
    tokens = property(lambda self: self.usage.tokens)
    cost = property(lambda self: self.usage.cost)
    unpriced = property(lambda self: self.usage.unpriced)

    @property
    def accuracy(self) -> float | None:
        return 100.0 * self.correct / self.questions if self.questions else None

    def to_dict(self) -> dict:
        """Flat: every field, ``usage`` as its ``calls``, ``tokens``, ``cost``, ``unpriced``; then ``accuracy``."""
        out: dict[str, Any] = {}
        for name in (f.name for f in fields(self)):
            if name == "usage":
                out.update(calls=self.calls, tokens=self.tokens, cost=self.cost, unpriced=self.unpriced)
            else:
                out[name] = getattr(self, name)
        return {**out, "accuracy": self.accuracy}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


COLUMNS = (
    "configuration",
    "calls/prompt",
    "win rate % [95% CI] prompts",
    "LC win rate %",
    "W/T/L/?",
    "avg length",
    "exact match",
    "calls",
    "tokens",
    "cost $",
    "s/prompt",
)


def _cells(row: Row, baseline: str) -> dict[str, str]:
    if row.config == baseline:
        rate, lc, verdicts = "baseline", "baseline", ""
    else:
        ci = "" if row.ci_low is None else f" [{row.ci_low:.1f}, {row.ci_high:.1f}]"
        rate, lc = f"{_pct(row.win_rate)}{ci} n={row.compared}", _pct(row.lc_win_rate)
        verdicts = f"{row.wins}/{row.ties}/{row.losses}/{row.unparseable}"
    accuracy = f"{_pct(row.accuracy)}% ({row.correct}/{row.questions})" if row.questions else "-"
    cost = f"{row.cost:.4f}" + (f" (+{row.unpriced} unpriced)" if row.unpriced else "")
    return dict(
        zip(
            COLUMNS,
            (
                row.config,
                str(row.calls_per_prompt),
                rate,
                lc,
                verdicts,
                "-" if row.length is None else f"{row.length:.0f}",
                accuracy,
                str(row.calls),
                str(row.tokens),
                cost,
                "-" if row.seconds_per_prompt is None else f"{row.seconds_per_prompt:.2f}",
            ),
        )
    )


@dataclass(repr=False)
class EvalReport:
    """The results of one evaluation. Show it in a notebook (a table), ``print`` it (text), ``save`` it."""

    rows: list[Row]
    baseline: str
    judge_model: str
    n_orders: int
    backend: str
    caveat: str | None
    judgments: list[Judgment] = field(default_factory=list)
    judge_usage: Usage = field(default_factory=Usage)
    first_position: float | None = None

    def row(self, config: str) -> Row:
        return next(r for r in self.rows if r.config == config)

    def notes(self) -> list[str]:
        """What the table means, and what to be careful about, in sentences."""
        judged = len(self.judgments)
        lost = sum(j.verdict is None for j in self.judgments)
        lines = [f"Backend: {self.backend}."]
        if self.caveat:
            lines.append(self.caveat)
        lines.append(
            f"Win rate: the judge ({self.judge_model}) compared each configuration's answer with the baseline's "
            f"({self.baseline}) on each open instruction, "
            f"{'in both orders' if self.n_orders == 2 else 'in one random order'}; "
            "a prompt scores 1 (won), 0.5 (tie, or the orders disagreed) or 0, and the win rate is the mean x 100. "
            "The 95% interval is a bootstrap over the prompts. LC: the length-controlled estimate (the win rate "
            "at equal answer lengths; moa_lab.evaluate._stats.length_controlled). W/T/L/?: judge verdicts won, "
            "tied, lost, and without a verdict."
        )
        lines.append(
            f"Judge: {lost} of its {judged} replies gave no verdict (unparseable, or the call failed); "
            f"its calls: {self.judge_usage}."
        )
        if self.first_position is not None:
            bias = (
                " It is choosing by position, not by reading: judging both orders turns this into ties."
                if self.first_position >= 80 or self.first_position <= 20
                else ""
            )
            lines.append(f"Of its A/B verdicts, {self.first_position:.0f}% picked the answer shown first.{bias}")
        if any(r.questions for r in self.rows):
            lines.append(
                "Exact match: the objective questions, scored by extracting the number (the last one in "
                "the answer) or the letter, with no judge."
            )
        return lines

    def table(self) -> View:
        cells = [_cells(r, self.baseline) for r in self.rows]
        notes = "".join(f"<p>{n}</p>" for n in self.notes())
        return View(html_table(COLUMNS, cells) + notes, self.to_text())

    def _repr_html_(self) -> str:
        return self.table().html

    def to_text(self) -> str:
        cells = [_cells(r, self.baseline) for r in self.rows]
        widths = {c: max(len(c), *(len(x[c]) for x in cells)) for c in COLUMNS}
        lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS)]
        lines += ["  ".join(x[c].ljust(widths[c]) for c in COLUMNS) for x in cells]
        return "\n".join(lines + [""] + self.notes())

    __str__ = __repr__ = to_text

    def to_markdown(self) -> str:
        cells = [_cells(r, self.baseline) for r in self.rows]
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(x[c] for c in COLUMNS) + " |" for x in cells]
        return "\n".join(lines + [""] + self.notes()) + "\n"

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, list(self.rows[0].to_dict()))
        writer.writeheader()
        for r in self.rows:
            writer.writerow(r.to_dict())
        return out.getvalue()

    def to_pandas(self):
        """The rows as a pandas DataFrame, one row per configuration (indexed by its name), the columns of
        :meth:`Row.to_dict` (the numbers, unformatted: sort, filter and plot them)."""
        import pandas as pd

        return pd.DataFrame([r.to_dict() for r in self.rows]).set_index("config")

    def save(self, folder: str | Path) -> dict[str, Path]:
        """Write ``results.md``, ``results.csv``, ``judgments.jsonl`` and the two plots (PNG) into ``folder``."""

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {
            name: folder / name
            for name in (
                "results.md",
                "results.csv",
                "judgments.jsonl",
                "win_rate_vs_proposers.png",
                "quality_vs_cost.png",
            )
        }
        paths["results.md"].write_text(self.to_markdown(), encoding="utf-8")
        paths["results.csv"].write_text(self.to_csv(), encoding="utf-8")
        paths["judgments.jsonl"].write_text(
            "".join(dumps(j.to_dict()) + "\n" for j in self.judgments), encoding="utf-8"
        )
        win_rate_vs_proposers(self).savefig(paths["win_rate_vs_proposers.png"], dpi=100)
        quality_vs_cost(self).savefig(paths["quality_vs_cost.png"], dpi=100)
        return paths


def summarize(
    tasks: Sequence[Task],
    configs: Sequence[Config],
    runs: Mapping[str, ConfigRun],
    judgments: Sequence[Judgment],
    baseline: str,
    *,
    judge_model: str,
    n_orders: int,
    backend,
    n_boot: int = 2000,
    seed: int = 0,
) -> EvalReport:
    """The results table from the answers and the judgments (no model call)."""
    scores = prompt_scores(judgments)
    open_ids = [t.id for t in tasks if not t.objective]
    questions = [t for t in tasks if t.objective]
    base = runs[baseline].answers
    rows = []
    for config in configs:
        run = runs[config.name]
        row = Row(
            config.name,
            config.kind,
            config.n,
            config.layers,
            config.calls,
            failed=len(run.failed),
            usage=run.usage,
            seconds_per_prompt=run.seconds_per_prompt,
        )
        lengths = [len(run.answers[i]) for i in open_ids if i in run.answers]
        row.length = mean(lengths) if lengths else None
        scored = [t for t in questions if config.kind != "reference" or t.reference is not None]
        row.questions, row.correct = len(scored), sum(is_correct(t, run.answers.get(t.id)) for t in scored)
        if config.name != baseline:
            mine = [j for j in judgments if j.config == config.name]
            row.wins, row.ties, row.losses = (sum(j.winner == w for j in mine) for w in ("config", "tie", "baseline"))
            row.unparseable = sum(j.verdict is None for j in mine)
            compared = {i: v for i in open_ids if (v := scores.get((config.name, i))) is not None}
            ids, values = list(compared), list(compared.values())
            row.compared, row.win_rate = len(values), win_rate(values)
            row.ci_low, row.ci_high = bootstrap_ci(values, n_boot, seed=seed) or (None, None)
            row.lc_win_rate = length_controlled(values, [len(run.answers[i]) for i in ids], [len(base[i]) for i in ids])
        rows.append(row)
    return EvalReport(
        rows,
        baseline,
        judge_model,
        n_orders=n_orders,
        backend=backend.describe(),
        caveat=LOCAL_CAVEAT if backend.kind == "local" else None,
        judgments=list(judgments),
        judge_usage=usage([j.record for j in judgments]),
        first_position=first_position_rate([j.verdict for j in judgments]),
    )


def answers_view(task: Task, runs: Mapping[str, ConfigRun]) -> View:
    """Every configuration's answer to one task, side by side (a failed prompt shows its error)."""
    row = {
        name: run.answers.get(task.id, f"failed: {run.failed.get(task.id, 'no answer')}") for name, run in runs.items()
    }
    text = "\n\n".join(f"--- {name} ---\n{answer}" for name, answer in row.items())
    return View(f"<b>{html.escape(task.prompt)}</b>" + html_table(list(row), [row]), f"{task.prompt}\n\n{text}")


def judgments_view(judgments: Sequence[Judgment]) -> View:
    """Judgments one per row: task, configuration, which answer was A, the judge's reply, verdict, winner."""
    rows = [
        {
            "task": j.task,
            "configuration": j.config,
            "A is": "configuration" if j.config_first else "baseline",
            "judge's reply": " ".join((j.record.text or j.record.error or "").split())[:80],
            "verdict": j.verdict or f"none ({j.note})",
            "winner": j.winner or "-",
        }
        for j in judgments
    ]
    columns = ("task", "configuration", "A is", "judge's reply", "verdict", "winner")
    text = "\n".join(" | ".join(str(r[c]) for c in columns) for r in rows)
    return View(html_table(columns, rows), text)


def order_effect(judgments: Sequence[Judgment]) -> View:
    """Per configuration, the win rate from the judgments where its answer was shown first, where it was shown
    second, and from both orders together (what the report uses). A large gap is the judge's position bias."""
    rows = []
    for name in dict.fromkeys(j.config for j in judgments):
        mine = [j for j in judgments if j.config == name]
        rates = []
        for part in ([j for j in mine if j.config_first], [j for j in mine if not j.config_first], mine):
            values = [v for v in prompt_scores(part).values() if v is not None]
            rates.append(f"{_pct(win_rate(values))} (n={len(values)})")
        rows.append(dict(zip(("configuration", "shown first", "shown second", "both orders"), [name, *rates])))
    columns = ("configuration", "shown first", "shown second", "both orders")
    text = "\n".join(" | ".join(r[c] for c in columns) for r in [dict(zip(columns, columns))] + rows)
    return View(html_table(columns, rows), text)
