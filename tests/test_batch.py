"""Batch runs: one line per prompt, resume after kill -9, failed prompts, shards, the call limit, bad input."""

import json

import pytest
from conftest import run, write_jsonl

from moa_lab import read_prompts, read_results, run_batch
from moa_lab.batch import _Output

MODELS = dict(proposers=["a", "b", "c", "d"], aggregator="agg")


def batch(remote, prompts, out, **kw):
    return run(run_batch(prompts, out, **{**MODELS, "backend": remote, "progress": False, **kw}))



def test_one_line_per_prompt_with_everything(fault, remote, tmp_path):
    out = tmp_path / "out.jsonl"
    seen = []
    summary = batch(remote, write_jsonl(tmp_path / "in.jsonl", 6), out, on_result=seen.append)
    rows = read_results(out)
    assert sorted(r["id"] for r in rows) == [f"p{i}" for i in range(6)] and rows == seen
    row = rows[0]
    assert row["status"] == "ok" and row["error"] is None and row["final"].startswith("agg answers")
    assert row["prompt"] == f"Question {row['id'][1:]}?"
    assert row["layers"][0]["models"] == MODELS["proposers"] and len(row["layers"][0]["answers"]) == 4
    assert row["calls"] == 5 and len(row["trace"]) == 5 and row["prompt_tokens"] == 35
    assert all(c["prompt_tokens"] == 7 and "cost" in c for c in row["trace"]) and row["seconds"] > 0
    assert (summary.done, summary.failed, summary.skipped, summary.usage.calls) == (6, 0, 0, 30)


def test_the_aggregator_alone_and_the_lines_other_fields(fault, remote, tmp_path):
    """layers=1 (one model answers alone: the single-model baseline of an evaluation) runs in a batch, and
    read_prompts keeps a line's other fields in ``extra``."""
    prompts = tmp_path / "in.jsonl"
    prompts.write_text('{"id": "x", "prompt": "Two plus two?", "answer": "4"}\n{"prompt": "Hi"}\n')
    assert [item.extra for item in read_prompts(prompts)] == [{"answer": "4"}, {}]
    out = tmp_path / "out.jsonl"
    summary = batch(remote, prompts, out, proposers=[], aggregator="agg", layers=1)
    rows = read_results(out)
    assert summary.done == 2 and all(r["calls"] == 1 and r["layers"] == [] for r in rows)
    assert [r["model"] for r in fault.requests] == ["agg", "agg"]


def test_running_again_skips_what_is_done(fault, remote, tmp_path):
    prompts, out = write_jsonl(tmp_path / "in.jsonl", 5), tmp_path / "out.jsonl"
    batch(remote, prompts, out, cache=False)
    summary = batch(remote, prompts, out, cache=False)
    assert summary.skipped == 5 and summary.done == 0 and len(fault.requests) == 25
    assert len(read_results(out)) == 5


def test_failed_prompts_are_recorded_and_retried_on_request(fault, remote, tmp_path):
    prompts, out = write_jsonl(tmp_path / "in.jsonl", 4), tmp_path / "out.jsonl"
    fault.script("agg", "500")
    summary = batch(remote, prompts, out, retries=0)
    failed = [r for r in read_results(out) if r["status"] == "failed"]
    assert summary.failed == 1 and len(failed) == 1
    assert "agg (layer 2 aggregator): HTTP 500" in failed[0]["error"] and len(failed[0]["layers"][0]["answers"]) == 4
    batch(remote, prompts, out, retries=0)
    assert len(read_results(out)) == 4  # not retried without the flag
    summary = batch(remote, prompts, out, retries=0, retry_failed=True)
    rows = read_results(out)
    assert summary.done == 1 and sorted(r["id"] for r in rows) == ["p0", "p1", "p2", "p3"]
    assert all(r["status"] == "ok" for r in rows)
    redo = [r for r in rows if r["id"] == failed[0]["id"]][0]
    assert redo["cached_calls"] == 4  # its proposers' answers came from the cache: only the aggregator ran again


def test_shards_split_the_dataset(fault, remote, tmp_path):
    prompts = write_jsonl(tmp_path / "in.jsonl", 10)
    ids = []
    for i in range(3):
        batch(remote, prompts, tmp_path / f"out{i}.jsonl", shard=f"{i}/3")
        ids.append({r["id"] for r in read_results(tmp_path / f"out{i}.jsonl")})
    assert set.union(*ids) == {f"p{i}" for i in range(10)} and sum(map(len, ids)) == 10
    assert ids[0] == {"p0", "p3", "p6", "p9"}


def test_the_call_limit_is_never_exceeded(tmp_path):
    from fault_server import FaultServer

    with FaultServer(latency=0.05) as server:
        summary = batch(server.url, [f"q{i}" for i in range(30)], tmp_path / "out.jsonl", concurrency=5)
        assert summary.done == 30 and len(server.requests) == 150
        assert server.peak == 5  # reached, never exceeded (the server counts)


def test_requests_per_second_limit(fault, remote, tmp_path):
    batch(remote, [f"q{i}" for i in range(4)], tmp_path / "out.jsonl", concurrency=8, rps=20)
    gaps = [b - a for a, b in zip(fault.arrivals, fault.arrivals[1:])]
    assert len(fault.requests) == 20 and fault.arrivals[-1] - fault.arrivals[0] >= 19 / 20 * 0.9
    assert min(gaps) > 0.02


def test_a_torn_last_line_is_cut_off_and_its_prompt_runs_again(fault, remote, tmp_path):
    prompts, out = write_jsonl(tmp_path / "in.jsonl", 3), tmp_path / "out.jsonl"
    batch(remote, prompts, out)
    rows = out.read_text().splitlines(keepends=True)
    out.write_text(rows[0] + rows[1] + rows[2][: len(rows[2]) // 2])  # as if stopped mid-write
    with pytest.warns(UserWarning, match="torn last line"):
        summary = batch(remote, prompts, out)
    assert summary.done == 1 and sorted(r["id"] for r in read_results(out)) == ["p0", "p1", "p2"]
    assert all(json.loads(line) for line in out.read_text().splitlines())


def test_other_settings_on_the_same_output_are_refused(fault, remote, tmp_path):
    prompts, out = write_jsonl(tmp_path / "in.jsonl", 2), tmp_path / "out.jsonl"
    batch(remote, prompts, out)
    with pytest.raises(ValueError, match="other settings"):
        batch(remote, prompts, out, max_tokens=12)
    assert len(fault.requests) == 10


def test_a_second_writer_on_the_same_output_is_refused(fault, remote, tmp_path):
    out = tmp_path / "out.jsonl"
    holder = _Output(out)
    try:
        with pytest.raises(ValueError, match="another batch run"):
            batch(remote, ["q"], out)
    finally:
        holder.close()
    assert fault.requests == []


def test_text_files_and_lists(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("First prompt\n\n  Second prompt  \n")
    assert [(i.id, i.prompt) for i in read_prompts(path)] == [("1", "First prompt"), ("3", "Second prompt")]
    assert [(i.id, i.prompt) for i in read_prompts(["x", {"prompt": "y", "id": "b"}])] == [("1", "x"), ("b", "y")]
    with pytest.raises(ValueError, match="cannot read prompts"):
        read_prompts(tmp_path / "missing.jsonl")


def test_an_unwritable_output_fails_before_any_call(fault, remote, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="cannot be written"):
        batch(remote, ["q"], tmp_path / "file" / "out.jsonl")
    assert fault.requests == []


def test_the_limiter_serves_later_layers_first_and_survives_cancelled_waiters():
    import asyncio

    from moa_lab import CallLimiter

    async def main():
        limiter, order = CallLimiter(1), []

        async def call(name, priority, hold=0.01):
            async with limiter.slot(priority):
                order.append(name)
                await asyncio.sleep(hold)

        first = asyncio.ensure_future(call("first", 0, 0.05))
        await asyncio.sleep(0)
        waiting = [asyncio.ensure_future(call(n, p)) for n, p in (("layer1-a", -1), ("layer2", -2), ("gone", -3),
                                                                   ("layer1-b", -1))]
        await asyncio.sleep(0.01)
        waiting[2].cancel()  # a straggler cancelled while it waits for a slot
        await asyncio.gather(first, *waiting, return_exceptions=True)
        return order, limiter

    order, limiter = run(main())
    assert order == ["first", "layer2", "layer1-a", "layer1-b"]  # the later layer first, then first come first served
    assert limiter.active == 0 and limiter.peak == 1
