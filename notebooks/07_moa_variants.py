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
# # MoA variants: how to combine, how deep, how much to spend
#
# The paper's recipe is one point in a space the research since has mapped:
#
# | variant | the idea | reported |
# |---|---|---|
# | **Self-MoA** (arXiv 2502.00674) | sample the best model n times instead of mixing models | AlpacaEval 2.0 LC 65.7 vs 59.1 for mixed proposers, at matched calls |
# | **Self-MoA-Seq** (same paper) | aggregate many samples through a sliding window, with the synthesis so far | keeps the aggregator's context small |
# | **select** (Universal Self-Consistency) | the aggregator picks the best reference, by number; no rewriting | shines where one answer is right |
# | **rank** (LLM-Blender's rank-then-fuse) | rank the references, synthesize only the top k | |
# | **vote** | no aggregator call: the majority of the stated final answers | self-consistency, for questions with one answer |
# | **roles, diverse references** (SMoA, 2411.03284) | each proposer its own system prompt; pass on only the most different answers | fewer tokens per layer |
# | **early stop** (RMoA, 2505.24442) | stop adding layers once a layer's answers agree | fewer calls |
# | **a deceptive proposer** (2503.05856) | one proposer told to mislead | LC 49.2 → 37.9 |
#
# **In this notebook you will:**
#
# - run every combine mode on one question and read what each decided (the choice, the ranking, the vote);
# - compare the variants on the built-in tasks at (mostly) matched calls: win rate with its interval, exact
#   match, calls, tokens, cost and time;
# - see what a deceptive proposer does to the answers, and leave its answer out (Cluster & Filter);
# - see what the aggregator took from which reference (attribution);
# - cap a run and a batch with a budget, and resume the batch that stopped at it;
# - find the parameters that run the Self-MoA comparison on Together.

# %% [markdown]
# ## Parameters
#
# `None` for models means the backend's default. `max_tokens` `None`: 512 on Together; on the bundled models
# this notebook uses 24, so that its ~150 calls take about a minute on 2 cores.

# %% tags=["parameters"]
prompt: str = "What is 17 + 25? Reply with the number only."  # the question every mode answers in section 1
n_instructions: int = 1  # built-in open instructions to compare on (0 to 20)
n_questions: int = 2  # built-in questions with one right answer (0 to 12)
pool = None  # proposer models for the mixed variants, cycled to n; None: the backend's default proposers
aggregator = None  # the aggregator, the Self-MoA model and the baseline alone; None: the backend's default
n: int = 3  # proposers per variant (the vote gets n + 1 samples: the same number of calls)
window: int = 2  # Self-MoA-Seq: references per aggregator call
top_k: int = 2  # rank: the references synthesized
early_stop: float = 0.5  # the 3-layer variant stops when a layer's answers are this alike (lexical, 0 to 1)
deceptive: bool = True  # include the variant with one deceptive proposer
defence: float = 0.1  # section 3: filter_outliers, the margin below the median answer's consensus (0 to 1)
similarity: str = "semantic"  # how answers are compared there: "semantic" (by meaning) or "lexical" (shared words)
judge_model = None  # None: the backend's default aggregator
n_orders: int = 2  # judge both orders (2) or one random order (1)
max_tokens = None  # per answer; None: 512 on Together, 24 on the bundled models (this notebook)
temperature: float = 0.7
concurrency: int = 4  # model calls at once
max_tokens_total: int = 2000  # section 4: the budget of the demonstration batch, in tokens
output_dir: str = "runs/07_moa_variants"

# %% [markdown]
# ## The variants and what they cost
#
# Each variant is a configuration of `moa_lab.evaluate`: a name, a short description and its calls per prompt.
# Everything is checked here, before any call.

# %%
from pathlib import Path

from moa_lab import estimate, get_backend, plan_run
from moa_lab.runs import check_output_path
from moa_lab.evaluate import (LOCAL_CAVEAT, builtin_tasks, check_configs, check_judge, estimate_evaluation, single,
                              variants)

backend = get_backend()
if max_tokens is None and backend.kind == "local":
    max_tokens = 24
aggregator = aggregator or backend.default_aggregator
pool = pool or list(backend.default_proposers)
configs = [single(aggregator)] + variants(pool, aggregator, n=n, window=window, top_k=top_k, early_stop=early_stop,
                                          deceptive=deceptive)
configs, base = check_configs(configs, None, backend)
judge_model, _ = check_judge(judge_model, n_orders, backend=backend)
tasks = builtin_tasks(n_instructions, n_questions)
settings = dict(max_tokens=max_tokens, temperature=temperature, backend=backend)
modes = ["synthesize", "select", "rank", "vote", "sequential"]
one = {mode: plan_run(prompt, [pool[i % len(pool)] for i in range(n)], aggregator, combine=mode, window=window,
                      top_k=top_k, **settings) for mode in modes}
folder = check_output_path(Path(output_dir) / "results.md").parent
cost = estimate_evaluation(tasks, configs, judge_model=judge_model, n_orders=n_orders, **settings)

print(backend.describe())
for config in configs:
    print(" ", config.describe(), "<- the baseline" if config is base else "")
print(f"{len(tasks)} tasks; judge {judge_model}; {cost}")
if backend.kind == "local":
    print("\nNOTE:", LOCAL_CAVEAT)

# %% [markdown]
# ## 1. One question, every way of combining
#
# The same proposers answer once (the later runs take their answers from the cache); only the last layer
# changes. `estimate` knows each mode's calls before anything runs.

# %%
for mode, plan in one.items():
    print(f"{mode:>10}: {plan.calls} calls; {estimate(plan)}")

# %%
from moa_lab import MoAError, run_plan

results = {}
for mode, plan in one.items():
    try:
        results[mode] = await run_plan(plan)
    except MoAError as exc:  # a selector that names no reference, a vote with no stated answer: said, not guessed
        print(f"{mode}: failed: {exc}")
        continue
    r = results[mode]
    print(f"--- {mode}: {len(r.trace)} calls; final answer: {r.text.strip()[:200]!r}")
    for note in r.notes:
        print("   ", note)

# %% [markdown]
# The trace says what the last layer did: each aggregator call's `step` (`select`, `rank`, `synthesize top 2`,
# `window 2 of 3...`) and the references it read, in the order it read them.

# %%
last = results.get("rank") or next(iter(results.values()))
last.to_pandas()[["layer", "model", "role", "step", "references", "seconds", "completion_tokens", "text"]]

# %% [markdown]
# ## 2. The variants compared
#
# Every configuration answers every task (a batch per configuration, cached and resumable), a judge compares
# each with the baseline (the aggregator alone) on the open instructions, in both orders, and the questions are
# scored by exact match. This is `moa_lab.evaluate.evaluate` in one call; notebook 05 walks through its steps.

# %%
from moa_lab.evaluate import evaluate

report = await evaluate(tasks, configs, folder, baseline=base.name, judge_model=judge_model, n_orders=n_orders,
                        concurrency=concurrency, **settings)
report

# %% [markdown]
# Where `vote` and `select` should shine is the **exact match** column: they return an answer a proposer gave,
# not a rewrite. `calls/prompt` is the bound; early stop makes fewer, as the calls column shows.

# %%
frame = report.to_pandas()
frame[["calls_per_prompt", "calls", "win_rate", "ci_low", "ci_high", "accuracy", "tokens", "seconds_per_prompt"]]

# %% [markdown]
# ## 3. The deceptive proposer
#
# Proposer 1 of that variant was told (`roles=[DECEPTIVE_ROLE, None, ...]`) to give confident, subtly wrong
# answers. Here is its answer next to the final one, for the first question:

# %%
from moa_lab import read_results
from moa_lab.prompts import DECEPTIVE_ROLE

print("the role:", DECEPTIVE_ROLE, "\n")
liar = next((c for c in configs if c.name == "one deceptive proposer"), None)
answers = {}
if liar is not None:
    answers = {line["id"]: line for line in read_results(next((folder / "answers").glob(f"{liar.slug}-*.jsonl")))}
question = next((t for t in tasks if t.objective), tasks[0])
if question.id in answers:
    line = answers[question.id]
    print(question.prompt, "\n")
    print("deceptive proposer:", line["layers"][0]["answers"][0][:300], "\n")
    print("final answer:", line["final"][:300])

# %% [markdown]
# ### The defence: leave out the answer far from the others' consensus
#
# The same paper's Cluster & Filter: compare the proposers' answers (by meaning, `similarity="semantic"`: an
# embedding model on the CPU, no LLM call), and leave out of the aggregator's references any answer whose mean
# similarity to the others is more than `filter_outliers` below the median answer's; never a majority. The
# attacked run first, then the same run defended: its proposers' answers come from the cache, only the
# aggregator is called again.

# %%
from moa_lab import run_moa

attack = dict(roles=[DECEPTIVE_ROLE] + [None] * (n - 1), similarity=similarity, **settings)
proposers = [pool[i % len(pool)] for i in range(n)]
attacked = await run_moa(question.prompt, proposers, aggregator, **attack)
defended = await run_moa(question.prompt, proposers, aggregator, filter_outliers=defence, **attack)
for name, r in (("attacked", attacked), ("defended", defended)):
    print(f"--- {name}: the aggregator read answers {[i + 1 for i in (r.layers[0].kept or range(n))]} of {n}")
    for note in r.notes:
        print("   ", note)
    print("    final:", r.text.strip()[:200])

# %% [markdown]
# On strong models the deceptive answer is the one far from the others, and the defence removes it; on the
# bundled ones every answer is far from every other, and the margin decides. Either way the notes say what was
# left out and why: a defence you can audit.
#
# ### What the aggregator took from whom
#
# `result.attribution()`: each sentence of the final answer, coloured by the reference it is closest to (hover for
# how close); white is the aggregator's own. The MoA paper found the aggregator draws most from the best proposals:
# here you can see it, run by run.

# %%
attacked.attribution()

# %%
print(attacked.attribution())

# %% [markdown]
# ## 4. Budgets
#
# `max_cost` (USD) and `max_tokens_total` cap a run, or a whole batch. A run whose bound (every answer at
# `max_tokens`) does not fit is refused before any call:

# %%
from moa_lab import BudgetExceeded

try:
    await run_plan(plan_run(prompt, [pool[0]] * n, aggregator, max_tokens_total=50, **settings))
except BudgetExceeded as exc:
    print(exc)

# %% [markdown]
# A batch whose prompts fit one by one but not all together runs until the next call could cross the budget:
# no call starts that could, what finished is written, the rest is left. Run it again with a larger budget and it
# goes on (the budget is not part of the batch's settings, so the file resumes; finished calls come from the
# cache).

# %%
from moa_lab import run_batch

batch_prompts = [f"Give one tip about {topic}." for topic in ("sleep", "tea", "email", "running", "bread")]
out = folder / "budget_batch.jsonl"
out.unlink(missing_ok=True)
try:
    summary = await run_batch(batch_prompts, out, [pool[0]] * 2, aggregator, max_tokens_total=max_tokens_total,
                              concurrency=concurrency, progress=False, **settings)
    print("the whole batch fitted:", summary)
except BudgetExceeded as exc:
    print(exc, "\n")
    if exc.summary is not None:  # it stopped mid-way (else it was refused before any call)
        print(exc.summary)
summary = await run_batch(batch_prompts, out, [pool[0]] * 2, aggregator, max_tokens_total=100 * max_tokens_total,
                          concurrency=concurrency, progress=False, **settings)
print("\nagain, with a larger budget:", summary)

# %% [markdown]
# ## What this shows, and what it does not
#
# On the bundled models (135M and 270M parameters) this notebook shows **the mechanics**: what each mode
# calls, decides and costs. Their answers are weak and their judge mostly picks by position, so the win rates
# say little; exact match on 2 questions says less. Give it 20 instructions and 12 questions for a real table. The papers' numbers need strong models and hundreds of
# prompts.
#
# ## The Self-MoA comparison on Together
#
# Set `TOGETHER_API_KEY` in the shell that runs papermill. Self-MoA's headline (mixed proposers vs the best
# model sampled n times, at matched calls) on the built-in set, with the paper's n = 6:
#
# ```bash
# papermill notebooks/07_moa_variants.ipynb runs/self_moa.ipynb -p n 6 -p n_instructions 20 -p n_questions 12 \
#     -y 'pool: [Qwen/Qwen2-72B-Instruct, mistralai/Mixtral-8x22B-Instruct-v0.1, databricks/dbrx-instruct]' \
#     -p aggregator Qwen/Qwen2-72B-Instruct -p max_tokens 1024 -p judge_model <a strong model> \
#     -p concurrency 16 -p output_dir runs/self_moa
# ```
#
# For AlpacaEval itself, give notebook 05 the tasks file it describes and the same configurations
# (`moa_lab.evaluate.variants(...)`). Check the estimate first: with n = 6, 32 tasks and nine variants it is
# about 2,300 calls plus the judge's.

# %% [markdown]
# ## Recap
#
# - `combine=` changes only the last layer: `synthesize` (the paper), `select`, `rank`, `vote` (no call),
#   `sequential`; the trace says what it chose, and `estimate` knows its calls.
# - `roles`, `shuffle_references` and `max_references` change what each proposer reads; `early_stop` how deep
#   a run goes, and the result says where it stopped and why.
# - `filter_outliers` (with `similarity="semantic"`) leaves a deceptive answer out, saying why;
#   `result.attribution()` shows what the final answer took from each reference.
# - `max_cost` and `max_tokens_total` are hard caps: refused before the run when the bound does not fit,
#   never crossed during it; a batch stopped at its budget resumes.
# - Every variant is a configuration of `moa_lab.evaluate`, compared with the same judge and tables as in 05.
