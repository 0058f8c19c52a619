"""Views of the call records: rows and a plain-text table. Views only render records, never re-measure."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from moa_lab._records import CallRecord

COLUMNS = ("layer", "model", "status", "seconds", "queued", "prompt_tokens", "completion_tokens", "attempts", "error")


def trace_rows(calls: Iterable[CallRecord]) -> list[dict[str, Any]]:
    """One dict per call with the columns of :data:`COLUMNS`; the aggregator's layer is shown as ``"agg"``;
    ``status`` is ok, cached (no model call), failed, cancelled or straggler (its layer moved on without it)."""
    rows = []
    for c in calls:
        rows.append(
            {
                "layer": "agg" if c.role == "aggregator" else c.layer,
                "model": c.model,
                "status": c.status,
                "seconds": round(c.seconds, 2),
                "queued": round(c.queued, 2),
                "prompt_tokens": c.prompt_tokens,
                "completion_tokens": c.completion_tokens,
                "attempts": c.attempts,
                "error": c.error or "",
            }
        )
    return rows


def format_trace(calls: Iterable[CallRecord]) -> str:
    """The trace as an aligned text table (used by the CLI and ``MoAResult.summary()``)."""
    rows = [{k: "" if v is None else str(v) for k, v in row.items()} for row in trace_rows(calls)]
    widths = {k: max([len(k)] + [len(r[k]) for r in rows]) for k in COLUMNS}
    widths["error"] = len("error")  # the last column is not padded
    lines = ["  ".join(k.ljust(widths[k]) for k in COLUMNS).rstrip()]
    lines += ["  ".join(r[k].ljust(widths[k]) for k in COLUMNS).rstrip() for r in rows]
    return "\n".join(lines)
