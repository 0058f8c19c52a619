"""Tokens and estimated cost: per call, per layer, per run, per batch; and an upper bound before a run.

Prices are USD per million tokens, ``(input, output)`` per model. The defaults are Together's published
serverless prices for the reference script's models (together.ai/pricing, as listed in 2024: check the page for today's)
and zero for the bundled local models. Set your own with :func:`set_prices`, or pass ``prices=`` to any
function here. A model with no price gives no cost (counted in ``unpriced``), never a made-up one. A cached
answer costs nothing: no call was made. The bound of a run before it runs is :mod:`moa_lab._estimate`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from moa_lab._config_files import loads
from moa_lab._records import CallRecord

#: USD per million tokens (input, output).
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "Qwen/Qwen2-72B-Instruct": (0.90, 0.90),
    "Qwen/Qwen1.5-72B-Chat": (0.90, 0.90),
    "mistralai/Mixtral-8x22B-Instruct-v0.1": (1.20, 1.20),
    "databricks/dbrx-instruct": (1.20, 1.20),
    "smollm2-135m": (0.0, 0.0),
    "gemma3-270m": (0.0, 0.0),
}
_prices: dict[str, tuple[float, float]] = dict(DEFAULT_PRICES)

#: Tokens a chat template adds per message and per request, at most (role markers, separators): for estimates.
TEMPLATE_TOKENS_PER_MESSAGE = 8
TEMPLATE_TOKENS_PER_REQUEST = 8


def check_prices(prices: Mapping) -> dict[str, tuple[float, float]]:
    """``{model: (input, output)}`` or ``{model: price}`` (both the same), USD per million tokens, >= 0."""
    if not isinstance(prices, Mapping):
        raise ValueError(f"prices must be a mapping model -> (input, output) USD per million tokens, got {prices!r}")
    out = {}
    for model, price in prices.items():
        pair = (price, price) if isinstance(price, (int, float)) else price
        ok = (
            isinstance(model, str)
            and isinstance(pair, (list, tuple))
            and len(pair) == 2
            and all(isinstance(p, (int, float)) and not isinstance(p, bool) and p >= 0 for p in pair)
        )
        if not ok:
            raise ValueError(
                f"the price of {model!r} must be a number >= 0 or a pair (input, output) of them, "
                f"in USD per million tokens; got {price!r}"
            )
        out[model] = (float(pair[0]), float(pair[1]))
    return out


def read_prices(path: str | os.PathLike) -> dict[str, tuple[float, float]]:
    """A price table from a JSON file (``{model: [input, output]}``, USD per million tokens), checked."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read prices from {str(path)!r}: {exc.strerror}") from None
    try:
        prices = loads(text, ".json")  # a model given twice is refused, not the last price kept
    except ValueError as exc:
        raise ValueError(f"prices file {str(path)!r} is not JSON ({exc}); give {{model: [input, output]}}") from None
    if not isinstance(prices, dict):
        raise ValueError(f"prices file {str(path)!r} must hold a JSON object {{model: [input, output]}}")
    return check_prices(prices)


def free_models(names) -> None:
    """Models served on this machine (your own GGUF files on the embedded server) cost nothing, unless a price
    was set for them."""
    for name in names:
        _prices.setdefault(name, (0.0, 0.0))


def set_prices(prices: Mapping, *, replace: bool = False) -> None:
    """Add or change prices for this process (``replace=True``: drop the defaults first)."""
    checked = check_prices(prices)
    if replace:
        _prices.clear()
    _prices.update(checked)


class PriceTable(dict):
    """A resolved price table (what :func:`get_prices` returns): passed on as ``prices``, it is used as it is."""


def get_prices(prices: Mapping | None = None) -> PriceTable:
    """The price table in use: this process's (defaults and :func:`set_prices`), updated with ``prices``
    (checked once here; a :class:`PriceTable` is returned as it is, so a table resolved once serves many calls)."""
    if isinstance(prices, PriceTable):
        return prices
    return PriceTable({**_prices, **check_prices(prices or {})})


def call_cost(record: CallRecord, prices: Mapping | None = None) -> float | None:
    """Estimated USD of one call from its token usage; 0 for a cached answer; None if the model has no price
    or the server reported no usage."""
    if record.cached:
        return 0.0
    price = get_prices(prices).get(record.model)
    if price is None or (record.prompt_tokens is None and record.completion_tokens is None):
        return None
    return ((record.prompt_tokens or 0) * price[0] + (record.completion_tokens or 0) * price[1]) / 1e6


@dataclass
class Usage:
    """Totals over some calls. ``model_calls`` excludes answers from the cache; ``cost`` sums the priced
    calls, and ``unpriced`` counts the calls that could not be priced (no price for the model, or no usage).
    A call a budget refused (never started) is not counted."""

    calls: int = 0
    model_calls: int = 0
    cached: int = 0
    failed: int = 0
    stragglers: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    unpriced: int = 0
    unpriced_models: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        """Prompt and completion tokens together."""
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_dict(cls, totals: Mapping) -> Usage:
        """The totals a batch line or a run's JSON summary holds (``calls``, ``cached_calls``, ``failed_calls``,
        ``prompt_tokens``, ``completion_tokens``, ``cost``, ``unpriced_calls``: :func:`moa_lab._records.trace_dict`)
        as a Usage, without re-summing the calls."""
        calls, cached = totals["calls"], totals["cached_calls"]
        return cls(
            calls,
            totals.get("model_calls", calls - cached),
            cached,
            failed=totals["failed_calls"],
            stragglers=totals.get("straggler_calls", 0),
            prompt_tokens=totals["prompt_tokens"],
            completion_tokens=totals["completion_tokens"],
            cost=totals["cost"],
            unpriced=totals["unpriced_calls"],
            unpriced_models=list(totals.get("unpriced_models", [])),
        )

    def add(self, other: Usage) -> Usage:
        for name in (
            "calls",
            "model_calls",
            "cached",
            "failed",
            "stragglers",
            "prompt_tokens",
            "completion_tokens",
            "cost",
            "unpriced",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.unpriced_models = sorted(set(self.unpriced_models) | set(other.unpriced_models))
        return self

    def __str__(self) -> str:
        cost = f"≈ ${self.cost:.4f}" + (f" (+{self.unpriced} call(s) without a price)" if self.unpriced else "")
        stragglers = f", {self.stragglers} straggler(s) cancelled" if self.stragglers else ""
        return (
            f"{self.calls} calls ({self.cached} from the cache, {self.failed} failed{stragglers}), "
            f"{self.prompt_tokens} prompt + {self.completion_tokens} completion tokens, {cost}"
        )


def usage(calls: Iterable[CallRecord], prices: Mapping | None = None) -> Usage:
    """Tokens and estimated cost of ``calls`` (a run's ``trace``, one layer's ``calls``, a whole batch's)."""
    table = get_prices(prices)
    total = Usage()
    for record in calls:
        if record.status == "not started":  # refused by a budget: no call was made, nothing is counted
            continue
        total.calls += 1
        total.cached += record.cached
        total.model_calls += not record.cached and record.attempts > 0
        total.failed += record.status in ("failed", "cancelled")
        total.stragglers += record.straggler
        total.prompt_tokens += record.prompt_tokens or 0
        total.completion_tokens += record.completion_tokens or 0
        cost = call_cost(record, table)
        if cost is None:
            if record.attempts > 0:  # a call never made (cancelled while waiting) costs nothing
                total.unpriced += 1
                if record.model not in total.unpriced_models:
                    total.unpriced_models.append(record.model)
        else:
            total.cost += cost
    return total


def _bytes(text: str) -> int:
    return len(text.encode("utf-8"))


def prompt_bound(messages: Sequence[Mapping[str, str]]) -> int:
    """At most how many tokens these chat messages are: one per UTF-8 byte, plus the chat template's."""
    return TEMPLATE_TOKENS_PER_REQUEST + sum(TEMPLATE_TOKENS_PER_MESSAGE + _bytes(m["content"]) for m in messages)


def call_bound(messages: Sequence[Mapping[str, str]], references: Sequence[str] = (), limit: int | None = None) -> int:
    """At most how many prompt tokens a call is, by the rule :func:`estimate` uses: the messages at one token per
    UTF-8 byte, except that each of the ``references`` they hold (a previous answer, of at most ``limit`` tokens)
    counts at most ``limit``. So a call can never be bounded above what the run's estimate gave it."""
    tokens = prompt_bound(messages)
    if limit:
        tokens -= sum(max(0, _bytes(answer) - limit) for answer in references)
    return tokens
