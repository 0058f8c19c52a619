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
# # Mixture-of-Agents in three (or more) layers
#
# In a 2-layer MoA (notebook 01), the proposers answer the question, then an aggregator writes the final
# answer from theirs. A 3-layer MoA adds a **refinement layer** between them. The proposers are asked again,
# and this time each one sees every answer of the layer before, numbered into its system message. Each
# refined answer builds on all the first answers, and the aggregator then works from the refined ones.
#
# The paper's full MoA (Wang et al. 2024, [arXiv 2406.04692](https://arxiv.org/abs/2406.04692)) has 3 layers
# of 6 open models each. It reached a 65.1% length-controlled win rate on AlpacaEval 2.0, against 57.5% for
# GPT-4o and 59.3% for the 2-layer "MoA-Lite".
#
# **The cost** grows with every layer. Each layer waits for its slowest call, and the layers run one after
# another, so the wall time is about *the sum over layers of the slowest call*. Prompts grow too: every call of
# a refinement layer reads the whole previous layer (about n × max_tokens more prompt tokens for n proposers).
# With 4 proposers and 3 layers, one answer costs 9 calls.
#
# This notebook is Together's 3-layer recipe, one step at a time. `layers` is a parameter: 2 skips the
# refinement, 4 or more repeats it.
#
# **In this notebook you will:**
#
# - run a refinement layer, where every proposer reads all the previous answers;
# - see the exact system message that injects those answers (the reference script's `getFinalSystemPrompt`);
# - give each layer its own proposers, and any number of layers, as parameters;
# - measure what each layer adds in prompt tokens and time;
# - re-run only the aggregator, with the reference script's Chinese prompt, at the cost of one call.

# %% [markdown]
# ## Parameters
#
# `proposers` can be one list used in every proposer layer, or one list per proposer layer, e.g.
# `[["smollm2-135m", "gemma3-270m"], ["gemma3-270m"]]` for `layers=3`. `None` means the backend's default.
# On Together: the reference script's four models in every layer, the Mixtral aggregator, and 512 tokens. On the bundled
# local models: `smollm2-135m` and `gemma3-270m`, with 64 tokens, so the notebook runs in well under a minute.
# With papermill: `papermill 02_three_layer_moa.ipynb out.ipynb -p layers 4 -p max_tokens 32`.

# %% tags=["parameters"]
prompt: str = "What are some fun things to do in San Francisco?"
proposers = None  # one list of model names for every layer, or one list per proposer layer; None: the defaults
aggregator = None  # a model name; None: the backend's default
layers: int = 3  # proposer layers + 1 aggregator; 3: proposers, one refinement layer, aggregator (as in Together's reference script)
temperature: float = 0.7
seed: int = 0  # each call's seed is seed + 1000 × layer + index: another seed, other samples
max_tokens = None  # per call; None: 512 as in Together's reference script, or 64 on the bundled local models
system_prompt = None  # the instructions above the references; None: the paper's prompt (AGGREGATOR_PROMPT_EN)
output_path: str = "runs/02_three_layer_moa.json"  # a JSON summary of the run; "" for none
# The variants (README: Variants; notebook 07 compares them). The defaults are the paper's recipe.
combine: str = "synthesize"  # how the last layer combines: synthesize, select, rank, vote or sequential
top_k: int = 2  # rank: the references synthesized
window: int = 2  # sequential: the references per call
roles = None  # one system prompt per proposer (None in the list: none), e.g. ["Be brief.", None]
shuffle_references: bool = False  # every call reads the references in its own order
max_references = None  # pass on only the k most different answers of a layer; None: all
early_stop = None  # stop adding proposer layers once a layer's answers are this alike (0 to 1); None: never
max_cost = None  # a budget in USD for the run; None: none
max_tokens_total = None  # a budget in tokens for the run; None: none

# %% [markdown]
# ## Check the parameters, choose the backend
#
# A bad value stops the notebook here, before any model is called. The backend comes from the environment:
# `TOGETHER_BASE_URL` (any OpenAI-compatible server), else `TOGETHER_API_KEY` (Together, with the reference script's models),
# else the embedded local server with the bundled models (no key, no network). Nothing else changes.

# %%
from moa_lab import plan_run
from moa_lab.moa import check_budget
from moa_lab.runs import check_output_path

plan = plan_run(prompt, proposers, aggregator, layers=layers, temperature=temperature, max_tokens=max_tokens,
                seed=seed, system_prompt=system_prompt, combine=combine, top_k=top_k, window=window, roles=roles,
                shuffle_references=shuffle_references, max_references=max_references, early_stop=early_stop,
                max_cost=max_cost, max_tokens_total=max_tokens_total)
summary_file = check_output_path(output_path)
check_budget(plan)  # with max_cost or max_tokens_total: refused here if the run's bound does not fit
if plan.layers < 2:
    raise ValueError(f"layers={plan.layers}: this notebook needs at least 2 (proposers, then the aggregator)")
plan

# %% [markdown]
# ## Layer 1: every proposer answers the prompt, all at once
#
# Layer 1 is the same as in the 2-layer recipe. Each proposer gets the user's message alone, and all the calls
# run concurrently.

# %%
from moa_lab import run_layer
from moa_lab.views import layer_table

first = await run_layer(prompt, plan.proposers[0], plan=plan)
proposer_layers = [first]
layer_table(first)

# %% [markdown]
# ## Refinement: every proposer sees all the previous answers
#
# Each refinement layer sends the same user message again. This time a **system message** goes with it: the
# aggregator prompt, then the previous layer's answers, numbered. This is the reference script's `getFinalSystemPrompt`:
# `system_prompt + "\n" + "1. …\n2. …"`. Failed calls are left out of the numbering, never passed on as "None".
# Below is the exact message list each layer's proposers receive, then their answers. (With `layers=2` this
# cell does nothing.)

# %%
from IPython.display import Markdown, display

from moa_lab.moa import early_stop_reason
from moa_lab.prompts import build_messages
from moa_lab.views import messages_view

for number, models in enumerate(plan.proposers[1:], start=2):
    stop = early_stop_reason(proposer_layers[-1], plan)  # None unless early_stop is set and reached
    if stop:
        print(stop)
        break
    previous = proposer_layers[-1].passed_on  # the answers (all of them, unless max_references keeps fewer)
    display(Markdown(f"### Layer {number}: what each of its {len(models)} proposers receives"))
    display(messages_view(build_messages(prompt, previous, plan.system_prompt)))
    layer = await run_layer(prompt, models, previous=previous, layer=number, plan=plan)
    display(layer_table(layer))
    proposer_layers.append(layer)

# %% [markdown]
# ## The aggregator: one answer from the last layer, streamed
#
# The aggregator gets the same kind of system message, built from the last proposer layer. Its layer number (the
# one after the last proposer layer: `plan.layers`, unless an early stop came first) sets its seed and its row in
# the trace. With `combine` set to another mode, `combine_answers` runs that mode's calls instead (one to select,
# two to rank, one per window, none to vote).

# %%
from moa_lab import aggregate
from moa_lab.moa import combine_answers

if plan.combine == "synthesize":  # the paper's recipe
    final = aggregate(prompt, proposer_layers[-1].passed_on, plan.aggregator, plan=plan,
                      layer=len(proposer_layers) + 1)
    async for chunk in final:
        print(chunk, end="", flush=True)
    combination = None
else:  # a variant: select, rank, vote or sequential (README: Variants)
    combination = await combine_answers(prompt, proposer_layers[-1].passed_on, plan.aggregator, plan=plan,
                                        layer=len(proposer_layers) + 1, on_chunk=lambda c: print(c, end=""))
    print(f"\n\ncombine={combination.mode}: {combination.note}")


# %% [markdown]
# ## The whole run: every call, in a table and on a timeline
#
# Look at `prompt_tokens`: the refinement and aggregator calls read every previous answer, so their prompts
# are several times longer than layer 1's. On the timeline, each layer's bars overlap (its calls run at once),
# and the layers follow one another. The run lasts about the sum of each layer's slowest call.

# %%
from moa_lab import MoAResult
from moa_lab.views import plot_timeline, trace_table

result = MoAResult(prompt, proposer_layers, combination=combination) if combination else \
    MoAResult(prompt, proposer_layers, final.record)
trace_table(result)

# %%
plot_timeline(result);

# %%
if summary_file:
    print("saved", result.save(summary_file, settings=plan.to_dict()))
print(f"{len(result.trace)} calls in {plan.layers} layers, {result.seconds:.1f} s from the first call's start "
      "to the last call's end")

# %% [markdown]
# ## The reference script form, and its Chinese prompt
#
# The reference script ends with `asyncio.run(main())`, and its aggregator prompt is in Chinese. In a notebook,
# `asyncio.run` refuses to start: the kernel already runs an event loop (that is what makes top-level `await`
# work). `nest_asyncio.apply()` patches the running loop so that it can be entered again, and then the reference script's
# form runs unchanged (notebook 01 shows the refusal first).
#
# This `main()` runs only the reference script's last step again, with its Chinese prompt (`AGGREGATOR_PROMPT_ZH`): the plan's
# settings, one of them changed by a keyword. It reuses the last layer's answers, so changing the aggregator's
# prompt costs one call, not a whole run.

# %%
import asyncio

import nest_asyncio

from moa_lab.prompts import AGGREGATOR_PROMPT_ZH


async def main():
    final_zh = aggregate(prompt, proposer_layers[-1].answers, plan.aggregator, plan=plan,
                         system_prompt=AGGREGATOR_PROMPT_ZH)
    async for chunk in final_zh:
        print(chunk, end="", flush=True)


nest_asyncio.apply()  # without it: "RuntimeError: asyncio.run() cannot be called from a running event loop"
asyncio.run(main())

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
# - Each refinement layer asks the proposers again, with every answer of the layer before numbered into their
#   system message; the aggregator reads the last layer the same way.
# - Cost grows with depth: `n × (layers - 1) + 1` calls, prompts longer by about n × `max_tokens` per refined
#   call, and a wall time of about the sum of each layer's slowest call.
# - `proposers` may differ per layer; `plan=plan` gives every step the same checked settings, and a keyword
#   changes one for one step (the Chinese prompt above).
#
# **Where next:** 03 is the playground alone (try 2, 3 and 4 layers on the same prompt), 04 runs MoA over a
# dataset, and 05 compares 2 and 3 layers against a single model with a judge.
