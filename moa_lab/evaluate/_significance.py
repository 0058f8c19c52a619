"""Is a difference real? Paired tests for the comparisons a benchmark table makes against its baseline, and
majority vote over k samples (maj@k), all from answers already made (no model is called here).

- :func:`mcnemar`: McNemar's exact test for two accuracies on the same questions (only the questions where the
  two disagree count; a two-sided binomial test at p = 1/2 on them).
- :func:`paired_bootstrap`: for two per-item scores on the same items (win rates, MT-Bench grades): the
  difference of their means, its percentile interval, and a two-sided p-value, from resampling the items.
- :func:`maj_at_k`: the accuracy of the majority answer of the first k samples, for each k, from one set of n
  samples per question (the curve costs no call beyond the n samples).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedTest:
    """A comparison of a configuration with the baseline: ``difference`` (the configuration's minus the
    baseline's, in the scores' unit), its ``interval``, the two-sided ``p`` value, and how it was tested."""

    difference: float
    interval: tuple[float, float] | None
    p: float
    method: str

    def __str__(self) -> str:
        ci = f" [{self.interval[0]:+.3g}, {self.interval[1]:+.3g}]" if self.interval else ""
        return f"{self.difference:+.3g}{ci}, p = {self.p:.3g} ({self.method})"


def mcnemar_p(b: int, c: int) -> float:
    """McNemar's exact two-sided p-value for ``b`` questions only the first got right and ``c`` only the second:
    ``min(1, 2 * P(X <= min(b, c)))`` for X ~ Binomial(b + c, 1/2); 1.0 when they never disagree."""
    for name, value in (("b", b), ("c", c)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a count (an integer >= 0), got {value!r}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def mcnemar(correct: Sequence[bool], baseline: Sequence[bool]) -> PairedTest:
    """Two accuracies on the same questions, paired: the difference in percentage points and McNemar's exact
    p-value (with the interval of the difference from a paired bootstrap)."""
    a, base = _paired(correct, baseline)
    b = int(np.sum(a & ~base))
    c = int(np.sum(~a & base))
    diff = 100.0 * (a.mean() - base.mean())
    interval = _bootstrap(a.astype(float) * 100, base.astype(float) * 100)[0]
    return PairedTest(diff, interval, mcnemar_p(b, c), f"McNemar exact, {b} vs {c} discordant")


def paired_bootstrap(
    scores: Sequence[float], baseline: Sequence[float], n: int = 10000, level: float = 0.95, seed: int = 0
) -> PairedTest:
    """Two per-item scores on the same items (a configuration's and the baseline's, e.g. win scores × 100 or
    grades 1-10): the difference of means, its percentile interval and a two-sided p-value (twice the share of
    resampled differences on the far side of 0), from ``n`` resamples of the items. Seeded: the same scores give
    the same result."""
    a, base = _paired(scores, baseline, float)
    interval, p = _bootstrap(a, base, n, level, seed)
    return PairedTest(float(a.mean() - base.mean()), interval, p, f"paired bootstrap, {n} resamples")


def _paired(a, b, kind=bool) -> tuple[np.ndarray, np.ndarray]:
    if len(a) != len(b):
        raise ValueError(f"paired scores must be as many as each other: {len(a)} and {len(b)}")
    if not len(a):
        raise ValueError("no paired scores to compare")
    return np.asarray(a, dtype=kind), np.asarray(b, dtype=kind)


def _bootstrap(a, base, n: int = 10000, level: float = 0.95, seed: int = 0) -> tuple[tuple[float, float], float]:
    diffs = a - base
    picks = np.random.default_rng(seed).integers(0, len(diffs), size=(n, len(diffs)))
    means = diffs[picks].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    p = min(1.0, 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    return (float(low), float(high)), p


def majority(answers: Sequence[Hashable | None]) -> Hashable | None:
    """The most frequent answer (None, no answer, never wins while another exists); a tie goes to the one seen
    first, as lm-evaluation-harness's maj@k does."""
    counts = Counter(a for a in answers if a is not None)
    return counts.most_common(1)[0][0] if counts else None


def maj_at_k(samples: Sequence[Sequence[Hashable | None]], truth: Sequence[Hashable], ks: Sequence[int]) -> dict:
    """Accuracy (percent) of the majority of the first k samples, for each k in ``ks``: ``samples[i]`` are
    question i's answers in the order they were sampled (at least ``max(ks)`` of them), ``truth[i]`` its answer.
    One set of samples makes the whole curve."""
    if len(samples) != len(truth):
        raise ValueError(f"samples and truth differ in number: {len(samples)} and {len(truth)}")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"every k must be an integer >= 1, got {k!r}")
    short = [i for i, s in enumerate(samples) if len(s) < max(ks)]
    if short:
        raise ValueError(f"question {short[0]} has {len(samples[short[0]])} samples; maj@{max(ks)} needs {max(ks)}")
    return {
        k: 100.0 * sum(majority(s[:k]) == t for s, t in zip(samples, truth)) / len(truth) if truth else 0.0 for k in ks
    }
