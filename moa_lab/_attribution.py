"""What the aggregator took from whom: each sentence of the final answer, its closest reference (the answers the
last layer read) and how close; per reference, how much of the answer it supplied. No model call: a similarity
(:mod:`moa_lab._similarity`: lexical by default, ``"semantic"`` by meaning) compares sentences.

The MoA paper's analysis ("why MoA works") found that the aggregator draws most from the best proposals; this
makes that measurable on any run: ``result.attribution()``, a batch line's ``attribution``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from moa_lab._similarity import SimilaritySpec, measure, measure_name, prepare

#: A sentence at least this alike to its closest reference counts as taken from it (else: the aggregator's own).
TAKEN = 0.5
_SENTENCE = re.compile(r"[^\n.!?。！？\u2028\u2029]+(?:[.!?。！？]+[\"')\]]*|(?=[\n\u2028\u2029])|$)")
_COLOURS = ("#cfe8ff", "#ffe0b3", "#d4f5d0", "#f5d0f0", "#fff3b0", "#d9d2ff", "#ffd6d6", "#c9f2ef")


def sentences(text: str) -> list[str]:
    """The sentences of ``text``: cut after ``.``, ``!``, ``?`` (and their CJK forms) and at line ends; code lines
    are sentences of their own. Empty pieces are dropped."""
    return [s.strip() for s in _SENTENCE.findall(text) if s.strip() and re.search(r"\w", s)]


@dataclass(frozen=True)
class Source:
    """One sentence of the final answer: its closest ``reference`` (numbered from 1, as the aggregator read them;
    None when there was none to compare), that reference's ``model``, and how alike (0 to 1)."""

    sentence: str
    reference: int | None
    model: str | None
    similarity: float

    @property
    def taken(self) -> bool:
        """Whether it counts as taken from its reference (:data:`TAKEN` alike or more)."""
        return self.reference is not None and self.similarity >= TAKEN


@dataclass
class Attribution:
    """Sentence by sentence, where the final answer came from (:func:`attribute`). ``shares[i]``: the fraction of
    the answer's characters in sentences taken from reference ``i + 1``; ``own``: the rest (new, or too far from
    every reference)."""

    sources: list[Source]
    models: list[str]
    measure: str
    shares: list[float] = field(default_factory=list)

    @property
    def own(self) -> float:
        return max(0.0, 1.0 - sum(self.shares)) if self.sources else 0.0

    def columns(self) -> dict[str, float]:
        """For a table or a batch line: ``{"ref1": share, ..., "own": share}``."""
        return {f"ref{i + 1}": round(s, 4) for i, s in enumerate(self.shares)} | {"own": round(self.own, 4)}

    def to_pandas(self):
        """One row per sentence: sentence, reference, model, similarity, taken."""
        import pandas as pd

        return pd.DataFrame(
            [
                {"sentence": s.sentence, "reference": s.reference, "model": s.model, "similarity": s.similarity}
                | {"taken": s.taken}
                for s in self.sources
            ]
        )

    def __str__(self) -> str:
        lines = [
            f"reference {i + 1} ({m}): {share:.0%} of the answer"
            for i, (m, share) in enumerate(zip(self.models, self.shares))
        ]
        lines.append(f"the aggregator's own (under {TAKEN} alike to any reference): {self.own:.0%}")
        for s in self.sources:
            where = f"[{s.reference}] {s.similarity:.2f}" if s.taken else f"[own] {s.similarity:.2f}"
            lines.append(f"  {where}  {s.sentence}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """Each sentence coloured by the reference it came from (white: the aggregator's own), a legend with the
        shares, the similarity on hover."""
        legend = " ".join(
            f'<span style="background:{_COLOURS[i % len(_COLOURS)]};padding:0 4px">{i + 1}. '
            f"{html.escape(m)}: {share:.0%}</span>"
            for i, (m, share) in enumerate(zip(self.models, self.shares))
        )
        legend += f' <span style="border:1px solid #ccc;padding:0 4px">own: {self.own:.0%}</span>'
        body = " ".join(
            f'<span title="reference {s.reference} ({html.escape(s.model or "")}), {s.similarity:.2f} alike"'
            f' style="background:{_COLOURS[(s.reference - 1) % len(_COLOURS)]}">{html.escape(s.sentence)}</span>'
            if s.taken and s.reference is not None
            else f'<span title="own: {s.similarity:.2f} alike to the closest">{html.escape(s.sentence)}</span>'
            for s in self.sources
        )
        return (
            f'<div><div style="margin-bottom:4px"><b>Taken from</b> ({html.escape(self.measure)} similarity): '
            f'{legend}</div><div style="line-height:1.6">{body}</div></div>'
        )


def attribute(
    final: str, references: Sequence[str], models: Sequence[str] | None = None, similarity: SimilaritySpec = None
) -> Attribution:
    """For each sentence of ``final``, the reference with the most alike sentence (its similarity to that
    sentence); per reference, the share of the answer taken from it. Costs sentences × reference sentences
    comparisons (``"semantic"``: each sentence embedded once), no model call."""
    models = list(models) if models is not None else [f"reference {i + 1}" for i in range(len(references))]
    if len(models) != len(references):
        raise ValueError(f"attribute: {len(references)} references but {len(models)} models")
    parts = sentences(final)
    pieces = [sentences(r) for r in references]
    prepare(similarity, parts + [p for ps in pieces for p in ps])
    alike = measure(similarity)
    sources = []
    for sentence in parts:
        best, score = None, 0.0
        for i, ref in enumerate(pieces):
            value = max((alike(sentence, p) for p in ref), default=0.0)
            if best is None or value > score:
                best, score = i, value
        sources.append(
            Source(sentence, None if best is None else best + 1, None if best is None else models[best], score)
        )
    total = sum(len(s.sentence) for s in sources)
    shares = [
        sum(len(s.sentence) for s in sources if s.taken and s.reference == i + 1) / total if total else 0.0
        for i in range(len(references))
    ]
    return Attribution(sources, models, measure_name(similarity), shares)
