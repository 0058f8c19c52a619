"""Notebook views of the records: a layer's answers side by side, the messages a model receives, the trace
table and a timeline plot. Each view renders records only (no re-measuring); each has a plain-text form too.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

from moa_lab._records import CallRecord, LayerResult
from moa_lab._rendering import _CELL, View, html_table
from moa_lab._results import MoAResult
from moa_lab._trace import COLUMNS, format_trace, trace_rows

_TEXT = "white-space:pre-wrap;margin:0;font-size:0.9em"


def _calls(calls: MoAResult | Iterable[CallRecord]) -> list[CallRecord]:
    return calls.trace if isinstance(calls, MoAResult) else list(calls)


def call_stats(call: CallRecord) -> str:
    tokens = "?" if call.completion_tokens is None else call.completion_tokens
    retried = f", {call.attempts} attempts" if call.attempts > 1 else ""
    return f"{call.seconds:.1f} s, {tokens} tokens{retried}"


def layer_table(layer: LayerResult) -> View:
    """One column per proposer: the model, its time and tokens, and its answer (or its error)."""
    head = "".join(f'<th style="{_CELL}">{c.index + 1}. {html.escape(c.model)}</th>' for c in layer.calls)
    stats = "".join(f'<td style="{_CELL}">{call_stats(c)}</td>' for c in layer.calls)
    body = "".join(
        f'<td style="{_CELL}"><pre style="{_TEXT}">{html.escape(c.text or "")}</pre></td>'
        if c.ok
        else f'<td style="{_CELL};color:#b00">failed: {html.escape(c.error or "")}</td>'
        for c in layer.calls
    )
    page = f"<b>Layer {layer.layer}</b><table><tr>{head}</tr><tr>{stats}</tr><tr>{body}</tr></table>"
    text = "\n\n".join(
        f"[layer {layer.layer}] {c.index + 1}. {c.model} ({call_stats(c)})\n"
        + (c.text or "" if c.ok else f"failed: {c.error}")
        for c in layer.calls
    )
    return View(page, text)


def messages_view(messages: Sequence[dict[str, str]]) -> View:
    """The chat messages of a call, exactly as sent: role, then content."""
    blocks = "".join(
        f'<div style="margin:4px 0"><b>{html.escape(m["role"])}</b>'
        f'<pre style="{_TEXT};border-left:3px solid #999;padding-left:8px">{html.escape(m["content"])}</pre></div>'
        for m in messages
    )
    text = "\n\n".join(f"--- {m['role']} ---\n{m['content']}" for m in messages)
    return View(blocks, text)


def trace_table(calls: MoAResult | Iterable[CallRecord]) -> View:
    """Every call of a run, one row each: layer, model, status, seconds, tokens, attempts, error."""
    calls = _calls(calls)
    return View(html_table(COLUMNS, trace_rows(calls)), format_trace(calls))


BATCH_COLUMNS = ("id", "status", "prompt", "final", "calls", "cached_calls", "tokens", "seconds", "error")


def batch_table(lines: Iterable[dict], width: int = 120) -> View:
    """Batch output lines (``moa_lab.read_results``), one row each; long texts cut at ``width`` characters."""

    def cut(text) -> str:
        text = " ".join(str(text or "").split())
        return text if len(text) <= width else text[: width - 1] + "…"

    rows = [
        {
            **{k: line.get(k) for k in BATCH_COLUMNS},
            "prompt": cut(line["prompt"]),
            "final": cut(line["final"]),
            "error": cut(line["error"]),
            "tokens": line["prompt_tokens"] + line["completion_tokens"],
            "seconds": round(line["seconds"], 2),
        }
        for line in lines
    ]
    text = "\n".join(f"[{r['id']}] {r['status']}: {r['prompt']}\n    -> {r['final'] or r['error']}" for r in rows)
    return View(html_table(BATCH_COLUMNS, rows), text)


def _timeline_size(calls: Sequence[CallRecord]) -> tuple[float, float]:
    return 9, 0.45 * len(calls) + 1.3


def timeline_png(calls: MoAResult | Iterable[CallRecord]) -> bytes:
    """:func:`plot_timeline` as PNG bytes, drawn off pyplot (for widgets: no figure pops up in a later cell)."""
    import io

    from matplotlib.figure import Figure

    calls = [c for c in _calls(calls) if c.started]
    figure = Figure(figsize=_timeline_size(calls))
    plot_timeline(calls, ax=figure.subplots())
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


def plot_timeline(calls: MoAResult | Iterable[CallRecord], ax=None):
    """A bar per call from its start to its end, one colour per layer: proposers of a layer overlap (they run
    at once), layers follow one another. Gaps between layers are the time between cells run by hand. The pale
    dotted start of a bar is the time the call waited in the embedded server for a core; the solid part is the
    model's time.
    Returns the matplotlib Figure (needs matplotlib: ``pip install moa_lab[notebooks]``)."""
    calls = [c for c in _calls(calls) if c.started]
    if not calls:
        raise ValueError("no timed calls to plot: run a layer first")
    t0 = min(c.started for c in calls)
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=_timeline_size(calls))
    for row, c in enumerate(calls):
        colour, wait = f"C{(c.layer - 1) % 10}", min(c.queued, c.seconds)
        if wait >= 0.05:  # waiting in the embedded server for a core: not model time (shorter: not drawn)
            ax.barh(row, wait, left=c.started - t0, color=colour, alpha=0.25, hatch="..", edgecolor=colour)
        ax.barh(
            row,
            max(c.seconds - wait, 0.05),
            left=c.started - t0 + wait,
            color=colour,
            hatch="//" if not c.ok else None,
            edgecolor="black" if not c.ok else None,
        )
        ax.text(
            c.started - t0 + c.seconds,
            row,
            f" {c.seconds:.1f} s" + ("" if c.ok else " (failed)"),
            va="center",
            fontsize=8,
        )
    ax.set_yticks(range(len(calls)))
    ax.set_yticklabels(
        [("aggregator" if c.role == "aggregator" else f"L{c.layer} #{c.index + 1}") + f" {c.model}" for c in calls],
        fontsize=8,
    )
    ax.invert_yaxis()
    ax.set_xlim(0, max(c.started - t0 + c.seconds for c in calls) * 1.15)
    ax.set_xlabel(
        "seconds since the first call started (pale, dotted: waiting for a core)"
        if any(c.queued >= 0.05 for c in calls)
        else "seconds since the first call started"
    )
    ax.set_title("Every call of the run: proposers of a layer run at once, layers one after another")
    ax.figure.tight_layout()
    return ax.figure
