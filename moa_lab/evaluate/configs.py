"""The configurations an evaluation compares: one model alone, MoA with n proposers, Self-MoA (one model sampled
n times), deeper MoA, and answers written elsewhere (``reference``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Sequence

from ..validation import check_models


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

    @property
    def layers(self) -> int:
        """Proposer layers plus the aggregator (the seed's count; 1 for a model alone)."""
        return len(self.proposers) + 1

    @property
    def n(self) -> int:
        """Proposers per layer (those of layer 1); 0 for a model alone or a reference."""
        return len(self.proposers[0]) if self.proposers else 0

    @property
    def calls(self) -> int:
        """Model calls per prompt (0 for a reference)."""
        return 0 if self.kind == "reference" else sum(map(len, self.proposers)) + 1

    @property
    def slug(self) -> str:
        """The name, safe as a file name."""
        return re.sub(r"[^A-Za-z0-9.=+-]+", "_", self.name).strip("_") or "config"

    def describe(self) -> str:
        if self.kind == "reference":
            return f"{self.name}: the tasks' reference answers (no model call)"
        layers = "; ".join(f"layer {k + 1}: {', '.join(m)}" for k, m in enumerate(self.proposers))
        return f"{self.name}: {layers + '; ' if layers else ''}aggregator {self.aggregator} ({self.calls} calls/prompt)"


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
    return replace(moa([model] * n, aggregator or model, layers, name or f"Self-MoA {model} x{n}{depth}"),
                   kind="self-moa")


def proposer_sweep(pool: Sequence[str], aggregator: str, counts: Sequence[int] | None = None,
                   layers: int = 2) -> list[Config]:
    """MoA with the first n models of ``pool`` as proposers, for each n in ``counts`` (default 1 to
    ``len(pool)``), all with the same ``aggregator``: the multiple-proposer column of the paper's Table 3."""
    counts = list(range(1, len(pool) + 1)) if counts is None else list(counts)
    for n in counts:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(pool):
            raise ValueError(f"counts must be integers from 1 to the pool's size ({len(pool)}), got {n!r}")
    return [moa(pool[:n], aggregator, layers) for n in counts]


def reference(name: str = "reference") -> Config:
    """The tasks' own ``reference`` answers (from the JSONL): no call. The paper's baseline was such a set,
    GPT-4 Turbo's AlpacaEval answers."""
    return Config(name, (), None, "reference")


def check_configs(configs: Sequence[Config], baseline: str | None, backend) -> tuple[list[Config], Config]:
    """At least two configurations with different names and file names, every model one the backend serves;
    ``baseline`` names one of them (None: the first). Returns the configurations and the baseline."""
    if isinstance(configs, Config) or not isinstance(configs, Sequence) or len(configs) < 2:
        raise ValueError(f"configs must be a list of at least two configurations (one is the baseline), got "
                         f"{configs!r}")
    seen: dict[str, str] = {}
    for config in configs:
        if not isinstance(config, Config):
            raise ValueError(f"every configuration must be a moa_lab.evaluate.Config (single(...), moa(...), "
                             f"self_moa(...), reference()), got {config!r}")
        if config.slug.casefold() in seen:
            raise ValueError(f"configurations {seen[config.slug.casefold()]!r} and {config.name!r} have the same "
                             "name (or file name): give one of them name=...")
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


def standard_configs(pool: Sequence[str], aggregator: str, counts: Sequence[int] = (1, 2), self_moa_n: int = 2,
                     deep_layers: int = 3) -> list[Config]:
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
        configs.append(moa(pool[:max(counts)], aggregator, deep_layers))
    return configs
