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
# # Synthetic data with MoA, in batch
#
# Together's docs name MoA's best use: work where latency matters less than quality, such as **synthetic data
# generation**. One prompt waits on its slowest proposer, then on the aggregator. A dataset does not have to
# wait like that: while one prompt's aggregator writes, other prompts' proposers can run.
#
# `run_batch` runs an MoA for every prompt of a dataset:
#
# - **One limit for the whole batch**: at most `concurrency` model calls at once (and, for rate-limited
#   accounts, at most `rps` started per second). When a slot frees, a call of a later layer goes first, so
#   prompts already under way finish before new ones start.
# - **One JSON line per prompt**, written the moment that prompt is done. The line holds the id, the prompt,
#   the final answer, every layer's answers, tokens, cost, seconds and errors.
# - **Resumable**: the output file is the checkpoint. Run again with the same file and the prompts already in
#   it are skipped. A run killed at any moment (even `kill -9`) loses only the prompts in flight.
# - **Cached**: every answer is kept in an SQLite cache, so a re-run cell makes no model calls.
#
# This notebook builds a small instruction dataset offline, on the bundled models, and shows it.
#
# **In this notebook you will:**
#
# - estimate a batch's calls, tokens and cost before anything runs (`estimate`);
# - run MoA over a dataset with one limit on the calls in flight, and watch its progress (`run_batch`);
# - read the results back, as a table, one prompt's layers, and a pandas DataFrame (`results_frame`);
# - re-run it and see that no model is called twice (resume and cache);
# - write an Alpaca-style dataset, and run the same batch from the shell or on several machines.

# %% [markdown]
# ## Parameters
#
# `prompts_path` may name a JSONL file (`{"prompt": ..., "id": ...}` per line, `id` optional) or a text
# file with one prompt per line. Empty: the built-in seed instructions below. `None` for models and `max_tokens`
# means the backend's default (the reference script's models and 512 tokens on Together; the bundled models and 64 tokens
# offline).

# %% tags=["parameters"]
prompts_path: str = ""  # a JSONL or text file of prompts; "": the built-in seed instructions
n_prompts: int = 6  # how many prompts to take (0: all of them)
proposers = None  # a list of model names; None: the backend's default four
aggregator = None  # a model name; None: the backend's default
layers: int = 2  # proposer layers + the aggregator
max_tokens = None  # per call; None: 512 on Together, 64 on the bundled local models
concurrency: int = 4  # model calls at once, over the whole batch
output_path: str = "runs/04_batch.jsonl"  # the batch's results (and its checkpoint)
dataset_path: str = "runs/04_synthetic_dataset.jsonl"  # the dataset made from them: instruction, output
combine: str = "synthesize"  # how the last layer combines (README: Variants): synthesize, select, rank, vote, ...
max_cost = None  # a hard cap in USD over the batch; None: none (the batch stops there; run it again to go on)
max_tokens_total = None  # a hard cap in tokens over the batch; None: none

# %% [markdown]
# ## The prompts and the plan
#
# Every setting is checked before any call. A bad one stops the notebook here. `estimate` says what the
# batch will cost before it runs: how many calls, and upper bounds for tokens and dollars (every answer
# at `max_tokens`; the bundled models cost nothing).

# %%
from moa_lab import estimate, plan_run
from moa_lab.runs import check_batch_settings, check_output_path, read_prompts

EXAMPLE_INSTRUCTIONS = [
    "Give three tips for staying healthy.",
    "Explain why the sky is blue to a ten-year-old.",
    "Write a haiku about autumn rain.",
    "What are some fun things to do in San Francisco?",
    "Describe how a bicycle works in three sentences.",
    "Suggest a name for a bakery and explain it.",
    "List the planets of the solar system in order.",
    "How do I make a cup of tea?",
]
if not isinstance(n_prompts, int) or isinstance(n_prompts, bool) or n_prompts < 0:
    raise ValueError(f"n_prompts must be an integer >= 0 (0: all), got {n_prompts!r}")
items = read_prompts(prompts_path or EXAMPLE_INSTRUCTIONS)
items = items[:n_prompts] if n_prompts else items
prompts = [{"id": item.id, "prompt": item.prompt} for item in items]
results_file, dataset_file = check_output_path(output_path), check_output_path(dataset_path)
if results_file is None or dataset_file is None:
    raise ValueError("output_path and dataset_path must be file paths")
plan = plan_run(items[0].prompt, proposers, aggregator, layers=layers, max_tokens=max_tokens, combine=combine,
                max_cost=max_cost, max_tokens_total=max_tokens_total)
check_batch_settings(concurrency)
print(plan)
print(estimate([item.prompt for item in items], plan=plan))  # every prompt run with the plan's models and settings

# %% [markdown]
# ## Run the batch
#
# The progress bar counts prompts and shows how many are done, how many failed, and the tokens so far.
# Lines are written in the order the prompts finish. A failed prompt is written too, with its error and the
# layers it finished; `retry_failed=True` runs it again later.

# %%
from moa_lab import run_batch

summary = await run_batch(prompts, results_file, plan=plan, concurrency=concurrency)
print(summary)

# %% [markdown]
# ## The results
#
# `read_results` reads the output file back: one dict per prompt. The table cuts long texts; the lines hold
# them whole.

# %%
from moa_lab import read_results
from moa_lab.views import batch_table, layer_table

order = {item.id: position for position, item in enumerate(items)}
rows = sorted(read_results(results_file), key=lambda row: order.get(row["id"], len(order)))
batch_table(rows)

# %% [markdown]
# The same file as a pandas DataFrame, to sort, filter and plot: one row per prompt, each proposer's answer in
# its own column (`layer1_1`, `layer1_2`, ...), and the totals (calls, tokens, cost, seconds).

# %%
from moa_lab.runs import results_frame

frame = results_frame(results_file)
frame[["id", "status", "calls", "prompt_tokens", "completion_tokens", "seconds"]].describe()

# %% [markdown]
# Every line keeps each layer's answers too. Here is what the proposers wrote for the first prompt, before
# the aggregator combined them:

# %%
from moa_lab import CallRecord, LayerResult

first = rows[0]
print(first["prompt"])
calls = [CallRecord(**{k: v for k, v in call.items() if k != "cost"}) for call in first["trace"]]
layer_table(LayerResult(1, [c for c in calls if c.layer == 1 and c.role == "proposer"]))

# %% [markdown]
# ## Run it again: nothing is called twice
#
# The same output file: every prompt is already there, so none runs. A new output file with the same
# settings: every prompt runs, but every answer comes from the cache. Either way, no model is called.

# %%
again = await run_batch(prompts, results_file, plan=plan, progress=False)
print("same output file:", again)
copy_file = results_file.with_suffix(".copy.jsonl")
copy_file.unlink(missing_ok=True)  # a fresh file each time this cell runs
copy = await run_batch(prompts, copy_file, plan=plan, progress=False)
print("new output file: ", copy)

# %% [markdown]
# ## The dataset
#
# A synthetic instruction dataset is the prompts with the aggregator's answers: here in the Alpaca form
# (`instruction`, `output`), one JSON line each, ready for fine-tuning tools. Failed prompts are left out.

# %%
import json

from moa_lab.runs import dumps  # JSON Lines that any reader splits right: U+2028 and the like are escaped

dataset = [{"instruction": row["prompt"], "output": row["final"]} for row in rows if row["status"] == "ok"]
dataset_file.parent.mkdir(parents=True, exist_ok=True)
dataset_file.write_text("".join(dumps(d) + "\n" for d in dataset), encoding="utf-8")
print(f"{len(dataset)} examples written to {dataset_file}")
print(json.dumps(dataset[0], ensure_ascii=False, indent=1))

# %% [markdown]
# ## From the shell, and on several machines
#
# The same batch from a terminal (it shows the same progress bar, and `--estimate` prints the estimate
# without running anything):
#
# ```bash
# moa-lab batch prompts.jsonl results.jsonl --concurrency 16 --max-tokens 512
# ```
#
# To split one dataset over N machines, give each its shard and its own output file, then concatenate:
# `moa-lab batch prompts.jsonl results.0.jsonl --shard 0/2` on one, `--shard 1/2` on the other.
# On the bundled models the answers are weak (135M and 270M parameters): this notebook shows the method. With
# `TOGETHER_API_KEY` set, the same cells make a real dataset with the reference script's models.

# %% [markdown]
# ## Recap
#
# - `run_batch` runs one MoA per prompt with **one limit on the calls in flight** for the whole batch, so a
#   dataset is not as slow as its prompts one after another.
# - The output file is the checkpoint: one line per finished prompt; run the same call again to go on, and a
#   prompt is never run twice. The cache makes a new output file with the same settings free.
# - `estimate` bounds the calls, tokens and cost first; `results_frame` reads the results as a DataFrame.
#
# **Where next:** 05 uses the same batches to answer a benchmark's tasks with several configurations and judge
# them; the README's "Batch runs" section lists every option of `run_batch` and `moa-lab batch`.
