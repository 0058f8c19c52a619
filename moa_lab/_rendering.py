"""Renderings every layer may use: a :class:`View` (HTML in Jupyter, text elsewhere), an HTML table, and a progress
bar (tqdm: a widget in Jupyter). No record types: the views of records are :mod:`moa_lab.views`."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

_CELL = "vertical-align:top;text-align:left;padding:4px 8px;border:1px solid #ccc"


class View:
    """Shown as HTML in Jupyter, as text elsewhere (a terminal, papermill's text output)."""

    def __init__(self, html_text: str, text: str) -> None:
        self.html, self.text = html_text, text

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return self.text


def html_table(columns: Sequence[str], rows: Iterable[dict]) -> str:
    head = "".join(f'<th style="{_CELL}">{k}</th>' for k in columns)
    body = "".join(
        "<tr>"
        + "".join(f'<td style="{_CELL}">{html.escape(str(r[k] if r[k] is not None else ""))}</td>' for k in columns)
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def progress_bar(total: int, initial: int, enabled: bool, desc: str = "MoA batch", unit: str = "prompt"):
    """A tqdm bar (a widget in Jupyter), or None when ``enabled`` is false."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)
