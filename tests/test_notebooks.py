"""The notebooks, executed top to bottom by papermill in a real kernel: on the embedded local server with
their default parameters and with changed ones (bad parameters, and a remote backend
with a key: in tests/reliability/)."""

import json

import pytest
from conftest import all_text, text_of
from conftest import execute_notebook as execute

from moa_lab import Recipe, plan_run
from moa_lab.prompts import AGGREGATOR_PROMPT_ZH

pytestmark = pytest.mark.kernel  # every test runs a notebook under papermill


@pytest.fixture(autouse=True)
def one_server_for_every_kernel(local, monkeypatch):
    """The kernels attach to the session's embedded server (as a sweep's kernels do) instead of each loading the
    models into a server of its own: a few seconds per notebook."""
    monkeypatch.setenv("MOA_LAB_LOCAL_URL", local.server.url)


S, G = "smollm2-135m", "gemma3-270m"
WIDGET = "application/vnd.jupyter.widget-view+json"


def has_output(nb, mime: str) -> bool:
    return any(mime in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def all_html(nb) -> str:
    return "".join(
        "".join(o.get("data", {}).get("text/html", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )


def panel_cell(nb):
    """The cell that shows the playground panel (the lessons end with a recap after it)."""
    return next(c for c in nb.cells if c.cell_type == "code" and "Playground(" in c.source)


def check_run(summary: dict, layers: list[list[str]], aggregator: str, max_tokens: int) -> None:
    """What every executed notebook must have produced, whatever its parameters."""
    assert [layer["models"] for layer in summary["layers"]] == layers
    assert [len(layer["answers"]) for layer in summary["layers"]] == [len(models) for models in layers]
    assert all(answer.strip() for layer in summary["layers"] for answer in layer["answers"])
    assert summary["final"].strip()
    assert summary["calls"] == sum(len(m) for m in layers) + 1 == len(summary["trace"])
    assert summary["failed_calls"] == 0
    assert summary["trace"][-1]["role"] == "aggregator" and summary["trace"][-1]["model"] == aggregator
    assert all(0 < call["completion_tokens"] <= max_tokens for call in summary["trace"])
    assert summary["settings"]["layers"] == len(layers) + 1 and summary["settings"]["max_tokens"] == max_tokens


@pytest.mark.local
def test_two_layer_defaults(tmp_path):
    """Promise 9: top to bottom, offline, with its default parameters."""
    nb = execute("01_two_layer_moa", tmp_path)
    summary = json.loads((tmp_path / "runs" / "01_two_layer_moa.json").read_text())  # the default output_path
    check_run(summary, [[S, G, S, G]], S, max_tokens=64)
    assert summary["settings"]["backend"] == "local"
    assert summary["prompt"] == "What are some fun things to do in San Francisco?"
    text = all_text(nb)
    assert "embedded local server" in text  # the backend cell says which backend and why
    assert "asyncio.run refused: asyncio.run() cannot be called from a running event loop" in text
    assert text.count("5 calls (0 from the cache, 0 failed)") == 2  # the run, then its second turn, cell by cell
    assert "Which one of those would you pick on a rainy day?" in text  # the second turn's messages, shown
    assert "5 calls (5 from the cache, 0 failed)" in text  # the seed's asyncio.run(main()) form: the same run again
    assert has_output(nb, "text/html") and has_output(nb, "image/png")  # tables and the timeline
    assert has_output(nb, WIDGET) and "MoA playground" in text_of(panel_cell(nb))  # the Playground section


@pytest.mark.local
def test_two_layer_changed_parameters(tmp_path):
    summary_path = tmp_path / "out" / "two.json"
    recipe = Recipe.from_plan(
        plan_run("x", [G, S], G, backend="local", temperature=0.2, max_tokens=24, system_prompt=AGGREGATOR_PROMPT_ZH)
    ).save(tmp_path / "recipe.yaml")  # the models and settings from a recipe file
    execute(
        "01_two_layer_moa",
        tmp_path,
        prompt="Name three colours.",
        recipe=str(recipe),
        follow_up="Which one is warmest? 🌞",
        output_path=str(summary_path),
    )
    summary = json.loads(summary_path.read_text())
    check_run(summary, [[G, S]], G, max_tokens=24)
    assert summary["prompt"] == "Name three colours."
    assert summary["settings"]["temperature"] == 0.2
    assert summary["settings"]["system_prompt"] == AGGREGATOR_PROMPT_ZH


@pytest.mark.local
def test_three_layer_defaults(tmp_path):
    """Promise 9: top to bottom, offline, with its default parameters."""
    nb = execute("02_three_layer_moa", tmp_path)
    summary = json.loads((tmp_path / "runs" / "02_three_layer_moa.json").read_text())
    check_run(summary, [[S, G, S, G], [S, G, S, G]], S, max_tokens=64)
    # The refinement layer read layer 1's answers: its prompts are longer by at least the answers' tokens.
    by_layer = {}
    for call in summary["trace"]:
        by_layer.setdefault(call["layer"], []).append(call)
    for first, second in zip(by_layer[1], by_layer[2]):
        assert second["prompt_tokens"] > first["prompt_tokens"] + 64
    text = all_text(nb)
    assert "Layer 2: what each of its 4 proposers receives" in text and "Responses from models:\n1. " in text
    assert has_output(nb, "image/png") and has_output(nb, WIDGET)  # the Playground section's panel
    # asyncio.run(main()) after nest_asyncio.apply(): the Chinese prompt's answer
    seed_form = next(c for c in nb.cells if c.cell_type == "code" and "asyncio.run(main())" in c.source)
    assert text_of(seed_form).strip()


@pytest.mark.local
@pytest.mark.parametrize(
    "layers, proposers", [(2, [S, G]), (4, [[S, G], [G], [S, G]])], ids=["layers=2", "layers=4 per-layer models"]
)
def test_three_layer_notebook_other_depths(tmp_path, layers, proposers):
    path = tmp_path / "summary.json"
    nb = execute(
        "02_three_layer_moa",
        tmp_path,
        prompt="Why is the sky blue?",
        layers=layers,
        proposers=proposers,
        aggregator=G,
        max_tokens=16,
        output_path=str(path),
    )
    plan = [proposers] * (layers - 1) if isinstance(proposers[0], str) else proposers
    check_run(json.loads(path.read_text()), plan, G, max_tokens=16)
    text = all_text(nb)
    for number in range(2, layers):
        assert f"Layer {number}: what each of its {len(plan[number - 1])} proposers receives" in text
    assert f"Layer {layers}:" not in text  # the aggregator's layer is not a refinement layer


@pytest.mark.local
def test_playground_notebook(tmp_path):
    """Promise 9: top to bottom, offline, with its default parameters.
    Under papermill the panel is built and shown (nothing runs without a click), with the parameters in it."""
    nb = execute("03_playground", tmp_path, prompt="Why is the sky blue?", layers=3, max_tokens=20)
    cell = panel_cell(nb)
    assert has_output(nb, WIDGET) and "Playground(" in cell.source
    shown = text_of(cell)
    assert "MoA playground" in shown and "embedded local server" in shown
    assert "prompt: 'Why is the sky blue?'" in shown and "max_tokens 20" in shown
    assert "layer 2: smollm2-135m, gemma3-270m" in shown and "aggregator (layer 3): smollm2-135m" in shown


@pytest.mark.local
def test_batch_notebook_defaults(tmp_path):
    """Promise 9: top to bottom, offline, with its default parameters."""
    nb = execute("04_batch_synthetic_data", tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "runs" / "04_batch.jsonl").read_text().splitlines()]
    assert sorted(int(r["id"]) for r in rows) == [1, 2, 3, 4, 5, 6]
    assert all(r["status"] == "ok" and r["final"].strip() and r["calls"] == 5 for r in rows)
    assert all(0 < c["completion_tokens"] <= 64 for r in rows for c in r["trace"])
    dataset = [json.loads(line) for line in (tmp_path / "runs" / "04_synthetic_dataset.jsonl").read_text().splitlines()]
    assert [d["instruction"] for d in dataset] == [r["prompt"] for r in sorted(rows, key=lambda r: int(r["id"]))]
    assert [d["output"] for d in dataset] == [r["final"] for r in sorted(rows, key=lambda r: int(r["id"]))]
    text = all_text(nb)
    assert "6 prompt(s): 30 model calls" in text  # the estimate, before the run
    assert "6 done, 0 failed, 0 already there" in text
    assert "same output file: " in text and "0 done, 0 failed, 6 already there" in text
    assert "30 calls (30 from the cache, 0 failed)" in text  # the new output file: no model called
    assert has_output(nb, "text/html")  # the results table


@pytest.mark.local
def test_batch_notebook_changed_parameters(tmp_path):
    prompts = tmp_path / "mine.jsonl"
    prompts.write_text(
        '{"id": "a", "prompt": "Name a colour."}\n{"id": "b", "prompt": "Name a fruit."}\n'
        '{"id": "c", "prompt": "Name a tree."}\n'
    )
    execute(
        "04_batch_synthetic_data",
        tmp_path,
        prompts_path=str(prompts),
        n_prompts=2,
        layers=3,
        max_tokens=12,
        proposers=[G, S],
        aggregator=G,
        concurrency=2,
        output_path="out/res.jsonl",
        dataset_path="out/data.jsonl",
    )
    rows = [json.loads(line) for line in (tmp_path / "out" / "res.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == ["a", "b"]
    assert all([layer["models"] for layer in r["layers"]] == [[G, S], [G, S]] and r["calls"] == 5 for r in rows)
    assert all(r["trace"][-1]["model"] == G and c["completion_tokens"] <= 12 for r in rows for c in r["trace"])
    assert len((tmp_path / "out" / "data.jsonl").read_text().splitlines()) == 2


def results_csv(folder):
    import csv

    return {row["config"]: row for row in csv.DictReader((folder / "results.csv").open())}


@pytest.mark.local
@pytest.mark.timeout(1200)
def test_evaluate_notebook_defaults(tmp_path):
    """Promise 9: top to bottom, offline, with its default parameters.
    The defaults on the bundled models (3 instructions, 3 questions: the full set is for real models) and the
    five standard configurations; the table is printed here too."""
    nb = execute("05_evaluate_moa", tmp_path)
    folder = tmp_path / "runs" / "05_evaluate"
    rows = results_csv(folder)
    names = ["smollm2-135m alone", "MoA n=1", "MoA n=2", "Self-MoA smollm2-135m x2", "MoA n=2, 3 layers"]
    assert list(rows) == names
    for name, calls in zip(names, (1, 2, 3, 3, 5)):
        row = rows[name]
        assert int(row["calls"]) == 6 * calls and int(row["questions"]) == 3 and int(row["failed"]) == 0
        if name != names[0]:  # every open instruction judged in both orders: a verdict or counted as none
            judged = int(row["wins"]) + int(row["ties"]) + int(row["losses"]) + int(row["unparseable"])
            assert judged == 6 and int(row["compared"]) <= 3
            assert (row["win_rate"] == "") == (int(row["compared"]) == 0)
    judgments = (folder / "judgments.jsonl").read_text().splitlines()
    assert len(judgments) == 2 * 3 * 4 and len(list((folder / "answers").iterdir())) == 5
    text = all_text(nb)
    assert "6 tasks: 3 open instructions, 3 questions with one right answer" in text
    assert "NOTE: These answers and verdicts come from the bundled" in text  # the honest framing, in the output
    assert "84 calls for the answers + at most 24 judge calls" in text  # the estimate, before any call
    assert "shown first | shown second | both orders" in text
    assert has_output(nb, "text/html") and has_output(nb, "image/png")
    for plot in ("win_rate_vs_proposers.png", "quality_vs_cost.png"):
        assert (folder / plot).read_bytes()[:4] == b"\x89PNG"
    print((folder / "results.md").read_text())


@pytest.mark.local
def test_evaluate_notebook_tiny_setting(tmp_path):
    """A few prompts, two configurations, shorter answers, one judge order, somewhere else."""
    nb = execute(
        "05_evaluate_moa",
        tmp_path,
        n_instructions=3,
        n_questions=2,
        proposer_counts=[2],
        self_moa_n=0,
        deep_layers=0,
        max_tokens=24,
        n_orders=1,
        output_dir="out/ev",
    )
    folder = tmp_path / "out" / "ev"
    rows = results_csv(folder)
    assert list(rows) == ["smollm2-135m alone", "MoA n=2"]
    assert int(rows["MoA n=2"]["calls"]) == 5 * 3 and int(rows["smollm2-135m alone"]["calls"]) == 5
    judgments = [json.loads(line) for line in (folder / "judgments.jsonl").read_text().splitlines()]
    assert len(judgments) == 3 and all(j["config"] == "MoA n=2" for j in judgments)
    lines = [json.loads(x) for f in (folder / "answers").iterdir() for x in f.read_text().splitlines()]
    assert all(c["completion_tokens"] <= 24 for line in lines for c in line["trace"])
    assert "5 tasks: 3 open instructions, 2 questions" in all_text(nb)


@pytest.mark.local
def test_sweeps_notebook_defaults(tmp_path):
    """Promise 9: top to bottom, offline, with its default parameters.
    Notebook 06: a sweep of notebook 02 (layers 2 and 3 × two proposer sets × two seeds), its table and plots,
    and a second run that runs nothing."""
    import pandas as pd

    nb = execute("06_sweeps", tmp_path)
    outdir = tmp_path / "runs" / "06_sweep"
    table = pd.read_csv(outdir / "results.csv")
    assert len(table) == 8 and table["point"].is_unique and (table["status"] == "ok").all()
    assert sorted(set(table["layers"])) == [2, 3] and sorted(set(table["seed"])) == [0, 1]
    assert table.groupby("layers")["calls"].mean().to_dict() == {2: 3, 3: 5}  # two proposers a layer
    tokens = table.groupby("layers")["tokens"].mean()
    assert tokens[3] > tokens[2]  # the refinement layer reads the first layer's answers
    assert (table["completion_tokens"] <= 16 * table["calls"]).all()
    for point in table["point"]:
        assert json.loads((outdir / "points" / point / "summary.json").read_text())["settings"]["max_tokens"] == 16
    text = all_text(nb)
    assert "8 points of" in text and "8 points done, 0 failed, 0 finished before, of 8" in text
    assert "0 points done, 0 failed, 8 finished before, of 8" in text  # resumed: nothing ran twice
    assert "no quality figure in 02_three_layer_moa.ipynb's summaries" in text
    assert "Kernel is running over TCP" not in text  # the points' kernels start quietly
    assert has_output(nb, "image/png") and (outdir / "results.parquet").is_file()


@pytest.mark.local
@pytest.mark.timeout(900)
def test_variants_notebook_defaults(tmp_path):
    """Promise 9: top to bottom, offline, with its default parameters.
    Notebook 07: every combine mode on one question, the variants compared (3 tasks), the deceptive proposer,
    and the budgets: a run refused before any call, a batch stopped at its budget and resumed."""
    nb = execute("07_moa_variants", tmp_path)
    folder = tmp_path / "runs" / "07_moa_variants"
    rows = results_csv(folder)
    names = [
        "smollm2-135m alone",
        "MoA n=3",
        "Self-MoA x3",
        "select n=3",
        "rank top 2",
        "vote x4",
        "Self-MoA-Seq x3 w=2",
        "shuffled, 2 most different",
        "3 layers, early stop 0.5",
        "one deceptive proposer",
    ]
    assert list(rows) == names
    for name, per_prompt in zip(names, (1, 4, 4, 4, 5, 4, 5, 4, 7, 4)):
        assert int(rows[name]["calls_per_prompt"]) == per_prompt and int(rows[name]["questions"]) == 2
        assert int(rows[name]["calls"]) <= 3 * per_prompt  # fewer: an early stop, or a failed select/rank
    vote = [json.loads(x) for x in next((folder / "answers").glob("vote_x4-*.jsonl")).read_text().splitlines()]
    assert all(line["calls"] == 4 and all(c["role"] == "proposer" for c in line["trace"]) for line in vote)
    assert all(line["combine"]["mode"] == "vote" for line in vote if line["status"] == "ok")
    text = all_text(nb)
    for mode, calls in (("synthesize", 4), ("select", 4), ("rank", 5), ("vote", 3), ("sequential", 5)):
        assert f"{mode:>10}: {calls} calls; 1 prompt(s): {calls} model calls" in text  # estimate knows each mode
        assert f"--- {mode}: " in text or f"{mode}: failed: " in text  # answered, or the failure said
    assert "refused before any call: the run (4 calls" in text
    assert "the batch stopped at its budget" in text and "left for a rerun with a larger budget" in text
    batch = [json.loads(x) for x in (folder / "budget_batch.jsonl").read_text().splitlines()]
    assert sorted(line["id"] for line in batch) == [str(i) for i in range(1, 6)]  # one line per prompt, resumed
    assert "of 5 prompts" in text and "from the cache" in text
    assert "the role: You are taking part in a robustness experiment" in text
    assert "--- attacked: the aggregator read answers [1, 2, 3] of 3" in text  # the attack goes through
    defended = text.split("--- defended: the aggregator read answers ")[1]
    kept = json.loads(defended.split(" of 3")[0])
    assert 2 <= len(kept) <= 3 and (len(kept) == 3 or "filter_outliers 0.1, semantic similarity" in defended)
    assert has_output(nb, "text/html") and "Taken from</b> (semantic similarity)" in all_html(nb)


@pytest.mark.local
def test_three_layer_notebook_runs_a_variant_from_its_parameters(tmp_path):
    """02 with the variants' parameters (what the playground's "papermill parameters" give): roles, shuffled
    references, and a sequential last layer of one reference per call."""
    out = tmp_path / "v.json"
    execute(
        "02_three_layer_moa",
        tmp_path,
        proposers=[S, G],
        max_tokens=16,
        combine="sequential",
        window=1,
        roles=["Answer in one short sentence.", None],
        shuffle_references=True,
        max_tokens_total=20000,
        output_path=str(out),
    )
    summary = json.loads(out.read_text())
    steps = [c for c in summary["trace"] if c["role"] == "aggregator"]
    assert [c["step"] for c in steps] == ["window 1 of 2", "window 2 of 2, with the synthesis so far"]
    assert summary["combine"]["mode"] == "sequential" and summary["final"] == steps[-1]["text"]
    assert all(sorted(c["references"]) == [1, 2] for c in summary["trace"] if c["layer"] == 2)
    assert summary["settings"]["roles"] == ["Answer in one short sentence.", None]
    assert summary["settings"]["max_tokens_total"] == 20000 and summary["prompt_tokens"] > 0


@pytest.mark.local
@pytest.mark.timeout(900)
def test_benchmarks_notebook_defaults(tmp_path):
    """Promise 9: top to bottom, offline, with its default parameters.
    Notebook 08 on the format samples: each benchmark's answer file, the checkable table with maj@k, a judged
    AlpacaEval win rate, MT-Bench answers (not graded without its judge prompts)."""
    nb = execute("08_benchmarks", tmp_path)
    out = tmp_path / "runs" / "08_benchmarks"
    gsm8k = json.loads((out / "gsm8k" / "report.json").read_text())
    assert [r["config"] for r in gsm8k["rows"]] == ["single", "vote", "moa"]
    assert all(set(r["maj"]) == {"1", "2"} and 0 <= r["accuracy"] <= 100 for r in gsm8k["rows"])
    outputs = json.loads((out / "alpaca-eval" / "model_outputs.json").read_text())
    assert len(outputs) == 2 and all(o["generator"] == "local-moa" and o["output"].strip() for o in outputs)
    (answers,) = (out / "mt-bench" / "model_answer").glob("*.jsonl")
    lines = [json.loads(x) for x in answers.read_text().splitlines()]
    assert len(lines) == 2 and all(len(x["choices"][0]["turns"]) == 2 for x in lines)
    judged = json.loads((out / "alpaca-eval" / "report.json").read_text())["scores"]
    assert judged["judged"] + judged["unjudged"] == 2  # every instruction went to the judge, in both orders
    text = all_text(nb)
    assert "maj@2" in text and "alpaca-eval: 2 question(s), 0 failed run(s)" in text
    assert "Together-MoA" in text  # the AlpacaEval 2.0 leaderboard from the alpaca-eval package
    assert "moa_lab format sample" in (out / "data" / "samples" / "gsm8k.jsonl").read_text()
    from moa_lab.sweeps._table import _summary_metrics  # what a sweep's table reads from each point

    row = _summary_metrics(out / "summary.json")
    assert row["gsm8k_moa_maj@2"] == gsm8k["rows"][2]["maj"]["2"] and "choice_single_accuracy" in row


@pytest.mark.local
@pytest.mark.timeout(600)
def test_offline_effect_notebook_defaults(tmp_path):
    """Promise 9: top to bottom, offline, with its default parameters.
    Notebook 09 on the pack: four word problems answered five ways (single greedy, vote, synthesize, select,
    mixed proposers), scored against their known answers; the table, attribution and the saved numbers."""
    nb = execute("09_offline_effect", tmp_path)
    folder = tmp_path / "runs" / "09_offline_effect"
    summary = json.loads((folder / "summary.json").read_text())["metrics"]
    ways = ["single (greedy)", "Self-MoA synthesize", "Self-MoA select", "mixed proposers",
            "Self-MoA vote (no aggregator)", "one sample"]  # fmt: skip
    assert list(summary) == [f"{w} accuracy" for w in ways] + ["questions"] and summary["questions"] == 4
    assert all(summary[f"{w} accuracy"] in {0.0, 25.0, 50.0, 75.0, 100.0} for w in ways)
    lines = {p.name: [json.loads(x) for x in p.read_text().splitlines()] for p in folder.glob("*.jsonl")}
    assert sorted(lines) == ["mixed-synthesize.jsonl", "self-moa-select.jsonl", "self-moa-synthesize.jsonl",
                             "single-synthesize.jsonl"]  # fmt: skip
    for batch in lines.values():
        assert len(batch) == 4 and all(line["status"] == "ok" or line["error"] for line in batch)
    synth = lines["self-moa-synthesize.jsonl"]
    assert all(line["layers"][0]["models"] == ["qwen-coder-0.5b"] * 3 for line in synth)
    assert all(set(line["attribution"]) == {"ref1", "ref2", "ref3", "own"} for line in synth if line["status"] == "ok")
    mixed = lines["mixed-synthesize.jsonl"]  # its first proposer's answers are the samples' first, from the cache
    assert all(line["trace"][0]["cached"] for line in mixed)
    text = all_text(nb)
    assert "p vs single" in text and "Taken from</b> (semantic similarity)" in all_html(nb)
