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
# # Does MoA beat a single model?
#
# The MoA paper's claim can be measured. With the same aggregator and 2 layers, more proposers gave better
# answers (AlpacaEval 2.0 length-controlled win rate against GPT-4 Turbo, the paper's Table 3):
#
# | proposers n | 1 | 2 | 3 | 6 |
# |---|---|---|---|---|
# | different models | 47.8 | 58.8 | 58.0 | 61.3 |
# | one model sampled n times | 47.8 | 54.5 | 56.1 | 56.7 |
#
# The full 3-layer MoA reached 65.1 (GPT-4o: 57.5). This notebook runs the same kind of experiment on your
# prompts and your models:
#
# 1. **Answers**: every configuration (one model alone, MoA with n proposers, Self-MoA, 3 layers) answers
#    every task, with the batch runner (cached, and resumable: run the cell again after a stop).
# 2. **Pairwise judging**, AlpacaEval-style: a judge model reads an instruction and two answers, A and B, and
#    says which is better, or TIE. Each pair is judged **in both orders**, so a judge that prefers a position
#    cannot decide the result.
# 3. **An objective track**: questions with one right answer (arithmetic, multiple choice), scored by exact
#    match, so that the result does not rest on an LLM judge alone.
# 4. **The results table and two plots**, saved as files.
#
# **In this notebook you will:**
#
# - see what an evaluation costs before it runs, and why identical calls are made once;
# - read exactly what a pairwise judge sees, and catch a judge that chooses by position;
# - read a win rate with its bootstrap interval, a length-controlled estimate and exact match side by side;
# - know what the bundled models can and cannot show, and how to run the paper's Table 3 on Together.

# %% [markdown]
# ## Parameters
#
# `None` for models and `max_tokens` means the backend's default (the reference script's models and 512 tokens on
# Together; the bundled models and 64 tokens offline).

# %% tags=["parameters"]
tasks_path: str = ""  # a JSONL file: "prompt", and optionally "id", "answer" (+ "kind"), "reference"; "": built-in
n_instructions = None  # built-in open instructions to use (0 to 20); None: all 20 (3 on the bundled models)
n_questions = None  # built-in questions with one right answer to use (0 to 12); None: all 12 (3 on the bundled)
proposers = None  # the pool of proposers, in order; None: the backend's default proposers
aggregator = None  # the aggregator, also the model alone and the Self-MoA model; None: the backend's default
proposer_counts: list = [1, 2]  # MoA with the first n proposers of the pool, for each n (2 layers)
self_moa_n: int = 2  # Self-MoA: the aggregator sampled n times (0: leave it out)
deep_layers: int = 3  # MoA with the largest n over this many layers (0: leave it out)
baseline: str = ""  # judged against: "" the model alone, "reference" the tasks' reference answers, or a name
judge_model = None  # the judge; None: the backend's default aggregator
n_orders: int = 2  # 2: judge both orders (cancels position bias); 1: one random order (half the judge calls)
max_tokens = None  # per answer; None: 512 on Together, 64 on the bundled local models
temperature: float = 0.7
concurrency: int = 4  # model calls at once
output_dir: str = "runs/05_evaluate"  # answers, judgments, results.md / .csv and the plots go here

# %% [markdown]
# ## The tasks, the configurations and the cost
#
# Everything is checked here, before any model is called: a bad parameter stops the notebook in this cell.

# %%
from pathlib import Path

from moa_lab import get_backend
from moa_lab.runs import check_output_path
from moa_lab.evaluate import (LOCAL_CAVEAT, builtin_tasks, check_configs, check_judge, estimate_evaluation,
                              load_tasks, reference, standard_configs)

backend = get_backend()
if backend.kind == "local":  # the bundled models show mechanics, not quality: a smaller set keeps this ~3 minutes
    n_instructions = 3 if n_instructions is None else n_instructions
    n_questions = 3 if n_questions is None else n_questions
tasks = load_tasks(tasks_path) if tasks_path else builtin_tasks(n_instructions, n_questions)
pool = proposers or list(backend.default_proposers)
configs = standard_configs(pool, aggregator or backend.default_aggregator, proposer_counts, self_moa_n, deep_layers)
if baseline == "reference":
    configs.insert(0, reference())
configs, base = check_configs(configs, baseline or None, backend)
judge_model, _ = check_judge(judge_model, n_orders, backend=backend)
settings = dict(max_tokens=max_tokens, temperature=temperature, backend=backend)
folder = check_output_path(Path(output_dir) / "results.md").parent
estimate = estimate_evaluation(tasks, configs, judge_model=judge_model, n_orders=n_orders, **settings)

print(backend.describe())
print(f"{len(tasks)} tasks: {sum(not t.objective for t in tasks)} open instructions, "
      f"{sum(t.objective for t in tasks)} questions with one right answer")
for config in configs:
    print(" ", config.describe(), "<- the baseline" if config is base else "")
print(f"judge: {judge_model}; {estimate}")
if backend.kind == "local":
    print("\nNOTE:", LOCAL_CAVEAT)

# %% [markdown]
# ## 1. The answers
#
# One batch per configuration (`moa_lab.run_batch`), written to `answers/<configuration>-<settings>.jsonl` in the
# output folder. Stopped half-way? Run the cell again: the prompts already answered are skipped, and every
# answer is in the cache anyway. Change a setting and new files are made; the old ones stay.

# %%
from moa_lab.evaluate import generate
runs = await generate(tasks, configs, folder, concurrency=concurrency, **settings)
for name, run in runs.items():
    print(f"{name}: {len(run.answers)} answered, {len(run.failed)} failed; {run.usage}")

# %% [markdown]
# What each configuration answered to the first task:

# %%
from moa_lab.evaluate import answers_view

answers_view(tasks[0], runs)

# %% [markdown]
# ## 2. The judge
#
# This is all the judge sees for one pair: the instruction and two answers, without their names. It is asked
# for one word, A, B or TIE. Replies are read strictly (`parse_verdict`): `[[A]]`, a reply that starts with the
# verdict, or "answer B is better". Anything else, such as "A, B, or TIE" echoed back, counts as **no verdict**,
# never as a guess.

# %%
from moa_lab.views import messages_view
from moa_lab.evaluate import judge_messages

first_open = next((t for t in tasks if not t.objective), None)
other = next((c for c in configs if c is not base), None)
if first_open and other and first_open.id in runs[other.name].answers and first_open.id in runs[base.name].answers:
    display(messages_view(judge_messages(first_open.prompt, runs[other.name].answers[first_open.id],
                                         runs[base.name].answers[first_open.id])))

# %%
from moa_lab.evaluate import judge, judgments_view

judgments = await judge(tasks, runs, base.name, judge_model=judge_model, n_orders=n_orders, concurrency=concurrency,
                        backend=backend)
judgments_view(judgments[:8])

# %% [markdown]
# ### Why both orders
#
# Many judges prefer the answer they read first (or second). The table below scores each configuration three
# ways: only from the judgments where its answer came first, only where it came second, and from both. If the
# first two differ a lot, a one-order evaluation would mostly measure the judge's habit. With both orders, a pair
# won in one order and lost in the other is a tie, and a prompt counts only when both orders gave a verdict.

# %%
from moa_lab.evaluate import order_effect

order_effect(judgments)

# %% [markdown]
# ## 3. The results
#
# - **win rate**: a prompt scores 1 if the configuration won in both orders, 0.5 for a tie (or a split), 0 if
#   it lost; the win rate is the mean × 100 over the prompts with a verdict in every order (`n`). The 95%
#   interval is a percentile bootstrap over those prompts (2000 resamples).
# - **LC win rate**, a simple length-controlled estimate: judges like long answers, so the paper reports
#   AlpacaEval's length-controlled win rate. Here a logistic model `P(win) = sigmoid(θ + φ·tanh(Δ/σ))` is fitted
#   to the prompt scores, where Δ is the configuration's answer length minus the baseline's (characters) and σ
#   the spread of Δ. The estimate is `sigmoid(θ)`, the win rate when both answers are the same length.
#   AlpacaEval also models each instruction's difficulty, which needs many models; this does not.
# - **W/T/L/?**: the judge's verdicts (won, tie, lost, no verdict); **exact match**: the questions answered
#   right (the last number in the answer, or the chosen letter); **calls, tokens, cost** over every task;
#   **s/prompt**: one prompt's MoA, end to end, with `concurrency` calls at once (so it includes waiting).

# %%
from moa_lab.evaluate import summarize

report = summarize(tasks, configs, runs, judgments, base.name, judge_model=judge_model, n_orders=n_orders,
                   backend=backend)
paths = report.save(folder)
print("saved:", ", ".join(str(p) for p in paths.values()))
report

# %% [markdown]
# ## The plots
#
# Win rate against the number of proposers, the shape of the paper's Table 3 (the dashed lines are the
# length-controlled estimate), and quality against cost (in dollars where every model has a price, else tokens).

# %%
from IPython.display import Image

display(Image(filename=str(paths["win_rate_vs_proposers.png"])))
display(Image(filename=str(paths["quality_vs_cost.png"])))

# %% [markdown]
# ## What this shows, and what it does not
#
# On the bundled models (135M and 270M parameters), this notebook shows **the method**, not the value of MoA.
# Their answers are weak, and as a judge SmolLM2 mostly answers "A", whatever it reads (see the order table):
# judging both orders turns that into ties, so win rates sit at 50% with narrow intervals. That is the method
# working, not evidence that MoA does nothing. With a judge that reads, 20 prompts still give wide intervals: a
# configuration beats the baseline only where its whole interval lies above 50%.
#
# ## The real experiment: the paper's Table 3 on Together
#
# Set `TOGETHER_API_KEY` in the shell that runs Jupyter or papermill, and give:
#
# - **tasks**: AlpacaEval's 805 instructions, with GPT-4 Turbo's answers as references. Write one JSON line
#   per instruction, `{"id": i, "prompt": instruction, "reference": output}`, from the `alpaca_eval` repository's
#   `results/gpt4_1106_preview/model_outputs.json` (the reference the MoA repository's `run_eval_alpaca_eval.sh`
#   uses), and set `tasks_path` to that file and `baseline="reference"`.
# - **proposers** (the paper's six, as the MoA repository names them on Together): `Qwen/Qwen1.5-110B-Chat`,
#   `Qwen/Qwen1.5-72B-Chat`, `microsoft/WizardLM-2-8x22B`, `meta-llama/Llama-3-70b-chat-hf`,
#   `mistralai/Mixtral-8x22B-Instruct-v0.1`, `databricks/dbrx-instruct`; `aggregator="Qwen/Qwen1.5-110B-Chat"`,
#   `proposer_counts=[1, 2, 3, 6]` (the paper does not say which subsets it used; here the first n),
#   `self_moa_n=6`, `deep_layers=0` (Table 3 uses 2 layers), `temperature=0.7`, `max_tokens=2048`.
# - **judge**: the paper's was GPT-4 Turbo through AlpacaEval (weighted by token probabilities, against GPT-4
#   Turbo's own answers). Any strong model served on your backend can judge here (`judge_model=...`; route one
#   model elsewhere with `MOA_LAB_MODEL_URLS`). Expect the same shape, not the same numbers: a different
#   judge, and a simpler length control.
#
# Check that the models are still served (Together retires old ones), and `estimate` above before running:
# 805 prompts × (2 + 3 + 4 + 7 + 7 calls) plus 2 × 805 × 5 judge calls is about 26,600 calls.
#
# ```bash
# papermill notebooks/05_evaluate_moa.ipynb runs/table3.ipynb -p tasks_path alpaca_eval.jsonl \
#     -p baseline reference -y 'proposers: [Qwen/Qwen1.5-110B-Chat, Qwen/Qwen1.5-72B-Chat, microsoft/WizardLM-2-8x22B,
#     meta-llama/Llama-3-70b-chat-hf, mistralai/Mixtral-8x22B-Instruct-v0.1, databricks/dbrx-instruct]' \
#     -p aggregator Qwen/Qwen1.5-110B-Chat -y 'proposer_counts: [1, 2, 3, 6]' -p self_moa_n 6 -p deep_layers 0 \
#     -p max_tokens 2048 -p judge_model <a strong model> -p concurrency 32 -p output_dir runs/table3
# ```

# %% [markdown]
# ## Recap
#
# - An evaluation is answers (one batch per configuration, cached and resumable), a judge in **both orders**,
#   and an objective track scored without a judge; every number of the table comes from those files.
# - A win rate means little without its interval, and less with a judge that picks by position: the order
#   table shows it, and both orders turn it into ties instead of a false result.
# - `report.to_pandas()` gives the table as a DataFrame; `estimate_evaluation` bounds the calls and cost first.
#
# **Where next:** run the Table 3 setting above on Together; or take a configuration that wins into notebook 04
# to make a dataset with it.
