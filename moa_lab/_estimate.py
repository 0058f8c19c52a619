"""Before a run: how many calls it makes, and upper bounds of its tokens and cost (:func:`estimate`); a run or a
batch whose bound does not fit its budget is refused here (:func:`check_budget`), before any call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from moa_lab._budget import Budget, BudgetExceeded
from moa_lab._conversation import PromptInput, is_conversation, turns
from moa_lab._plan import RunPlan, from_plan, plan_run
from moa_lab._settings import passed_on, steps
from moa_lab._usage import TEMPLATE_TOKENS_PER_MESSAGE, TEMPLATE_TOKENS_PER_REQUEST, _bytes, get_prices


@dataclass(frozen=True)
class Estimate:
    """Before a run: how many model calls it makes, and upper bounds of its tokens and cost (every answer at
    ``max_tokens``; prompts counted as one token per UTF-8 byte, plus the chat template's tokens)."""

    prompts: int
    calls: int
    max_prompt_tokens: int
    max_completion_tokens: int
    max_cost: float | None  # None: some model has no price
    unpriced_models: tuple[str, ...] = ()

    def __add__(self, other: Estimate) -> Estimate:
        """Two runs' bounds together (a benchmark's answers and its judge's calls)."""
        cost = None if self.max_cost is None or other.max_cost is None else self.max_cost + other.max_cost
        return Estimate(
            self.prompts + other.prompts,
            self.calls + other.calls,
            self.max_prompt_tokens + other.max_prompt_tokens,
            self.max_completion_tokens + other.max_completion_tokens,
            cost,
            tuple(sorted(set(self.unpriced_models) | set(other.unpriced_models))),
        )

    def __str__(self) -> str:
        cost = (
            f"≤ ${self.max_cost:.4f}"
            if self.max_cost is not None
            else f"unknown (no price for {', '.join(self.unpriced_models)})"
        )
        return (
            f"{self.prompts} prompt(s): {self.calls} model calls, ≤ {self.max_prompt_tokens} prompt tokens, "
            f"≤ {self.max_completion_tokens} completion tokens, cost {cost}"
        )


def _system_bound(instructions: str, references: int, limit: int, role: str | None = None) -> int:
    """The bound of a system message: ``role``, then ``instructions`` with ``references`` answers of at most
    ``limit`` tokens each, numbered (none of either: no system message)."""
    tokens = _bytes(role) + 2 if role else 0
    if references:
        tokens += _bytes(instructions) + references * (limit + len(f"{references}. \n"))
    return tokens + TEMPLATE_TOKENS_PER_MESSAGE if tokens else 0


def call_bounds(plan: RunPlan) -> list[tuple[str, int, int]]:
    """Every call a run may make, as ``(model, prompt tokens, completion tokens)`` bounds, in order: each proposer
    layer (with its roles, reading what the layer before passes on), then the last layer's calls for its
    ``combine`` mode (see :func:`moa_lab._combine.steps`). An early stop only makes fewer."""
    settings, limit = plan.settings, plan.max_tokens or 0
    # the conversation's turns (a string: one); a system message of its own is joined to the call's ("\n\n")
    user = TEMPLATE_TOKENS_PER_REQUEST + sum(
        _bytes(m["content"]) + TEMPLATE_TOKENS_PER_MESSAGE + (2 if m["role"] == "system" else 0)
        for m in turns(plan.prompt)
    )
    roles, out, previous = settings.roles or (), [], 0
    for models in plan.proposers:
        for i, model in enumerate(models):
            role = roles[i] if i < len(roles) else None
            out.append((model, user + _system_bound(settings.instructions, previous, limit, role), limit))
        previous = passed_on(settings, len(models))
    for instructions, references in steps(settings, previous):
        out.append((plan.aggregator, user + _system_bound(instructions, references, limit), limit))
    return out


def estimate(
    prompt: PromptInput | Sequence[PromptInput] | RunPlan,
    proposers=None,
    aggregator: str | None = None,
    *,
    prices: Mapping | None = None,
    plan: RunPlan | None = None,
    **settings,
) -> Estimate:
    """How many calls a run (or a batch: a list of prompts, strings or conversations) makes, with upper bounds of
    tokens and cost.
    Arguments as for :func:`moa_lab.plan_run` (or one :class:`~moa_lab.RunPlan`; ``plan=``: a plan's models and
    settings for every prompt); no model is called. Every ``combine`` mode's calls are counted (a vote makes
    none; ``"rank"`` two; ``"sequential"`` one per window), and what ``roles`` and ``max_references`` change.

    The bound: each answer has at most ``max_tokens`` tokens; a prompt has at most one token per UTF-8 byte
    (true of byte-level BPE and byte-fallback tokenizers) plus the chat template's few tokens; a previous answer
    re-read by the next layer counts ``max_tokens`` again (exact for the same tokenizer).
    """
    proposers, aggregator, settings = from_plan(plan, proposers, aggregator, settings)
    prompts = [prompt] if isinstance(prompt, (str, RunPlan)) or is_conversation(prompt) else list(prompt)
    if not prompts:
        raise ValueError("estimate needs at least one prompt")
    plans = [
        item if isinstance(item, RunPlan) else plan_run(item, proposers, aggregator, **settings)  # type: ignore[arg-type]
        for item in prompts
    ]
    return total(len(prompts), [bound for plan in plans for bound in call_bounds(plan)], prices)


def total(prompts: int, bounds: Sequence[tuple[str, int, int]], prices: Mapping | None = None) -> Estimate:
    """The :class:`Estimate` of calls bounded as :func:`call_bounds` bounds them (``(model, prompt tokens,
    completion tokens)`` each), priced by ``prices`` (:func:`moa_lab._usage.get_prices`)."""
    table = get_prices(prices)
    cost, unpriced = 0.0, set()
    for model, tokens_in, tokens_out in bounds:
        price = table.get(model)
        if price is None:
            unpriced.add(model)
        else:
            cost += (tokens_in * price[0] + tokens_out * price[1]) / 1e6
    return Estimate(
        prompts,
        len(bounds),
        sum(b[1] for b in bounds),
        sum(b[2] for b in bounds),
        None if unpriced else cost,
        tuple(sorted(unpriced)),
    )


def check_budget(plan: RunPlan, prices: Mapping | None = None, runs: int = 1) -> None:
    """Refuse, before any call, a run whose bound does not fit its budget (``runs``: a batch's prompts, each
    checked on its own: one prompt's run must fit), or a model without a price under ``max_cost``."""
    settings = plan.settings
    if settings.max_cost is None and settings.max_tokens_total is None:
        return
    Budget(settings.max_cost, settings.max_tokens_total, prices).check_priced(
        [m for layer in plan.proposers for m in layer] + [plan.aggregator]
    )
    bound = estimate(plan, prices=prices)
    what = "one prompt's run" if runs > 1 else "the run"
    over = []
    if settings.max_cost is not None and bound.max_cost is not None and bound.max_cost > settings.max_cost:
        over.append(f"may cost up to ${bound.max_cost:.4f}, more than max_cost ${settings.max_cost:g}")
    tokens = bound.max_prompt_tokens + bound.max_completion_tokens
    if settings.max_tokens_total is not None and tokens > settings.max_tokens_total:
        over.append(f"may use up to {tokens} tokens, more than max_tokens_total {settings.max_tokens_total}")
    if over:
        raise BudgetExceeded(
            f"refused before any call: {what} ({bound.calls} calls, every answer at max_tokens "
            f"{settings.max_tokens}) {' and '.join(over)}; raise the budget, or lower max_tokens "
            "or the number of proposers"
        )
