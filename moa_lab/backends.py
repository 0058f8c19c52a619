"""Which server answers a model: Together's cloud, any OpenAI-compatible base URL, or the embedded local server.

Chosen once, from arguments then environment (see :func:`get_backend`). The API key is handed to the
``together`` SDK client and is never part of a repr, a record or an error message.
"""

from __future__ import annotations

import asyncio
import json
import os
import weakref
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from together import AsyncTogether

from . import local

#: The seed's models: the documented defaults on Together (and on ``moa-lab serve --seed-aliases``).
SEED_PROPOSERS = (
    "Qwen/Qwen2-72B-Instruct",
    "Qwen/Qwen1.5-72B-Chat",
    "mistralai/Mixtral-8x22B-Instruct-v0.1",
    "databricks/dbrx-instruct",
)
SEED_AGGREGATOR = "mistralai/Mixtral-8x22B-Instruct-v0.1"

#: Defaults on the embedded local backend: the bundled models, four proposers like the seed.
LOCAL_PROPOSERS = ("smollm2-135m", "gemma3-270m", "smollm2-135m", "gemma3-270m")
LOCAL_AGGREGATOR = "smollm2-135m"
#: ``max_tokens=None`` on the local backend: short answers, so a whole notebook runs in well under a minute on 2 cores.
LOCAL_MAX_TOKENS = 64

_NO_KEY = "no-key-needed"  # the SDK insists on some key; local servers ignore it

#: SDK clients, made once per event loop, URL and key, and shared by every Backend object: making one costs
#: about 25 ms (an SSL context), more than moa_lab's own work for a whole layer.
_CLIENTS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict]" = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Backend:
    """Where each model's calls go. Build it with :func:`get_backend`.

    ``kind`` is ``"together"``, ``"url"`` or ``"local"``; ``model_urls`` sends single models elsewhere.
    ``known_models`` is the list a local backend can serve (None where the backend cannot know offline).
    """

    kind: str
    base_url: str | None = None
    model_urls: Mapping[str, str] = field(default_factory=dict)
    known_models: tuple[str, ...] | None = None
    default_proposers: tuple[str, ...] = SEED_PROPOSERS
    default_aggregator: str = SEED_AGGREGATOR
    default_max_tokens: int = 512  # what max_tokens=None means (512: the seed's)
    server: local.LocalServer | None = field(default=None, repr=False, compare=False)
    _api_key: str | None = field(default=None, repr=False, compare=False)

    def describe(self) -> str:
        """One line saying which backend this is and why it was chosen."""
        extra = f"; per-model URLs for {', '.join(self.model_urls)}" if self.model_urls else ""
        if self.kind == "together":
            return "Together cloud API (TOGETHER_API_KEY is set)" + extra
        if self.kind == "url":
            return f"OpenAI-compatible server at {self.base_url}" + extra
        return (
            "embedded local server with the bundled models "
            f"({', '.join(self.known_models or ())}); set TOGETHER_API_KEY or TOGETHER_BASE_URL to use another"
            + extra
        )

    def check_models(self, models: Sequence[str]) -> None:
        """Raise ValueError for a model this backend cannot serve (checked only where the list is known)."""
        if self.known_models is None:
            return
        for model in models:
            if model not in self.known_models and model not in self.model_urls:
                raise ValueError(
                    f"unknown model {model!r} on the {self.kind} backend; known models: "
                    f"{', '.join(self.known_models)} (set TOGETHER_API_KEY or TOGETHER_BASE_URL to use others)"
                )

    async def ready(self) -> None:
        """Start the embedded server if this backend uses it and it is not running (a few seconds, once)."""
        if self.server is not None and not self.server.url:
            await asyncio.to_thread(self.server.start)

    async def client(self, model: str) -> AsyncTogether:
        """The SDK client for ``model`` on the running event loop (clients are made once per loop and URL)."""
        url = self.model_urls.get(model)
        if url is None and self.server is not None:
            await self.ready()
            url = self.server.url
        url = url or self.base_url
        key = (self._api_key if (self.kind != "local" or model in self.model_urls) else None) or _NO_KEY
        per_loop = _CLIENTS.setdefault(asyncio.get_running_loop(), {})
        if (url, key) not in per_loop:
            per_loop[url, key] = AsyncTogether(api_key=key, base_url=url, max_retries=0)
        return per_loop[url, key]

    def scope(self, model: str) -> str:
        """Where ``model``'s calls go, for cache keys: its URL, ``"together"``, or ``"local"`` for the bundled
        models (the embedded server's port changes from run to run; its models do not). Never holds a key."""
        if model in self.model_urls:
            return self.model_urls[model]
        return self.base_url or self.kind

    def secret(self) -> str | None:
        """The key, for scrubbing error text only."""
        return self._api_key


def _clean_url(url: str, what: str) -> str:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"{what} must be an http:// or https:// URL, got {url!r}")
    url = url.rstrip("/")
    # The SDK appends /v1/chat/completions itself: accept the common ".../v1" form too.
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _parse_model_urls(text: str) -> dict[str, str]:
    """``MOA_LAB_MODEL_URLS``: a JSON object, or ``name=url`` pairs separated by commas or semicolons."""
    text = text.strip()
    if text.startswith("{"):
        return json.loads(text)
    pairs = [p for p in text.replace(";", ",").split(",") if p.strip()]
    out = {}
    for pair in pairs:
        name, sep, url = pair.partition("=")
        if not sep:
            raise ValueError(f"MOA_LAB_MODEL_URLS entry {pair!r} is not of the form name=url")
        out[name.strip()] = url.strip()
    return out


def _env_models(default_proposers: tuple[str, ...], default_aggregator: str) -> dict:
    proposers = os.environ.get("MOA_LAB_PROPOSERS")
    return {
        "default_proposers": tuple(m.strip() for m in proposers.split(",") if m.strip())
        if proposers
        else default_proposers,
        "default_aggregator": os.environ.get("MOA_LAB_AGGREGATOR") or default_aggregator,
    }


def get_backend(
    backend: "Backend | str | None" = None,
    *,
    model_urls: Mapping[str, str] | None = None,
    api_key: str | None = None,
) -> Backend:
    """Choose where calls go. Costs nothing: no server is started and no model is called here.

    ``backend`` may be a :class:`Backend` (returned as is), ``"local"``, ``"together"`` or a base URL.
    Otherwise, from the environment: ``TOGETHER_BASE_URL`` → that server; else ``TOGETHER_API_KEY`` → Together;
    else the embedded local server (started on first use, shared by the whole process, stopped at exit).
    ``model_urls`` (or ``MOA_LAB_MODEL_URLS``) sends single models to other servers.
    ``MOA_LAB_PROPOSERS`` / ``MOA_LAB_AGGREGATOR`` (comma-separated) replace the default models.
    """
    if isinstance(backend, Backend):
        return backend
    if backend is not None and not isinstance(backend, str):
        raise ValueError(f"backend must be a Backend, 'local', 'together' or a URL, got {backend!r}")
    if model_urls is None and os.environ.get("MOA_LAB_MODEL_URLS"):
        model_urls = _parse_model_urls(os.environ["MOA_LAB_MODEL_URLS"])
    urls = {name: _clean_url(url, f"the URL of model {name!r}") for name, url in (model_urls or {}).items()}
    key = api_key or os.environ.get("TOGETHER_API_KEY") or None
    base_url = os.environ.get("TOGETHER_BASE_URL") or None
    choice = backend or ("url" if base_url else "together" if key else "local")
    if choice not in ("local", "together", "url"):
        base_url, choice = backend, "url"

    if choice == "together":
        if not key:
            raise ValueError("the together backend needs TOGETHER_API_KEY (or api_key=...)")
        return Backend("together", None, urls, None, _api_key=key, **_env_models(SEED_PROPOSERS, SEED_AGGREGATOR))
    if choice == "url":
        return Backend("url", _clean_url(base_url, "the base URL"), urls, None, _api_key=key,
                       **_env_models(SEED_PROPOSERS, SEED_AGGREGATOR))
    server = local.default_server()
    return Backend("local", None, urls, server.model_names(), server=server, _api_key=key,
                   default_max_tokens=LOCAL_MAX_TOKENS, **_env_models(LOCAL_PROPOSERS, LOCAL_AGGREGATOR))
