"""``run_batch(..., engine="ray")``: a batch on a Ray cluster (one machine or many) with Ray Data.

The prompts not yet answered become a Ray Dataset; each of its batches of ``block_size`` prompts (a *block*) goes
to one of ``actors`` actors, which runs moa_lab's own batch runner on it (the same plans, retries, ``min_ok``,
quorum, cache and budget; ``actor_concurrency`` calls at once per actor). A finished block is written as
``OUTDIR/blocks/<hash>.jsonl`` (and ``.parquet``), named by a hash of its prompts and the settings id, in one
rename: a block file is whole or absent. So a rerun skips every prompt in a block file, a killed driver or a lost
worker loses only the blocks in flight (their finished calls come back from the cache), and a block that Ray
runs again after a lost worker rewrites the same file: one line per prompt, always. ``read_results(OUTDIR)`` and
``results_frame(OUTDIR)`` read the folder as one result. The settings are in ``OUTDIR/settings.json``; a rerun
with other settings is refused.

API keys are never shipped through Ray: every worker reads them from its own environment (a local cluster's
workers inherit the driver's). The other moa_lab variables that say where models are served are passed on.

Over 300 lines: the Ray engine whole: joining a cluster, the block actor, the shared budget's actor, block files and
their resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from moa_lab._backends import Backend
from moa_lab._budget import Budget, BudgetExceeded
from moa_lab._cache import ResponseCache
from moa_lab._conversation import Prompt, prompt_key
from moa_lab._jsonl import dumps
from moa_lab._limits import CallLimiter
from moa_lab._plan import RunPlan, plan_run
from moa_lab._usage import Usage
from moa_lab.engine._models import absolute_env
from moa_lab.runs._files import BatchItem, FolderLock, OutputFile, read_results
from moa_lab.runs._runner import BatchJob, check_resume, run_items

#: Variables a worker gets from the driver: where models are served, and the cache. Never a key.
PASSED_ON = (
    "MOA_LAB_CACHE",
    "MOA_LAB_LOCAL_URL",
    "MOA_LAB_MODEL_DIR",
    "MOA_LAB_MODELS",
    "MOA_LAB_MODEL_URLS",
    "MOA_LAB_PROPOSERS",
    "MOA_LAB_AGGREGATOR",
    "MOA_LAB_BASE_URL",
    "TOGETHER_BASE_URL",
)
#: A local cluster's object store: small (moa_lab moves text, not tensors); Ray's default takes 30% of memory.
LOCAL_OBJECT_STORE = 128 * 2**20


def block_name(ids_and_prompts: list[tuple[str, Prompt]], sid: str) -> str:
    """A block's file name: a hash of its prompts (id and text) and the settings id."""
    digest = hashlib.sha256(sid.encode())
    for pid, prompt in sorted((i, prompt_key(p)) for i, p in ids_and_prompts):
        digest.update(b"\0" + pid.encode("utf-8", "surrogatepass") + b"\1" + prompt.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:20]


def folder_lines(outdir: Path) -> list[dict]:
    """Every line of the block files in ``outdir``, in file-name order."""
    return read_results(outdir) if (outdir / "blocks").is_dir() else []


def check_outdir(out) -> Path:
    """Where a Ray batch writes: a folder (made if missing), not a file."""
    if not isinstance(out, (str, os.PathLike)) or not str(out).strip():
        raise ValueError(f"out must be a folder for the Ray engine's block files, got {out!r}")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"out {str(path)!r} is a file; the Ray engine writes a folder of block files: give a folder")
    return path.expanduser().resolve()  # workers run in their own folders: they get the absolute path


@dataclass(frozen=True)
class RayOptions:
    """How ``run_batch(engine=RayOptions(...))`` runs on Ray (``engine="ray"``: these defaults), checked when made.

    ``address``: ``"auto"`` (a running cluster, or else a local one), ``"local"``, or a cluster's address
    (``ray://HOST:PORT``, ``HOST:PORT``). ``actors``: Ray Data actors, each running ``actor_concurrency`` calls at
    once; ``block_size``: prompts per block (a block is one file, written whole: the unit of resume). A batch
    keeps at most ``actors × actor_concurrency`` calls in flight.
    """

    address: str | None = "auto"
    actors: int = 2
    actor_concurrency: int = 8
    block_size: int = 64

    def __post_init__(self) -> None:
        for name in ("actors", "actor_concurrency", "block_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        address = self.address
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise ValueError(
                f"address must be 'auto', 'local' or a cluster address (ray://HOST:PORT, HOST:PORT), got {address!r}"
            )


def connect(address: str | None) -> bool:
    """Join a Ray cluster: ``"auto"``/None a running one (else start a local one), ``"local"`` a new local one,
    else that address. Returns True when this call started Ray here (the caller shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    quiet: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    if address in (None, "auto"):
        try:
            ray.init(address="auto", **quiet)
            return True
        except ConnectionError:
            pass
    if address in (None, "auto", "local"):
        ray.init(num_cpus=os.cpu_count(), object_store_memory=LOCAL_OBJECT_STORE, **quiet)
    else:
        ray.init(address=address, **quiet)
    return True


class _BudgetKeeper:
    """The batch's one budget, in a Ray actor: every block's calls reserve and settle here."""

    def __init__(self, max_cost, max_tokens_total, prices) -> None:
        self.budget = Budget(max_cost, max_tokens_total, prices)

    def reserve(self, record, messages, max_tokens, references=()):
        try:
            return True, self.budget.reserve(record, messages, max_tokens, references), record.error
        except BudgetExceeded as exc:
            return False, str(exc), record.error

    def settle(self, hold, record) -> None:
        self.budget.settle(hold, record)

    def spent(self) -> str:
        return str(self.budget)


class _SharedBudget(Budget):
    """A worker's view of the batch's budget (a :class:`_BudgetKeeper` actor), with a Budget's interface."""

    def __init__(self, keeper, max_cost, max_tokens_total, prices) -> None:
        super().__init__(max_cost, max_tokens_total, prices)
        self.keeper = keeper

    def reserve(self, record, messages, max_tokens, references=()):
        import ray

        self.check_priced([record.model])
        ok, value, error = ray.get(self.keeper.reserve.remote(record, messages, max_tokens, list(references)))
        if not ok:
            record.error = error
            raise BudgetExceeded(value)
        return value

    def settle(self, hold, record) -> None:
        import ray

        ray.get(self.keeper.settle.remote(hold, record))


class BlockRunner:
    """A Ray Data actor: runs one block of prompts with moa_lab's batch runner and writes its block file."""

    def __init__(self, config: dict[str, Any]) -> None:

        os.environ.update(config["env"])
        for name in set(PASSED_ON) - set(config["env"]):
            os.environ.pop(name, None)
        self.config = config
        self.outdir = Path(config["outdir"])
        backend = Backend.from_portable(config["backend"])  # its keys from this worker's own environment
        self.plan = plan_run(
            "-",
            config["proposers"],
            config["aggregator"],
            layers=config["layers"],
            settings=config["settings"],
            backend=backend,
        )
        self.budget = None
        if config["keeper"] is not None:
            s = config["settings"]
            self.budget = _SharedBudget(config["keeper"], s.max_cost, s.max_tokens_total, config["prices"])
        pids = self.outdir / ".workers"
        pids.mkdir(parents=True, exist_ok=True)
        (pids / str(os.getpid())).write_text(str(time.time()))  # tests find and kill workers by these

    def __call__(self, batch: dict) -> dict:
        items = [
            BatchItem(str(i), tuple(json.loads(str(p))) if c else str(p), f"block row {n + 1}")
            for n, (i, p, c) in enumerate(zip(batch["id"], batch["prompt"], batch["conversation"]))
        ]
        return asyncio.run(self._block(items))

    async def _block(self, items: list[BatchItem]) -> dict:

        sid, blocks = self.config["sid"], self.outdir / "blocks"
        name = block_name([(i.id, i.prompt) for i in items], sid)
        final = blocks / f"{name}.jsonl"
        if final.exists():  # Ray ran this block again after it was written (a lost worker): nothing to do
            return _stats(name, items, read_results(final), left=0)
        tmp = blocks / f".{name}.{uuid.uuid4().hex}.tmp"
        output = OutputFile(tmp)
        plans = {i.id: replace(self.plan, prompt=i.prompt) for i in items}
        limiter = CallLimiter(self.config["actor_concurrency"])
        left = 0
        try:
            await run_items(BatchJob(items, sid, plans, self.config["prices"], self.budget), output, limiter)
        except BudgetExceeded as exc:  # what finished is kept: a smaller block, named by its own prompts
            left = exc.summary.left if exc.summary is not None else len(items)
        finally:
            output.close()
        lines = read_results(tmp)
        if left:
            done = {line["id"] for line in lines}
            name = block_name([(i.id, i.prompt) for i in items if i.id in done], sid)
        if lines:
            _write_parquet(lines, blocks / f"{name}.parquet")
            os.replace(tmp, blocks / f"{name}.jsonl")  # the block is whole, or absent
        else:
            tmp.unlink(missing_ok=True)
        return _stats(name, items, lines, left)


def _stats(name: str, items, lines: list[dict], left: int) -> dict:
    used = Usage()
    for line in lines:
        used.add(Usage.from_dict(line))
    return {
        "block": [name],
        "prompts": [len(items)],
        "done": [sum(v["status"] == "ok" for v in lines)],
        "failed": [sum(v["status"] != "ok" for v in lines)],
        "left": [left],
        "calls": [used.calls],
        "cached": [used.cached],
        "prompt_tokens": [used.prompt_tokens],
        "completion_tokens": [used.completion_tokens],
        "cost": [used.cost],
        "unpriced": [used.unpriced],
    }


def _write_parquet(lines: list[dict], path: Path) -> None:
    """The block as a table: one row per prompt, its totals as columns, its layers and trace as JSON text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = (
        "id",
        "prompt",
        "status",
        "error",
        "final",
        "seconds",
        "settings_id",
        "calls",
        "failed_calls",
        "cached_calls",
        "prompt_tokens",
        "completion_tokens",
        "cost",
    )
    table = {c: [line.get(c) for line in lines] for c in columns}
    table["layers"] = [dumps(line.get("layers", [])) for line in lines]
    table["trace"] = [dumps(line.get("trace", [])) for line in lines]
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(pa.table(table), tmp)
    os.replace(tmp, path)


def _settings_file(outdir: Path, plan: RunPlan, sid: str) -> None:
    """``OUTDIR/settings.json``: the batch's settings; a folder made with other settings is refused."""
    path = outdir / "settings.json"
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8")).get("settings_id")
        if old != sid:
            raise ValueError(
                f"{str(outdir)!r} holds results made with other settings, or with other servers or model "
                f"files behind the same model names (settings_id {old}, now {sid}); give a new folder, "
                "or the same settings to resume"
            )
        return
    settings = {k: v for k, v in plan.to_dict().items() if k != "prompt"}
    path.write_text(dumps({"settings_id": sid, "settings": settings}, indent=1) + "\n", encoding="utf-8")


async def run_on_ray(job: BatchJob, outdir: Path, first: RunPlan, summary, options: RayOptions) -> Any:
    """The Ray engine's part of :func:`moa_lab.run_batch`: the checks are done; ``summary`` is filled in."""

    items, sid = job.items, job.sid
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "blocks").mkdir(exist_ok=True)
    lock = FolderLock(outdir, "Ray batch")  # one driver per folder
    try:
        _settings_file(outdir, first, sid)
        for stale in (outdir / "blocks").glob(".*.tmp"):  # blocks that were in flight when a driver was killed
            stale.unlink()
        mend_dropped(outdir, sid)
        existing = check_resume(folder_lines(outdir), outdir, items, sid)
        if job.retry_failed:
            existing = _drop_failed(outdir, existing, sid)
        done_ids = {line["id"] for line in existing}
        todo = [item for item in items if item.id not in done_ids]
        summary.skipped = len(items) - len(todo)
        if not todo:
            return summary
        return await _on_cluster(job, todo, outdir, first, summary, options)
    finally:
        lock.close()


async def _on_cluster(job: BatchJob, todo, outdir: Path, first: RunPlan, summary, options: RayOptions):
    await first.backend.ready()  # the bundled models: one embedded server, here, for this machine's workers

    env = {name: os.environ[name] for name in PASSED_ON if os.environ.get(name)}
    env.update(absolute_env(env))  # a worker runs in its own folder: relative paths would name other files
    local = first.backend.server if first.backend.kind == "local" else None
    if local is not None and local.url:
        env["MOA_LAB_LOCAL_URL"] = local.url
    started = connect(options.address)
    server = local if local is not None and not local.attached else None
    try:
        with server.watch() if server is not None else contextlib.nullcontext():  # restarted on its port if it dies
            return await asyncio.to_thread(
                _execute, job, todo, outdir=outdir, first=first, summary=summary, env=env, options=options
            )
    finally:
        if started:
            import ray

            ray.shutdown()


def _execute(job: BatchJob, todo, *, outdir: Path, first: RunPlan, summary, env: dict, options: RayOptions):
    import ray
    import ray.data

    sid, prices, budget, progress, on_result = job.sid, job.prices, job.budget, job.progress, job.on_result
    actors, block_size = options.actors, options.block_size
    ray.data.DataContext.get_current().enable_progress_bars = bool(progress)
    keeper = None
    if budget is not None:
        keeper = (
            ray.remote(_BudgetKeeper)
            .options(num_cpus=0)
            .remote(budget.max_cost, budget.max_tokens_total, dict(budget.prices))
        )
    settings = first.settings
    if isinstance(settings.cache, ResponseCache):  # a ResponseCache object: its file
        settings = replace(settings, cache=settings.cache.path)
    if isinstance(settings.cache, Path):
        settings = replace(settings, cache=settings.cache.expanduser().resolve())  # the same file from any folder
    config = {
        "outdir": str(outdir),
        "sid": sid,
        "env": env,
        "backend": first.backend.portable(),
        "proposers": first.proposers,
        "aggregator": first.aggregator,
        "layers": first.layers,
        "settings": settings,
        "prices": dict(prices),
        "keeper": keeper,
        "actor_concurrency": options.actor_concurrency,
    }
    rows = ray.data.from_items(  # a conversation travels as its JSON
        [{"id": i.id, "prompt": prompt_key(i.prompt), "conversation": not isinstance(i.prompt, str)} for i in todo]
    )
    results = rows.map_batches(
        BlockRunner,
        fn_constructor_kwargs={"config": config},
        batch_size=block_size,
        compute=ray.data.ActorPoolStrategy(size=actors),
        batch_format="numpy",
        num_cpus=0.5,
    )
    # a lost worker: Ray Data restarts its actor and runs its block again (max_restarts=-1, max_task_retries=-1)
    t0 = time.perf_counter()
    left, blocks, finished = 0, -(-len(todo) // block_size), 0
    for row in results.iter_rows():
        finished += 1
        summary.done += int(row["done"])
        summary.failed += int(row["failed"])
        left += int(row["left"])
        summary.usage.add(
            Usage(
                calls=int(row["calls"]),
                model_calls=int(row["calls"]) - int(row["cached"]),
                cached=int(row["cached"]),
                prompt_tokens=int(row["prompt_tokens"]),
                completion_tokens=int(row["completion_tokens"]),
                cost=float(row["cost"]),
                unpriced=int(row["unpriced"]),
            )
        )
        if on_result is not None:
            on_result({k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()})
        if progress:  # moa_lab's totals beside Ray Data's own progress bars
            print(
                f"[moa_lab] block {finished} of about {blocks} written: {summary.done} done, {summary.failed} "
                f"failed, {summary.skipped} already there, of {summary.total}; {summary.usage}",
                file=sys.stderr,
                flush=True,
            )
    summary.seconds = time.perf_counter() - t0
    if left:
        summary.left = left
        spent = ray.get(keeper.spent.remote()) if keeper is not None else ""  # type: ignore[attr-defined]
        error = BudgetExceeded(
            f"the batch stopped at its budget ({spent}): {summary.done} prompt(s) done, "
            f"{summary.failed} failed, {left} left for a rerun with a larger budget (their "
            "finished calls come from the cache)"
        )
        error.summary = summary
        raise error
    return summary


def _drop_failed(outdir: Path, existing: list[dict], sid: str) -> list[dict]:
    """``retry_failed``: every block file with failed lines is written again without them (a new name: its
    prompts changed), so that they run again. The old file is first set aside (renamed out of the results), so
    that no prompt is ever in two block files; a driver killed meanwhile is mended by :func:`mend_dropped`."""
    for path in sorted((outdir / "blocks").glob("*.jsonl")):
        lines = read_results(path)
        kept = [line for line in lines if line["status"] == "ok"]
        if len(kept) == len(lines):
            continue
        aside = path.with_name(f".{path.stem}{DROPPED}")
        os.replace(path, aside)
        if kept:
            _write_kept(kept, outdir, sid)
        aside.unlink()
        path.with_suffix(".parquet").unlink(missing_ok=True)
    return [line for line in existing if line["status"] == "ok"]


#: A block file set aside by ``retry_failed`` while its ok lines are written to a new block file.
DROPPED = ".dropped"


def _write_kept(kept: list[dict], outdir: Path, sid: str) -> Path:
    name = block_name([(line["id"], tuple(line.get("messages") or ()) or line["prompt"]) for line in kept], sid)
    final = outdir / "blocks" / f"{name}.jsonl"
    tmp = final.with_name(f".{name}.tmp")
    tmp.write_text("".join(dumps(line) + "\n" for line in kept), encoding="utf-8")
    _write_parquet(kept, final.with_suffix(".parquet"))
    os.replace(tmp, final)
    return final


def mend_dropped(outdir: Path, sid: str) -> None:
    """A driver killed while :func:`_drop_failed` rewrote a block: the block it set aside is finished off (its ok
    lines written to their own block file, if they are not there yet; then it is removed)."""
    for aside in sorted((outdir / "blocks").glob(f".*{DROPPED}")):
        kept = [line for line in read_results(aside) if line["status"] == "ok"]
        if kept:
            _write_kept(kept, outdir, sid)  # the same name and lines if it was written already
        aside.unlink()
        (outdir / "blocks" / f"{aside.name[1 : -len(DROPPED)]}.parquet").unlink(missing_ok=True)
