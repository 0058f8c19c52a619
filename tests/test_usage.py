"""Tokens and cost: the arithmetic per call, layer, run and batch; estimate() as an upper bound."""

import pytest
from conftest import run

import moa_lab
from moa_lab import CallRecord, estimate, run_moa, set_prices
from moa_lab._usage import DEFAULT_PRICES, _prices, call_cost, usage

QWEN, MIXTRAL = "Qwen/Qwen2-72B-Instruct", "mistralai/Mixtral-8x22B-Instruct-v0.1"


@pytest.fixture(autouse=True)
def default_prices():
    yield
    _prices.clear()
    _prices.update(DEFAULT_PRICES)


def rec(model, prompt, completion, **kw):
    return CallRecord(1, 0, model, prompt_tokens=prompt, completion_tokens=completion, attempts=1, **kw)


def test_call_cost_is_tokens_times_price_per_million():
    assert call_cost(rec(QWEN, 1000, 500)) == pytest.approx((1000 * 0.90 + 500 * 0.90) / 1e6)
    set_prices({"m": (0.5, 2.0)})
    assert call_cost(rec("m", 1_000_000, 250_000)) == pytest.approx(0.5 + 0.5)
    assert call_cost(rec("m", 10, 10), prices={"m": 100}) == pytest.approx(10 * 100 / 1e6 * 2)
    assert call_cost(rec("smollm2-135m", 500, 64)) == 0.0  # the bundled models are free
    assert call_cost(rec(QWEN, 1000, 500, cached=True)) == 0.0  # no call was made
    assert call_cost(rec("unknown/model", 1000, 500)) is None  # never a made-up price
    assert call_cost(rec(QWEN, None, None)) is None  # no usage reported


def test_usage_totals_and_unpriced_calls():
    calls = [rec(QWEN, 100, 50), rec(MIXTRAL, 200, 100), rec("nobody/knows", 10, 10), rec(QWEN, 100, 50, cached=True)]
    total = usage(calls)
    assert (total.calls, total.model_calls, total.cached, total.unpriced) == (4, 3, 1, 1)
    assert total.prompt_tokens == 410 and total.completion_tokens == 210
    assert total.cost == pytest.approx((150 * 0.90 + 300 * 1.20) / 1e6)
    assert total.unpriced_models == ["nobody/knows"] and "1 call(s) without a price" in str(total)


def test_run_and_layer_costs_add_up(fault, remote):
    set_prices({"a": (1.0, 3.0), "b": (2.0, 2.0), "agg": (10.0, 10.0)})
    result = run(run_moa("Why?", ["a", "b"], "agg", layers=3, backend=remote))
    data = result.to_dict()
    per_call = [c["cost"] for c in data["trace"]]
    # The fault server reports 7 prompt tokens and one completion token per word of its answer.
    expected = [
        (7 * p_in + c.completion_tokens * p_out) / 1e6
        for c, (p_in, p_out) in zip(result.trace, [(1, 3), (2, 2), (1, 3), (2, 2), (10, 10)])
    ]
    assert per_call == pytest.approx(expected)
    assert [layer["cost"] for layer in data["layers"]] == pytest.approx([sum(expected[:2]), sum(expected[2:4])])
    assert data["cost"] == pytest.approx(sum(expected)) == pytest.approx(result.usage().cost)
    assert data["prompt_tokens"] == 35 and data["completion_tokens"] == sum(c.completion_tokens for c in result.trace)


@pytest.mark.parametrize("bad", [{"m": -1}, {"m": (1,)}, {"m": "cheap"}, {"m": (1, True)}, ["m", 1]])
def test_bad_prices_are_refused(bad):
    with pytest.raises(ValueError, match="price"):
        set_prices(bad)


def test_estimate_counts_calls_and_bounds_tokens_and_cost(remote):
    est = estimate("Hi", [QWEN, MIXTRAL], MIXTRAL, layers=3, max_tokens=100, backend=remote)
    assert est.calls == 5 and est.max_completion_tokens == 500
    user = len(b"Hi") + 16  # one token per byte, plus the template's per-request and per-message tokens
    refs = len(moa_lab.prompts.AGGREGATOR_PROMPT.encode()) + 8 + 2 * (100 + len("2. \n"))
    assert est.max_prompt_tokens == 5 * user + 3 * refs
    layer_cost = lambda price, refs_: ((user + refs_) * price + 100 * price) / 1e6  # noqa: E731
    assert est.max_cost == pytest.approx(
        layer_cost(0.9, 0) + layer_cost(1.2, 0) + layer_cost(0.9, refs) + layer_cost(1.2, refs) + layer_cost(1.2, refs)
    )
    batch = estimate(["Hi", "Hi"], [QWEN, MIXTRAL], MIXTRAL, layers=3, max_tokens=100, backend=remote)
    assert (batch.prompts, batch.calls, batch.max_cost) == (2, 10, pytest.approx(2 * est.max_cost))
    unknown = estimate("Hi", ["x"], "y", backend=remote)
    assert unknown.max_cost is None and unknown.unpriced_models == ("x", "y") and "no price for x, y" in str(unknown)


def test_estimate_checks_its_settings(remote):
    with pytest.raises(ValueError, match="max_tokens"):
        estimate("Hi", ["a"], "b", max_tokens=0, backend=remote)
    with pytest.raises(ValueError, match="at least one prompt"):
        estimate([], ["a"], "b", backend=remote)


@pytest.mark.local
def test_estimate_bounds_a_real_run(local):
    est = estimate("Name a colour.", max_tokens=24, layers=3, backend=local)
    result = run(run_moa("Name a colour.", max_tokens=24, layers=3, backend=local, cache=False))
    used = result.usage()
    assert used.calls == est.calls == 9 and used.failed == 0
    assert 0 < used.prompt_tokens <= est.max_prompt_tokens and 0 < used.completion_tokens <= est.max_completion_tokens
    assert used.cost == 0 == est.max_cost
