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
# # MoA through the field's benchmarks
#
# The MoA paper reports AlpacaEval 2.0 (65.1% length-controlled win rate against GPT-4 Turbo), MT-Bench (9.25) and
# checkable sets; its successors add GSM8K-style arithmetic and multiple choice with a **majority vote over k
# samples** (maj@k). This notebook puts one MoA recipe through one benchmark of each kind, in the benchmarks' own
# file formats, and reads each result **with its uncertainty**: an interval, and a p-value against the baseline.
#
# **In this notebook you will:**
#
# - read each benchmark's file format and write its answer format (what its official scorer reads);
# - get three answers from every MoA run at no extra call: the first proposer alone, the vote of the first layer,
#   and the MoA's, and compare them with McNemar's exact test;
# - draw maj@k curves from one set of samples;
# - judge AlpacaEval-style answers against a baseline, and grade MT-Bench answers when you give its judge prompts;
# - leave with the exact commands that run the paper's settings on Together.
#
# Offline, the data are **format samples** that moa_lab writes itself (`moa_lab.evaluate._samples`): a few
# questions of its own in each format, not the benchmarks. The bundled models are tiny: the numbers show the method,
# not the value of MoA.

# %% [markdown]
# ## Parameters
#
# `data_dir` holds your copies of the benchmarks (`gsm8k.jsonl`, `choice.jsonl`, `alpaca_eval.json`,
# `question.jsonl`); empty: the format samples are written there. `recipe`: a recipe file (`moa-lab ask --recipe`);
# `None`: two bundled proposers and an aggregator offline, or the backend's default recipe elsewhere.

# %% tags=["parameters"]
data_dir: str = "runs/08_benchmarks/data"  # your benchmark files; missing ones are written as format samples
output_dir: str = "runs/08_benchmarks"
recipe = None  # a recipe file; None: see above
k: int = 2  # samples per checkable question, for maj@k (1, 2, 4, ...)
max_tokens = None  # per answer; None: the recipe's (32 in the offline recipe)
judge = None  # the judge model (AlpacaEval pairwise, MT-Bench grades); None: the recipe's aggregator
judge_prompts = None  # MT-Bench's judge_prompts.jsonl (FastChat's); None: MT-Bench answers are written, not graded
output_path: str = "runs/08_benchmarks/summary.json"  # the table's numbers as JSON (a sweep's table reads them)

# %% [markdown]
# ## The files
#
# Each reader checks its file before any call: a missing field, a turn count other than 2, an answer without
# `#### N`, a repeated id is refused, naming the line.

# %%
from pathlib import Path

import pandas as pd
from IPython.display import display

from moa_lab import Recipe, get_backend
from moa_lab.evaluate import READERS, write_samples

names = {"gsm8k": "gsm8k.jsonl", "choice": "choice.jsonl", "alpaca-eval": "alpaca_eval.json",
         "mt-bench": "question.jsonl"}
data = Path(data_dir)
if not all((data / name).exists() for name in names.values()):
    samples = write_samples(data / "samples")
    files = {kind: data / name if (data / name).exists() else samples[kind] for kind, name in names.items()}
else:
    files = {kind: data / name for kind, name in names.items()}
backend = get_backend()
if recipe:
    chosen = Recipe.from_file(recipe)
elif backend.kind == "local":  # short answers: the whole notebook runs in about a minute on 2 cores
    chosen = Recipe(["smollm2-135m", "gemma3-270m"], "smollm2-135m", options={"max_tokens": 32}, name="local-moa")
else:
    chosen = Recipe(name="default-moa")
options = {} if max_tokens is None else {"max_tokens": max_tokens}
judge_model = judge or chosen.plan("x", **options).aggregator
for kind, path in files.items():
    print(f"{kind:12} {len(READERS[kind](path))} items from {path}")
print(chosen.text())

# %% [markdown]
# ## What it will cost
#
# Every run of the recipe costs `plan.calls`; a checkable question costs `k` runs, an MT-Bench question two (its
# second turn is a conversation that holds the first turn's answer), and each judged answer two judge calls.

# %%
from moa_lab.evaluate import estimate_benchmark

for kind, path in files.items():
    judging = {"judge": judge_model} if kind == "alpaca-eval" else {}
    if kind == "mt-bench" and judge_prompts:
        judging = {"judge": judge_model, "judge_prompts": judge_prompts}
    print(f"{kind:12}", estimate_benchmark(kind, path, chosen, k=k if kind in ("gsm8k", "choice") else 1,
                                             **judging, **options))

# %% [markdown]
# ## Checkable sets: GSM8K-style and multiple choice
#
# Each MoA run gives three answers: its **first proposer alone** (the single model), the **vote** of its first
# layer, and the **MoA**'s final answer. Each is scored by exact match (the last number; the chosen letter). The
# p-value is McNemar's exact test against the single model: only the questions where the two disagree count.
# maj@k takes the majority of the first k samples: the whole curve comes from the same `k` runs.

# %%
from moa_lab.evaluate import run_benchmark

checkable = {}
for kind in ("gsm8k", "choice"):
    checkable[kind] = await run_benchmark(kind, files[kind], Path(output_dir) / kind, chosen, k=k,
                                          progress=False, **options)
    print(checkable[kind], "\n")

# %% [markdown]
# ## AlpacaEval: answers in `model_outputs.json`, judged against a baseline
#
# The file `alpaca_eval --model_outputs` reads is written first. Then moa_lab's own pairwise judge compares each
# answer with the baseline's (here the samples' `output`; with the real data, a reference model's
# `model_outputs.json` as `baseline=`), in both orders, so a judge that picks by position makes ties, not wins.
# This is your judge's number, not AlpacaEval's: the official one comes from its own judge.

# %%
alpaca = await run_benchmark("alpaca-eval", files["alpaca-eval"], Path(output_dir) / "alpaca-eval", chosen,
                             judge=judge_model, progress=False, **options)
print(alpaca)

# %% [markdown]
# Where the field stands: the AlpacaEval 2.0 leaderboard ships inside the `alpaca-eval` package (223 rows), with
# Together's MoA at 65.4 LC. Your number above is your judge's on your instructions; it sits beside these only once
# `alpaca_eval --model_outputs` has judged the same 805 instructions.

# %%
try:
    import alpaca_eval

    board = pd.read_csv(Path(alpaca_eval.__file__).parent / "leaderboards" / "data_AlpacaEval_2" /
                        "weighted_alpaca_eval_gpt4_turbo_leaderboard.csv", index_col=0)
    board = board[["length_controlled_winrate", "win_rate", "avg_length"]].sort_values("length_controlled_winrate",
                                                                                       ascending=False)
    shown = board.loc[[n for n in board.index if "MoA" in n or n.startswith(("gpt-4o-2024-05-13", "gpt4_1106"))]]
    display(shown.round(1))
except ImportError:
    print("pip install alpaca-eval to see the AlpacaEval 2.0 leaderboard here")

# %% [markdown]
# ## MT-Bench: two turns, FastChat's answer file
#
# The second turn runs as a conversation: the question, the MoA's first answer, the follow-up. The answers go to
# `model_answer/NAME.jsonl`, as FastChat's judge reads them. With `judge_prompts` (MT-Bench's own
# `judge_prompts.jsonl`), each turn is graded 1-10 by the judge, per turn and per category.

# %%
mt = await run_benchmark("mt-bench", files["mt-bench"], Path(output_dir) / "mt-bench", chosen,
                         judge=judge_model if judge_prompts else None, judge_prompts=judge_prompts,
                         progress=False, **options)
print(mt)

# %% [markdown]
# ## One table, as the paper reads
#
# Every number with its interval and, where there is a baseline, its p-value. A difference is a claim only when
# its interval excludes no difference, and its p-value is small; on a few format samples, none will be.

# %%
rows = []
for kind, report in checkable.items():
    for row in report.rows:
        low, high = row["interval"]
        rows.append({"benchmark": kind, "answer": row["config"], "score": round(row["accuracy"], 1),
                     "95% interval": f"[{low:.1f}, {high:.1f}]",
                     "p vs single": None if row["p"] is None else round(row["p"], 3),
                     **{f"maj@{n}": round(v, 1) for n, v in row["maj"].items()}})
s = alpaca.scores
if s and s["win_rate"] is not None:
    rows.append({"benchmark": "alpaca-eval (this judge)", "answer": "moa", "score": round(s["win_rate"], 1),
                 "95% interval": f"[{s['interval'][0]:.1f}, {s['interval'][1]:.1f}]",
                 "p vs single": None, "LC": round(s["length_controlled"], 1), "p vs 50%": round(s["p"], 3)})
if mt.scores:
    for turn in ("turn_1", "turn_2"):
        part = mt.scores[turn]
        if part["mean"] is not None:
            rows.append({"benchmark": f"mt-bench {turn}", "answer": "moa", "score": round(part["mean"], 2),
                         "95% interval": f"[{part['interval'][0]:.2f}, {part['interval'][1]:.2f}]"})
table = pd.DataFrame(rows)
table

# %% [markdown]
# The same numbers, flat, in `output_path`: a sweep of this notebook over recipes (`moa-lab sweep
# notebooks/08_benchmarks.ipynb spec.yaml OUTDIR` with `grid: {recipe: [a.yaml, b.yaml]}`) puts them in one table.

# %%
import json

metrics = {}
for kind, report in checkable.items():
    for row in report.rows:
        metrics[f"{kind}_{row['config']}_accuracy"] = row["accuracy"]
        metrics[f"{kind}_{row['config']}_p"] = row["p"]
        metrics.update({f"{kind}_{row['config']}_maj@{n}": v for n, v in row["maj"].items()})
if s and s["win_rate"] is not None:
    metrics.update(alpaca_win_rate=s["win_rate"], alpaca_lc=s["length_controlled"], alpaca_p=s["p"])
if mt.scores:
    metrics.update(mt_bench_turn_1=mt.scores["turn_1"]["mean"], mt_bench_turn_2=mt.scores["turn_2"]["mean"])
if output_path:
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    Path(output_path).write_text(json.dumps({"metrics": metrics}, indent=1))
    print(f"{len(metrics)} numbers saved to {output_path}")

# %% [markdown]
# ## The paper's settings on Together
#
# With `TOGETHER_API_KEY` set, a recipe file with the paper's MoA (3 layers, six proposers, Qwen1.5-110B-Chat as
# aggregator; check that Together still serves them):
#
# ```yaml
# # together-moa.yaml
# proposers: [Qwen/Qwen1.5-110B-Chat, Qwen/Qwen1.5-72B-Chat, microsoft/WizardLM-2-8x22B,
#             meta-llama/Llama-3-70b-chat-hf, mistralai/Mixtral-8x22B-Instruct-v0.1, databricks/dbrx-instruct]
# aggregator: Qwen/Qwen1.5-110B-Chat
# layers: 3
# temperature: 0.7
# max_tokens: 2048
# ```
#
# ```bash
# moa-lab eval alpaca-eval alpaca_eval.json runs/ae --recipe together-moa.yaml --name together-moa --dry-run
# moa-lab eval alpaca-eval alpaca_eval.json runs/ae --recipe together-moa.yaml --name together-moa
# alpaca_eval --model_outputs runs/ae/model_outputs.json          # the official AlpacaEval 2.0 (LC) number
# moa-lab eval mt-bench question.jsonl runs/mt --recipe together-moa.yaml --name together-moa \
#     --judge <a strong model> --judge-prompts judge_prompts.jsonl
# moa-lab eval gsm8k gsm8k_test.jsonl runs/gsm8k --recipe together-moa.yaml --k 8
# ```
#
# `alpaca_eval.json` is AlpacaEval's 805 instructions (its repository, or `datasets`' `tatsu-lab/alpaca_eval`);
# `question.jsonl` and `judge_prompts.jsonl` are FastChat's MT-Bench files. Each command resumes where it stopped.

# %% [markdown]
# ## Recap
#
# - `moa-lab eval` (or `run_benchmark`) reads each benchmark's own format and writes the one its scorer reads.
# - A checkable set gives three answers per run for free (single, vote, MoA), maj@k from one set of samples, and
#   McNemar's p-value for "MoA beats the single model".
# - A win rate or a grade is reported with its interval; the official AlpacaEval and MT-Bench numbers come from their
#   own judges, on the files written here.
