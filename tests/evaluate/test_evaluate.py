"""moa_lab.evaluate: judge-reply parsing, the position swap, the win-rate / bootstrap / length-control arithmetic
on fixed inputs, exact-match scoring; then whole evaluations on the fault server (the real SDK over HTTP), where
a judge model named "A" answers "A answers ..." to everything: a judge with a pure position bias."""

import json

import pandas as pd
import pytest
from conftest import run

from moa_lab import CallRecord, Usage
from moa_lab.evaluate import (
    Config,
    ConfigRun,
    Judgment,
    Task,
    bootstrap_ci,
    builtin_tasks,
    check_configs,
    estimate_evaluation,
    evaluate,
    extract,
    first_position_rate,
    is_correct,
    judge,
    length_controlled,
    load_tasks,
    moa,
    order_effect,
    parse_verdict,
    prompt_scores,
    proposer_sweep,
    reference,
    self_moa,
    single,
    standard_configs,
    summarize,
    win_rate,
)
from moa_lab.evaluate._judge import orders
from moa_lab.evaluate._tasks import extract_choice, extract_number


@pytest.mark.parametrize(
    "reply, verdict, why",
    [
        ("[[A]]", "A", ""),
        ("[[B]] because it is correct", "B", ""),
        ("[[TIE]]", "tie", ""),
        ("[[C]]", "tie", ""),
        ("Reasoning... so [[ b ]]", None, "no verdict found"),  # a lower-case letter is not a verdict
        ("[[A]] at first, but on reflection [[B]]", None, "conflicting verdicts"),
        ("A", "A", ""),
        ("B.", "B", ""),
        ("**B**", "B", ""),
        ("Tie", "tie", ""),
        ("TIE - both are fine", "tie", ""),
        ("Verdict: B", "B", ""),
        ("Answer A", "A", ""),
        ("(B)", "B", ""),
        ("A is better than B.", "A", ""),
        ("equal", "tie", ""),
        ("I think answer B is much better than the other.", "B", ""),
        ("A, B, or TIE", None, "conflicting verdicts"),
        ("A or B", None, "conflicting verdicts"),
        ("a good answer would mention Paris", None, "no verdict found"),
        ("Both answers are fine.", None, "no verdict found"),
        ("The capital of France is Paris.", None, "no verdict found"),
        ("Answer A is better. No, answer B is better.", "A", ""),
        ("", None, "empty reply"),
        (None, None, "empty reply"),
        ("  \n", None, "empty reply"),
        ("Bread is good", None, "no verdict found"),
    ],
)
def test_parse_verdict(reply, verdict, why):
    assert parse_verdict(reply) == (verdict, why)


def judgment(verdict, config_first, task="t1", config="c"):
    return Judgment(
        task,
        config,
        config_first,
        verdict,
        "" if verdict else "no verdict found",
        CallRecord(0, 0, "judge", role="judge"),
    )


@pytest.mark.parametrize(
    "verdict, config_first, winner, score",
    [
        ("A", True, "config", 1.0),
        ("A", False, "baseline", 0.0),
        ("B", True, "baseline", 0.0),
        ("B", False, "config", 1.0),
        ("tie", True, "tie", 0.5),
        ("tie", False, "tie", 0.5),
        (None, True, None, None),
    ],
)
def test_the_position_swap_maps_a_verdict_to_its_winner(verdict, config_first, winner, score):
    j = judgment(verdict, config_first)
    assert (j.winner, j.score) == (winner, score)


def test_both_orders_are_judged_and_a_pure_position_bias_cancels_out():
    both = orders("MoA n=2", "i01")
    assert sorted(both) == [False, True] and both == orders("MoA n=2", "i01")  # seeded: the same each time
    firsts = {orders("c", f"t{i}", n=1)[0] for i in range(40)}
    assert firsts == {True, False}  # one order: random per pair, both occur
    with pytest.raises(ValueError, match="orders must be 1 .* or 2"):
        orders("c", "t", n=3)
    always_a = [judgment("A", True), judgment("A", False)]  # the judge picks whatever comes first
    assert prompt_scores(always_a) == {("c", "t1"): 0.5}
    assert prompt_scores([judgment("B", False), judgment("A", True)]) == {("c", "t1"): 1.0}
    assert prompt_scores([judgment("A", True), judgment(None, False)]) == {("c", "t1"): None}  # one order is not enough
    assert first_position_rate(["A", "A", "B", None, "tie"]) == pytest.approx(200 / 3)
    assert first_position_rate([None, "tie"]) is None


def test_win_rate_and_bootstrap_interval_on_fixed_scores():
    assert win_rate([1, 0.5, 0, 1]) == 62.5 and win_rate([]) is None
    assert bootstrap_ci([0.5] * 10) == (50.0, 50.0) and bootstrap_ci([]) is None
    scores = [1.0] * 50 + [0.0] * 50  # p = 0.5, n = 100: standard error 5 points, 95% ≈ ±9.8
    low, high = bootstrap_ci(scores)
    assert abs(low - 40.2) < 1.5 and abs(high - 59.8) < 1.5
    assert bootstrap_ci(scores) == (low, high)  # seeded: the same interval each time
    low, high = bootstrap_ci([1.0] * 9 + [0.0])
    assert 60 <= low < 90 <= high == 100.0


def test_length_controlled_estimate_on_fixed_inputs():
    assert length_controlled([0.5] * 8, [100] * 8, [100] * 8) == pytest.approx(50.0)
    assert length_controlled([], [], []) is None
    # Equal lengths: nothing to control for; 3 of 4 won: close to 75 (the weak prior pulls a little towards 50).
    assert 74 < length_controlled([1, 1, 1, 0] * 5, [100] * 20, [100] * 20) < 75
    # The configuration won exactly when its answer was longer: 70% plain, about 50% at equal lengths.
    scores = [1.0] * 7 + [0.0] * 3
    longer, base = [300] * 7 + [100] * 3, [100] * 7 + [300] * 3
    assert win_rate(scores) == 70.0 and 40 < length_controlled(scores, longer, base) < 60
    # Winning everything stays finite (the prior), and below 100.
    assert 85 < length_controlled([1.0] * 20, [120] * 20, [100] * 20) < 100
    with pytest.raises(ValueError, match="3 scores, 2 length pairs"):
        length_controlled([1, 0, 1], [1, 2], [1, 2])


@pytest.mark.parametrize(
    "reply, number",
    [
        ("42", "42"),
        ("17 + 25 = 42", "42"),
        ("The answer is 1,000.", "1000"),
        ("12.0", "12"),
        ("0.5 of it", "0.5"),
        ("It is -5 degrees", "-5"),
        ("no number here", None),
        ("1, 2, 3", "3"),
    ],
)
def test_extract_number(reply, number):
    assert extract_number(reply) == number


MC = "Which of these animals is a mammal?\nA) Shark\nB) Dolphin\nC) Trout\nD) Octopus\nReply with the letter only."


@pytest.mark.parametrize(
    "reply, letter",
    [
        ("B", "B"),
        ("(C).", "C"),
        ("**D**", "D"),
        ("The answer is B.", "B"),
        ("Answer: A", "A"),
        ("B) Dolphin", "B"),
        ("I think (C) is right", "C"),
        ("Dolphin", "B"),
        ("A dolphin is a mammal.", "B"),
        ("dolphins and sharks", None),
        ("I do not know", None),
        ("", None),
    ],
)
def test_extract_choice(reply, letter):
    assert extract_choice(reply, MC) == letter


def test_exact_match_scoring():
    number, choice, text = (
        Task("q1", "17 + 25?", "number", "42"),
        Task("q2", MC, "choice", "B"),
        Task("q3", "Capital of France?", "text", "Paris"),
    )
    assert is_correct(number, "17 + 25 = 42") and not is_correct(number, "42, not 41")  # the last number counts
    assert is_correct(Task("q", "?", "number", "1000"), "one thousand: 1,000.0")
    assert is_correct(choice, "B) Dolphin") and is_correct(choice, "Dolphin") and not is_correct(choice, "Shark, A")
    assert is_correct(text, "paris.\nIt is in the north.") and not is_correct(text, "It is Paris.")
    assert not is_correct(number, None)  # a failed prompt is wrong
    assert extract(choice, "(B)") == "B"
    with pytest.raises(ValueError, match="task 'i1' is open-ended"):
        is_correct(Task("i1", "Write a poem."), "roses")
    builtin = builtin_tasks()
    assert len([t for t in builtin if not t.objective]) == 20 and len([t for t in builtin if t.objective]) == 12
    assert all(is_correct(t, t.answer) for t in builtin if t.objective)  # the key answers itself


def test_load_tasks_reads_answers_kinds_and_references(tmp_path):
    path = tmp_path / "tasks.jsonl"
    lines = [
        {"prompt": "Write a poem.", "reference": "Roses..."},
        {"id": "n", "prompt": "2+2?", "answer": 4},
        {"prompt": "Pick", "answer": "c"},
        {"prompt": "Capital?", "answer": "Paris"},
        {"prompt": "Half?", "answer": "0.5", "kind": "text"},
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    tasks = load_tasks(path)
    assert [(t.id, t.kind, t.answer, t.reference) for t in tasks] == [
        ("1", "open", None, "Roses..."),
        ("n", "number", "4", None),
        ("3", "choice", "C", None),
        ("4", "text", "Paris", None),
        ("5", "text", "0.5", None),
    ]


@pytest.mark.parametrize(
    "line, message",
    [
        ({"prompt": "x", "answer": "1", "kind": "maths"}, "\"kind\" must be one of number, choice, text, got 'maths'"),
        ({"prompt": "x", "answer": "two", "kind": "number"}, "\"answer\" 'two' is not a number"),
        ({"prompt": "x", "answer": "AB", "kind": "choice"}, "must be one letter A-J, got 'AB'"),
        ({"prompt": "x", "answer": ""}, "\"answer\" must be a non-empty string or a number, got ''"),
        ({"prompt": "x", "answer": True}, '"answer" must be a non-empty string or a number, got True'),
        ({"prompt": "x", "kind": "number"}, '"kind" \'number\' needs an "answer"'),
        ({"prompt": "x", "reference": 3}, '"reference" must be a string (an answer), got 3'),
        ({"prompt": ""}, '"prompt" must be a non-empty string'),
    ],
)
def test_load_tasks_names_the_bad_line(tmp_path, line, message):
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps({"prompt": "fine"}) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(ValueError) as info:
        load_tasks(path)
    assert f"{path}:2: " in str(info.value) and message in str(info.value)


def test_configurations(remote):
    s, m, sm, deep = single("a"), moa(["a", "b"], "agg"), self_moa("a", 3), moa(["a", "b"], "agg", layers=3)
    assert (s.name, s.layers, s.n, s.calls) == ("a alone", 1, 0, 1)
    assert (m.name, m.layers, m.n, m.calls) == ("MoA n=2", 2, 2, 3)
    assert (sm.name, sm.proposers, sm.aggregator, sm.calls, sm.kind) == (
        "Self-MoA a x3",
        (("a",) * 3,),
        "a",
        4,
        "self-moa",
    )
    assert (deep.name, deep.layers, deep.calls) == ("MoA n=2, 3 layers", 3, 5)
    assert [c.name for c in proposer_sweep(["a", "b", "c"], "agg", [1, 3])] == ["MoA n=1", "MoA n=3"]
    assert [c.name for c in standard_configs(["a", "b", "c"], "agg", [1, 2], 2, 3)] == [
        "agg alone",
        "MoA n=1",
        "MoA n=2",
        "Self-MoA agg x2",
        "MoA n=2, 3 layers",
    ]
    assert [c.name for c in standard_configs(["a"], "agg", [1], 0, 0)] == ["agg alone", "MoA n=1"]
    assert reference().calls == 0 and Config("x/y z").slug == "x_y_z"
    configs, base = check_configs([s, m], "MoA n=2", remote)
    assert base is m and configs == [s, m]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda b: check_configs([single("a")], None, b), "at least two configurations"),
        (lambda b: check_configs([single("a"), single("a")], None, b), "have the same name"),
        (lambda b: check_configs([single("a"), moa(["b"], "c")], "GPT", b), "baseline 'GPT' is not one of"),
        (lambda b: check_configs([single("a"), "MoA"], None, b), "must be a moa_lab.evaluate.Config"),
        (lambda b: proposer_sweep(["a", "b"], "agg", [3]), "integers from 1 to the pool's size (2), got 3"),
        (lambda b: self_moa("a", 0), "n (samples of 'a') must be an integer >= 1, got 0"),
        (lambda b: moa(["a"], "agg", layers=1), "layers of an MoA configuration must be an integer >= 2"),
        (lambda b: standard_configs(["a"], "agg", [1], deep_layers=1), "deep_layers must be 0 or 2 (none)"),
        (lambda b: builtin_tasks(21), "n_instructions must be an integer from 0 to 20"),
        (lambda b: builtin_tasks(0, 0), "both 0: nothing to evaluate"),
    ],
)
def test_bad_evaluation_settings(remote, call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(remote)


@pytest.mark.local
def test_unknown_models_are_refused_on_the_local_backend_before_any_call(local, tmp_path):
    with pytest.raises(ValueError, match="unknown model 'gpt-7' on the local backend"):
        check_configs([single("smollm2-135m"), moa(["gpt-7"], "smollm2-135m")], None, local)
    with pytest.raises(ValueError, match="unknown model 'gpt-7'"):
        run(
            evaluate(
                builtin_tasks(1, 0),
                [single("smollm2-135m"), single("gemma3-270m")],
                tmp_path / "eval",
                judge_model="gpt-7",
                backend=local,
            )
        )
    assert not (tmp_path / "eval").exists()


def fixed_report(tmp_path):
    """A report from hand-made answers and judgments (no model): the arithmetic, end to end."""
    tasks = [
        Task("i1", "Write."),
        Task("i2", "Tell."),
        Task("q1", "2+2?", "number", "4"),
        Task("q2", MC, "choice", "B"),
    ]
    base, other = single("a"), moa(["a", "b"], "agg")
    runs = {
        base.name: ConfigRun(
            base,
            {"i1": "x" * 10, "i2": "y" * 10, "q1": "5", "q2": "B"},
            usage=Usage(calls=4, prompt_tokens=30, completion_tokens=10),
            seconds=[1.0] * 4,
        ),
        other.name: ConfigRun(
            other,
            {"i1": "z" * 30, "i2": "w" * 20, "q1": "2+2=4"},
            {"q2": "HTTP 500"},
            usage=Usage(calls=12, prompt_tokens=200, completion_tokens=100, cost=0.25),
            seconds=[3.0] * 4,
        ),
    }
    judgments = [
        judgment("A", True, "i1", other.name),
        judgment("B", False, "i1", other.name),  # won both
        judgment("A", True, "i2", other.name),
        judgment("A", False, "i2", other.name),
    ]  # split: a tie
    from moa_lab import get_backend

    return (
        summarize(
            tasks,
            [base, other],
            runs,
            judgments,
            base.name,
            judge_model="j",
            n_orders=2,
            backend=get_backend("http://127.0.0.1:9"),
        ),
        base,
        other,
    )


def test_the_report_from_fixed_answers_and_judgments(tmp_path):
    report, base, other = fixed_report(tmp_path)
    row, first = report.row(other.name), report.row(base.name)
    assert (row.win_rate, row.compared, row.wins, row.ties, row.losses, row.unparseable) == (75.0, 2, 3, 0, 1, 0)
    assert (row.ci_low, row.ci_high) == (50.0, 100.0)
    assert row.length == 25 and first.length == 10
    assert (row.correct, row.questions, row.accuracy, row.failed) == (1, 2, 50.0, 1)
    assert (first.correct, first.win_rate, first.accuracy) == (1, None, 50.0)
    assert (row.calls, row.tokens, row.cost, row.seconds_per_prompt) == (12, 300, 0.25, 3.0)
    assert report.first_position == 75.0 and report.caveat is None
    text = str(report)
    assert "75.0 [50.0, 100.0] n=2" in text and "3/0/1/0" in text and "50.0% (1/2)" in text
    assert "75% picked the answer shown first" in text
    shown = str(order_effect(report.judgments))
    assert f"{other.name} | 100.0 (n=2) | 50.0 (n=2) | 75.0 (n=2)" in shown
    paths = report.save(tmp_path / "out")
    assert sorted(p.name for p in paths.values()) == sorted(p.name for p in (tmp_path / "out").iterdir())
    assert paths["win_rate_vs_proposers.png"].read_bytes()[:4] == b"\x89PNG"
    assert "| MoA n=2 | 3 | 75.0 [50.0, 100.0] n=2 |" in paths["results.md"].read_text()
    csv_rows = paths["results.csv"].read_text().splitlines()
    assert csv_rows[0].startswith("config,kind,n,layers,") and len(csv_rows) == 3
    assert [json.loads(x)["winner"] for x in paths["judgments.jsonl"].read_text().splitlines()] == [
        "config",
        "config",
        "config",
        "baseline",
    ]


def test_a_whole_evaluation_on_a_server_makes_the_estimated_calls_once(fault, remote, tmp_path):
    tasks = builtin_tasks(3, 2)
    configs = [single("a"), moa(["a", "b"], "agg"), self_moa("a", 2)]
    expected = estimate_evaluation(tasks, configs, judge_model="A", backend=remote)
    assert (expected.answer_calls, expected.judge_calls) == (5 * (1 + 3 + 3), 2 * 3 * 2)
    report = run(evaluate(tasks, configs, tmp_path, judge_model="A", backend=remote, progress=False))
    # "a" alone makes the same calls as the first proposer of both MoAs (model, prompt and seed): made once
    made = expected.answer_calls - 2 * len(tasks) + expected.judge_calls
    assert len(fault.requests) == made  # "a" is called alone, as Self-MoA's second sample and as its aggregator:
    assert len(fault.calls_to("a")) == 3 * len(tasks)
    judged = fault.calls_to("A")
    pair = [r["messages"][0]["content"] for r in judged if "Give three tips" in r["messages"][0]["content"]][:2]
    assert "Answer A: agg answers" in pair[0] + pair[1] and "Answer A: a answers" in pair[0] + pair[1]  # both orders
    for name in ("MoA n=2", "Self-MoA a x2"):
        row = report.row(name)  # the judge always says A: every prompt splits into a tie
        assert (row.win_rate, row.compared, row.wins, row.losses, row.ci_low, row.ci_high) == (50, 3, 3, 3, 50, 50)
    assert report.first_position == 100.0 and "picked the answer shown first" in str(report)
    assert (tmp_path / "results.md").exists() and len(list((tmp_path / "answers").iterdir())) == 3
    again = run(evaluate(tasks, configs, tmp_path, judge_model="A", backend=remote, progress=False))
    assert len(fault.requests) == made  # nothing called twice
    assert again.rows == report.rows and "its calls: 12 calls (12 from the cache" in str(again)


def test_a_failing_or_unreadable_judge_is_counted_not_fatal(fault, remote, tmp_path):
    tasks = builtin_tasks(2, 0)
    configs = [single("a"), moa(["b"], "agg")]
    from moa_lab.evaluate import generate

    runs = run(generate(tasks, configs, tmp_path, backend=remote, progress=False))
    fault.script("A", "500")
    judgments = run(judge(tasks, runs, "a alone", judge_model="A", retries=0, backend=remote, progress=False))
    failed = [j for j in judgments if j.record.error]
    assert len(judgments) == 4 and len(failed) == 1 and failed[0].verdict is None
    assert failed[0].note.startswith("judge call failed: HTTP 500")
    with pytest.raises(ValueError, match="concurrency must be an integer >= 1, got 0"):
        run(judge(tasks, runs, "a alone", judge_model="A", concurrency=0, backend=remote, progress=False))
    with pytest.raises(ValueError, match="baseline 'b alone' has no answers"):
        run(judge(tasks, runs, "b alone", judge_model="A", backend=remote, progress=False))
    assert len(fault.calls_to("A")) == 4  # neither made a call
    unreadable = run(judge(tasks, runs, "a alone", judge_model="agg", backend=remote, progress=False))
    assert {j.note for j in unreadable} == {"no verdict found"}  # "agg answers ..." is no verdict
    report = summarize(tasks, configs, runs, unreadable, "a alone", judge_model="agg", n_orders=2, backend=remote)
    row = report.row("MoA n=1")
    assert (row.win_rate, row.compared, row.unparseable, row.lc_win_rate) == (None, 0, 4, None)
    assert "-  " in str(report) and "4 of its 4 replies gave no verdict" in str(report)
    report.save(tmp_path / "none")  # the plots say there is nothing to show, and do not fail
    assert (tmp_path / "none" / "win_rate_vs_proposers.png").exists()


def test_a_reference_baseline_needs_every_reference(fault, remote, tmp_path):
    tasks = [Task("i1", "Write a poem.", reference="Roses are red."), Task("i2", "Tell a joke.")]
    with pytest.raises(ValueError, match="task 'i2' has none"):
        run(evaluate(tasks, [reference(), single("a")], tmp_path, judge_model="A", backend=remote, progress=False))
    assert not fault.requests
    tasks[1] = Task("i2", "Tell a joke.", reference="Knock knock.")
    tasks.append(Task("q1", "2 + 2?", "number", "4"))  # no reference answer: the reference is not scored on it
    report = run(evaluate(tasks, [reference(), single("a")], tmp_path, judge_model="A", backend=remote, progress=False))
    assert report.baseline == "reference" and report.row("a alone").compared == 2
    assert (report.row("reference").questions, report.row("a alone").questions) == (0, 1)
    assert report.row("reference").calls == 0 and len(fault.calls_to("a")) == 3
    assert "Answer B: Roses are red." in "".join(r["messages"][0]["content"] for r in fault.calls_to("A"))


def test_a_choice_is_read_by_its_text_and_only_the_questions_own_letters_count(tmp_path):
    """Hardening 6 and 7: with the prompt ``read_choice`` writes ("B. Paris" lines), the option's text names it
    ("Paris" scores); "Answer: I think it is B." is B, never the I that is not one of the choices."""
    from moa_lab.evaluate._formats import read_choice

    data = tmp_path / "c.jsonl"
    data.write_text(json.dumps({"question": "Capital of France?", "choices": ["Rome", "Paris", "Oslo"], "answer": "B"}))
    (item,) = read_choice(data)
    prompt = item.turns[0]
    assert "B. Paris" in prompt
    for reply, letter in [
        ("Paris", "B"),
        ("It is Paris.", "B"),
        ("The capital of France is **Paris**", "B"),
        ("Answer: I think it is B.", "B"),
        ("I believe the answer is C", "C"),
        ("I", None),  # not a letter of this question
        ("Rome or Paris", None),  # two options named: no answer
    ]:
        assert extract_choice(reply, prompt) == letter, reply


def test_an_evaluation_report_as_a_dataframe(tmp_path):
    report, base, other = fixed_report(tmp_path)
    frame = report.to_pandas()
    assert list(frame.index) == [base.name, other.name]
    assert frame.loc[other.name, "win_rate"] == 75.0 and frame.loc[other.name, "calls"] == 12
    assert frame.loc[other.name, "tokens"] == 300 and frame.loc[other.name, "accuracy"] == 50.0
    assert pd.isna(frame.loc[base.name, "win_rate"])
