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
# # Sweeps: what changes if …
#
# Every notebook here has a parameters cell, so one question ("what changes with more layers? with other
# proposers?") is one papermill run per setting. A **sweep** makes all those runs from one spec: every point of
# a grid of parameters, repeated over seeds for variance, several kernels at once, and one table of what each run
# reported. This notebook sweeps notebook 02 (the 3-layer recipe) on the bundled models.
#
# **In this notebook you will:**
#
# - write a sweep's spec: fixed `parameters`, a `grid` (every combination), `seeds` (repeats);
# - see its points and what they will cost before anything runs (the dry run);
# - run it with a few kernels at once, sharing one embedded server and the answers cache;
# - read the table (one row per point) and plot time, tokens and cost against each swept parameter, with error
#   bars over the seeds;
# - resume a stopped sweep without running any point twice.

# %% [markdown]
# ## Parameters
#
# `prompt` and `max_tokens` are the same for every point; `grid` gives the swept values (every combination runs)
# and `seeds` the repeats. Every name must be a parameter of the swept notebook: a name it does not have, or a
# value of the wrong type, stops this notebook before any kernel starts.

# %% tags=["parameters"]
notebook: str = "02_three_layer_moa"  # the notebook to sweep: a path, or a name in notebooks/
prompt: str = "Give one tip for writing clear emails."  # the same for every point
max_tokens: int = 16  # per call, the same for every point
grid: dict = {"layers": [2, 3], "proposers": [["smollm2-135m", "gemma3-270m"], ["smollm2-135m", "smollm2-135m"]]}
seeds: list = [0, 1]  # each point once per seed (the notebook's `seed` parameter): error bars over them
jobs: int = 2  # kernels at once
output_dir: str = "runs/06_sweep"  # one folder per point, sweep.json, results.csv and results.parquet

# %% [markdown]
# ## The spec and its points, before anything runs
#
# The spec is what `moa-lab sweep` reads from a YAML or JSON file: fixed `parameters`, a `grid`, `seeds` (and a
# `zip` of lists walked together, the fourth kind). `plan_sweep` checks it against the notebook's parameters cell
# and lists the points: one per combination
# of the grid and seed. Each point's folder is named by its swept values and a hash of the notebook's content and
# every parameter, so the same point always lands in the same folder. Where the notebook takes a `prompt`, the
# calls, tokens and cost are bounded with `moa_lab.estimate` (the MoA run each point makes; notebook 02 also
# re-runs its aggregator once with the Chinese prompt).

# %%
from moa_lab.sweeps import plan_sweep

spec = {"parameters": {"prompt": prompt, "max_tokens": max_tokens}, "grid": grid, "seeds": seeds}
sweep = plan_sweep(notebook, spec, output_dir)
print(sweep.describe())

# %% [markdown]
# ## Run it
#
# `jobs` kernels run at once. The embedded server is started once, here, and every kernel uses it
# (`MOA_LAB_LOCAL_URL`), so no kernel loads the models again; the answers cache is shared too, so points that
# make the same call (the same model, prompt and seed) make it once. Each point's folder gets its executed
# notebook, the notebook's JSON summary, and `status.json`, written last: a point is finished when that file
# exists. The progress bar counts points.

# %%
from moa_lab.sweeps import run_sweep

summary = await run_sweep(notebook, spec, output_dir, jobs=jobs)
print(summary)

# %% [markdown]
# ## The table
#
# One row per finished point: its parameters (lists as JSON), `status`, `seconds` (the notebook's wall time),
# then what its summary reports: calls, tokens, cost, the MoA's own time (`run_seconds`) and the final answer's
# length. The same table is in `results.csv` and `results.parquet`; `load_sweep(output_dir)` reads it back.

# %%
table = summary.table
table[["layers", "proposers", "seed", "status", "seconds", "calls", "tokens", "run_seconds", "final_length"]]

# %% [markdown]
# ## What each swept parameter changes
#
# Each panel: a measure against one swept parameter, one line per value of the other one, the mean over the seeds
# with their standard deviation as error bars. More layers means more calls and longer prompts (each refined call
# reads the layer before), so tokens and time grow with depth; the seeds change the samples, not the shape.

# %%
from moa_lab.sweeps import plot_sweep

plot_sweep(table, "layers", ["run_seconds", "tokens", "calls"])
plot_sweep(table, "proposers", ["run_seconds", "tokens", "final_length"]);

# %% [markdown]
# ## Quality against cost
#
# Notebook 02's summary reports no quality figure (nothing judges its answers). Sweep notebook 05 (the
# evaluation) instead, and its results add `win_rate[<configuration>]` and `exact_match[<configuration>]` columns;
# then this cell plots them against the tokens spent.

# %%
from moa_lab.sweeps import plot_quality_vs_cost, quality_columns

if plot_quality_vs_cost(table) is None:
    print(f"no quality figure in {sweep.notebook.name}'s summaries: none of its {len(table.columns)} columns is a "
          "win_rate[...] or exact_match[...]")
else:
    print("quality columns:", ", ".join(quality_columns(table)))

# %% [markdown]
# ## Again: nothing runs twice
#
# The same spec and folder: every point has its `status.json`, so none runs. A sweep killed half-way (even with
# `kill -9`) keeps its finished points; the same command runs the others, and each point is in the table once.
# Change the notebook and the folder is refused (its points ran other cells); add values to the spec and only
# the new points run.

# %%
again = await run_sweep(notebook, spec, output_dir, jobs=jobs, progress=False)
print(again)
assert again.done == 0 and again.skipped == len(sweep.points) and len(again.table) == len(sweep.points)

# %% [markdown]
# ## The same sweep from the shell, and on Together
#
# Write the spec as YAML:
#
# ```yaml
# parameters: {prompt: "Give one tip for writing clear emails.", max_tokens: 16}
# grid:
#   layers: [2, 3]
#   proposers: [[smollm2-135m, gemma3-270m], [smollm2-135m, smollm2-135m]]
# seeds: [0, 1]
# ```
#
# ```bash
# moa-lab sweep notebooks/02_three_layer_moa.ipynb sweep.yaml runs/sweep --dry-run   # the points and the bound
# moa-lab sweep notebooks/02_three_layer_moa.ipynb sweep.yaml runs/sweep --jobs 2    # run (again: resume)
# ```
#
# On Together, set `TOGETHER_API_KEY` and name Together's models, with the reference script's 512 tokens:
#
# ```bash
# TOGETHER_API_KEY=... moa-lab sweep notebooks/02_three_layer_moa.ipynb together.yaml runs/sweep-together --jobs 8
# ```
#
# with `together.yaml` holding `grid: {layers: [2, 3, 4], proposers: [[Qwen/Qwen2-72B-Instruct,
# Qwen/Qwen1.5-72B-Chat, mistralai/Mixtral-8x22B-Instruct-v0.1, databricks/dbrx-instruct]]}`, `seeds: [0, 1, 2]`
# and `parameters: {max_tokens: 512}`. `--dry-run` prints its dollar bound first.

# %% [markdown]
# ## Recap
#
# - A spec (fixed `parameters`, a `grid`, a `zip`, `seeds`) becomes points; every name and type is checked
#   against the notebook's parameters cell before any kernel starts.
# - Each point is one executed notebook in its own folder, finished when its `status.json` exists: a rerun
#   skips finished points, and a killed sweep resumes without counting a point twice.
# - The kernels share one embedded server and the answers cache; the table (`results.csv`, `results.parquet`,
#   `load_sweep`) has every point's parameters and what its summary reported.
#
# **Where next:** sweep notebook 05 to see how quality moves with the number of proposers (its `proposer_counts`,
# `self_moa_n` and `deep_layers`), or notebook 04 to compare the cost of datasets made with different settings.
