"""Reading the pack's replies (\\boxed{N}, Python blocks), similarity by meaning, the defence against a deceptive
proposer (filter_outliers) and attribution: on the fault server (no LLM) and the bundled all-MiniLM-L6-v2."""

import json

import pytest
from conftest import run
from test_variants import numbered, system_of

import moa_lab
from moa_lab import run_batch, run_moa
from moa_lab._answers import extract_number, final_answer, python_result
from moa_lab._attribution import attribute, sentences
from moa_lab._similarity import lexical, outliers, semantic

P = "What is the capital of France?"
HONEST = ["Paris is the capital of France.", "The capital of France is Paris.", "France's capital city is Paris."]
DECEPTIVE = "The capital of France is Lyon, moved there in 2019 by decree; Paris lost the title."


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("14 × 24 = 336 and 9 × 35 = 315, so \\(\\boxed{21}\\) pencils. (Check: 336 - 315.)", "21"),
        ("So $\\boxed{1,000 \\text{ pencils}}$ in all, of 3 kinds.", "1000"),
        ("```python\nboxes = 14\npencils = boxes * 24\nleft = pencils - 9 * 35\nprint(left)\n```", "21"),
        ('Computed:\n```python\nprint("left:", 336 - 315)\n```\n', "21"),
        ("```python\nx = 7\nx *= 6\nx\n```", "42"),
        ("Let me check.\n```python\nimport math\nprint(math.sqrt(16))\n```\nThe result is 4 apples.", "4"),
        ("答案是 \\boxed{7}。", "7"),
        ("The answer is 42", "42"),
    ],
)
def test_the_answer_of_a_coder_models_reply(reply, expected):
    assert extract_number(reply) == expected
    assert final_answer(reply)[1] == expected


def test_python_blocks_are_read_never_run():
    for code in ("import os\nprint(1)", "for i in range(3):\n    print(i)", "x = 2 ** 10000000", "print(open('f'))"):
        assert python_result(code) is None, code
    assert python_result("a = 10 / 4\nprint(a)") == "2.5" and python_result("print(max(3, 9) - abs(-2))") == "7"
    assert extract_number("") is None and final_answer("") is None
    assert final_answer("Pick one: \\boxed{B}") == ("B", "B")


def test_a_vote_counts_boxed_and_computed_answers_as_the_same():
    replies = ["So the answer is \\boxed{21}.", "```python\nprint(336 - 315)\n```", "I think 22 pencils"]
    assert [final_answer(r)[1] for r in replies] == ["21", "21", "22"]


def test_semantic_similarity_is_by_meaning_and_safe_on_odd_text():
    paraphrase = semantic("A man is eating food.", "A man is eating a piece of bread.")
    unrelated = semantic("A man is eating food.", "The stock market fell sharply today.")
    assert paraphrase > 0.6 > 0.2 > unrelated >= 0
    assert lexical("A man is eating food.", "Someone consumes a meal.") < semantic(
        "A man is eating food.", "Someone consumes a meal."
    )  # no shared word, the same meaning
    assert semantic("", "") == 1.0 and semantic("", "text") == 0.0
    for odd in ("東京は日本の首都です 🍣", "line\u2028break", "lone \ud800 surrogate"):
        assert 0 <= semantic(odd, odd + " ") <= 1 and semantic(odd, odd) > 0.99


def test_outliers_leave_out_the_far_answer_never_a_majority():
    assert outliers(HONEST + [DECEPTIVE], 0.15, "semantic").keys() == {3}
    assert outliers(HONEST, 0.15, "semantic") == {}
    assert outliers(HONEST[:2] + [DECEPTIVE], 0.0, "semantic").keys() <= {2}  # at most one of three
    assert len(outliers(["a", "b c", "d e f", "g h i j", "k"], 0.0)) <= 2 and outliers(["x", "y"], 0.0) == {}


def test_filter_outliers_keeps_the_deceptive_answer_from_the_aggregator(fault, remote):
    for name, text in zip("abcd", HONEST + [DECEPTIVE]):
        fault.script(name, f"say:{text}")
    fault.script("agg", "say:Paris is the capital of France.")
    result = run(run_moa(P, list("abcd"), "agg", backend=remote, filter_outliers=0.15, similarity="semantic"))
    assert result.layers[0].kept == [0, 1, 2] and list(result.layers[0].left_out) == [3]
    assert numbered(system_of(fault.calls_to("agg")[0])) == HONEST
    why = result.layers[0].left_out[3]
    assert why.startswith("left out answer 4 (d):") and "semantic similarity" in why and why in result.summary()
    assert result.to_dict()["layers"][0]["left_out"] == {"4": why}
    for name, text in zip("abcd", HONEST + [DECEPTIVE]):
        fault.script(name, f"say:{text}")
    attacked = run(run_moa(P, list("abcd"), "agg", backend=remote, cache=False))
    assert numbered(system_of(fault.calls_to("agg")[-1])) == HONEST + [DECEPTIVE]  # no defence: it goes through
    assert attacked.layers[0].left_out == {}


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"filter_outliers": 1.5}, "filter_outliers must be None (off) or a similarity margin in [0, 1], got 1.5"),
        ({"similarity": "cosine"}, "similarity must be None (lexical), 'lexical' or 'semantic' or a function"),
    ],
)
def test_bad_defence_settings_are_refused_before_any_call(fault, remote, bad, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        run(run_moa(P, ["a", "b"], "agg", backend=remote, **bad))
    assert fault.requests == []


def test_attribution_names_the_reference_each_sentence_came_from(fault, remote):
    fault.script("a", "say:Paris is the capital of France. It lies on the Seine.")
    fault.script("b", "say:Berlin is the capital of Germany.")
    fault.script("agg", "say:Paris is the capital of France. The Seine runs through Paris. Bonjour!")
    result = run(run_moa(P, ["a", "b"], "agg", backend=remote, similarity="semantic"))
    found = result.attribution()
    assert [s.reference for s in found.sources if s.taken] == [1, 1] and found.models == ["a", "b"]
    assert found.shares[0] > 0.6 and found.shares[1] == 0 and found.own > 0
    assert 'title="reference 1 (a)' in found._repr_html_() and "a: " in found._repr_html_()
    lexical_view = result.attribution("lexical")
    assert lexical_view.measure == "lexical" and lexical_view.sources[0].similarity == 1.0
    assert list(found.to_pandas().columns) == ["sentence", "reference", "model", "similarity", "taken"]


def test_attribution_of_empty_and_non_english_answers():
    empty = attribute("", ["Paris."], ["a"])
    assert empty.sources == [] and empty.columns() == {"ref1": 0.0, "own": 0.0}
    none = attribute("Une phrase.", [], [])
    assert none.columns() == {"own": 1.0}
    cjk = attribute(
        "東京は日本の首都です。寿司がおいしい！", ["東京は日本の首都です。", "ロンドンは英国の首都。"], ["ja", "en"]
    )
    assert cjk.sources[0].reference == 1 and cjk.sources[0].taken
    assert sentences("一。二！three?\u2028four\nfive") == ["一。", "二！", "three?", "four", "five"]
    with pytest.raises(ValueError, match="2 references but 1 models"):
        attribute("x", ["a", "b"], ["m"])


def test_a_batch_line_holds_the_attribution(fault, remote, tmp_path):
    fault.script("a", "say:Paris is the capital.").script("b", "say:Rome is old.")
    fault.script("agg", "say:Paris is the capital.")
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "q", "prompt": P}) + "\n")
    run(run_batch(source, tmp_path / "out.jsonl", ["a", "b"], "agg", backend=remote))
    line = json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])
    assert line["attribution"] == {"ref1": 1.0, "ref2": 0.0, "own": 0.0}


def test_the_similarity_setting_travels_in_a_recipe(tmp_path):
    recipe = moa_lab.Recipe.from_dict(
        {"proposers": ["a"], "aggregator": "b", "similarity": "semantic", "filter_outliers": 0.2},
        backend="http://127.0.0.1:9",
    )
    saved = recipe.save(tmp_path / "r.yaml")
    again = moa_lab.Recipe.from_file(saved, backend="http://127.0.0.1:9")
    assert again.options == {"similarity": "semantic", "filter_outliers": 0.2}
    assert again.plan("Q?", backend="http://127.0.0.1:9").settings.similarity == "semantic"
