"""Many MoA runs: a batch over a dataset, in this process (``engine="asyncio"``) or on a Ray cluster
(``engine="ray"``), one output line per prompt, resumable exactly once.

- :mod:`~moa_lab.runs._batch`: ``run_batch``, the entry point, which checks everything and picks the engine.
- :mod:`~moa_lab.runs._runner`: what both engines run (prompts under one call limit and budget; resume checks).
- :mod:`~moa_lab.runs._ray`: the Ray engine (blocks of prompts on Ray Data actors, one file per block).
- :mod:`~moa_lab.runs._files`: the file formats: prompts in, results out, the output's lock.
"""

from moa_lab._jsonl import dumps
from moa_lab._limits import CallLimiter, call_limits
from moa_lab._usage import get_prices
from moa_lab._validation import check_output_path
from moa_lab.runs._batch import run_batch, run_batch_sync
from moa_lab.runs._files import OutputError, read_prompts, read_results, results_frame
from moa_lab.runs._ray import RayOptions
from moa_lab.runs._runner import BatchSummary, check_batch_settings, settings_id

__all__ = [
    "BatchSummary",
    "CallLimiter",
    "OutputError",
    "RayOptions",
    "call_limits",
    "check_batch_settings",
    "check_output_path",
    "dumps",
    "get_prices",
    "read_prompts",
    "read_results",
    "results_frame",
    "run_batch",
    "run_batch_sync",
    "settings_id",
]
