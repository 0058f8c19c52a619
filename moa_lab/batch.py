"""Many MoA runs over a dataset: a global limit on concurrent calls, a progress bar, one JSONL line per prompt.

The output file is the checkpoint. A line is written (one ``write`` of the whole line, with its newline) only
when its prompt has finished, so a run killed at any moment (even ``kill -9``) loses at most the prompts in
flight; run again with the same output and the prompts already there are skipped. A torn last line (a full
disk, a power cut) is cut off on resume. Failed prompts are written with their error and retried only with
``retry_failed=True`` (their old lines are removed first: never two lines for one id).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from . import limits
from .jsonl import dumps, split_lines
from .moa import run_plan
from .plan import RunPlan, plan_run
from .records import MoAError, MoAResult, layers_dict, trace_dict
from .usage import Usage, get_prices, usage
from .validation import check_output_path, check_prompt


@dataclass(frozen=True)
class BatchItem:
    """One prompt of a batch: its id (given, or its 1-based line number / position), where it came from, and
    the line's other fields (``extra``: e.g. an expected answer, for :mod:`moa_lab.evaluate`)."""

    id: str
    prompt: str
    where: str
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


def _item(value: Any, where: str, number: int) -> BatchItem:
    if isinstance(value, str):
        value = {"prompt": value}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected a prompt string or an object with \"prompt\", got {value!r}")
    prompt, item_id = value.get("prompt"), value.get("id", number)
    check_prompt(prompt, f'{where}: "prompt"')
    if isinstance(item_id, bool) or not isinstance(item_id, (str, int)) or not str(item_id).strip():
        raise ValueError(f"{where}: \"id\" must be a non-empty string or an integer, got {item_id!r}")
    return BatchItem(str(item_id), prompt, where, {k: v for k, v in value.items() if k not in ("prompt", "id")})


def _read_lines(path: Path) -> list[str]:
    """A prompts file's lines (split on "\\n" only; a UTF-8 BOM dropped); ValueError naming a line that is not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read prompts from {str(path)!r}: {exc}") from None
    try:
        return split_lines(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte {data[exc.start]:#04x}); save the file as UTF-8") from None


def read_prompts(source: str | os.PathLike | Iterable[str | Mapping]) -> list[BatchItem]:
    """The prompts of a batch, checked: a JSONL file (one ``{"prompt": ..., "id": ...}`` per line, ``id``
    optional), a plain text file (one prompt per line), or a list of strings or such dicts. Lines are split on
    "\\n" only (a prompt may hold U+2028 and the like); blank lines are skipped; a missing id is the line number
    (or the 1-based position in a list). Raises ValueError naming the line of a bad JSON line, an empty prompt,
    a prompt that is not valid Unicode (a lone surrogate) or a repeated id."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        lines = _read_lines(path)
        first = next((ln for ln in lines if ln.strip()), "")
        as_json = path.suffix in (".jsonl", ".json", ".ndjson") or first.lstrip().startswith("{")
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
    seen: dict[str, str] = {}
    for item in items:
        if item.id in seen:
            raise ValueError(f"{item.where}: id {item.id!r} repeats the one at {seen[item.id]}; ids must be unique")
        seen[item.id] = item.where
    return items


def prompt_hash(prompt: str) -> str:
    """A short fingerprint of a prompt's text (16 hex digits of its SHA-256): each output line records it, a
    resume checks it, and shards are chosen by it."""
    return hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def parse_shard(shard: str | Sequence[int] | None) -> tuple[int, int] | None:
    """``"I/N"`` or ``(I, N)``: this machine takes the prompts whose :func:`prompt_hash` is I modulo N
    (0 <= I < N). The key is the prompt's text, not its position: adding or removing prompts moves no other
    prompt to another shard."""
    if shard is None:
        return None
    try:
        i, n = (int(x) for x in (shard.split("/") if isinstance(shard, str) else shard))
    except (ValueError, TypeError):
        raise ValueError(f"shard must be 'I/N' (e.g. '0/4'), got {shard!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"shard {i}/{n}: I must be from 0 to N-1 ({n - 1})")
    return i, n


def in_shard(item: BatchItem, shard: tuple[int, int] | None) -> bool:
    return shard is None or int(prompt_hash(item.prompt), 16) % shard[1] == shard[0]


def check_batch_settings(concurrency: int = 16, rps: float | None = None, shard=None):
    """Check a batch's own settings (ValueError naming a bad one); returns its call limiter and its shard."""
    return limits.CallLimiter(concurrency, rps), parse_shard(shard)


def settings_id(plan: RunPlan) -> str:
    """A short fingerprint of a batch's settings (everything but the prompt), and of what answers each model
    (its server's URL, or the embedded server's model file: :meth:`moa_lab.Backend.scope`); stored in every
    output line, so that a resume with other settings, or other models behind the same names, is refused."""
    settings = {k: v for k, v in plan.to_dict().items() if k != "prompt"}
    models = sorted({m for layer in plan.proposers for m in layer} | {plan.aggregator})
    settings["served_by"] = {model: plan.backend.scope(model) for model in models}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def read_results(path: str | os.PathLike) -> list[dict]:
    """The lines of a batch output file (a torn last line, if any, is left out)."""
    text = Path(path).read_text(encoding="utf-8")
    return [json.loads(line) for line in split_lines(text[: text.rfind("\n") + 1]) if line.strip()]


#: Written (to an unnamed temporary file) beside the output before any call: room for a few dozen lines.
PROBE_BYTES = 64 * 1024


class OutputError(OSError):
    """The output file could not be written during a batch; the batch stopped at once, keeping its lines."""


def _probe(path: Path) -> None:
    """Fail now, before any call, if the output's folder cannot take ``PROBE_BYTES`` (a full disk, a quota, a
    read-only or immutable folder): a real write, to an unnamed file that vanishes when closed."""
    folder = next((p for p in path.parents if p.exists()), Path("."))
    try:
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(b"\0" * PROBE_BYTES)
            probe.flush()
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write the results to {str(path)!r}: {exc.strerror} in {str(folder)!r} "
                                 f"(a full disk, or a read-only folder?); nothing was run") from None


class _Output:
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
            warnings.warn(f"{str(self.path)!r}: cut off a torn last line ({len(data) - keep} bytes) left by a run "
                          "that was stopped while writing; that prompt runs again", stacklevel=3)
            os.ftruncate(self.fd, keep)
        lines = []
        for number, line in enumerate(split_lines(data[:keep].decode("utf-8", "replace")), start=1):
            try:
                value = json.loads(line)
                value["id"], value["status"]  # noqa: B018 - a line of ours has both
            except (json.JSONDecodeError, TypeError, KeyError):
                raise ValueError(f"{self.path}:{number} is not a batch output line; give a new output file, or "
                                 "the one a batch run wrote") from None
            lines.append(value)
        return lines

    def rewrite(self, lines: list[dict]) -> None:
        """Replace the file's content with ``lines`` atomically (a temp file, then rename)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(dumps(v) + "\n" for v in lines), encoding="utf-8")
        os.replace(tmp, self.path)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(self.fd)
        self.fd = fd

    def append(self, value: dict) -> None:
        data = (dumps(value) + "\n").encode("utf-8")
        size = os.fstat(self.fd).st_size
        try:
            view = memoryview(data)
            while view:  # a short write (a disk filling up) is followed by one that fails with the real cause
                view = view[os.write(self.fd, view):]
        except OSError:
            os.ftruncate(self.fd, size)  # never leave a torn line behind
            raise

    def close(self) -> None:
        os.close(self.fd)


@dataclass
class BatchSummary:
    """What one ``run_batch`` call did. ``usage`` covers the prompts run now (not the skipped ones)."""

    path: Path
    total: int
    skipped: int = 0
    done: int = 0
    failed: int = 0
    seconds: float = 0.0
    usage: Usage = field(default_factory=Usage)

    def __str__(self) -> str:
        return (f"{self.path}: {self.done} done, {self.failed} failed, {self.skipped} already there, of "
                f"{self.total} prompts, in {self.seconds:.1f}s; {self.usage}")


def _failed_trace(error: BaseException) -> list:
    """The calls a failed run made: its finished layers, then the failed aggregator call (if it got there)."""
    layers = getattr(error, "layers", [])
    return [c for layer in layers for c in layer.calls] + [c for c in getattr(error, "failures", [])
                                                           if c.role == "aggregator"]


def _line(item: BatchItem, sid: str, result: MoAResult | None, error: BaseException | None, seconds: float,
          prices) -> dict:
    """One output line: what ``MoAResult.to_dict`` holds, with the id, status and error; for a failed prompt
    the layers computed before the failure and any partial final text."""
    if result is not None:
        final, layers, trace = result.text, result.layers, result.trace
    else:
        final, layers, trace = getattr(error, "partial", ""), getattr(error, "layers", []), _failed_trace(error)
    return {"id": item.id, "prompt": item.prompt, "prompt_hash": prompt_hash(item.prompt),
            "status": "ok" if error is None else "failed",
            "error": None if error is None else (str(error) if isinstance(error, MoAError)
                                                 else f"{type(error).__name__}: {error}"),
            "final": final, "seconds": seconds, "settings_id": sid,
            **layers_dict(layers, prices), **trace_dict(trace, prices)}


async def run_batch(
    prompts: str | os.PathLike | Iterable[str | Mapping],
    out: str | os.PathLike,
    proposers=None,
    aggregator: str | None = None,
    *,
    concurrency: int = 16,
    rps: float | None = None,
    shard: str | Sequence[int] | None = None,
    retry_failed: bool = False,
    progress: bool = True,
    prices: Mapping | None = None,
    on_result: Callable[[dict], None] | None = None,
    **settings: Any,
) -> BatchSummary:
    """Run an MoA for every prompt and append one JSON line per prompt to ``out`` as it finishes.

    ``prompts``: a JSONL or text file, or a list (see :func:`read_prompts`). ``settings``: those of
    :func:`moa_lab.run_moa` (``layers``, ``max_tokens``, ``quorum``, ``cache``, ``backend``, ...), checked
    before anything runs. Cost: ``plan.calls`` model calls per prompt (none for cached answers), at most
    ``concurrency`` at once over the whole batch and at most ``rps`` started per second. Prompts already in
    ``out`` are skipped (failed ones are run again with ``retry_failed``); ``shard="I/N"`` runs one N-th.
    ``on_result`` gets each line as it is written. A failed prompt is written with its error and does not
    stop the batch.
    """
    items = read_prompts(prompts)
    first = plan_run(items[0].prompt, proposers, aggregator, **settings)
    same = {**settings, "backend": first.backend}  # every prompt's plan: checked now, used as it runs
    plans = {item.id: plan_run(item.prompt, first.proposers, first.aggregator, **same) for item in items}
    limiter, picked = check_batch_settings(concurrency, rps, shard)
    prices = get_prices(prices)  # checked before any call, resolved once for every line
    path = check_output_path(out)
    if path is None:
        raise ValueError("out must be a file path for the results (JSONL)")
    _probe(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    output = _Output(path)
    try:
        sid = settings_id(first)
        existing = _resumable(output, items, sid)
        mine = [item for item in items if in_shard(item, picked)]
        return await _run(mine, sid, existing, plans, output, limiter, retry_failed, progress, prices, on_result)
    finally:
        output.close()


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _resumable(output: _Output, items: list[BatchItem], sid: str) -> list[dict]:
    """The output's lines, if this batch may go on from them: the same settings, and the same prompt under every
    id (checked against the whole input, every shard's prompts included); else ValueError saying what differs."""
    existing = output.existing()
    other = sorted({str(v.get("settings_id")) for v in existing} - {sid})
    if other:
        raise ValueError(f"{str(output.path)!r} holds results made with other settings, or with other servers or "
                         f"model files behind the same model names (settings_id {', '.join(other)}, now {sid}); "
                         "give a new output file, or the same settings to resume")
    order = {item.id: (position, item) for position, item in enumerate(items)}
    changed = []
    for line in existing:
        position, item = order.get(str(line["id"]), (None, None))
        written = line.get("prompt_hash") or prompt_hash(str(line.get("prompt")))
        if item is not None and written != prompt_hash(item.prompt):
            changed.append((position, line, item))
    if changed:
        _, line, item = min(changed, key=lambda c: c[0])  # the first in the input
        raise ValueError(
            f"{str(output.path)!r} holds answers to other prompts under the same ids ({len(changed)} id(s) differ): "
            f"id {item.id!r} was {_short(str(line.get('prompt')))} there but is {_short(item.prompt)} in "
            f"{item.where}. Prompts without an \"id\" are numbered by their line, so adding or removing a line "
            "renumbers the ones after it. Give a new output file (answers made before come from the cache, with "
            "no call), or give every prompt its own \"id\"")
    return existing


async def _run(items, sid: str, existing, plans: dict[str, RunPlan], output: _Output, limiter, retry_failed, progress,
               prices, on_result):
    first = plans[items[0].id] if items else next(iter(plans.values()))
    if retry_failed and any(v["status"] != "ok" for v in existing):
        existing = [v for v in existing if v["status"] == "ok"]
        output.rewrite(existing)
    done_ids = {v["id"] for v in existing}
    todo = [item for item in items if item.id not in done_ids]
    summary = BatchSummary(output.path, len(items), skipped=len(items) - len(todo))
    bar = progress_bar(len(items), summary.skipped, progress)
    await first.backend.ready()
    queue: asyncio.Queue = asyncio.Queue()
    for item in todo:
        queue.put_nowait(item)
    t0 = time.perf_counter()

    async def worker() -> None:
        while not queue.empty():
            item = queue.get_nowait()
            result = error = None
            started = time.perf_counter()
            try:
                result = await run_plan(plans[item.id], stream=False)
            except Exception as exc:  # noqa: BLE001 - a failed prompt is a line with its error, not the batch's end
                error = exc
            line = _line(item, sid, result, error, time.perf_counter() - started, prices)
            try:
                output.append(line)
            except OSError as exc:
                written = summary.done + summary.failed
                raise OutputError(exc.errno, f"cannot write to {str(output.path)!r}: {exc.strerror}; the batch "
                                  f"stopped ({written} new lines kept, {summary.skipped} there before); run it again "
                                  "to go on") from None
            summary.done += error is None
            summary.failed += error is not None
            summary.usage.add(usage(result.trace if result else _failed_trace(error), prices))
            if bar is not None:
                bar.set_postfix(done=summary.done, failed=summary.failed,
                                tokens=summary.usage.prompt_tokens + summary.usage.completion_tokens, refresh=False)
                bar.update(1)
            if on_result is not None:
                on_result(line)

    token = limits.current.set(limiter)
    try:
        await _all_or_none([worker() for _ in range(min(limiter.concurrency, len(todo)))])
    finally:
        limits.current.reset(token)
        summary.seconds = time.perf_counter() - t0
        if bar is not None:
            bar.close()
    return summary


async def _all_or_none(coros) -> None:
    """Run the workers; the first that raises (an output that cannot be written, on_result raising) stops the
    others at once: no call is made, and no line written, after it."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    if not tasks:
        return
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()


def progress_bar(total: int, initial: int, enabled: bool, desc: str = "MoA batch", unit: str = "prompt"):
    """A tqdm bar (a widget in Jupyter), or None when ``enabled`` is false."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)


def run_batch_sync(*args, **kwargs) -> BatchSummary:
    """:func:`run_batch` from synchronous code (a script, or a cell without ``await``)."""
    from ._sync import run_sync

    return run_sync(run_batch(*args, **kwargs))
