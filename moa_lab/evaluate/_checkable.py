"""Scoring a checkable benchmark (GSM8K-style numbers, multiple-choice letters) from its answer batches: three ways
of answering per MoA run (the first proposer alone, the vote of the first layer, the MoA's final answer), each by
exact match, with its interval, McNemar's test against the single model, and maj@k over the samples. No call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from moa_lab._answers import extract_choice, extract_number
from moa_lab.evaluate._formats import Item
from moa_lab.evaluate._significance import maj_at_k, majority, mcnemar
from moa_lab.evaluate._stats import bootstrap_ci


def _extract(kind: str, item: Item, text: str | None) -> str | None:
    if not text:
        return None
    return extract_number(text) if kind == "gsm8k" else extract_choice(text, item.turns[0])


def _first_layer(line: dict) -> list[str | None]:
    """The first layer's answers by position (None for a call that failed)."""
    calls = sorted(
        (c for c in line.get("trace", []) if c["layer"] == 1 and c["role"] != "aggregator"), key=lambda c: c["index"]
    )
    return [c["text"] if c.get("error") is None else None for c in calls]


def score_checkable(kind: str, items: Sequence[Item], samples: Sequence[dict[str, dict]]) -> list[dict[str, Any]]:
    """Per way of answering (single = the first proposer; vote of the first layer; MoA): accuracy of the first
    sample with its interval and McNemar's p against the single model, and maj@k over the samples."""
    answers: dict[str, list[list[str | None]]] = {"single": [], "vote": [], "moa": []}
    for item in items:
        per: dict[str, list[str | None]] = {name: [] for name in answers}
        for sample in samples:
            line = sample[item.id]
            layer = [_extract(kind, item, text) for text in _first_layer(line)]
            per["single"].append(layer[0] if layer else None)
            per["vote"].append(majority(layer))  # type: ignore[arg-type]  # one of the strings given
            per["moa"].append(_extract(kind, item, line.get("final")) if line["status"] == "ok" else None)
        for name in answers:
            answers[name].append(per[name])
    truth = [item.answer or "" for item in items]
    ks = [2**e for e in range(len(samples).bit_length()) if 2**e <= len(samples)]
    correct = {name: [a[0] == t for a, t in zip(answers[name], truth)] for name in answers}
    rows = []
    for name in answers:
        scores = [float(c) for c in correct[name]]
        paired = None if name == "single" else mcnemar(correct[name], correct["single"])
        rows.append(
            {
                "config": name,
                "accuracy": 100.0 * sum(scores) / len(scores),
                "interval": bootstrap_ci(scores),
                "p": None if paired is None else paired.p,
                "maj": maj_at_k(answers[name], truth, ks),
            }
        )
    return rows
