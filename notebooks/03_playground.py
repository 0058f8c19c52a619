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
# # The MoA playground
#
# Change the prompt, the models, the number of layers, the temperature, `max_tokens` or the aggregator's
# system prompt, press **Run**, and watch the Mixture-of-Agents work. Each layer's proposers answer at once;
# their answers appear in the layer's tab as each one arrives, with its time and tokens. Then the aggregator
# reads the last layer's answers, numbered into its system prompt, and its answer streams in. **Stop**
# cancels a run; what finished stays. After a run: every call in a table and on a timeline, and the run's
# settings as papermill parameters or a `run_moa(...)` call, to repeat it from a notebook or a script.
#
# **Here you will:**
#
# - change one setting at a time and see what it does to the answers, the time and the tokens;
# - watch a layer wait for its slowest proposer, and the aggregator read every answer before its first token;
# - stop a run half-way and keep what finished;
# - copy an experiment you like as a notebook's parameters, or as code.
#
# The models run on the backend chosen from the environment: the bundled local models when neither
# `TOGETHER_API_KEY` nor `TOGETHER_BASE_URL` is set (notebooks 01 and 02 explain the steps and the choice).
# Opened with Voila (`voila notebooks/03_playground.ipynb`), this page is the panel alone.

# %% tags=["parameters"]
prompt: str = "What are some fun things to do in San Francisco?"
layers: int = 2  # proposer layers + 1 aggregator
max_tokens = None  # per call; None: 512 as in Together's reference script, or 64 on the bundled local models

# %%
from moa_lab.views import Playground

panel = Playground(prompt, layers=layers, max_tokens=max_tokens)
await panel.backend.ready()  # the embedded server starts here (a few seconds), not at the first click
panel

# %% [markdown]
# ## Recap
#
# - More proposers and more layers cost calls and time: each layer lasts as long as its slowest proposer, and the
#   aggregator starts only after the last layer, so its first token comes late.
# - A failed model shows its error in its own slot and is left out of the next layer; Stop keeps what finished.
# - "Settings as" turns what you found by hand into papermill parameters (notebook 02 takes them all) or a
#   `run_moa(...)` call.
#
# **Where next:** 01 and 02 explain each step of the panel's run; 04 runs the settings you chose over a
# dataset; 05 measures whether they beat a single model.
