"""Plain-data records of a run: one call, one layer, how the last layer combined, and the error that keeps them.
(A whole run's result, with its views and totals, is :mod:`moa_lab._results`.)"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    #: why the model stopped: "stop", or "length" when max_tokens cut the answer (OpenAI's values; an answer from
    #: the cache: "length" when it used all of max_tokens); None when the server did not say
    finish_reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def status(self) -> str:
        """``"ok"``, ``"cached"``, ``"straggler"``, ``"cancelled"``, ``"not started"`` (refused by a budget) or
        ``"failed"``."""
        if self.ok:
            return "cached" if self.cached else "ok"
        if (self.error or "").startswith(NOT_STARTED):
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
    kept: list[int] | None = None  # the positions in ``answers`` passed on (None: every one)
    #: filter_outliers: the positions in ``answers`` left out as far from the others', each with the reason
    left_out: dict[int, str] = field(default_factory=dict)

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
