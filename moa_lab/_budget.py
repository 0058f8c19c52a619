"""Hard caps on what a run (or a batch) spends: ``max_cost`` (USD) and ``max_tokens_total`` (prompt and completion
tokens), from the settings.

Before a run, its bound (:func:`moa_lab._estimate`: every answer at ``max_tokens``) must fit, else it is refused
and nothing is called; a model without a price is refused under ``max_cost`` (never guessed). During a run, a
call starts only if what was spent, plus what the calls in flight may still spend (each counted at its bound
until it ends), plus its own bound, stays within the budget; otherwise :class:`BudgetExceeded` ends the run
and what finished is kept. A finished call counts what the server reported (a cached answer: nothing; a call
that returned text without a usage report: its bound; a call that failed without one: nothing).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from moa_lab._records import NOT_STARTED, CallRecord, MoAError
from moa_lab._settings import Settings
from moa_lab._usage import PriceTable, call_bound, call_cost, get_prices


class BudgetExceeded(MoAError):
    """A run (or a batch) stopped, or was refused before it began, because the next call could cross
    ``max_cost`` or ``max_tokens_total``. Like :class:`MoAError` it keeps what finished (``layers``,
    ``steps``); ``budget`` says what was spent; from ``run_batch``, ``summary`` is the batch's summary."""

    budget: Budget | None = None
    summary: Any = None  # a BatchSummary (moa_lab.runs), set by run_batch


@dataclass
class _Hold:
    tokens: int
    cost: float


class Budget:
    """What one run or batch may still spend. ``spent_cost``/``spent_tokens``: finished calls; ``held_*``:
    the bounds of the calls in flight."""

    def __init__(self, max_cost: float | None, max_tokens_total: int | None, prices: Mapping | None = None) -> None:
        self.max_cost, self.max_tokens_total = max_cost, max_tokens_total
        self.prices: PriceTable = get_prices(prices)
        self.spent_cost = self.held_cost = 0.0
        self.spent_tokens = self.held_tokens = 0
        self.refused = 0

    @classmethod
    def of(cls, settings: Settings, prices: Mapping | None = None) -> Budget | None:
        """The budget the settings ask for; None when they set no cap."""
        if settings.max_cost is None and settings.max_tokens_total is None:
            return None
        return cls(settings.max_cost, settings.max_tokens_total, prices)

    def __str__(self) -> str:
        parts = []
        if self.max_cost is not None:
            parts.append(f"${self.spent_cost:.4f} of max_cost ${self.max_cost:g} spent")
        if self.max_tokens_total is not None:
            parts.append(f"{self.spent_tokens} of max_tokens_total {self.max_tokens_total} tokens used")
        return ", ".join(parts)

    def check_priced(self, models) -> None:
        """Under ``max_cost``, every model needs a price (ValueError naming the first without one)."""
        missing = [m for m in models if self.prices.get(m) is None]
        if missing and self.max_cost is not None:
            raise ValueError(
                f"max_cost is set but {missing[0]!r} has no price: its calls cannot be counted (never "
                "guessed); give it one with moa_lab.set_prices({...}) or prices="
            )

    def _bound(self, record: CallRecord, messages, max_tokens: int | None, references=()) -> _Hold:
        tokens_in, tokens_out = call_bound(messages, references, max_tokens), max_tokens or 0
        self.check_priced([record.model])
        price = self.prices.get(record.model)
        cost = 0.0 if price is None else (tokens_in * price[0] + tokens_out * price[1]) / 1e6
        return _Hold(tokens_in + tokens_out, cost)

    def reserve(self, record: CallRecord, messages, max_tokens: int | None, references=()) -> _Hold:
        """Hold the call's bound, or raise :class:`BudgetExceeded` (the call is not made). The bound is the
        estimate's rule (:func:`~moa_lab._usage.call_bound`): each of the ``references`` the messages hold counts
        at most ``max_tokens``, so a run whose estimate fits is never stopped here unless a server reports more."""
        hold = self._bound(record, messages, max_tokens, references)
        over = []
        if self.max_cost is not None and self.spent_cost + self.held_cost + hold.cost > self.max_cost + 1e-12:
            over.append(
                f"max_cost ${self.max_cost:g}: ${self.spent_cost:.4f} spent, ${self.held_cost:.4f} in "
                f"flight, this call up to ${hold.cost:.4f}"
            )
        if self.max_tokens_total is not None and (
            self.spent_tokens + self.held_tokens + hold.tokens > self.max_tokens_total
        ):
            over.append(
                f"max_tokens_total {self.max_tokens_total}: {self.spent_tokens} used, {self.held_tokens} in "
                f"flight, this call up to {hold.tokens}"
            )
        if over:
            self.refused += 1
            record.error = f"{NOT_STARTED} the budget would be crossed (" + "; ".join(over) + ")"
            error = BudgetExceeded(f"budget reached: {record.where} was not started ({'; '.join(over)})")
            error.budget = self
            raise error
        self.held_cost += hold.cost
        self.held_tokens += hold.tokens
        return hold

    def settle(self, hold: _Hold, record: CallRecord) -> None:
        """The call ended: its bound is let go and what it used is counted."""
        self.held_cost -= hold.cost
        self.held_tokens -= hold.tokens
        reported = record.prompt_tokens is not None or record.completion_tokens is not None
        if reported:
            self.spent_tokens += (record.prompt_tokens or 0) + (record.completion_tokens or 0)
            self.spent_cost += call_cost(record, self.prices) or 0.0
        elif record.text:  # an answer without a usage report: counted at its bound, never at nothing
            self.spent_tokens += hold.tokens
            self.spent_cost += hold.cost
