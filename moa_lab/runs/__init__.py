"""Many MoA runs: a batch over a dataset, in this process (``engine="asyncio"``) or on a Ray cluster
(``engine="ray"``), one output line per prompt, resumable exactly once.

- :mod:`~moa_lab.runs.batch`: ``run_batch``, the entry point, which checks everything and picks the engine.
- :mod:`~moa_lab.runs._runner`: what both engines run (prompts under one call limit and budget; resume checks).
- :mod:`~moa_lab.runs.ray`: the Ray engine (blocks of prompts on Ray Data actors, one file per block).
- :mod:`~moa_lab.runs.files`: the file formats: prompts in, results out, the output's lock.
"""

from moa_lab.runs._runner import BatchSummary, check_batch_settings, settings_id
from moa_lab.runs.batch import run_batch, run_batch_sync
from moa_lab.runs.files import OutputError, read_prompts, read_results, results_frame

__all__ = [
    "BatchSummary",
    "OutputError",
    "check_batch_settings",
    "read_prompts",
    "read_results",
    "results_frame",
    "run_batch",
    "run_batch_sync",
    "settings_id",
]
