"""JSON Lines as moa_lab reads and writes them: one JSON value per line, lines split on ``"\\n"`` alone.

``str.splitlines()`` also splits on U+2028, U+2029, U+0085 and other separators, which a prompt or an answer may
hold and which ``json.dumps(..., ensure_ascii=False)`` writes raw: a file written that way cannot be read back
line by line. So every JSONL file is split on ``"\\n"`` only (:func:`split_lines`), and every line written
escapes those characters (and any lone surrogate) as ``\\uXXXX`` (:func:`dumps`), keeping the rest of the text
readable (CJK and emoji stay as they are).
"""

from __future__ import annotations

import json
import re
from typing import Any

#: Characters written as \\uXXXX: the line separators str.splitlines() knows beyond \\n, \\r and the ASCII controls
#: (which json.dumps escapes itself), and surrogates (not encodable as UTF-8). In JSON text they can only be
#: inside strings, where the escape means the same character.
_ESCAPE = re.compile("[\u2028\u2029\x85\ud800-\udfff]")


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps(value, ensure_ascii=False, **kwargs)`` that is safe as one line of a UTF-8 file (with the
    default ``indent=None``) and safe to encode as UTF-8 whatever the text holds."""
    return _ESCAPE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(value, ensure_ascii=False, **kwargs))


def split_lines(text: str) -> list[str]:
    """The lines of ``text`` split on ``"\\n"`` only (a ``"\\r"`` before it dropped); no empty last line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]
