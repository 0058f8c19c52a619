"""The two plots of an evaluation, drawn off pyplot (``matplotlib.figure.Figure``): win rate against the number of
proposers (the shape of the paper's Table 3) and quality against cost."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class EvalReport(Protocol):
    """What the plots read of an evaluation's report (:class:`moa_lab.evaluate.EvalReport`; named here by its
    shape, so that the report, which draws them, and the plots do not import each other)."""

    @property
    def rows(self) -> Sequence[Any]: ...
    @property
    def baseline(self) -> str: ...
    @property
    def judge_model(self) -> str: ...


SERIES = {"moa": "MoA (different proposers)", "self-moa": "Self-MoA (one model sampled n times)"}


def _figure(width: float, height: float, panels: int = 1):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, figure.subplots(1, panels, squeeze=False)[0]


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)


def win_rate_vs_proposers(report: EvalReport):
    """Win rate vs the baseline (with its 95% interval) against proposers per layer, one line per kind of
    configuration (2 layers), deeper MoA as separate points; the length-controlled estimate dashed."""
    figure, (ax,) = _figure(7, 4.2)
    rows = [r for r in report.rows if r.config != report.baseline and r.win_rate is not None]
    for number, (kind, label) in enumerate(SERIES.items()):
        line = sorted((r for r in rows if r.kind == kind and r.layers == 2), key=lambda r: r.n)
        if line:
            x = [r.n + 0.06 * number for r in line]  # side by side, not on top of each other
            ax.errorbar(
                x,
                [r.win_rate for r in line],
                yerr=[[r.win_rate - r.ci_low for r in line], [r.ci_high - r.win_rate for r in line]],
                marker="o",
                capsize=4,
                color=f"C{number}",
                label=label,
            )
            ax.plot(x, [r.lc_win_rate for r in line], "--", color=f"C{number}", alpha=0.6, label=f"{label}, LC")
    others = [r for r in rows if r.kind not in SERIES or r.layers != 2]
    for number, r in enumerate(others, start=2):
        ax.errorbar(
            [r.n + 0.06 * number],
            [r.win_rate],
            yerr=[[r.win_rate - r.ci_low], [r.ci_high - r.win_rate]],
            marker="s",
            capsize=4,
            linestyle="none",
            color=f"C{number}",
            label=r.config,
        )
    ax.axhline(50, color="grey", linestyle=":", label=f"baseline: {report.baseline}")
    most = max((r.n for r in report.rows), default=1)
    ax.set_xticks(range(0, most + 1))
    ax.set_xlim(-0.3, most + 0.5)
    ax.set_ylim(0, 100)
    ax.set_xlabel("proposers per layer (n)")
    ax.set_ylabel("win rate vs the baseline, %")
    ax.set_title(f"Win rate vs number of proposers (judge: {report.judge_model})", fontsize=10)
    if not rows:
        _no_data(ax, "no verdicts: the judge gave none that could be read")
    ax.legend(fontsize=7, loc="lower right")
    return figure


def quality_vs_cost(report: EvalReport):
    """Two panels, one point per configuration: win rate vs cost, and exact-match accuracy vs cost. The cost is
    dollars when every call was priced and some cost something, else tokens (the bundled models are free)."""
    figure, axes = _figure(10, 4.2, 2)
    dollars = all(not r.unpriced for r in report.rows) and any(r.cost > 0 for r in report.rows)
    cost = (lambda r: r.cost) if dollars else (lambda r: r.tokens)
    for ax, what, value in (
        (axes[0], "win rate vs the baseline, %", lambda r: 50.0 if r.config == report.baseline else r.win_rate),
        (axes[1], "exact-match accuracy, %", lambda r: r.accuracy),
    ):
        points = [(cost(r), value(r), r.config, number) for number, r in enumerate(report.rows) if value(r) is not None]
        for x, y, name, number in points:  # one colour per configuration, the same in both panels
            ax.scatter([x], [y], color=f"C{number % 10}", label=name)
        if not points:
            _no_data(ax, "nothing to show")
        ax.set_ylim(-5, 105)
        ax.set_xlabel("cost of the evaluation's answers, $" if dollars else "tokens used (prompt + completion)")
        ax.set_ylabel(what)
    handles = {label: handle for ax in axes for handle, label in zip(*ax.get_legend_handles_labels())}
    figure.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=3, fontsize=8)
    axes[0].set_title("Quality vs cost: judged", fontsize=10)
    axes[1].set_title("Quality vs cost: exact match", fontsize=10)
    return figure
