"""Text that cannot travel: lone surrogates. A Python string may hold one (U+D800-U+DFFF alone: text decoded with
``errors="surrogateescape"``, or a JSON ``\\udc00`` escape of half a character, common in scraped data), but it
is not valid Unicode: it cannot be encoded as UTF-8, so no HTTP request, SQLite row or UTF-8 file can hold it.

What the user gives (prompts, answers passed on, system prompts, model names) is checked and refused with a
clear message before any call (:func:`find_surrogate`); what a server sends back is repaired (:func:`repair`).
"""

from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")


def find_surrogate(text: str) -> int | None:
    """The index of the first surrogate code point in ``text``, or None when it is valid Unicode."""
    match = _SURROGATE.search(text)
    return None if match is None else match.start()


def surrogate_error(text: str, what: str) -> str | None:
    """The message for ``what`` holding a lone surrogate (None: the text is fine)."""
    at = find_surrogate(text)
    if at is None:
        return None
    return (
        f"{what} holds a lone surrogate (U+{ord(text[at]):04X} at character {at}), which is not valid Unicode "
        "and cannot be sent to a model; repair the text first, e.g. text.encode('utf-8', 'replace')"
        ".decode('utf-8')"
    )


def repair(text: str) -> str:
    """``text`` as valid Unicode: surrogate pairs joined into their character, a lone surrogate replaced by U+FFFD.
    Costs nothing for valid text (one regex search)."""
    if find_surrogate(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
