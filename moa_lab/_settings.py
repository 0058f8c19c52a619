"""A run's settings and their defaults, declared once. Nothing here does I/O or calls a model.

Every public call takes the settings as keyword arguments (``run_moa(prompt, temperature=0.2, seed=7)``), or
as one object: ``settings=Settings(...)``, or a checked plan (``run_layer(prompt, models, plan=plan)``), whose
settings the keywords then change. :func:`moa_lab._validation.check_settings` checks them once, naming a bad
value; new options join :class:`Settings` rather than every signature.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypedDict, Union

from moa_lab._similarity import SimilaritySpec
from moa_lab.prompts import AGGREGATOR_PROMPT, RANK_PROMPT, SELECT_PROMPT

if TYPE_CHECKING:
    from moa_lab._cache import ResponseCache

CacheSpec = Union[bool, str, "os.PathLike[str]", "ResponseCache", None]

#: How the last layer combines the references (``combine=``); the first is the default (the paper's).
COMBINE_MODES: tuple[str, ...] = ("synthesize", "select", "rank", "vote", "sequential")


@dataclass(frozen=True)
class Settings:
    """The settings every call of a run shares, with their defaults.

    - ``temperature`` (0.7) and ``max_tokens`` (512, as in the reference script; None: the backend's default, 64 on the
      bundled models) of every call; ``seed`` (0): each call gets ``seed + 1000 * layer + index``, so runs are
      reproducible and the same model twice in a layer gives two samples (None: a new sample every time, never
      cached).
    - ``timeout`` (120 s): per attempt, the wait for the whole answer, or for a stream's first token and each
      next one. ``retries`` (3): extra attempts after a retryable failure (429, 408, 409, 5xx, timeout,
      connection error), waiting ``backoff * 2**n`` seconds (``backoff`` 0.5) or what Retry-After says.
    - ``cache``: where answers are looked up and stored (None or True: ``MOA_LAB_CACHE``, else the user cache
      dir; False: none; a file path; a :class:`~moa_lab.ResponseCache`). Opened on the first call, not before.
    - ``system_prompt``: the instructions above the numbered references in layers after the first (None: the
      paper's, :data:`~moa_lab.AGGREGATOR_PROMPT_EN`).
    - ``min_ok`` (1): answers a proposer layer needs to go on; ``quorum`` (None): a layer moves on once that
      many answered; ``deadline`` (None): a layer moves on after that many seconds. Stragglers are cancelled.
    - ``combine`` ("synthesize"): how the last layer combines the references, one of :data:`COMBINE_MODES`
      (see :mod:`moa_lab._combine`); ``top_k`` (2): the references ``"rank"`` synthesizes; ``window`` (2): the
      references ``"sequential"`` reads per call, besides its running synthesis.
    - ``roles`` (None): one system prompt per proposer (by position in the layer; None in the list: none);
      ``shuffle_references`` (False): every call reads the references in its own order (from its seed);
      ``max_references`` (None: all): pass on only the k most different answers of a layer (``similarity``);
      ``early_stop`` (None): stop adding proposer layers once a layer's answers are this alike (0 to 1);
      ``filter_outliers`` (None: off): a defence against a deceptive or broken proposer (Cluster & Filter,
      arXiv 2503.05856): a layer's answer whose mean similarity to the others is more than this margin (0 to 1)
      below the median answer's is left out, never more than a minority of them, the reason in the notes;
      ``similarity`` (None: ``"lexical"``; ``"semantic"``: by meaning, :mod:`moa_lab._similarity`; or a function
      ``f(a, b) -> [0, 1]``) for these three.
    - ``max_cost`` (USD) and ``max_tokens_total`` (None: no cap): a budget for a run (in ``run_batch``: for the
      batch); see :mod:`moa_lab._budget`. Not part of a batch's settings id: a resume may raise it.
    """

    temperature: float = 0.7
    max_tokens: int | None = 512
    seed: int | None = 0
    timeout: float = 120.0
    retries: int = 3
    backoff: float = 0.5
    cache: CacheSpec = field(default=None, compare=False)
    system_prompt: str | None = AGGREGATOR_PROMPT
    min_ok: int = 1
    quorum: int | None = None
    deadline: float | None = None
    combine: str = "synthesize"
    top_k: int = 2
    window: int = 2
    roles: Sequence[str | None] | None = None
    shuffle_references: bool = False
    max_references: int | None = None
    early_stop: float | None = None
    filter_outliers: float | None = None
    similarity: SimilaritySpec = field(default=None, compare=False)
    max_cost: float | None = None
    max_tokens_total: int | None = None

    def to_dict(self, *, only_changed: bool = True) -> dict[str, Any]:
        """JSON-ready, as a recipe file holds them (:mod:`moa_lab._recipe`): the settings that differ from the
        defaults (all of them with ``only_changed=False``); ``similarity`` (a function) and a ``cache`` object are
        left out (a cache given as true, false or a path is kept)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
            if (f.name == "similarity" and not isinstance(value, str)) or (
                f.name == "cache" and not isinstance(value, (bool, str, type(None)))
            ):
                continue
            if not only_changed or value != getattr(DEFAULTS, f.name):
                out[f.name] = list(value) if f.name == "roles" and value is not None else value
        return out

    @property
    def instructions(self) -> str:
        """The aggregator's instructions: ``system_prompt``, or the paper's prompt where it is None."""
        return AGGREGATOR_PROMPT if self.system_prompt is None else self.system_prompt


#: The setting names, in order: what ``**options`` may hold.
NAMES: tuple[str, ...] = tuple(f.name for f in fields(Settings))
#: The defaults, as one object (``DEFAULTS.temperature``: 0.7).
DEFAULTS = Settings()


class Options(TypedDict, total=False):
    """The keyword arguments that set :class:`Settings` fields (for type checkers: ``**options: Unpack[Options]``)."""

    temperature: float
    max_tokens: int | None
    seed: int | None
    timeout: float
    retries: int
    backoff: float
    cache: CacheSpec
    system_prompt: str | None
    min_ok: int
    quorum: int | None
    deadline: float | None
    combine: str
    top_k: int
    window: int
    roles: Sequence[str | None] | None
    shuffle_references: bool
    max_references: int | None
    early_stop: float | None
    filter_outliers: float | None
    similarity: SimilaritySpec
    max_cost: float | None
    max_tokens_total: int | None


def passed_on(settings: Settings, answers: int) -> int:
    """How many of a layer's ``answers`` the next layer reads (``max_references``)."""
    return min(answers, settings.max_references or answers)


def steps(settings: Settings, references: int) -> list[tuple[str, int]]:
    """The last layer's calls for ``references`` answers, as ``(instructions, references read)``; none for a
    vote. :func:`moa_lab._estimate` bounds each; ``len(steps(...))`` is the last layer's calls."""
    mode, n = settings.combine, references
    system = settings.instructions
    if mode == "select":
        return [(SELECT_PROMPT, n)]
    if mode == "rank":
        return [(RANK_PROMPT, n), (system, min(settings.top_k, n))]
    if mode == "vote":
        return []
    if mode == "sequential":
        w = settings.window
        return [(system, min(w, n) if i == 0 else 1 + min(w, n - i * w)) for i in range(max(1, math.ceil(n / w)))]
    return [(system, n)]
