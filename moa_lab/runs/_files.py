"""The batch's file formats: prompts in (a JSONL or text file, or a list), results out (one JSON line per prompt).

The results file is the batch's checkpoint. A line is written (one ``write`` of the whole line, with its newline)
only when its prompt has finished, so a run killed at any moment (even ``kill -9``) loses at most the prompts in
flight. A torn last line (a full disk, a power cut) is cut off when the file is opened again. Lines are split on
"\\n" only and written by :func:`moa_lab._jsonl.dumps`, so any text reads back.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moa_lab._conversation import Prompt, check_conversation
from moa_lab._jsonl import dumps, split_lines
from moa_lab._validation import check_prompt


@dataclass(frozen=True)
class BatchItem:
    """One prompt of a batch: its id (given, or its 1-based line number / position), where it came from, and
    the line's other fields (``extra``: e.g. an expected answer, for :mod:`moa_lab.evaluate`)."""

    id: str
    prompt: Prompt
    where: str
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


def _item(value: Any, where: str, number: int) -> BatchItem:
    if isinstance(value, str):
        value = {"prompt": value}
    if not isinstance(value, Mapping):
        raise ValueError(f'{where}: expected a prompt string or an object with "prompt" or "messages", got {value!r}')
    item_id = value.get("id", number)
    prompt: Prompt
    if "messages" in value:
        if "prompt" in value:
            raise ValueError(f'{where}: give "prompt" or "messages", not both')
        prompt = check_conversation(value["messages"], f'{where}: "messages"')
    else:
        prompt = check_prompt(value.get("prompt"), f'{where}: "prompt"')
        if not isinstance(prompt, str):
            raise ValueError(f'{where}: "prompt" must be a string (a conversation goes in "messages")')
    if isinstance(item_id, bool) or not isinstance(item_id, (str, int)) or not str(item_id).strip():
        raise ValueError(f'{where}: "id" must be a non-empty string or an integer, got {item_id!r}')
    extra = {k: v for k, v in value.items() if k not in ("prompt", "messages", "id")}
    return BatchItem(str(item_id), prompt, where, extra)


def _read_lines(path: Path) -> list[str]:
    """A prompts file's lines (split on "\\n" only; a UTF-8 BOM dropped); ValueError naming a line that is not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read prompts from {str(path)!r}: {exc}") from None
    try:
        return split_lines(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(
            f"{path}:{line}: not UTF-8 text (byte {data[exc.start]:#04x}); save the file as UTF-8"
        ) from None


#: A prompts file with one of these extensions is JSONL; any other is plain text, one prompt per line.
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")


def read_prompts(source: str | os.PathLike | Iterable[str | Mapping]) -> list[BatchItem]:
    """The prompts of a batch, checked: a JSONL file (one ``{"prompt": ..., "id": ...}`` per line, ``id``
    optional; a file named ``.jsonl``, ``.json`` or ``.ndjson``), a plain text file (any other name: one prompt
    per line, even one that starts with ``{``), or a list of strings or such dicts. Lines are split on
    "\\n" only (a prompt may hold U+2028 and the like); blank lines are skipped; a missing id is the line number
    (or the 1-based position in a list). Raises ValueError naming the line of a bad JSON line, an empty prompt,
    a prompt that is not valid Unicode (a lone surrogate) or a repeated id."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        lines = _read_lines(path)
        as_json = path.suffix.lower() in JSON_SUFFIXES  # by the name alone: a text prompt may start with "{"
        items = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            if as_json:
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            else:
                value = line.strip()
            items.append(_item(value, where, number))
    elif isinstance(source, Iterable) and not isinstance(source, (bytes, Mapping)):
        items = [_item(v, f"prompts[{i}]", i + 1) for i, v in enumerate(source)]
    else:
        raise ValueError(f"prompts must be a file path or a list of prompts, got {source!r}")
    if not items:
        raise ValueError(f"no prompts in {source!r}")
    return check_unique(items, "id", "; ids must be unique")


def check_unique(items: list, what: str = "id", after: str = "") -> list:
    """``items`` (each with an ``id`` and a ``where``), if no id repeats; else ValueError naming both places."""
    seen: dict[str, str] = {}
    for item in items:
        if item.id in seen:
            raise ValueError(f"{item.where}: {what} {item.id!r} repeats the one at {seen[item.id]}{after}")
        seen[item.id] = item.where
    return items


def read_results(path: str | os.PathLike, *, as_frame: bool = False):
    """The lines of a batch output file (a torn last line, if any, is left out), or of a Ray batch's folder (every
    block file: :mod:`moa_lab.runs._ray`), as dicts; with ``as_frame``, as :func:`results_frame` gives them."""
    if as_frame:
        return results_frame(path)
    if Path(path).is_dir():
        blocks = sorted((Path(path) / "blocks").glob("*.jsonl"))
        if not blocks and not (Path(path) / "settings.json").exists():
            raise ValueError(f"{str(path)!r} is a folder, but not a Ray batch's (no blocks/*.jsonl, no settings.json)")
        return [line for block in blocks for line in read_results(block)]
    text = Path(path).read_text(encoding="utf-8")
    return [json.loads(line) for line in split_lines(text[: text.rfind("\n") + 1]) if line.strip()]


def results_frame(path: str | os.PathLike):
    """A batch output file as a pandas DataFrame, one row per prompt: its id, prompt, status, error, final text,
    seconds and totals (calls, tokens, cost...), and its layers flattened: ``layer{k}_{i}`` holds the answer
    of proposer ``i`` of layer ``k`` (None where that call failed), ``layer{k}_{i}_model`` its model."""
    import pandas as pd

    rows = []
    for line in read_results(path):
        row = {k: v for k, v in line.items() if k not in ("layers", "trace")}
        for call in line.get("trace", []):
            if call["role"] == "proposer":
                name = f"layer{call['layer']}_{call['index'] + 1}"
                row[name] = call["text"] if call["error"] is None else None
                row[name + "_model"] = call["model"]
        rows.append(row)
    return pd.DataFrame(rows)


#: Written (to an unnamed temporary file) beside the output before any call: room for a few dozen lines.
PROBE_BYTES = 64 * 1024


class OutputError(OSError):
    """The output file could not be written during a batch; the batch stopped at once, keeping its lines."""


def probe(path: Path) -> None:
    """Fail now, before any call, if the output's folder cannot take ``PROBE_BYTES`` (a full disk, a quota, a
    read-only or immutable folder): a real write, to an unnamed file that vanishes when closed."""
    folder = next((p for p in path.parents if p.exists()), Path("."))
    try:
        with tempfile.TemporaryFile(dir=folder) as scratch:
            scratch.write(b"\0" * PROBE_BYTES)
            scratch.flush()
    except OSError as exc:
        raise OSError(
            exc.errno,
            f"cannot write the results to {str(path)!r}: {exc.strerror} in {str(folder)!r} "
            f"(a full disk, or a read-only folder?); nothing was run",
        ) from None


class FolderLock:
    """One run at a time in a folder (a sweep's OUTDIR, a Ray batch's): an exclusive lock on ``folder/.lock``,
    held until :meth:`close` (or the process's end: a killed run leaves no stale lock)."""

    NAME = ".lock"

    def __init__(self, folder: Path, what: str) -> None:
        self.fd = os.open(folder / self.NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise ValueError(
                f"{str(folder)!r} is in use by another {what} (it holds {folder / self.NAME}); wait for "
                "it to end, or give another folder"
            ) from None

    def close(self) -> None:
        os.close(self.fd)


class OutputFile:
    """The output JSONL, locked for this process; whole lines only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise ValueError(f"{str(path)!r} is being written by another batch run (it holds the lock)") from None

    def existing(self) -> list[dict]:
        """The lines already there; cuts off a torn last line; a bad line in the middle is an error."""
        data = Path(self.path).read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep < len(data):
            warnings.warn(
                f"{str(self.path)!r}: cut off a torn last line ({len(data) - keep} bytes) left by a run "
                "that was stopped while writing; that prompt runs again",
                stacklevel=3,
            )
            os.ftruncate(self.fd, keep)
        lines = []
        for number, line in enumerate(split_lines(data[:keep].decode("utf-8", "replace")), start=1):
            try:
                value = json.loads(line)
                value["id"], value["status"]  # noqa: B018 - a line of ours has both
            except (json.JSONDecodeError, TypeError, KeyError):
                raise ValueError(
                    f"{self.path}:{number} is not a batch output line; give a new output file, or "
                    "the one a batch run wrote"
                ) from None
            lines.append(value)
        return lines

    def rewrite(self, lines: list[dict]) -> None:
        """Replace the file's content with ``lines`` atomically (a temp file, then rename)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(dumps(v) + "\n" for v in lines), encoding="utf-8")
        fd = os.open(tmp, os.O_RDWR | os.O_APPEND)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # locked before it takes the name: no moment without a lock
        os.replace(tmp, self.path)
        os.close(self.fd)
        self.fd = fd

    def append(self, value: dict) -> None:
        data = (dumps(value) + "\n").encode("utf-8")
        size = os.fstat(self.fd).st_size
        try:
            view = memoryview(data)
            while view:  # a short write (a disk filling up) is followed by one that fails with the real cause
                view = view[os.write(self.fd, view) :]
        except OSError:
            os.ftruncate(self.fd, size)  # never leave a torn line behind
            raise

    def close(self) -> None:
        os.close(self.fd)
