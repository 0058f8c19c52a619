"""Views of the records for people: tables and a timeline in notebooks (:mod:`~moa_lab.views.display`) and the
playground panel (:mod:`~moa_lab.views.widgets`, which needs ipywidgets: import it from there, or as
``moa_lab.widgets``). Views render records; they never measure anything themselves."""

from moa_lab.views.display import (
    batch_table,
    call_stats,
    layer_table,
    messages_view,
    plot_timeline,
    timeline_png,
    trace_table,
)

__all__ = ["batch_table", "call_stats", "layer_table", "messages_view", "plot_timeline", "timeline_png", "trace_table"]
