"""A run's settings, checked and resolved once, before any model is called: which backend, which models
in which layer, and the call settings. ``run_moa`` uses it; notebooks show it right after their parameters.
"""

from __future__ import annotations

import pprint
from dataclasses import dataclass
from typing import Any, Sequence

from .backends import Backend, get_backend
from .cache import ResponseCache
from .calls import CallSettings
from .prompts import AGGREGATOR_PROMPT, AGGREGATOR_PROMPT_ZH
from .validation import (check_call_settings, check_min_ok, check_models, check_prompt, check_quorum, check_seed,
                         check_system_prompt, layer_plan)


_BACKEND_ENV = {  # how a notebook run by papermill gets the same backend
    "local": "the bundled local models (TOGETHER_API_KEY and TOGETHER_BASE_URL unset)",
    "url": "TOGETHER_BASE_URL={url}",
    "together": "Together (TOGETHER_API_KEY set)",
}


@dataclass(frozen=True)
class RunPlan:
    """What one MoA run will do: ``proposers[k]`` are the models of proposer layer ``k + 1``, then
    ``aggregator``. Costs nothing to build; ``calls`` says how many model calls the run makes."""

    prompt: str
    proposers: list[list[str]]
    aggregator: str
    backend: Backend
    settings: CallSettings
    system_prompt: str
    seed: int | None
    min_ok: int
    quorum: int | None = None
    deadline: float | None = None

    @property
    def layers(self) -> int:
        """Proposer layers plus the aggregator (the seed's count)."""
        return len(self.proposers) + 1

    @property
    def calls(self) -> int:
        return sum(len(models) for models in self.proposers) + 1

    @property
    def max_tokens(self) -> int | None:
        return self.settings.max_tokens

    @property
    def temperature(self) -> float:
        return self.settings.temperature

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (the backend by kind and URL; never a key)."""
        return {
            "backend": self.backend.kind,
            "base_url": self.backend.base_url,
            "layers": self.layers,
            "proposers": self.proposers,
            "aggregator": self.aggregator,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "min_ok": self.min_ok,
            "quorum": self.quorum,
            "deadline": self.deadline,
            "system_prompt": self.system_prompt,
        }

    def to_parameters(self) -> dict[str, Any]:
        """The run as the notebooks' papermill parameters (``notebooks/02_three_layer_moa`` takes them all;
        01 takes all but ``layers``). Models and ``max_tokens`` are given by name and number, not as defaults,
        so the same run comes out on the same backend; ``system_prompt`` is None for the paper's prompt."""
        same = all(models == self.proposers[0] for models in self.proposers)
        return {
            "prompt": self.prompt,
            "proposers": (list(self.proposers[0]) if same else self.proposers) if self.proposers else None,
            "aggregator": self.aggregator,
            "layers": self.layers,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "system_prompt": None if self.system_prompt == AGGREGATOR_PROMPT else self.system_prompt,
        }

    def parameters_text(self) -> str:
        """:meth:`to_parameters` as Python source: ``parameters = {...}``, and how to run notebook 02 with them."""
        params = pprint.pformat(self.to_parameters(), sort_dicts=False, width=110)
        backend = _BACKEND_ENV[self.backend.kind].format(url=self.backend.base_url)
        return (f"parameters = {params}\n"
                "# papermill.execute_notebook('notebooks/02_three_layer_moa.ipynb', 'runs/out.ipynb', "
                f"parameters=parameters)\n# backend: {backend}")

    def to_code(self) -> str:
        """The run as one ``run_moa(...)`` call, ready to paste in a notebook cell (top-level ``await``).
        The backend is named explicitly (``"local"``, ``"together"`` or the URL), so the call goes to the same place."""
        params = self.to_parameters()
        imports = "run_moa"
        if self.system_prompt == AGGREGATOR_PROMPT_ZH:
            imports, system_prompt = "AGGREGATOR_PROMPT_ZH, run_moa", "AGGREGATOR_PROMPT_ZH"
        else:
            system_prompt = repr(params["system_prompt"])
        backend = self.backend.base_url if self.backend.kind == "url" else self.backend.kind
        args = [repr(params["prompt"]), repr(params["proposers"]), repr(params["aggregator"])]
        args += [f"{k}={params[k]!r}" for k in ("layers", "temperature", "max_tokens")]
        args += [f"seed={self.seed!r}", f"system_prompt={system_prompt}", f"backend={backend!r}"]
        lines = [f"from moa_lab import {imports}", "", "result = await run_moa("]
        return "\n".join(lines + [f"    {arg}," for arg in args] + [")", "print(result.text)"])

    def __str__(self) -> str:
        lines = [f"backend: {self.backend.describe()}"]
        lines += [f"layer {k + 1}: {len(m)} proposer(s) at once: {', '.join(m)}" for k, m in enumerate(self.proposers)]
        lines.append(f"layer {self.layers}: aggregator {self.aggregator} (streamed)")
        lines.append(
            f"{self.calls} model calls in {self.layers} sequential step(s); temperature {self.temperature:g}, "
            f"max_tokens {self.max_tokens}, seed {self.seed}"
        )
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle) -> None:  # IPython shows the plan as text, not as a dataclass
        printer.text(str(self))


def plan_run(
    prompt: str,
    proposers: Sequence[str] | Sequence[Sequence[str]] | None = None,
    aggregator: str | None = None,
    *,
    layers: int | None = None,
    system_prompt: str | None = AGGREGATOR_PROMPT,
    temperature: float = 0.7,
    max_tokens: int | None = 512,
    seed: int | None = 0,
    min_ok: int = 1,
    quorum: int | None = None,
    deadline: float | None = None,
    timeout: float = 120.0,
    retries: int = 3,
    cache: "bool | str | ResponseCache | None" = None,
    backend: Backend | str | None = None,
) -> RunPlan:
    """Check every setting of a run and resolve the defaults; raises ValueError naming a bad value.

    Arguments as for :func:`moa_lab.run_moa`. ``None`` takes the backend's default for ``proposers``,
    ``aggregator`` and ``max_tokens`` (512 as in the seed; less on the bundled local models, see
    :attr:`Backend.default_max_tokens`), and the paper's prompt for ``system_prompt``. No model is called.
    """
    backend = get_backend(backend)
    settings = check_call_settings(temperature, max_tokens, timeout, retries, backend.default_max_tokens, cache)
    check_prompt(prompt)
    system_prompt = check_system_prompt(AGGREGATOR_PROMPT if system_prompt is None else system_prompt)
    check_seed(seed)
    plan = layer_plan(backend.default_proposers if proposers is None else proposers, layers, backend)
    fewest = min((len(p) for p in plan), default=min_ok)
    check_min_ok(min_ok, fewest)
    check_quorum(quorum, deadline, fewest, min_ok)
    if aggregator is None:
        aggregator = backend.default_aggregator
    (aggregator,) = check_models([aggregator], backend, "aggregator")
    return RunPlan(prompt, plan, aggregator, backend, settings, system_prompt, seed, min_ok, quorum, deadline)
