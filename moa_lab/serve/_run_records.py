"""The runs' records of ``moa-lab serve``: every MoA run a ``moa/NAME`` request made (its status, seed, every layer's
answers, every call's time and tokens), the last ``keep`` of them, at ``GET /moa_lab/runs`` and
``GET /moa_lab/runs/{id}``."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from moa_lab._results import MoAResult, layers_dict, trace_dict
from moa_lab.serve._openai_api import error_json


class RunRecords:
    """The last ``keep`` runs' records, by run id, oldest first."""

    def __init__(self, keep: int = 256) -> None:
        self.keep = keep
        self.runs: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def routes(self) -> list[Route]:
        return [Route("/moa_lab/runs", self.run_list), Route("/moa_lab/runs/{run_id}", self.run_record)]

    async def run_list(self, request: Request) -> Response:
        """The runs kept, oldest first: each one's id, model, status and when it started."""
        keys = ("id", "model", "status", "created")
        return JSONResponse({"object": "list", "data": [{k: r.get(k) for k in keys} for r in self.runs.values()]})

    async def run_record(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        record = self.runs.get(run_id)
        if record is None:
            message = f"no run {run_id!r} here: runs are kept for the server's life, the last {self.keep} of them"
            return JSONResponse(error_json(message, "invalid_request_error", "run_not_found", "run_id"), 404)
        return JSONResponse(record)

    def add(self, run_id: str, record: dict[str, Any]) -> None:
        self.runs[run_id] = record
        while len(self.runs) > self.keep:
            self.runs.popitem(last=False)

    def finish(self, run_id: str, status: str, outcome: Any, error: str | None) -> None:
        """The run ended: its status, error, and what it computed (its result, or before it failed, its layers)."""
        record = self.runs.get(run_id)
        if record is None:  # dropped already (more runs than keep)
            return
        record.update(status=status, error=error, finished=time.time())
        if isinstance(outcome, MoAResult):
            record["result"] = outcome.to_dict()
        elif outcome is not None:  # what the run computed before it failed
            layers = getattr(outcome, "layers", [])
            steps = getattr(outcome, "steps", [])
            record["result"] = {
                **layers_dict(layers),
                **trace_dict([c for layer in layers for c in layer.calls] + list(steps)),
            }
