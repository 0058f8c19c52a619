"""A whole MoA run's result (:class:`MoAResult`): its layers and last step, with its table, totals and JSON."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from moa_lab._attribution import Attribution, attribute
from moa_lab._conversation import Prompt, last_user, turns
from moa_lab._jsonl import dumps
from moa_lab._records import CallRecord, Combination, LayerResult
from moa_lab._similarity import SimilaritySpec
from moa_lab._trace import format_trace
from moa_lab._usage import Usage, call_cost, get_prices, usage


@dataclass
class MoAResult:
    """A whole run: every proposer layer, the aggregator's call, and the wall time.

    Built by ``run_moa``, or by hand from steps run one by one: ``MoAResult(prompt, layers, agg.record)`` (or
    ``MoAResult(prompt, layers, combination=await combine_answers(...))``);
    then ``seconds`` (if not given) is the span from the first call's start to the last call's end.
    ``combination``: how the last layer combined (None: one aggregator call, ``final``); ``final`` is then its
    last call (None for a vote). ``early_stop``: why the run stopped adding proposer layers, if it did.
    """

    prompt: Prompt
    layers: list[LayerResult]
    final: CallRecord | None = None
    seconds: float = 0.0
    combination: Combination | None = None
    early_stop: str | None = None
    #: the run's ``similarity`` setting: what :meth:`attribution` compares with by default
    similarity: SimilaritySpec = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.final is None and self.combination is not None and self.combination.calls:
            self.final = self.combination.calls[-1]
        timed = [c for c in self.trace if c.started]
        if not self.seconds and timed:
            self.seconds = max(c.started + c.seconds for c in timed) - min(c.started for c in timed)

    @property
    def text(self) -> str:
        """The final answer: the aggregator's (or what ``combine`` chose)."""
        if self.combination is not None:
            return self.combination.text
        return self.final.text or "" if self.final is not None else ""

    @property
    def finish_reason(self) -> str:
        """Why the final answer ended, in OpenAI's words: ``"length"`` when ``max_tokens`` cut the call that wrote it,
        else ``"stop"`` (also for a vote, or a ``select`` that returns a reference: no call wrote that text now)."""
        writes = self.combination is None or self.combination.mode not in ("vote", "select")
        return "length" if writes and self.final is not None and self.final.finish_reason == "length" else "stop"

    @property
    def messages(self) -> list[dict[str, str]]:
        """The conversation so far: the prompt's turns (a string: one user turn), then the final answer as the
        assistant's. Add the next user turn and run it: ``run_moa(messages=result.messages + [{"role": "user",
        "content": "..."}])``."""
        return turns(self.prompt) + [{"role": "assistant", "content": self.text}]

    @property
    def steps(self) -> list[CallRecord]:
        """The calls of the last layer (the aggregator's: one, several, or none for a vote)."""
        if self.combination is not None:
            return list(self.combination.calls)
        return [self.final] if self.final is not None else []

    @property
    def trace(self) -> list[CallRecord]:
        """Every call of the run, layer by layer, the aggregator's last."""
        return [c for layer in self.layers for c in layer.calls] + self.steps

    @property
    def notes(self) -> list[str]:
        """What the run decided on its own: an early stop, the references kept, how the last layer combined."""
        notes = [f"layer {layer.layer}: {why}" for layer in self.layers for why in layer.left_out.values()]
        notes += [
            f"layer {layer.layer}: passed on answers {', '.join(str(i + 1) for i in layer.kept)} of "
            f"{len(layer.answers)} (" + ("filter_outliers" if layer.left_out else "max_references") + ")"
            for layer in self.layers
            if layer.kept is not None
        ]
        if self.early_stop:
            notes.append(self.early_stop)
        if self.combination is not None and self.combination.note:
            notes.append(f"combine={self.combination.mode}: {self.combination.note}")
        return notes

    def attribution(self, similarity: SimilaritySpec = None) -> Attribution:
        """What the final answer took from each reference the last layer read (:mod:`moa_lab._attribution`): per
        sentence its closest reference and how close, per reference its share. ``similarity``: ``"lexical"``,
        ``"semantic"`` or a function (default: the run's, else lexical). No model call."""
        last = self.layers[-1] if self.layers else None
        models = [c.model for c in last.calls if c.ok] if last is not None else []
        if last is not None and last.kept is not None:
            models = [models[i] for i in last.kept]
        return attribute(self.text, last.passed_on if last is not None else [], models, similarity or self.similarity)

    def summary(self) -> str:
        """A per-call table (layer, model, seconds, tokens, attempts, error) as text, and the run's notes."""
        return "\n".join([format_trace(self.trace), *self.notes])

    def usage(self, prices=None) -> Usage:
        """Tokens and estimated cost of the whole run (:class:`moa_lab._usage.Usage`); ``prices`` as in
        :func:`moa_lab._usage.get_prices`."""
        return usage(self.trace, prices)

    def to_dict(self, prices=None) -> dict[str, Any]:
        """JSON-ready: the prompt, the final text, per-layer models, answers, errors, tokens and cost, the
        run's totals and the full trace (each call with its estimated cost)."""
        return {
            "prompt": last_user(self.prompt),  # a conversation's last user turn; the whole one in "messages"
            **({} if isinstance(self.prompt, str) else {"messages": [dict(m) for m in self.prompt]}),
            "final": self.text,
            "seconds": self.seconds,
            **self.decisions(),
            **layers_dict(self.layers, prices),
            **trace_dict(self.trace, prices),
        }

    def decisions(self) -> dict[str, Any]:
        """What the run decided on its own, JSON-ready: ``combine`` (mode, references chosen, note) and
        ``early_stop`` (why it stopped adding layers, or None)."""
        c = self.combination
        return {
            "combine": None if c is None else {"mode": c.mode, "chosen": c.chosen, "note": c.note},
            "early_stop": self.early_stop,
        }

    def to_pandas(self, prices=None):
        """The trace as a pandas DataFrame: one row per call (layer, index, model, role, status, seed, started,
        seconds, tokens, attempts, text, error, cached, straggler, estimated cost), the aggregator last."""
        import pandas as pd

        rows = trace_dict(self.trace, prices)["trace"]
        return pd.DataFrame([{**row, "status": call.status} for row, call in zip(rows, self.trace)])

    def save(self, path: str | os.PathLike, **extra: Any) -> Path:
        """Write :meth:`to_dict` (plus ``extra`` keys, e.g. the settings) as JSON to ``path``; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = dumps({**self.to_dict(), **extra}, indent=2)
        path.write_text(text + "\n", encoding="utf-8")
        return path


def layers_dict(layers: list[LayerResult], prices=None) -> dict[str, Any]:
    """``{"layers": [...]}``: per layer its models, answers, errors, tokens and estimated cost."""
    prices, out = get_prices(prices), []  # resolved once for every layer
    for layer in layers:
        used = usage(layer.calls, prices)
        out.append(
            {
                "layer": layer.layer,
                "models": layer.models,
                "answers": layer.answers,
                "kept": layer.kept,
                **({"left_out": {str(i + 1): why for i, why in layer.left_out.items()}} if layer.left_out else {}),
                "errors": [c.describe_failure() for c in layer.failures],
                "prompt_tokens": used.prompt_tokens,
                "completion_tokens": used.completion_tokens,
                "cost": used.cost,
            }
        )
    return {"layers": out}


def trace_dict(trace: list[CallRecord], prices=None) -> dict[str, Any]:
    """Totals over ``trace`` (calls, failed, cached, tokens, cost) and every call with its estimated cost."""
    prices = get_prices(prices)  # resolved once for every call
    used = usage(trace, prices)
    return {
        "calls": used.calls,
        "model_calls": used.model_calls,
        "failed_calls": used.failed,
        "cached_calls": used.cached,
        "straggler_calls": used.stragglers,
        "prompt_tokens": used.prompt_tokens,
        "completion_tokens": used.completion_tokens,
        "cost": used.cost,
        "unpriced_calls": used.unpriced,
        "unpriced_models": used.unpriced_models,
        "trace": [{**asdict(c), "cost": call_cost(c, prices)} for c in trace],
    }
