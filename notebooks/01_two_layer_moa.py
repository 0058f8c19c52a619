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
# # Mixture-of-Agents in two layers
#
# **Mixture-of-Agents (MoA)** asks several language models the same question, then asks one more model to
# write the final answer from theirs (Wang et al. 2024, [arXiv 2406.04692](https://arxiv.org/abs/2406.04692)).
# The first models are the *proposers*; the last one is the *aggregator*.
#
# Why bother? Models write better answers when they are shown other models' answers, even answers from weaker
# models: the paper calls this *collaborativeness*. Using open models only, a 3-layer MoA scored a 65.1%
# length-controlled win rate on AlpacaEval 2.0, against 57.5% for GPT-4o. A 2-layer MoA, like this notebook's,
# scored 59.3% ("MoA-Lite"). With the aggregator fixed, more proposers helped: 1 proposer scored 47.8%, 3 scored
# 58.0% and 6 scored 61.3%.
#
# The price is **latency**. No layer can start until its slowest proposer has finished. The aggregator writes
# its first token only after every proposer is done. So a 2-layer MoA takes about *the slowest proposer + the
# aggregator*, and it makes 5 calls where one would do. Together's docs say it plainly: MoA is for cases where
# latency matters less than quality, such as synthetic data generation.
#
# This notebook is Together's 2-layer recipe (4 proposers and 1 aggregator), one step at a time. The plumbing
# (retries, timeouts, the local server) lives in `moa_lab`, so each cell shows one idea.
#
# **In this notebook you will:**
#
# - check a run's settings and see which backend answers, before any model is called (`plan_run`);
# - run the proposer layer, all calls at once, and read their answers side by side (`run_layer`);
# - see the exact messages the aggregator receives, then stream its answer (`aggregate`);
# - read the run's trace: every call's time, tokens and cost, in a table and on a timeline;
# - try other settings in the playground panel.

# %% [markdown]
# ## Parameters
#
# Change them here, or from the command line with papermill:
# `papermill 01_two_layer_moa.ipynb out.ipynb -p prompt "Explain MoA to a child" -p max_tokens 128`.
# `None` means "the backend's default". On Together: the reference script's four models, the Mixtral aggregator and
# 512 tokens. On the bundled local models: `smollm2-135m` and `gemma3-270m`, with 64 tokens, so the whole
# notebook runs in well under a minute on a laptop.

# %% tags=["parameters"]
prompt: str = "What are some fun things to do in San Francisco?"
proposers = None  # a list of model names, e.g. ["smollm2-135m", "gemma3-270m"]; None: the backend's default four
aggregator = None  # a model name; None: the backend's default
temperature: float = 0.7
seed: int = 0  # each call's seed is seed + 1000 × layer + index: another seed, other samples
max_tokens = None  # per call; None: 512 as in Together's reference script, or 64 on the bundled local models
system_prompt = None  # the aggregator's instructions; None: the paper's prompt (moa_lab.AGGREGATOR_PROMPT_EN)
output_path: str = "runs/01_two_layer_moa.json"  # a JSON summary of the run; "" for none
follow_up: str = "Which one of those would you pick on a rainy day?"  # the conversation's second turn
recipe = None  # a recipe file (YAML/JSON: models and settings, e.g. saved from the playground); None: the above

# %% [markdown]
# ## Check the parameters, choose the backend
#
# `plan_run` checks every parameter before any model is called. A bad value stops the notebook here, with a
# message naming the value and what is allowed. It also picks the backend from the environment:
#
# - `TOGETHER_BASE_URL` set: any OpenAI-compatible server at that URL (vLLM, llama.cpp, `moa-lab serve`, ...).
# - else `TOGETHER_API_KEY` set: Together's API, with the reference script's models as defaults.
# - else: the **embedded local server**. It runs the two small bundled models on 127.0.0.1, starts on first
#   use and stops with the kernel. It needs no key and no network.
#
# Nothing else changes between backends. The same notebook runs on Together once `TOGETHER_API_KEY` is set
# (start Jupyter from that shell).
#
# A `recipe` file, if given, holds the models and settings instead (the prompt stays this notebook's).

# %%
from moa_lab import Recipe, plan_run
from moa_lab.runs import check_output_path

if recipe:
    plan = Recipe.from_file(recipe).plan(prompt)
else:
    plan = plan_run(prompt, proposers, aggregator, layers=2, temperature=temperature, max_tokens=max_tokens,
                    seed=seed, system_prompt=system_prompt)
summary_file = check_output_path(output_path)
plan

# %% [markdown]
# ## Layer 1: every proposer answers the prompt, all at once
#
# Each proposer gets only the user's message. `run_layer` sends the calls concurrently, like the reference script's
# `asyncio.gather`, so the layer takes as long as its slowest call, not the sum of the calls. A failed call is
# retried; if it still fails it is recorded with its cause and left out of the next step, never passed on as
# the text "None". Each call has its own seed, so the same model twice gives two different answers.
#
# `plan=plan` hands the step every setting checked above (temperature, `max_tokens`, seed, backend...): one
# source of truth. A keyword changes one of them for this step only, e.g. `run_layer(..., plan=plan,
# temperature=0.2)`. The cell uses top-level `await`: a notebook cell already runs inside an event loop.

# %%
from moa_lab import run_layer
from moa_lab.views import layer_table

layer1 = await run_layer(prompt, plan.proposers[0], plan=plan)
layer_table(layer1)

# %% [markdown]
# ## What the aggregator receives
#
# The answers are numbered into the aggregator's **system message**, after its instructions. The user's
# question stays the user message. This is the reference script's `getFinalSystemPrompt` (its 3-layer recipe) and the
# paper's method. (Together's 2-layer reference script joins the answers with commas into the user message and never
# shows the aggregator the question. moa_lab always uses the numbered form.) Here is the exact message list
# the aggregator gets:

# %%
from moa_lab.prompts import build_messages
from moa_lab.views import messages_view

messages_view(build_messages(prompt, layer1.answers, plan.system_prompt))

# %% [markdown]
# ## Layer 2: the aggregator writes the answer, streamed
#
# `aggregate` makes one call and streams it. `async for` prints each piece of text as it arrives. A stream
# that breaks off raises an error naming the model; the text that did arrive is kept.

# %%
from moa_lab import aggregate

final = aggregate(prompt, layer1.answers, plan.aggregator, plan=plan)
async for chunk in final:
    print(chunk, end="", flush=True)


# %% [markdown]
# ## The whole run: every call, in a table and on a timeline
#
# Each bar is one call, from its start to its end. Layer 1's bars overlap because the proposers ran at once.
# The aggregator starts only after the slowest of them (plus the time you took to run the next cell). On the
# local backend, at most one call per CPU core runs at a time, so on 2 cores the four proposers run two by two.

# %%
from moa_lab import MoAResult
from moa_lab.views import plot_timeline, trace_table

result = MoAResult(prompt, [layer1], final.record)
trace_table(result)

# %%
plot_timeline(result);

# %% [markdown]
# What the run cost: MoA makes 5 calls where one model would make 1, and the aggregator reads every proposer's
# answer, so its prompt is the longest. Prices are per million tokens: Together's for the reference script's models, zero for
# the bundled ones (`moa_lab.set_prices` sets yours). `estimate(...)` gives the bound before a run. A re-run of
# these cells costs nothing: the answers come from the cache (status `cached` in the table above).

# %%
print(result.usage())

# %% [markdown]
# The JSON summary holds the settings, each layer's answers, the final text, and every call with its time,
# tokens and estimated cost. It never holds an API key.

# %%
if summary_file:
    print("saved", result.save(summary_file, settings=plan.to_dict()))
print(f"{len(result.trace)} calls, {result.seconds:.1f} s from the first call's start to the last call's end")

# %% [markdown]
# ## A second turn: MoA in a conversation
#
# A chat goes on: the user asks a follow-up about the answer. `result.messages` is the conversation so far (the
# question, then the final answer as the assistant's turn). Add the next user turn and run MoA on the whole
# conversation: every proposer reads all of it, and so does the aggregator, with the proposers' new answers
# numbered in its system message as before. (A system message of your own, at the start of a conversation, is
# kept: it comes first in every call's system message, before the references.)
#
# `Recipe.from_plan(plan)` is this run without its prompt (its models and settings), and `.plan(messages=...)`
# applies it to the conversation: the same 5 calls, on the new turn.

# %%
from moa_lab import Recipe, run_plan

conversation = result.messages + [{"role": "user", "content": follow_up}]
turn2 = Recipe.from_plan(plan).plan(messages=conversation)
messages_view(build_messages(turn2.prompt, ["(each proposer's new answer)"], plan.system_prompt))

# %%
second = await run_plan(turn2, on_chunk=lambda text: print(text, end="", flush=True))
print(f"\n\n{second.usage()}")

# %% [markdown]
# The same recipe can be a model that any OpenAI client calls, conversations included:
# `moa-lab serve --recipe mine=my.yaml` serves it as `moa/mine` on `/v1/chat/completions`, and
# `moa-lab chat --recipe my.yaml` is this conversation in a terminal (`Recipe.from_plan(plan).save("my.yaml")`
# writes the file; the playground's "Settings as" box shows it too).

# %% [markdown]
# ## Playground
#
# The same run as a panel, pre-filled with this notebook's parameters: change a setting, press **Run**, and
# watch each layer's answers arrive and the aggregator's answer stream in. Nothing runs until you press Run
# (under papermill the panel is shown, and nothing runs). The panel's "Settings as" box turns an experiment
# you like into this notebook's papermill parameters or a `run_moa(...)` call. Notebook 03 is the panel alone.

# %%
from moa_lab.views import Playground

Playground(plan=plan)

# %% [markdown]
# ## Recap
#
# - A 2-layer MoA is **n + 1 calls**: the proposers at once, then one aggregator that reads their answers,
#   numbered into its system message. The user's question stays the user message.
# - It takes about *the slowest proposer + the aggregator*: MoA trades latency (and calls) for quality.
# - `plan_run` checks everything first; `plan=plan` passes its settings to each step; failed calls are
#   recorded with their cause and never passed on; answers are cached, so a re-run costs nothing.
# - A conversation is one more run: `result.messages` plus the next user turn, and every call reads it all.
#
# **Where next:** notebook 02 adds refinement layers (3 or more), 03 is the playground alone, 04 runs MoA over a
# dataset (synthetic data), and 05 measures whether MoA beats a single model.

# %% [markdown]
# ## Appendix: the reference script form, `asyncio.run(main())`
#
# The reference script ends with `asyncio.run(main())`. In a notebook, that line fails at first. The kernel
# already runs an event loop (that is why top-level `await` works), and `asyncio.run` refuses to start a
# second one inside it. `nest_asyncio.apply()` patches the running loop so that it can be entered again. After
# that, the reference script's form runs unchanged. Below, `main()` is the whole recipe in one call, `run_plan(plan)` (the
# same as `run_moa` with the plan's settings). (`moa_lab`'s own `run_moa_sync` does the same for scripts and cells
# without `await`.) Its settings and seeds are the ones above, so its calls are answered from the cache, at once:
# the summary line says so.

# %%
import asyncio

import nest_asyncio

from moa_lab import run_plan


async def main():
    return await run_plan(plan, on_chunk=lambda text: print(text, end="", flush=True))


seed_style = main()
try:
    again = asyncio.run(seed_style)
except RuntimeError as err:
    if "running event loop" not in str(err):
        raise  # a failure of the run itself, not asyncio.run's refusal
    seed_style.close()
    print(f"asyncio.run refused: {err}\nnest_asyncio.apply(), then the same line again:\n")
    nest_asyncio.apply()
    again = asyncio.run(main())
print(f"\n\n{again.usage()}; {again.seconds:.2f} s")
