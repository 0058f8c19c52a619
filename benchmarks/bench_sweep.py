"""Sweep: the wall time of a 4-point sweep of notebook 01 (``--jobs 2``: two kernels at once, one shared embedded
server, one answers cache) ÷ the sum of the same 4 points run one by one as papermill runs them by hand (each
its own kernel, its own embedded server started in it, a fresh cache). What ``--jobs`` and the shared server
buy on this machine; below 1 is a gain. Both sides start from an empty cache, so every model call is made."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

from harness import Row

from moa_lab import get_backend
from moa_lab.sweeps import plan_sweep, run_sweep

SPEC = {
    "parameters": {"prompt": "Give one tip for a good night's sleep.", "max_tokens": 24},
    "grid": {"temperature": [0.3, 0.7], "proposers": [["smollm2-135m", "gemma3-270m"], ["smollm2-135m"]]},
}
NOTEBOOK = "01_two_layer_moa"


def run() -> list[Row]:
    import papermill

    saved = os.environ.get("MOA_LAB_CACHE")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        try:
            os.environ["MOA_LAB_CACHE"] = str(tmp / "sweep.sqlite")
            t0 = time.perf_counter()
            summary = asyncio.run(run_sweep(NOTEBOOK, SPEC, tmp / "sweep", jobs=2, progress=False))
            swept = time.perf_counter() - t0
            get_backend("local").server.stop()  # the one-by-one runs start their own
            alone, sweep = [], plan_sweep(NOTEBOOK, SPEC, tmp / "other")
            for number, point in enumerate(sweep.points):
                os.environ["MOA_LAB_CACHE"] = str(tmp / f"alone{number}.sqlite")
                folder = tmp / f"alone{number}"
                folder.mkdir()
                t0 = time.perf_counter()
                papermill.execute_notebook(
                    str(sweep.notebook),
                    str(folder / "out.ipynb"),
                    parameters=point.parameters,
                    cwd=str(folder),
                    progress_bar=False,
                )
                alone.append(time.perf_counter() - t0)
        finally:
            if saved is None:
                os.environ.pop("MOA_LAB_CACHE", None)
            else:
                os.environ["MOA_LAB_CACHE"] = saved
    assert summary.done == 4, summary
    return [
        Row(
            "sweep: wall ÷ its points run one by one (jobs 2)",
            swept / sum(alone),
            "(none)",
            None,
            f"4 points of notebook 01 (24 tokens): {swept:.1f} s with 2 kernels, one shared server and cache; "
            f"{sum(alone):.1f} s one after another ({', '.join(f'{a:.1f}' for a in alone)} s), each starting "
            "its own server",
        )
    ]
