"""A run's settings, checked and resolved once, before any model is called: which backend, which models
in which layer, and the call settings. ``run_moa`` uses it; notebooks show it right after their parameters.
"""

from __future__ import annotations

import hashlib
import pprint
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from moa_lab._backends import Backend, get_backend
from moa_lab._conversation import Prompt, PromptInput
from moa_lab._settings import DEFAULTS, Settings, passed_on, steps
from moa_lab._validation import (
    check_min_ok,
    check_models,
    check_quorum,
    check_references,
    check_settings,
    layer_plan,
    pick_prompt,
)
from moa_lab.prompts import AGGREGATOR_PROMPT, AGGREGATOR_PROMPT_ZH

#: The settings of the variants (how the last layer combines, what proposers see, early stop, budgets), in order.
VARIANT_SETTINGS = (
    "combine",
    "top_k",
    "window",
    "roles",
    "shuffle_references",
    "max_references",
    "early_stop",
    "filter_outliers",
    "similarity",
    "max_cost",
    "max_tokens_total",
)
#: What a batch's settings id leaves out: a resume may raise the budget.
BUDGET_SETTINGS = ("max_cost", "max_tokens_total")

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from moa_lab._settings import Options


_BACKEND_ENV = {  # how a notebook run by papermill gets the same backend
    "local": "the embedded local models (MOA_LAB_BASE_URL, TOGETHER_API_KEY and TOGETHER_BASE_URL unset)",
    "url": "TOGETHER_BASE_URL={url}",
    "together": "Together (TOGETHER_API_KEY set)",
}


@dataclass(frozen=True)
class RunPlan:
    """What one MoA run will do: ``proposers[k]`` are the models of proposer layer ``k + 1``, then
    ``aggregator``, on ``backend``, with ``settings`` (checked and resolved: :class:`moa_lab.moa.Settings`). Costs
    nothing to build; ``calls`` says how many model calls the run makes. Pass it on as ``plan=`` to
    :func:`moa_lab.run_layer`, :func:`moa_lab.aggregate` or the playground, instead of its settings one by one."""

    prompt: Prompt
    proposers: list[list[str]]
    aggregator: str
    backend: Backend
    settings: Settings

    @property
    def layers(self) -> int:
        """Proposer layers plus the aggregator (the reference script's count)."""
        return len(self.proposers) + 1

    @property
    def calls(self) -> int:
        """Model calls the run makes, at most (an early stop makes fewer; cached answers cost none): every
        proposer, then the last layer's for its ``combine`` mode (a vote: none; ``rank``: 2; ``sequential``:
        one per window)."""

        last = passed_on(self.settings, len(self.proposers[-1])) if self.proposers else 0
        return sum(len(models) for models in self.proposers) + len(steps(self.settings, last))

    def variant(self) -> dict[str, Any]:
        """The variant settings that differ from the defaults (``combine``, ``roles``, budgets, ...)."""
        out = {}
        for name in VARIANT_SETTINGS:
            value = getattr(self.settings, name)
            if value != getattr(DEFAULTS, name):
                out[name] = _named(value) if name == "similarity" else list(value) if name == "roles" else value
        return out

    def __getattr__(self, name: str):  # plan.max_tokens, plan.seed, plan.system_prompt...: its settings'
        settings = self.__dict__.get("settings")
        if settings is not None and name in type(settings).__dataclass_fields__:
            return getattr(settings, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

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
            **self.variant(),
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
            **{k: v for k, v in self.variant().items() if k != "similarity"},
        }

    def parameters_text(self) -> str:
        """:meth:`to_parameters` as Python source: ``parameters = {...}``, and how to run notebook 02 with them."""
        params = pprint.pformat(self.to_parameters(), sort_dicts=False, width=110)
        backend = _BACKEND_ENV[self.backend.kind].format(url=self.backend.base_url)
        return (
            f"parameters = {params}\n"
            "# papermill.execute_notebook('notebooks/02_three_layer_moa.ipynb', 'runs/out.ipynb', "
            f"parameters=parameters)\n# backend: {backend}"
        )

    def to_code(self) -> str:
        """The run as one ``run_moa(...)`` call, ready to paste in a notebook cell (top-level ``await``).
        The backend is named explicitly (``"local"``, ``"together"`` or the URL), so the call goes to the same place."""
        params = self.to_parameters()
        lines = ["from moa_lab import run_moa"]
        if self.system_prompt == AGGREGATOR_PROMPT_ZH:
            lines, system_prompt = lines + ["from moa_lab.prompts import AGGREGATOR_PROMPT_ZH"], "AGGREGATOR_PROMPT_ZH"
        else:
            system_prompt = repr(params["system_prompt"])
        backend = self.backend.base_url if self.backend.kind == "url" else self.backend.kind
        args = [repr(params["prompt"]), repr(params["proposers"]), repr(params["aggregator"])]
        args += [f"{k}={params[k]!r}" for k in ("layers", "temperature", "max_tokens")]
        args += [f"seed={self.seed!r}", f"system_prompt={system_prompt}", f"backend={backend!r}"]
        args += [f"{k}={v!r}" for k, v in self.variant().items() if k != "similarity"]
        lines += ["", "result = await run_moa("]
        return "\n".join(lines + [f"    {arg}," for arg in args] + [")", "print(result.text)"])

    def __str__(self) -> str:
        lines = [f"backend: {self.backend.describe()}"]
        lines += [f"layer {k + 1}: {len(m)} proposer(s) at once: {', '.join(m)}" for k, m in enumerate(self.proposers)]
        mode = self.settings.combine
        if mode == "synthesize":
            lines.append(f"layer {self.layers}: aggregator {self.aggregator} (streamed)")
        else:
            last = self.calls - sum(map(len, self.proposers))
            lines.append(
                f"layer {self.layers}: combine={mode!r}, "
                + (
                    "no call (a majority of the stated answers)"
                    if mode == "vote"
                    else f"aggregator {self.aggregator}, {last} call(s) one after another"
                )
            )
        lines.append(
            f"{self.calls} model calls in {self.layers} sequential step(s); temperature {self.temperature:g}, "
            f"max_tokens {self.max_tokens}, seed {self.seed}"
        )
        lines += [f"{k}: {v!r}" for k, v in self.variant().items() if k != "combine"]
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle) -> None:  # IPython shows the plan as text, not as a dataclass
        printer.text(str(self))


def resolve(
    plan: RunPlan | Settings | None, backend: Backend | str | None, options: Mapping[str, Any]
) -> tuple[Backend, Settings]:
    """The backend and checked settings of one step: ``options`` change ``plan``'s settings (a plan, a
    :class:`Settings`, or None for the defaults); ``backend`` None takes the plan's, else the environment's."""
    base = plan.settings if isinstance(plan, RunPlan) else plan
    if backend is None and isinstance(plan, RunPlan):
        backend = plan.backend
    backend = get_backend(backend)
    return backend, check_settings(base, options, backend.default_max_tokens)


def from_plan(plan: RunPlan | None, proposers, aggregator, arguments: dict) -> tuple[Any, Any, dict]:
    """``plan`` as the template of other prompts' runs (a batch, an estimate): its proposers, aggregator,
    settings and backend, where the arguments do not give them; the arguments as they are without a plan."""
    if plan is None:
        return proposers, aggregator, arguments
    if not isinstance(plan, RunPlan):
        raise ValueError(f"plan must be a RunPlan (from plan_run), got {plan!r}")
    return (
        plan.proposers if proposers is None else proposers,
        plan.aggregator if aggregator is None else aggregator,
        {
            "settings": plan.settings,
            "backend": plan.backend,
            **({"layers": plan.layers} if proposers is None else {}),
            **arguments,
        },
    )


def plan_run(
    prompt: PromptInput | None = None,
    proposers: Sequence[str] | Sequence[Sequence[str]] | None = None,
    aggregator: str | None = None,
    *,
    messages: PromptInput | None = None,
    layers: int | None = None,
    settings: Settings | None = None,
    backend: Backend | str | None = None,
    **options: Unpack[Options],
) -> RunPlan:
    """Check every setting of a run and resolve the defaults; raises ValueError naming a bad value.

    Arguments as for :func:`moa_lab.run_moa`: ``options`` are :class:`moa_lab.moa.Settings` fields (``temperature``,
    ``max_tokens``, ``seed``, ``timeout``, ``retries``, ``cache``, ``system_prompt``, ``min_ok``, ``quorum``,
    ``deadline``), changing ``settings`` (default: the defaults). ``None`` takes the backend's default for
    ``proposers``, ``aggregator`` and ``max_tokens`` (512 as in the reference script; less on the bundled models, see
    :attr:`Backend.default_max_tokens`), and the paper's prompt for ``system_prompt``. No model is called and no
    file is opened.
    """
    backend, checked = resolve(settings, backend, options)
    prompt = pick_prompt(prompt, messages)
    plan = layer_plan(backend.default_proposers if proposers is None else proposers, layers, backend)
    fewest = min((len(p) for p in plan), default=checked.min_ok)
    check_min_ok(checked.min_ok, fewest)
    check_quorum(checked.quorum, fewest, checked.min_ok)
    if aggregator is None:
        aggregator = backend.default_aggregator
    (aggregator,) = check_models([aggregator], backend, "aggregator")
    check_references(checked, [len(p) for p in plan])
    return RunPlan(prompt, plan, aggregator, backend, checked)


def _named(function, _seen: frozenset[int] = frozenset()) -> str | None:
    """A function by its name and a fingerprint of its code, for JSON (``module.name#1a2b3c4d``); a measure's name
    as it is. The fingerprint tells two lambdas, or a notebook cell's function before and after it was edited,
    apart: a batch's settings id then changes with the measure (its file and line numbers do not count, nor the
    memory addresses of the objects it holds, so the same cell run again in a new kernel keeps its id)."""
    if function is None or isinstance(function, str):
        return function
    name = f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', repr(function))}"
    code = getattr(function, "__code__", None) or getattr(type(function).__call__, "__code__", None)
    if code is None or id(function) in _seen:  # a function that holds itself (a recursive closure): once
        return name
    seen = _seen | {id(function)}
    extra = [_shown(v, seen) for v in (getattr(function, "__defaults__", None) or ())]
    extra += [f"{k}={_shown(v, seen)}" for k, v in sorted((getattr(function, "__kwdefaults__", None) or {}).items())]
    cells = [_cell(c, seen) for c in getattr(function, "__closure__", None) or ()]
    digest = hashlib.sha256(repr((_code(code), extra, cells)).encode("utf-8", "surrogatepass"))
    return f"{name}#{digest.hexdigest()[:8]}"


def _code(code) -> tuple:
    """What a code object computes (its bytecode, names and constants, nested code too), not where it was written."""
    consts = tuple(_code(c) if hasattr(c, "co_code") else repr(c) for c in code.co_consts)
    return (code.co_code, code.co_names, code.co_varnames, consts)


def _cell(cell, seen: frozenset[int]) -> str:
    try:
        return _shown(cell.cell_contents, seen)
    except ValueError:  # an empty cell
        return "<empty>"


def _shown(value, seen: frozenset[int]) -> str:
    """A value a function holds (a default, a closure's), as it enters the fingerprint: a function by
    :func:`_named`, anything else by its repr, or its type where the repr shows an address (it changes every run)."""
    if callable(value):
        return _named(value, seen) or ""
    shown = repr(value)
    return type(value).__qualname__ if " at 0x" in shown else shown
