"""Plain-data records of a run: one call, one layer, one whole MoA run, and the error that keeps them."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .jsonl import dumps


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

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def status(self) -> str:
        """``"ok"``, ``"cached"``, ``"straggler"``, ``"cancelled"`` or ``"failed"``."""
        if self.ok:
            return "cached" if self.cached else "ok"
        return "straggler" if self.straggler else "cancelled" if self.error == "cancelled" else "failed"

    @property
    def where(self) -> str:
        """The call's model and place: ``"model (layer 1 proposer 2)"``."""
        if self.role == "judge":
            return f"{self.model} (judge)"
        place = "aggregator" if self.role == "aggregator" else f"proposer {self.index + 1}"
        return f"{self.model} (layer {self.layer} {place})"

    def describe_failure(self) -> str:
        return f"{self.where}: {self.error}"


@dataclass
class LayerResult:
    """The calls of one proposer layer, in model order."""

    layer: int
    calls: list[CallRecord] = field(default_factory=list)

    @property
    def answers(self) -> list[str]:
        """The successful answers, in model order (failed calls are left out, never passed on as text)."""
        return [c.text or "" for c in self.calls if c.ok]

    @property
    def failures(self) -> list[CallRecord]:
        return [c for c in self.calls if not c.ok]

    @property
    def models(self) -> list[str]:
        return [c.model for c in self.calls]


@dataclass
class MoAResult:
    """A whole run: every proposer layer, the aggregator's call, and the wall time.

    Built by ``run_moa``, or by hand from steps run one by one: ``MoAResult(prompt, layers, agg.record)``;
    then ``seconds`` (if not given) is the span from the first call's start to the last call's end.
    """

    prompt: str
    layers: list[LayerResult]
    final: CallRecord
    seconds: float = 0.0

    def __post_init__(self) -> None:
        timed = [c for c in self.trace if c.started]
        if not self.seconds and timed:
            self.seconds = max(c.started + c.seconds for c in timed) - min(c.started for c in timed)

    @property
    def text(self) -> str:
        """The aggregator's final answer."""
        return self.final.text or ""

    @property
    def trace(self) -> list[CallRecord]:
        """Every call of the run, layer by layer, the aggregator last."""
        return [c for layer in self.layers for c in layer.calls] + [self.final]

    def summary(self) -> str:
        """A per-call table (layer, model, seconds, tokens, attempts, error) as text."""
        from .trace import format_trace

        return format_trace(self.trace)

    def usage(self, prices=None):
        """Tokens and estimated cost of the whole run (:class:`moa_lab.usage.Usage`); ``prices`` as in
        :func:`moa_lab.usage.get_prices`."""
        from .usage import usage

        return usage(self.trace, prices)

    def to_dict(self, prices=None) -> dict[str, Any]:
        """JSON-ready: the prompt, the final text, per-layer models, answers, errors, tokens and cost, the
        run's totals and the full trace (each call with its estimated cost)."""
        return {"prompt": self.prompt, "final": self.text, "seconds": self.seconds,
                **layers_dict(self.layers, prices), **trace_dict(self.trace, prices)}

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
        out.append({"layer": layer.layer, "models": layer.models, "answers": layer.answers,
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
    failure (so the caller can aggregate again without re-running them); ``partial`` the aggregator's
    text that arrived before a stream broke, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        failures: list[CallRecord] | None = None,
        layers: list[LayerResult] | None = None,
    ) -> None:
        self.failures = list(failures or [])
        self.layers = list(layers or [])
        details = "".join(f"\n  - {c.describe_failure()}" for c in self.failures)
        super().__init__(message + details)

    @property
    def partial(self) -> str:
        return "".join(c.text or "" for c in self.failures if c.role == "aggregator")
