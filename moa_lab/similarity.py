"""How alike answers are, for ``max_references`` (pass on the most different ones) and ``early_stop`` (stop
when a layer's answers agree). The default measure is lexical and costs no model call; ``similarity=`` in the
settings replaces it with any ``f(a, b) -> [0, 1]`` (an embedding's cosine, say)."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Sequence

Similarity = Callable[[str, str], float]

# Scripts written without spaces (CJK ideographs, kana, hangul): one token per character; else one per word.
_NO_SPACES = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN = re.compile(f"[{_NO_SPACES}]|[^\\W{_NO_SPACES}]+")


def tokens(text: str) -> set[str]:
    """The lower-cased words of ``text`` (each CJK, kana or hangul character is a word of its own)."""
    return set(_TOKEN.findall(text.casefold()))


def lexical(a: str, b: str) -> float:
    """The Jaccard similarity of two texts' word sets: 1 for the same words, 0 for none in common (two texts
    without words are alike: 1)."""
    x, y = tokens(a), tokens(b)
    if not x and not y:
        return 1.0
    return len(x & y) / len(x | y)


def _measure(similarity: Similarity | None, a: str, b: str) -> float:
    value = (similarity or lexical)(a, b)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or not 0 <= value <= 1:
        name = getattr(similarity, "__qualname__", repr(similarity))
        raise ValueError(f"the similarity function {name} must return a number in [0, 1], returned {value!r}")
    return float(value)


def mean_similarity(answers: Sequence[str], similarity: Similarity | None = None) -> float | None:
    """The mean similarity over every pair of ``answers``; None for fewer than two (nothing to compare)."""
    pairs = list(itertools.combinations(answers, 2))
    if not pairs:
        return None
    return sum(_measure(similarity, a, b) for a, b in pairs) / len(pairs)


def most_different(answers: Sequence[str], k: int, similarity: Similarity | None = None) -> list[int]:
    """The positions of ``k`` answers that differ most from each other (greedy max-min): the first answer (the
    first proposer's), then each time the answer whose closest kept answer is least like it (ties: the earlier).
    Returned in their original order; every position when there are ``k`` or fewer."""
    if len(answers) <= k:
        return list(range(len(answers)))
    kept = [0]
    closest = {i: _measure(similarity, answers[i], answers[0]) for i in range(1, len(answers))}
    while len(kept) < k:
        pick = min(closest, key=lambda i: (closest[i], i))
        kept.append(pick)
        del closest[pick]
        for i in closest:
            closest[i] = max(closest[i], _measure(similarity, answers[i], answers[pick]))
    return sorted(kept)
