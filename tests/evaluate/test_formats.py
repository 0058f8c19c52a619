"""The field's benchmark files: read, written back, and read again field by field as their consumers read them
(AlpacaEval's model_outputs.json, FastChat's answer JSONL); bad files refused naming the line."""

import json

import pytest

from moa_lab.evaluate._formats import (
    gsm8k_answer,
    read_alpaca_eval,
    read_choice,
    read_gsm8k,
    read_mt_bench,
    write_alpaca_outputs,
    write_mt_bench_answers,
)


def lines(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_alpaca_eval_in_and_model_outputs_out(tmp_path):
    source = tmp_path / "alpaca_eval.json"
    rows = [
        {"instruction": "Write a haiku. 俳句", "dataset": "helpful_base", "output": "ref", "generator": "gpt4_turbo"},
        {"instruction": "Explain\u2028MoA.", "dataset": "oasst"},
    ]
    source.write_text(json.dumps(rows, ensure_ascii=False))
    items = read_alpaca_eval(source)
    assert [i.turns[0] for i in items] == [r["instruction"] for r in rows] and items[0].reference == "ref"
    out = write_alpaca_outputs(tmp_path / "model_outputs.json", items, ["a", "b 🎉"], "moa_lab-moa")
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written == [
        {"instruction": rows[0]["instruction"], "dataset": "helpful_base", "output": "a", "generator": "moa_lab-moa"},
        {"instruction": rows[1]["instruction"], "dataset": "oasst", "output": "b 🎉", "generator": "moa_lab-moa"},
    ]
    assert [i.turns for i in read_alpaca_eval(out)] == [i.turns for i in items]  # read back by us too
    rows.append(dict(rows[0]))
    source.write_text(json.dumps(rows))
    with pytest.raises(ValueError, match="item 3: the instruction 'Write a haiku. 俳句' repeats the one at"):
        read_alpaca_eval(source)


def test_mt_bench_questions_in_and_fastchat_answers_out(tmp_path):
    source = lines(
        tmp_path / "question.jsonl",
        [
            {"question_id": 81, "category": "writing", "turns": ["Write a blog post.", "Rewrite it in rhymes."]},
            {"question_id": 111, "category": "math", "turns": ["Area?", "Perimeter?"], "reference": ["3", "8"]},
        ],
    )
    items = read_mt_bench(source)
    assert items[1].reference == ["3", "8"] and items[0].category == "writing" and len(items[0].turns) == 2
    out = write_mt_bench_answers(tmp_path / "moa.jsonl", items, [["p", "r"], ["3", "8"]], "moa")
    answers = {}
    for line in out.read_text().splitlines():  # as FastChat's load_model_answers reads it
        row = json.loads(line)
        answers[row["question_id"]] = row
    assert set(answers) == {81, 111}  # integer ids stay integers
    row = answers[111]
    assert set(row) == {"question_id", "answer_id", "model_id", "choices", "tstamp"}
    assert row["model_id"] == "moa" and row["choices"] == [{"index": 0, "turns": ["3", "8"]}]
    bad = lines(tmp_path / "bad.jsonl", [{"question_id": 1, "category": "x", "turns": ["only one"]}])
    with pytest.raises(ValueError, match=r'bad.jsonl:1: "turns" must be a list of 2 non-empty strings'):
        read_mt_bench(bad)
    twice = lines(tmp_path / "twice.jsonl", [{"question_id": 1, "category": "x", "turns": ["a", "b"]}] * 2)
    with pytest.raises(ValueError, match="twice.jsonl:2: question_id '1' repeats the one at"):
        read_mt_bench(twice)


def test_checkable_sets(tmp_path):
    assert gsm8k_answer("so 3 + 4 = 7\n#### 1,234") == "1234" and gsm8k_answer("no final") is None
    items = read_gsm8k(lines(tmp_path / "g.jsonl", [{"question": "2+2?", "answer": "2+2=4\n#### 4"}]))
    assert items[0].answer == "4" and items[0].id == "1"
    with pytest.raises(ValueError, match=r'g2.jsonl:1: "answer" must end with "#### N"'):
        read_gsm8k(lines(tmp_path / "g2.jsonl", [{"question": "2+2?", "answer": "four"}]))
    items = read_choice(lines(tmp_path / "c.jsonl", [{"question": "Sky?", "choices": ["red", "blue"], "answer": 1}]))
    assert items[0].answer == "B" and "A. red\nB. blue" in items[0].turns[0]
    with pytest.raises(ValueError, match=r'c2.jsonl:1: "answer" must be one of A, B, C'):
        read_choice(lines(tmp_path / "c2.jsonl", [{"question": "q", "choices": ["a", "b", "c"], "answer": "E"}]))
    with pytest.raises(ValueError, match=r'c3.jsonl:1: "question" must be a non-empty string'):
        read_choice(lines(tmp_path / "c3.jsonl", [{"choices": ["a", "b"], "answer": "A"}]))


def test_alpaca_evals_own_loader_reads_our_model_outputs(tmp_path):
    from alpaca_eval import utils

    source = tmp_path / "alpaca_eval.json"
    source.write_text(
        json.dumps([{"instruction": "Say hi. 👋", "dataset": "helpful_base"}, {"instruction": "Add 2+2."}])
    )
    items = read_alpaca_eval(source)
    out = write_alpaca_outputs(tmp_path / "model_outputs.json", items, ["Hi!", "4"], "together-moa")
    frame = utils.load_or_convert_to_dataframe(out)  # what alpaca_eval --model_outputs does first
    assert utils.get_generator_name(None, frame) == "together-moa"
    assert list(frame["instruction"]) == ["Say hi. 👋", "Add 2+2."] and list(frame["output"]) == ["Hi!", "4"]
    assert {"instruction", "output", "generator", "dataset"} <= set(frame.columns)


def test_a_hugging_face_dataset_saved_to_disk_is_read_by_the_same_readers(tmp_path):
    import datasets

    rows = {"question": ["2+2?", "3*3?"], "answer": ["2+2=4\n#### 4", "#### 9"]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "gsm8k"))
    items = read_gsm8k(tmp_path / "gsm8k")
    assert [i.answer for i in items] == ["4", "9"] and items[1].where.endswith("gsm8k row 2")
    datasets.Dataset.from_dict({"question": ["x"], "answer": ["no final"]}).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match=r'bad row 1: "answer" must end with "#### N"'):
        read_gsm8k(tmp_path / "bad")
    with pytest.raises(ValueError, match="expected hf:NAME"):
        read_gsm8k("hf:openai/gsm8k")


def test_benchmark_files_refused_or_kept_as_the_field_writes_them(tmp_path):
    """Hardening 5, 8, 9: ``#### abc`` is refused naming its line; an empty JSON list says "no items" (no
    traceback); MT-Bench's ids leave as they came in ("081" stays a string, 81 an integer, "²" does not crash)."""
    bad = tmp_path / "g.jsonl"
    bad.write_text(
        json.dumps({"question": "q", "answer": "#### 4"})
        + "\n"
        + json.dumps({"question": "q2", "answer": "#### abc"})
        + "\n"
    )
    with pytest.raises(ValueError, match=r'g.jsonl:2: the answer after "####" must be a number .*got \'abc\''):
        read_gsm8k(bad)
    for kind, reader in (("gsm8k", read_gsm8k), ("mt", read_mt_bench), ("ae", read_alpaca_eval), ("c", read_choice)):
        empty = tmp_path / f"{kind}.json"
        empty.write_text("[]\n")
        with pytest.raises(ValueError, match=r"no items \(an empty JSON list\)"):
            reader(empty)
    questions = tmp_path / "question.jsonl"
    ids = ["081", 81, "7", "²"]
    questions.write_text(
        "".join(json.dumps({"question_id": q, "category": "writing", "turns": ["a", "b"]}) + "\n" for q in ids)
    )
    items = read_mt_bench(questions)
    out = write_mt_bench_answers(tmp_path / "a.jsonl", items, [["x", "y"]] * 4, "m")
    written = [json.loads(line)["question_id"] for line in out.read_text().splitlines()]
    assert written == ids  # "081" and 81 apart, and as the judge will look them up
