"""Plain-data records of a run: one call, one layer, one whole MoA run, and the error that keeps them."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .jsonl import dumps


#: How the error of a call that a budget refused begins (no request was made).
NOT_STARTED = "not started:"


@dataclass
class CallRecord:
    """One model call, successful or not.

    ``started`` is wall-clock time (``time.time()``); ``seconds`` the call's duration including retries, of which
    ``queued`` were spent waiting in the embedded server for a core (0 elsewhere: other servers do not say).
    ``text`` is the answer; after a stream that broke mid-way it holds the part that arrived.
    Token counts are the server's ``usage`` when it reports one, else None.
    """

    layer: int
    index: int
    model: str
    role: str = "proposer"  # or "aggregator", or "judge" (moa_lab.evaluate)
    seed: int | None = None
    started: float = 0.0
    seconds: float = 0.0
    queued: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    attempts: int = 0
    text: str | None = None
    error: str | None = None
    cached: bool = False  # answered from the cache: no model call was made (attempts 0)
    straggler: bool = False  # cancelled because its layer moved on without it (quorum or deadline)
    step: str | None = None  # what an aggregator call did: "synthesize", "select", "rank", "window 2 of 3"
    references: list[int] | None = None  # the answers it read, as their numbers before, in the order it read them

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def status(self) -> str:
        """``"ok"``, ``"cached"``, ``"straggler"``, ``"cancelled"``, ``"not started"`` (refused by a budget) or
        ``"failed"``."""
        if self.ok:
            return "cached" if self.cached else "ok"
        if self.error.startswith(NOT_STARTED):
            return "not started"
        return "straggler" if self.straggler else "cancelled" if self.error == "cancelled" else "failed"

    @property
    def where(self) -> str:
        """The call's model and place: ``"model (layer 1 proposer 2)"``."""
        if self.role == "judge":
            return f"{self.model} (judge)"
        place = "aggregator" if self.role == "aggregator" else f"proposer {self.index + 1}"
        step = f", {self.step}" if self.step and self.step != "synthesize" else ""
        return f"{self.model} (layer {self.layer} {place}{step})"

    def describe_failure(self) -> str:
        return f"{self.where}: {self.error}"


@dataclass
class LayerResult:
    """The calls of one proposer layer, in model order."""

    layer: int
    calls: list[CallRecord] = field(default_factory=list)
    kept: list[int] | None = None  # max_references: the positions in ``answers`` passed on (None: every one)

    @property
    def answers(self) -> list[str]:
        """The successful answers, in model order (failed calls are left out, never passed on as text)."""
        return [c.text or "" for c in self.calls if c.ok]

    @property
    def passed_on(self) -> list[str]:
        """The answers the next layer reads: every one, or the ``kept`` ones (``max_references``)."""
        answers = self.answers
        return answers if self.kept is None else [answers[i] for i in self.kept]

    @property
    def failures(self) -> list[CallRecord]:
        return [c for c in self.calls if not c.ok]

    @property
    def models(self) -> list[str]:
        return [c.model for c in self.calls]


@dataclass
class Combination:
    """How the last layer's answers became the final one (``combine=``): the ``mode``, its ``calls`` (none for
    ``"vote"``; one per window for ``"sequential"``), the final ``text``, the references ``chosen`` (their
    numbers, from 1: ``select``'s pick, ``rank``'s top k, the answers of a vote's majority) and a ``note``."""

    mode: str
    calls: list[CallRecord]
    text: str
    chosen: list[int] = field(default_factory=list)
    note: str = ""


@dataclass
class MoAResult:
    """A whole run: every proposer layer, the aggregator's call, and the wall time.

    Built by ``run_moa``, or by hand from steps run one by one: ``MoAResult(prompt, layers, agg.record)`` (or
    ``MoAResult(prompt, layers, combination=await combine_answers(...))``);
    then ``seconds`` (if not given) is the span from the first call's start to the last call's end.
    ``combination``: how the last layer combined (None: one aggregator call, ``final``); ``final`` is then its
    last call (None for a vote). ``early_stop``: why the run stopped adding proposer layers, if it did.
    """

    prompt: str
    layers: list[LayerResult]
    final: CallRecord | None = None
    seconds: float = 0.0
    combination: Combination | None = None
    early_stop: str | None = None

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
        notes = [f"layer {layer.layer}: passed on answers {', '.join(str(i + 1) for i in layer.kept)} of "
                 f"{len(layer.answers)} (max_references)" for layer in self.layers if layer.kept is not None]
        if self.early_stop:
            notes.append(self.early_stop)
        if self.combination is not None and self.combination.note:
            notes.append(f"combine={self.combination.mode}: {self.combination.note}")
        return notes

    def summary(self) -> str:
        """A per-call table (layer, model, seconds, tokens, attempts, error) as text, and the run's notes."""
        from .trace import format_trace

        return "\n".join([format_trace(self.trace), *self.notes])

    def usage(self, prices=None):
        """Tokens and estimated cost of the whole run (:class:`moa_lab.usage.Usage`); ``prices`` as in
        :func:`moa_lab.usage.get_prices`."""
        from .usage import usage

        return usage(self.trace, prices)

    def to_dict(self, prices=None) -> dict[str, Any]:
        """JSON-ready: the prompt, the final text, per-layer models, answers, errors, tokens and cost, the
        run's totals and the full trace (each call with its estimated cost)."""
        return {"prompt": self.prompt, "final": self.text, "seconds": self.seconds, **self.decisions(),
                **layers_dict(self.layers, prices), **trace_dict(self.trace, prices)}

    def decisions(self) -> dict[str, Any]:
        """What the run decided on its own, JSON-ready: ``combine`` (mode, references chosen, note) and
        ``early_stop`` (why it stopped adding layers, or None)."""
        c = self.combination
        return {"combine": None if c is None else {"mode": c.mode, "chosen": c.chosen, "note": c.note},
                "early_stop": self.early_stop}

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
    from .usage import get_prices, usage

    prices, out = get_prices(prices), []  # resolved once for every layer
    for layer in layers:
        used = usage(layer.calls, prices)
        out.append({"layer": layer.layer, "models": layer.models, "answers": layer.answers, "kept": layer.kept,
                    "errors": [c.describe_failure() for c in layer.failures], "prompt_tokens": used.prompt_tokens,
                    "completion_tokens": used.completion_tokens, "cost": used.cost})
    return {"layers": out}


def trace_dict(trace: list[CallRecord], prices=None) -> dict[str, Any]:
    """Totals over ``trace`` (calls, failed, cached, tokens, cost) and every call with its estimated cost."""
    from .usage import call_cost, get_prices, usage

    prices = get_prices(prices)  # resolved once for every call
    used = usage(trace, prices)
    return {"calls": used.calls, "model_calls": used.model_calls, "failed_calls": used.failed,
            "cached_calls": used.cached, "straggler_calls": used.stragglers, "prompt_tokens": used.prompt_tokens, "completion_tokens": used.completion_tokens, "cost": used.cost,
            "unpriced_calls": used.unpriced,
            "unpriced_models": used.unpriced_models, "trace": [{**asdict(c), "cost": call_cost(c, prices)} for c in trace]}


class MoAError(RuntimeError):
    """A run could not go on. Names every failed model and its cause.

    ``failures`` holds the failed calls' records; ``layers`` every proposer layer computed before the
    failure (so the caller can aggregate again without re-running them); ``steps`` the last layer's calls made
    before it (a ranking, earlier windows); ``partial`` the aggregator's text that arrived before a stream
    broke, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        failures: list[CallRecord] | None = None,
        layers: list[LayerResult] | None = None,
        steps: list[CallRecord] | None = None,
    ) -> None:
        self.failures = list(failures or [])
        self.layers = list(layers or [])
        self.steps = list(steps or [])
        details = "".join(f"\n  - {c.describe_failure()}" for c in self.failures)
        super().__init__(message + details)

    @property
    def partial(self) -> str:
        return "".join(c.text or "" for c in self.failures if c.role == "aggregator")
