"""The models the embedded server serves: the two bundled ones, and your own GGUF files.

``moa-lab serve --model NAME=PATH[:CHAT_FORMAT]`` (repeatable) and ``MOA_LAB_MODELS`` (the same entries,
separated by ``;`` or new lines) add a model. Everything here is checked before any llama.cpp worker starts:
a missing file, a file that is not GGUF, a name given twice (or a bundled model's), an unknown chat format,
and models that do not fit in the free memory are refused with a message naming them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Bytes a model needs besides its file (one context's KV cache and buffers at n_ctx 4096, small models).
OVERHEAD = 256 * 2**20


@dataclass(frozen=True)
class ModelSpec:
    """A model of the embedded server: its name, its GGUF file, and its chat format (None: the file's own
    template, as llama.cpp reads it). ``bundled``: ours (a bundled or pack model); ``lazy``: its worker starts on
    the model's first call, not with the server (the pack's larger models: a server that never uses them never
    loads them); ``broken``: why it cannot be served (a pack model whose file could not be made): the server
    starts without it, and each call to it is answered 503 with this reason."""

    name: str
    path: Path
    chat_format: str | None = None
    bundled: bool = False
    lazy: bool = False
    broken: str | None = None

    def __str__(self) -> str:
        return f"{self.name}={self.path}" + (f":{self.chat_format}" if self.chat_format else "")


def chat_formats() -> list[str]:
    """The chat formats llama-cpp-python knows by name (imports it: ~0.2 s)."""
    from llama_cpp.llama_chat_format import LlamaChatCompletionHandlerRegistry

    return sorted(LlamaChatCompletionHandlerRegistry()._chat_handlers)


def parse_model(entry: str, what: str = "--model") -> ModelSpec:
    """``NAME=PATH`` or ``NAME=PATH:CHAT_FORMAT`` (a path may hold spaces; ``~`` is expanded). The part after
    the last colon is a chat format when it is a name without a slash, else part of the path."""
    name, sep, rest = entry.partition("=")
    name, rest = name.strip(), rest.strip()
    if not sep or not name or not rest:
        raise ValueError(f"{what} entry {entry!r} is not of the form NAME=PATH.gguf (or NAME=PATH.gguf:CHAT_FORMAT)")
    if any(c.isspace() for c in name) or "," in name:
        raise ValueError(f"{what}: the model name {name!r} may not hold spaces or commas")
    path, colon, fmt = rest.rpartition(":")
    if not colon or not path or "/" in fmt or "\\" in fmt or fmt.lower().endswith(".gguf"):
        path, fmt = rest, ""
    return ModelSpec(name, Path(os.path.expanduser(path.strip())), fmt.strip() or None)


def parse_models(entries: str | Sequence[str], what: str = "MOA_LAB_MODELS") -> list[ModelSpec]:
    """Entries given as a list (``--model`` flags) or as one text (``MOA_LAB_MODELS``: ``;`` or new lines apart)."""
    if isinstance(entries, str):
        entries = [e for line in entries.splitlines() for e in line.split(";")]
    return [parse_model(e, what) for e in entries if e.strip()]


def env_models() -> list[ModelSpec]:
    """The models ``MOA_LAB_MODELS`` adds to the embedded server (none when it is unset)."""
    return parse_models(os.environ.get("MOA_LAB_MODELS", ""))


_OFF = ("off", "0", "false", "no", "none")


def absolute_env(environ=None) -> dict[str, str]:
    """The path variables of ``environ`` (default ``os.environ``) that are relative, made absolute here: for a
    process that runs in another folder (a sweep's kernel in its point's folder, a Ray worker in its own), which
    must find the same files. ``MOA_LAB_CACHE`` (unless off), ``MOA_LAB_MODEL_DIR`` and each path in
    ``MOA_LAB_MODELS``. Returns only the variables it changed, with their new values."""
    environ = os.environ if environ is None else environ
    out = {}
    for name in ("MOA_LAB_CACHE", "MOA_LAB_MODEL_DIR"):
        value = environ.get(name)
        if value and value.strip().lower() not in _OFF and not os.path.isabs(os.path.expanduser(value)):
            out[name] = str(Path(value).expanduser().resolve())
    models = environ.get("MOA_LAB_MODELS", "")
    if models.strip():
        specs = parse_models(models)
        if any(not spec.path.is_absolute() for spec in specs):
            out["MOA_LAB_MODELS"] = ";".join(str(ModelSpec(s.name, s.path.resolve(), s.chat_format)) for s in specs)
    return out


def free_memory() -> int | None:
    """Bytes of memory available to new processes (Linux ``MemAvailable``); None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_models(specs: Iterable[ModelSpec], formats: Sequence[str] | None = None) -> list[ModelSpec]:
    """The specs, each checked (see the module's doc); ``formats``: the chat formats allowed (None: not checked)."""
    out: list[ModelSpec] = []
    seen: dict[str, ModelSpec] = {}
    for spec in specs:
        if spec.name in seen:
            first = seen[spec.name]
            raise ValueError(
                f"the model name {spec.name!r} is given twice ({first.path} and {spec.path})"
                + (f"; {spec.name} is a bundled model" if first.bundled else "")
                + ": give each model its own name"
            )
        seen[spec.name] = spec
        if spec.broken:  # served as a 503 naming it, not checked
            out.append(spec)
            continue
        where = f"the model file of {spec.name!r}, {str(spec.path)!r},"
        if not spec.path.exists():
            raise ValueError(f"{where} does not exist")
        if not spec.path.is_file():
            raise ValueError(f"{where} is not a file")
        try:
            with open(spec.path, "rb") as f:
                magic = f.read(4)
        except OSError as exc:
            raise ValueError(f"{where} cannot be read: {exc.strerror}") from None
        if magic != b"GGUF":
            raise ValueError(
                f"{where} is not a GGUF file (it starts with {magic!r}, not b'GGUF'); llama.cpp loads "
                "only GGUF models: convert it, or download the .gguf release of the model"
            )
        if formats is not None and spec.chat_format is not None and spec.chat_format not in formats:
            raise ValueError(
                f"unknown chat format {spec.chat_format!r} for the model {spec.name!r}; known: "
                f"{', '.join(formats)} (or none: the template in the GGUF file)"
            )
        out.append(spec)
    _check_memory(out)
    return out


def _check_memory(specs: Sequence[ModelSpec]) -> None:
    free = free_memory()
    if free is None:
        return
    needed = 0
    for spec in specs:
        size = spec.path.stat().st_size
        needed += size + OVERHEAD
        if needed > free:
            raise ValueError(
                f"the model {spec.name!r} ({_gib(size)} in {str(spec.path)!r}) does not fit in the free "
                f"memory: {_gib(needed)} needed with the models before it, {_gib(free)} free. Serve fewer "
                "or smaller (more quantized) models"
            )


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"
