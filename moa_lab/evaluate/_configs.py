"""The configurations an evaluation compares: one model alone, MoA with n proposers, Self-MoA (one model sampled
n times), deeper MoA, and answers written elsewhere (``reference``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from moa_lab._combine import passed_on, steps
from moa_lab._validation import check_models, check_references, check_settings
from moa_lab.prompts import DECEPTIVE_ROLE


@dataclass(frozen=True)
class Config:
    """One way of answering: ``proposers[k]`` are the models of proposer layer ``k + 1`` (none: the aggregator
    answers alone), then ``aggregator``. ``kind``: ``single``, ``moa``, ``self-moa`` or ``reference`` (no model:
    the tasks' ``reference`` answers). Build them with :func:`single`, :func:`moa`, :func:`self_moa`,
    :func:`proposer_sweep` or :func:`reference`."""

    name: str
    proposers: tuple[tuple[str, ...], ...] = ()
    aggregator: str | None = None
    kind: str = "moa"
    options: tuple[tuple[str, Any], ...] = ()  # settings of a variant (combine=..., roles=...): see variant()
    description: str = ""

    @property
    def settings(self) -> dict[str, Any]:
        """The variant's own settings, as keyword arguments of :func:`moa_lab.run_moa` (they win over the
        evaluation's)."""
        return dict(self.options)

    @property
    def layers(self) -> int:
        """Proposer layers plus the aggregator (the reference script's count; 1 for a model alone)."""
        return len(self.proposers) + 1

    @property
    def n(self) -> int:
        """Proposers per layer (those of layer 1); 0 for a model alone or a reference."""
        return len(self.proposers[0]) if self.proposers else 0

    @property
    def calls(self) -> int:
        """Model calls per prompt, at most (0 for a reference; an early stop makes fewer): every proposer, then
        the last layer's calls for its ``combine`` mode."""
        if self.kind == "reference":
            return 0
        settings = check_settings(None, self.settings)
        last = passed_on(settings, len(self.proposers[-1])) if self.proposers else 0
        return sum(map(len, self.proposers)) + len(steps(settings, last))

    @property
    def slug(self) -> str:
        """The name, safe as a file name."""
        return re.sub(r"[^A-Za-z0-9.=+-]+", "_", self.name).strip("_") or "config"

    def describe(self) -> str:
        if self.kind == "reference":
            return f"{self.name}: the tasks' reference answers (no model call)"
        layers = "; ".join(f"layer {k + 1}: {', '.join(m)}" for k, m in enumerate(self.proposers))
        shown = {k: ("<role>" if k == "roles" else v) for k, v in self.options}
        options = "".join(f", {k}={v!r}" for k, v in shown.items())
        about = f" ({self.description})" if self.description else ""
        return (
            f"{self.name}{about}: {layers + '; ' if layers else ''}aggregator {self.aggregator}{options} "
            f"({self.calls} calls/prompt)"
        )


def single(model: str, name: str | None = None) -> Config:
    """``model`` alone answers each prompt: 1 call per prompt."""
    return Config(name or f"{model} alone", (), model, "single")


def moa(proposers: Sequence[str], aggregator: str, layers: int = 2, name: str | None = None) -> Config:
    """MoA with the same ``proposers`` in each of its ``layers - 1`` proposer layers, then ``aggregator``:
    ``len(proposers) * (layers - 1) + 1`` calls per prompt."""
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 2:
        raise ValueError(f"layers of an MoA configuration must be an integer >= 2, got {layers!r}")
    proposers = tuple(proposers) if not isinstance(proposers, str) else (proposers,)
    depth = "" if layers == 2 else f", {layers} layers"
    return Config(name or f"MoA n={len(proposers)}{depth}", (proposers,) * (layers - 1), aggregator, "moa")


def self_moa(model: str, n: int, aggregator: str | None = None, layers: int = 2, name: str | None = None) -> Config:
    """Self-MoA: ``model`` sampled ``n`` times (each call has its own seed, so the samples differ), then
    ``aggregator`` (default: ``model`` itself). ``n * (layers - 1) + 1`` calls per prompt."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (samples of {model!r}) must be an integer >= 1, got {n!r}")
    depth = "" if layers == 2 else f", {layers} layers"
    return replace(
        moa([model] * n, aggregator or model, layers, name or f"Self-MoA {model} x{n}{depth}"), kind="self-moa"
    )


def proposer_sweep(
    pool: Sequence[str], aggregator: str, counts: Sequence[int] | None = None, layers: int = 2
) -> list[Config]:
    """MoA with the first n models of ``pool`` as proposers, for each n in ``counts`` (default 1 to
    ``len(pool)``), all with the same ``aggregator``: the multiple-proposer column of the paper's Table 3."""
    counts = list(range(1, len(pool) + 1)) if counts is None else list(counts)
    for n in counts:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(pool):
            raise ValueError(f"counts must be integers from 1 to the pool's size ({len(pool)}), got {n!r}")
    return [moa(pool[:n], aggregator, layers) for n in counts]


def variant(
    proposers: Sequence[str],
    aggregator: str,
    name: str,
    *,
    layers: int = 2,
    description: str = "",
    kind: str = "moa",
    **options: Any,
) -> Config:
    """MoA changed by the settings of a variant (``combine=``, ``window=``, ``top_k=``, ``roles=``,
    ``shuffle_references=``, ``max_references=``, ``early_stop=``: see :class:`moa_lab.moa.Settings`), checked here
    (ValueError naming a bad one). ``calls`` counts the mode's calls."""
    config = moa(proposers, aggregator, layers, name)
    check_references(check_settings(None, options), [len(p) for p in config.proposers])
    options = {k: tuple(v) if k == "roles" else v for k, v in options.items()}
    return replace(config, kind=kind, options=tuple(options.items()), description=description)


def variants(
    pool: Sequence[str],
    aggregator: str,
    n: int = 3,
    window: int = 2,
    top_k: int = 2,
    early_stop: float = 0.5,
    deceptive: bool = True,
) -> list[Config]:
    """The variants from the literature since the paper, at matched calls where the mode allows (``n + 1``
    calls per prompt: n proposers, one aggregator call): the paper's synthesis of the first ``n`` of ``pool``
    (cycled when shorter); Self-MoA (``aggregator`` sampled n times, arXiv 2502.00674); USC-style ``select``;
    ``rank`` then synthesize the ``top_k`` (LLM-Blender; n + 2 calls); a majority ``vote`` of n + 1 samples (no
    aggregator call); Self-MoA-Seq (n samples read ``window`` at a time: n + ceil(n / window) calls);
    SMoA-style shuffled references with the most different n - 1 kept; 3 layers with ``early_stop`` (RMoA:
    at most 2n + 1 calls); and (``deceptive``) the deceptive-agent lesson: proposer 1 told to mislead
    (arXiv 2503.05856)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n (proposers per variant) must be an integer >= 2, got {n!r}")
    if isinstance(pool, str) or not pool:
        raise ValueError(f"pool must be a non-empty list of model names, got {pool!r}")
    mixed = [pool[i % len(pool)] for i in range(n)]
    samples = [aggregator] * n
    configs = [
        variant(mixed, aggregator, f"MoA n={n}", description="the paper's synthesis"),
        variant(samples, aggregator, f"Self-MoA x{n}", kind="self-moa", description="one model sampled n times"),
        variant(mixed, aggregator, f"select n={n}", combine="select", description="the aggregator picks one"),
        variant(
            mixed,
            aggregator,
            f"rank top {top_k}",
            combine="rank",
            top_k=top_k,
            description="rank, then synthesize the best",
        ),
        variant(
            [aggregator] * (n + 1),
            aggregator,
            f"vote x{n + 1}",
            combine="vote",
            kind="self-moa",
            description="majority of the stated answers, no aggregator call",
        ),
        variant(
            samples,
            aggregator,
            f"Self-MoA-Seq x{n} w={window}",
            combine="sequential",
            window=window,
            kind="self-moa",
            description="a sliding window of samples",
        ),
        variant(
            mixed,
            aggregator,
            f"shuffled, {n - 1} most different",
            shuffle_references=True,
            max_references=n - 1,
            description="SMoA-style reference selection",
        ),
        variant(
            mixed,
            aggregator,
            f"3 layers, early stop {early_stop:g}",
            layers=3,
            early_stop=early_stop,
            description="stops when a layer's answers agree",
        ),
    ]
    if deceptive:
        configs.append(
            variant(
                mixed,
                aggregator,
                "one deceptive proposer",
                roles=[DECEPTIVE_ROLE] + [None] * (n - 1),
                description="proposer 1 told to mislead",
            )
        )
    return configs


def reference(name: str = "reference") -> Config:
    """The tasks' own ``reference`` answers (from the JSONL): no call. The paper's baseline was such a set,
    GPT-4 Turbo's AlpacaEval answers."""
    return Config(name, (), None, "reference")


def check_configs(configs: Sequence[Config], baseline: str | None, backend) -> tuple[list[Config], Config]:
    """At least two configurations with different names and file names, every model one the backend serves;
    ``baseline`` names one of them (None: the first). Returns the configurations and the baseline."""
    if isinstance(configs, Config) or not isinstance(configs, Sequence) or len(configs) < 2:
        raise ValueError(
            f"configs must be a list of at least two configurations (one is the baseline), got {configs!r}"
        )
    seen: dict[str, str] = {}
    for config in configs:
        if not isinstance(config, Config):
            raise ValueError(
                f"every configuration must be a moa_lab.evaluate.Config (single(...), moa(...), "
                f"self_moa(...), reference()), got {config!r}"
            )
        if config.slug.casefold() in seen:
            raise ValueError(
                f"configurations {seen[config.slug.casefold()]!r} and {config.name!r} have the same "
                "name (or file name): give one of them name=..."
            )
        seen[config.slug.casefold()] = config.name
        if config.kind != "reference":
            for models in config.proposers:
                check_models(list(models), backend, f"proposers of {config.name!r}")
            check_models([config.aggregator], backend, f"aggregator of {config.name!r}")
    names = [c.name for c in configs]
    if baseline is None:
        return list(configs), configs[0]
    if baseline not in names:
        raise ValueError(f"baseline {baseline!r} is not one of the configurations: {', '.join(map(repr, names))}")
    return list(configs), configs[names.index(baseline)]


def standard_configs(
    pool: Sequence[str], aggregator: str, counts: Sequence[int] = (1, 2), self_moa_n: int = 2, deep_layers: int = 3
) -> list[Config]:
    """The comparisons of the paper, in one list: ``aggregator`` alone (first: the usual baseline), MoA with the
    first n of ``pool`` for each n in ``counts`` (2 layers, the same aggregator), Self-MoA (``aggregator``
    sampled ``self_moa_n`` times; 0 leaves it out) and MoA with the largest n over ``deep_layers`` layers (0 or 2
    leaves it out)."""
    configs = [single(aggregator)] + proposer_sweep(pool, aggregator, counts)
    if isinstance(self_moa_n, bool) or not isinstance(self_moa_n, int) or self_moa_n < 0:
        raise ValueError(f"self_moa_n must be an integer >= 0 (0: no Self-MoA), got {self_moa_n!r}")
    if self_moa_n:
        configs.append(self_moa(aggregator, self_moa_n))
    if isinstance(deep_layers, bool) or not isinstance(deep_layers, int) or deep_layers < 0 or deep_layers == 1:
        raise ValueError(f"deep_layers must be 0 or 2 (none) or an integer >= 3, got {deep_layers!r}")
    if deep_layers > 2 and counts:
        configs.append(moa(pool[: max(counts)], aggregator, deep_layers))
    return configs
