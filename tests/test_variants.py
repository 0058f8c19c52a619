"""The variants (issue 18) on the fault server: how the last layer combines, what each proposer sees, early stop
and budgets. Each test checks the calls made (how many, and their messages), the trace, and the failure paths."""

import json

import pytest
from conftest import run, write_jsonl

import moa_lab
from moa_lab import MoAError, estimate, plan_run, run_batch, run_moa
from moa_lab._budget import BudgetExceeded
from moa_lab._limits import call_limits
from moa_lab._usage import DEFAULT_PRICES, _prices
from moa_lab.prompts import RANK_PROMPT, SELECT_PROMPT

P = "What is 17 + 25?"


@pytest.fixture(autouse=True)
def default_prices():
    yield
    _prices.clear()
    _prices.update(DEFAULT_PRICES)


def system_of(request: dict) -> str | None:
    return next((m["content"] for m in request["messages"] if m["role"] == "system"), None)


def numbered(system: str) -> list[str]:
    """The references a system message lists, in order (the fault server's answers are one line each)."""
    return [line.split(". ", 1)[1] for line in system.split("\n")[1:] if line[:1].isdigit()]  # not U+2028


def test_select_returns_the_reference_the_aggregator_names(fault, remote):
    fault.script("agg", "say:Response 2 is the most accurate.")
    chunks = []
    result = run(run_moa(P, ["a", "b", "c"], "agg", backend=remote, combine="select", on_chunk=chunks.append))
    layer = result.layers[0]
    assert result.text == layer.answers[1] and result.text.startswith("b answers")  # the reference, unchanged
    assert chunks == [result.text]  # sent whole, once
    assert len(fault.requests) == 4 and len(fault.calls_to("agg")) == 1
    system = system_of(fault.calls_to("agg")[0])
    assert system.startswith(SELECT_PROMPT) and numbered(system) == layer.answers
    assert result.combination.mode == "select" and result.combination.chosen == [2]
    assert result.final.step == "select" and result.final.text == "Response 2 is the most accurate."
    assert "chose reference 2 of 3" in result.summary() and result.to_dict()["combine"]["chosen"] == [2]


def test_select_with_shuffled_references_maps_the_number_back(fault, remote):
    fault.script("agg", "say:1")
    result = run(
        run_moa(P, ["a", "b", "c", "d"], "agg", backend=remote, combine="select", shuffle_references=True, seed=5)
    )
    shown = result.final.references  # the order the selector read them in
    assert sorted(shown) == [1, 2, 3, 4]
    assert numbered(system_of(fault.calls_to("agg")[0])) == [result.layers[0].answers[k - 1] for k in shown]
    assert result.combination.chosen == [shown[0]] and result.text == result.layers[0].answers[shown[0] - 1]


def test_a_select_reply_that_names_no_reference_fails_naming_the_model_and_keeps_the_layer(fault, remote):
    fault.script("agg", "say:They are all fine answers, really.")
    with pytest.raises(MoAError) as info:
        run(run_moa(P, ["a", "b"], "agg", backend=remote, combine="select"))
    text = str(info.value)
    assert "agg (layer 2 aggregator, select)" in text and "names no reference (a number from 1 to 2)" in text
    assert "They are all fine" in text
    assert len(info.value.layers) == 1 and len(info.value.layers[0].answers) == 2  # nothing lost
    assert [c.step for c in info.value.steps] == ["select"]


def test_rank_then_synthesize_the_top_k_in_rank_order(fault, remote):
    fault.script("agg", "say:3 > 1 > 2")
    chunks = []
    result = run(run_moa(P, ["a", "b", "c"], "agg", backend=remote, combine="rank", top_k=2, on_chunk=chunks.append))
    answers = result.layers[0].answers
    ranker, synthesis = fault.calls_to("agg")
    assert system_of(ranker).startswith(RANK_PROMPT) and numbered(system_of(ranker)) == answers
    assert numbered(system_of(synthesis)) == [answers[2], answers[0]]  # the best first
    assert [c.step for c in result.steps] == ["rank", "synthesize top 2"] and len(fault.requests) == 5
    assert result.combination.chosen == [3, 1] and "ranked 3 > 1 > 2" in result.combination.note
    assert "".join(chunks) == result.text == result.final.text and len(chunks) > 1  # only the synthesis streamed
    assert not result.final.text.startswith("3 >")


def test_rank_that_names_too_few_fills_the_top_k_in_order(fault, remote):
    fault.script("agg", "say:2")
    result = run(run_moa(P, ["a", "b", "c"], "agg", backend=remote, combine="rank", top_k=2))
    assert result.combination.chosen == [2, 1] and "the rest unranked" in result.combination.note


def test_vote_takes_the_majority_of_the_stated_answers_without_an_aggregator_call(fault, remote):
    fault.script("a", "say:The answer is 42.").script("b", "say:41").script("c", "say:17 + 25 = 42")
    chunks = []
    result = run(run_moa(P, ["a", "b", "c"], "agg", backend=remote, combine="vote", on_chunk=chunks.append))
    assert result.text == "42" and chunks == ["42"]
    assert fault.calls_to("agg") == [] and len(fault.requests) == 3 and result.final is None
    assert result.combination.chosen == [1, 3] and "by 2 of 3 answers" in result.combination.note
    assert [c.role for c in result.trace] == ["proposer"] * 3  # the trace holds the calls made, no more


def test_a_vote_tie_goes_to_the_first_and_says_so(fault, remote):
    fault.script("a", "say:B").script("b", "say:(c)").script("c", "say:Answer: C").script("d", "say:b.")
    result = run(run_moa(P, ["a", "b", "c", "d"], "agg", backend=remote, combine="vote"))
    assert result.text == "B" and "a tie with 'C'" in result.combination.note


def test_a_vote_with_no_stated_answer_fails_and_keeps_the_layer(fault, remote):
    long = "say:It depends on many things that are hard to weigh without knowing more about it"
    fault.script("a", long).script("b", long)
    with pytest.raises(MoAError, match="none of the 2 answers states a final answer") as info:
        run(run_moa(P, ["a", "b"], "agg", backend=remote, combine="vote"))
    assert len(info.value.layers[0].answers) == 2 and fault.calls_to("agg") == []


def test_sequential_reads_a_window_at_a_time_with_the_running_synthesis(fault, remote):
    chunks = []
    result = run(
        run_moa(
            P, ["a", "b", "c", "d", "e"], "agg", backend=remote, combine="sequential", window=2, on_chunk=chunks.append
        )
    )
    answers = result.layers[0].answers
    first, second, third = (numbered(system_of(r)) for r in fault.calls_to("agg"))
    steps = result.steps
    assert first == answers[:2]
    assert second == [steps[0].text] + answers[2:4] and third == [steps[1].text] + answers[4:]
    assert [s.step for s in steps] == [
        "window 1 of 3",
        "window 2 of 3, with the synthesis so far",
        "window 3 of 3, with the synthesis so far",
    ]
    assert len({s.seed for s in steps}) == 3 and "".join(chunks) == result.text == steps[-1].text
    assert not fault.calls_to("agg")[0].get("stream") and fault.calls_to("agg")[-1]["stream"]  # only the last streams


def test_roles_give_each_proposer_its_own_system_prompt(fault, remote):
    result = run(run_moa(P, ["a", "b"], "agg", layers=3, backend=remote, roles=["You are a sceptic.", None]))
    layer1 = [r for r in fault.requests[:2]]
    by_model = {r["model"]: r for r in layer1}
    assert system_of(by_model["a"]) == "You are a sceptic." and system_of(by_model["b"]) is None
    second = {r["model"]: system_of(r) for r in fault.requests[2:4]}
    assert second["a"].startswith("You are a sceptic.\n\n" + moa_lab.prompts.AGGREGATOR_PROMPT)
    assert second["b"].startswith(moa_lab.prompts.AGGREGATOR_PROMPT)
    assert not system_of(fault.calls_to("agg")[0]).startswith("You are")  # the aggregator has no role
    assert len(result.trace) == 5


def test_shuffled_references_give_each_call_its_own_order_the_same_on_a_rerun(fault, remote):
    models = ["a", "b", "c", "d"]
    result = run(run_moa(P, models, "agg", layers=3, backend=remote, shuffle_references=True))
    orders = [tuple(c.references) for c in result.layers[1].calls] + [tuple(result.final.references)]
    assert len(set(orders)) > 1 and all(sorted(o) == [1, 2, 3, 4] for o in orders)
    answers = result.layers[0].answers
    for record in result.layers[1].calls:
        request = next(r for r in fault.requests[4:8] if r["model"] == record.model)
        assert numbered(system_of(request)) == [answers[k - 1] for k in record.references]
    again = run(run_moa(P, models, "agg", layers=3, backend=remote, shuffle_references=True))
    assert [c.references for c in again.trace] == [c.references for c in result.trace]
    assert all(c.cached for c in again.trace) and len(fault.requests) == 9  # the same messages: from the cache


def test_max_references_passes_on_the_most_different_answers(fault, remote):
    fault.script("a", "say:alpha beta gamma").script("b", "say:alpha beta gamma delta")
    fault.script("c", "say:something else entirely")
    result = run(run_moa(P, ["a", "b", "c"], "agg", backend=remote, max_references=2))
    assert result.layers[0].kept == [0, 2]
    assert numbered(system_of(fault.calls_to("agg")[0])) == ["alpha beta gamma", "something else entirely"]
    assert "passed on answers 1, 3 of 3 (max_references)" in result.summary()
    assert result.to_dict()["layers"][0]["kept"] == [0, 2]


def test_early_stop_when_a_layers_answers_agree(fault, remote):
    same = "say:The answer is 42."
    fault.script("a", same).script("b", same)
    plan = plan_run(P, ["a", "b"], "agg", layers=4, backend=remote, early_stop=0.9)
    assert plan.calls == 7  # the bound: every layer
    result = run(moa_lab.run_plan(plan))
    assert len(fault.requests) == 3 and len(result.layers) == 1 and result.final.layer == 2
    assert result.early_stop.startswith("early stop after layer 1: its 2 answers were 1.00 alike")
    assert "proposer layers 2-3 skipped" in result.early_stop and result.to_dict()["early_stop"] == result.early_stop
    assert result.early_stop in result.summary()


def test_no_early_stop_while_answers_differ_and_a_callable_measure_replaces_the_lexical(fault, remote):
    result = run(run_moa(P, ["a", "b"], "agg", layers=3, backend=remote, early_stop=0.9))
    assert result.early_stop is None and len(fault.requests) == 5  # "a answers (seed 1000...)" vs "b answers..."

    def always_alike(x, y):
        return 1.0

    stopped = run(run_moa(P, ["a", "b"], "agg", layers=3, backend=remote, early_stop=0.9, similarity=always_alike))
    assert "pairwise always_alike similarity" in stopped.early_stop
    assert len(fault.requests) == 6  # layer 1 from the cache, then the aggregator at layer 2: one new call
    with pytest.raises(
        ValueError,
        match=r"the similarity function .*<lambda> must return a number in \[0, 1\], "
        r"returned 2",
    ):
        run(run_moa(P, ["a", "b"], "agg", layers=3, backend=remote, early_stop=0.9, similarity=lambda x, y: 2, seed=9))


@pytest.mark.parametrize(
    "mode, extra, script",
    [
        ("synthesize", {}, []),
        ("select", {}, ["say:2"]),
        ("rank", {"top_k": 2}, ["say:2 > 3"]),
        ("vote", {}, []),
        ("sequential", {"window": 2}, []),
        ("sequential", {"window": 5}, []),
    ],
)
def test_estimate_knows_every_modes_calls(fault, remote, mode, extra, script):
    fault.script("agg", *script)
    for model in "abcde":
        fault.script(model, f"say:The answer is {ord(model)}")
    settings = dict(backend=remote, combine=mode, max_tokens=16, **extra)
    bound = estimate(P, list("abcde"), "agg", **settings)
    run(run_moa(P, list("abcde"), "agg", **settings))
    assert bound.calls == len(fault.requests) == plan_run(P, list("abcde"), "agg", **settings).calls


def test_estimate_counts_roles_and_max_references():
    base = estimate(P, ["a", "b", "c"], "agg", backend="http://127.0.0.1:9", layers=3)
    fewer = estimate(P, ["a", "b", "c"], "agg", backend="http://127.0.0.1:9", layers=3, max_references=1)
    role = estimate(P, ["a", "b", "c"], "agg", backend="http://127.0.0.1:9", layers=3, roles=["x" * 100, None, None])
    assert fewer.calls == base.calls and fewer.max_prompt_tokens < base.max_prompt_tokens
    assert role.max_prompt_tokens == base.max_prompt_tokens + 2 * (100 + 2) + 8  # layer 1 (+ a message), layer 2


def test_a_run_whose_bound_exceeds_the_budget_is_refused_before_any_call(fault, remote):
    bound = estimate(P, ["a", "b"], "agg", backend=remote, max_tokens=32)
    tokens = bound.max_prompt_tokens + bound.max_completion_tokens
    with pytest.raises(BudgetExceeded, match=f"may use up to {tokens} tokens, more than max_tokens_total 100"):
        run(run_moa(P, ["a", "b"], "agg", backend=remote, max_tokens=32, max_tokens_total=100))
    moa_lab.set_prices({"a": 1.0, "b": 1.0, "agg": 10.0})
    with pytest.raises(BudgetExceeded, match=r"refused before any call: the run \(3 calls.*more than max_cost \$1e-06"):
        run(run_moa(P, ["a", "b"], "agg", backend=remote, max_tokens=32, max_cost=0.000001))
    assert fault.requests == []
    result = run(run_moa(P, ["a", "b"], "agg", backend=remote, max_tokens=32, max_tokens_total=tokens))
    assert len(result.trace) == 3  # a bound that fits: the run goes


def test_an_unpriced_model_under_max_cost_is_refused_not_guessed(fault, remote):
    moa_lab.set_prices({"a": 1.0, "agg": 1.0})
    with pytest.raises(ValueError, match="max_cost is set but 'b' has no price"):
        run(run_moa(P, ["a", "b"], "agg", backend=remote, max_cost=5.0))
    with pytest.raises(ValueError, match="'b' has no price"):
        run(moa_lab.run_layer(P, ["a", "b"], backend=remote, max_cost=5.0))
    assert fault.requests == []


def test_a_budget_hit_mid_layer_keeps_what_finished_and_starts_nothing_more(fault, remote):
    """The server counts far more tokens than the bound (another tokenizer): after the first call the budget is
    spent; the layer's other calls are not started, and the run ends with what finished."""
    fault.script("a", "tokens:5000")
    bound = estimate(P, ["a", "b", "c"], "agg", backend=remote, max_tokens=16)
    budget = bound.max_prompt_tokens + bound.max_completion_tokens
    with call_limits(1), pytest.raises(BudgetExceeded) as info:
        run(run_moa(P, ["a", "b", "c"], "agg", backend=remote, max_tokens=16, max_tokens_total=budget))
    error = info.value
    assert len(fault.requests) == 1 and fault.requests[0]["model"] == "a"
    first, *refused = error.layers[0].calls
    assert first.ok and first.completion_tokens == 5000
    assert all(c.error.startswith("not started: the budget would be crossed") and c.attempts == 0 for c in refused)
    assert f"max_tokens_total {budget}: 5007 used" in str(error) and error.budget.spent_tokens == 5007


def test_a_budget_hit_at_the_aggregator_keeps_the_layers(fault, remote):
    fault.script("a", "tokens:3000")
    bound = estimate(P, ["a"], "agg", backend=remote, max_tokens=16)
    with pytest.raises(BudgetExceeded, match=r"agg \(layer 2 aggregator\) was not started") as info:
        run(
            run_moa(
                P,
                ["a"],
                "agg",
                backend=remote,
                max_tokens=16,
                max_tokens_total=bound.max_prompt_tokens + bound.max_completion_tokens,
            )
        )
    assert info.value.layers[0].answers and [c.ok for c in info.value.steps] == [False]
    assert fault.calls_to("agg") == []


#: An answer of 8 tokens by the server's count, in 199 bytes: a reference whose bytes are far more than its tokens.
LONG = " ".join(["abcdefghijklmnopqrstuvwx"] * 8)


def test_a_budget_equal_to_the_estimate_is_never_refused_during_the_run(fault, remote):
    """One rule bounds both: the aggregator's reservation counts each reference at max_tokens, as estimate()
    does (not at its bytes), so a run accepted at exactly its estimate is not stopped half-way."""
    fault.script("a", f"say:{LONG}").script("b", f"say:{LONG}")
    bound = estimate(P, ["a", "b"], "agg", backend=remote, max_tokens=8)
    tokens = bound.max_prompt_tokens + bound.max_completion_tokens
    with pytest.raises(BudgetExceeded, match="refused before any call"):
        run(run_moa(P, ["a", "b"], "agg", backend=remote, max_tokens=8, max_tokens_total=tokens - 1))
    assert fault.requests == []
    result = run(run_moa(P, ["a", "b"], "agg", backend=remote, max_tokens=8, max_tokens_total=tokens))
    assert [c.status for c in result.trace] == ["ok", "ok", "ok"] and fault.calls_to("agg")
    assert LONG in system_of(fault.calls_to("agg")[0])  # the references it read were the long answers


def test_a_batch_budget_at_its_estimate_runs_every_prompt(fault, remote, tmp_path):
    prompts = write_jsonl(tmp_path / "in.jsonl", 3)
    for model in ("a", "b"):
        fault.script(model, *[f"say:{LONG}"] * 3)
    one = estimate("Question 0?", ["a", "b"], "agg", backend=remote, max_tokens=8)
    per_run = one.max_prompt_tokens + one.max_completion_tokens
    with pytest.raises(BudgetExceeded, match="refused before any call: one prompt's run"):
        run(
            run_batch(
                prompts,
                tmp_path / "low.jsonl",
                ["a", "b"],
                "agg",
                backend=remote,
                max_tokens=8,
                max_tokens_total=per_run - 1,
                concurrency=1,
                progress=False,
            )
        )
    assert fault.requests == [] and not (tmp_path / "low.jsonl").exists()
    summary = run(
        run_batch(
            prompts,
            tmp_path / "out.jsonl",
            ["a", "b"],
            "agg",
            backend=remote,
            max_tokens=8,
            max_tokens_total=3 * per_run,
            concurrency=1,
            progress=False,
        )
    )
    assert summary.done == 3 and summary.left == 0 and len(fault.calls_to("agg")) == 3


def test_a_batch_stops_at_its_budget_and_a_rerun_goes_on_from_the_cache(fault, remote, tmp_path):
    """Each prompt's run fits the budget, the batch does not: no call that could cross it starts; what finished
    is written; the rest is left for a rerun, whose finished calls come from the cache."""
    prompts = write_jsonl(tmp_path / "in.jsonl", 6)
    fault.script("agg", *["tokens:400"] * 6)
    one = estimate("Question 0?", ["a"], "agg", backend=remote, max_tokens=8)
    per_run = one.max_prompt_tokens + one.max_completion_tokens
    budget = 3 * per_run
    out = tmp_path / "out.jsonl"
    with pytest.raises(BudgetExceeded) as info:
        run(
            run_batch(
                prompts,
                out,
                ["a"],
                "agg",
                backend=remote,
                max_tokens=8,
                max_tokens_total=budget,
                concurrency=4,
                progress=False,
            )
        )
    summary, spent = info.value.summary, info.value.budget
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary.done == len(lines) and summary.left == 6 - len(lines) > 0 and summary.failed == 0
    assert spent.spent_tokens <= budget and spent.held_tokens == 0  # never crossed, nothing left held
    assert "left for a rerun with a larger budget" in str(info.value)
    assert all(line["status"] == "ok" for line in lines)
    made = len(fault.requests)
    again = run(
        run_batch(
            prompts,
            out,
            ["a"],
            "agg",
            backend=remote,
            max_tokens=8,
            max_tokens_total=10 * budget,
            concurrency=4,
            progress=False,
        )
    )
    assert again.skipped == len(lines) and again.done == 6 - len(lines)  # the budget is not in the settings id
    assert len(out.read_text().splitlines()) == 6
    assert again.usage.cached >= 1 and len(fault.requests) - made == again.usage.model_calls  # the cut runs' calls


def test_variants_are_evaluation_configurations_with_their_calls():
    from moa_lab.evaluate import variants

    configs = {c.name: c for c in variants(["p", "q"], "agg", n=3, window=2)}
    calls = {name: c.calls for name, c in configs.items()}
    assert calls == {
        "MoA n=3": 4,
        "Self-MoA x3": 4,
        "select n=3": 4,
        "rank top 2": 5,
        "vote x4": 4,
        "Self-MoA-Seq x3 w=2": 5,
        "shuffled, 2 most different": 4,
        "3 layers, early stop 0.5": 7,
        "one deceptive proposer": 4,
    }
    assert configs["MoA n=3"].proposers == (("p", "q", "p"),)
    assert "combine='vote'" in configs["vote x4"].describe()
    assert configs["one deceptive proposer"].settings["roles"][0] == moa_lab.prompts.DECEPTIVE_ROLE


def test_the_playground_runs_a_vote_and_an_early_stop_and_copies_their_settings(fault, remote):
    from conftest import click_and_wait

    from moa_lab.views._playground import Playground

    fault.script("a", "say:42").script("b", "say:42")
    panel = Playground(P, ["a", "b"], "agg", layers=3, backend=remote, early_stop=0.9, seed=4)
    panel.combine.value = "vote"
    click_and_wait(panel)
    assert panel.error is None and panel.final_text == "42" and fault.calls_to("agg") == []
    assert all("skipped (early stop)" in slot.value for slot in panel.slots[1])
    assert "early stop after layer 1" in panel.message and "combine=vote: '42' by 2 of 2" in panel.message
    assert "'combine': 'vote'" in panel.settings_text() and "'early_stop': 0.9" in panel.settings_text()
    assert "combine='vote'" in panel.settings_text("run_moa(...) call")
    panel.combine.value, panel.shuffle.value = "select", True
    fault.script("agg", "say:2")
    click_and_wait(panel)
    assert panel.final_text == panel.result.layers[0].answers[panel.result.combination.chosen[0] - 1]


def test_the_cli_runs_a_variant_and_a_batch_stops_at_its_budget_with_exit_3(fault, tmp_path):
    import subprocess
    import sys

    moa = [sys.executable, "-m", "moa_lab"]
    fault.script("a", "say:The answer is 42.").script("b", "say:42")
    done = subprocess.run(
        moa
        + [
            "ask",
            P,
            "--proposers",
            "a,b",
            "--aggregator",
            "agg",
            "--combine",
            "vote",
            "--backend",
            fault.url,
            "--no-cache",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.startswith("42") and "combine=vote: '42' by 2 of 2" in done.stdout
    assert fault.calls_to("agg") == []
    prompts = write_jsonl(tmp_path / "in.jsonl", 4)
    fault.script("agg", *["tokens:900"] * 4)
    one = estimate("Question 0?", ["a"], "agg", backend=fault.url, max_tokens=8)
    budget = str(2 * (one.max_prompt_tokens + one.max_completion_tokens))
    args = [
        "batch",
        str(prompts),
        str(tmp_path / "out.jsonl"),
        "--proposers",
        "a",
        "--aggregator",
        "agg",
        "--max-tokens",
        "8",
        "--concurrency",
        "1",
        "--no-progress",
        "--backend",
        fault.url,
        "--no-cache",
    ]
    stopped = subprocess.run(moa + args + ["--max-tokens-total", budget], capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 3 and "the batch stopped at its budget" in stopped.stderr
    assert "left by the budget, of 4 prompts" in stopped.stdout
    resumed = subprocess.run(moa + args, capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0 and "already there" in resumed.stdout
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 4


def test_variants_with_the_text_users_really_send(fault, remote):
    """CJK, emoji and U+2028 in answers: the lexical measure splits CJK per character, a vote counts CJK answers,
    the references reach the aggregator intact; a lone surrogate in a role is refused before any call."""
    from moa_lab._similarity import lexical

    assert lexical("東京は大きい", "東京は小さい") == 4 / 8 and lexical("🙂 a\u2028b", "🙂 a\u2028b") == 1.0
    fault.script("a", "say:答えは 42 です\u2028🙂").script("b", "say:答えは 42 です\u2028🙂").script("c", "say:41")
    result = run(run_moa(P, ["a", "b", "c"], "agg", backend=remote, combine="vote"))
    assert result.text == "42" and result.combination.chosen == [1, 2]
    fault.script("a", "say:東京 🙂\u2028行く").script("b", "say:東京 🙂\u2028行く").script("c", "say:plain words")
    kept = run(run_moa(P, ["a", "b", "c"], "agg", backend=remote, max_references=2, seed=3))
    assert kept.layers[0].kept == [0, 2]
    assert numbered(system_of(fault.calls_to("agg")[-1])) == ["東京 🙂\u2028行く", "plain words"]
    made = len(fault.requests)
    with pytest.raises(ValueError, match="roles\\[0\\] holds a lone surrogate"):
        run(run_moa(P, ["a"], "agg", backend=remote, roles=["be \ud800 brief"]))
    assert len(fault.requests) == made


def test_a_trickled_stream_and_a_slow_server_in_the_last_layer(fault, remote):
    """rank's synthesis comes one byte at a time over keep-alive; the sequential window after a delayed one."""
    fault.script("agg", "say:2 > 1", "trickle:0.002")
    chunks = []
    result = run(run_moa(P, ["a", "b"], "agg", backend=remote, combine="rank", on_chunk=chunks.append))
    assert "".join(chunks) == result.text == result.final.text and result.text.startswith("agg answers")
    fault.script("agg", "delay:0.3")
    seq = run(run_moa(P, ["a", "b", "c"], "agg", backend=remote, combine="sequential", window=2, seed=8))
    assert [c.ok for c in seq.steps] == [True, True] and seq.steps[0].seconds >= 0.3
