"""Views of the records for people: tables and a timeline in notebooks (:mod:`~moa_lab.views._display`), a run's
trace as text (:func:`format_trace`) and the playground panel (:class:`Playground`, which needs ipywidgets: the
``notebooks`` extra; it is imported on first use). Views render records; they never measure anything themselves."""

from __future__ import annotations

from typing import TYPE_CHECKING

from moa_lab._trace import format_trace, trace_rows
from moa_lab.views._display import (
    batch_table,
    call_stats,
    layer_table,
    messages_view,
    plot_timeline,
    timeline_png,
    trace_table,
)

if TYPE_CHECKING:
    from moa_lab.views._playground import Playground

__all__ = [
    "Playground",
    "batch_table",
    "call_stats",
    "format_trace",
    "layer_table",
    "messages_view",
    "plot_timeline",
    "timeline_png",
    "trace_rows",
    "trace_table",
]


def __getattr__(name: str) -> object:
    """``Playground`` on first use: ipywidgets is imported only by those who open the panel."""
    if name == "Playground":
        from moa_lab.views._playground import Playground

        return Playground
    raise AttributeError(f"module 'moa_lab.views' has no attribute {name!r}")
