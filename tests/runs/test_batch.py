"""Batch runs: one line per prompt, resume after kill -9, failed prompts, shards, the call limit, bad input."""

import json

import pytest
from conftest import run, write_jsonl

from moa_lab import read_results, run_batch
from moa_lab.runs import read_prompts
from moa_lab.runs._files import OutputFile

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
    """Promise 6: a rerun skips the prompts already answered."""
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


def test_shards_split_the_dataset_by_a_stable_key(fault, remote, tmp_path):
    prompts = write_jsonl(tmp_path / "in.jsonl", 10)

    def run_shards():
        summaries = [batch(remote, prompts, tmp_path / f"out{i}.jsonl", shard=f"{i}/3") for i in range(3)]
        return summaries, [{r["id"] for r in read_results(tmp_path / f"out{i}.jsonl")} for i in range(3)]

    _, ids = run_shards()
    assert set.union(*ids) == {f"p{i}" for i in range(10)} and sum(map(len, ids)) == 10 and all(ids)
    # A prompt added at the top moves no other prompt to another shard (positions would): each shard resumes
    # where it was, and the new prompt runs in exactly one of them.
    prompts.write_text(json.dumps({"id": "new", "prompt": "A new question?"}) + "\n" + prompts.read_text())
    summaries, after = run_shards()
    assert [s.skipped for s in summaries] == [len(i) for i in ids] and sum(s.done for s in summaries) == 1
    assert all(old <= new for old, new in zip(ids, after)) and set.union(*after) == {"new"} | set.union(*ids)


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
    # spaced, not in bursts: the arrival times jitter on a busy machine (tests run six at once), so the typical
    # gap is checked, and that hardly any two arrive together (a burst would make most gaps near 0)
    assert sorted(gaps)[len(gaps) // 2] > 0.04 and sum(gap < 0.0125 for gap in gaps) <= 2


def test_a_torn_last_line_is_cut_off_and_its_prompt_runs_again(fault, remote, tmp_path):
    """Promise 6: a line torn by a kill is cut off; its prompt runs again, once."""
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
    holder = OutputFile(out)
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


def test_a_text_file_whose_first_prompt_starts_with_a_brace_is_text(tmp_path):
    """The extension decides: a .txt is one prompt per line, even one that looks like JSON."""
    path = tmp_path / "prompts.txt"
    path.write_text('{"a": 1} is this JSON? Explain.\nSecond {prompt}\n')
    assert [i.prompt for i in read_prompts(path)] == ['{"a": 1} is this JSON? Explain.', "Second {prompt}"]
    (tmp_path / "prompts.jsonl").write_text('{"prompt": "x"}\n')
    assert [i.prompt for i in read_prompts(tmp_path / "prompts.jsonl")] == ["x"]


def test_a_rewritten_output_is_never_without_its_lock(tmp_path, monkeypatch):
    """retry_failed rewrites the output (a new file renamed over it): a second run that opens the path right after
    the rename must find it locked, not take the lock before this run does."""
    import fcntl
    import os

    from moa_lab.runs import _files as files

    out = tmp_path / "out.jsonl"
    output = OutputFile(out)
    output.append({"id": "1", "status": "failed"})
    seen = []
    real = os.replace

    def replace_then_look(src, dst):
        real(src, dst)
        fd = os.open(out, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            seen.append("a second run took the lock")
        except BlockingIOError:
            seen.append("locked")
        finally:
            os.close(fd)

    monkeypatch.setattr(files.os, "replace", replace_then_look)
    output.rewrite([{"id": "2", "status": "ok"}])
    output.close()
    assert seen == ["locked"] and read_results(out) == [{"id": "2", "status": "ok"}]


def test_the_shard_help_says_how_prompts_are_split():
    import subprocess

    from conftest import MOA

    text = subprocess.run(MOA + ["batch", "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "prompt_hash % N == I" in " ".join(text.split()) and "position" in text


def test_an_unwritable_output_fails_before_any_call(fault, remote, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="cannot be written"):
        batch(remote, ["q"], tmp_path / "file" / "out.jsonl")
    assert fault.requests == []


def test_the_limiter_serves_later_layers_first_and_survives_cancelled_waiters():
    import asyncio

    from moa_lab.runs import CallLimiter

    async def main():
        limiter, order = CallLimiter(1), []

        async def call(name, priority, hold=0.01):
            async with limiter.slot(priority):
                order.append(name)
                await asyncio.sleep(hold)

        first = asyncio.ensure_future(call("first", 0, 0.05))
        await asyncio.sleep(0)
        waiting = [
            asyncio.ensure_future(call(n, p))
            for n, p in (("layer1-a", -1), ("layer2", -2), ("gone", -3), ("layer1-b", -1))
        ]
        await asyncio.sleep(0.01)
        waiting[2].cancel()  # a straggler cancelled while it waits for a slot
        await asyncio.gather(first, *waiting, return_exceptions=True)
        return order, limiter

    order, limiter = run(main())
    assert order == ["first", "layer2", "layer1-a", "layer1-b"]  # the later layer first, then first come first served
    assert limiter.active == 0 and limiter.peak == 1


#: Text users really have: CJK, emoji, the separators str.splitlines() splits on (U+2028, U+2029, U+0085), a tab.
ODD = [
    "什么是混合智能体？",
    "Plan a trip 🚀🇫🇷 for two",
    "line one\u2028line two",
    "para\u2029graph",
    "next\x85line",
    "tab\there",
]


@pytest.mark.parametrize("form", ["jsonl", "text"])
def test_text_users_really_have_is_read_written_and_resumed(fault, remote, tmp_path, form):
    """Prompts and answers holding CJK, emoji and the Unicode line separators: read from a JSONL or text file written
    by a common tool (raw UTF-8, a BOM), answered (a model whose name holds U+2028 puts it in its answers), written
    one line each, read back, and resumed."""
    prompts = tmp_path / f"in.{form}"
    text = "".join((json.dumps({"prompt": p}, ensure_ascii=False) if form == "jsonl" else p) + "\n" for p in ODD)
    prompts.write_bytes(b"\xef\xbb\xbf" + text.encode())  # as Notepad saves "UTF-8 with BOM"
    assert [item.prompt for item in read_prompts(prompts)] == ODD
    out = tmp_path / "out.jsonl"
    summary = batch(remote, prompts, out, proposers=["a\u2028b", "c"])
    rows = read_results(out)
    assert summary.done == len(ODD) and sorted(r["prompt"] for r in rows) == sorted(ODD)
    assert all("a\u2028b answers" in r["layers"][0]["answers"][0] for r in rows)
    data = out.read_bytes()
    assert data.count(b"\n") == len(ODD) and "什么".encode() in data and "🚀".encode() in data  # readable UTF-8
    assert not any(sep.encode() in data for sep in ("\u2028", "\u2029", "\x85"))  # those are escaped
    again = batch(remote, prompts, out, proposers=["a\u2028b", "c"])
    assert (again.done, again.skipped) == (0, len(ODD)) and len(fault.requests) == 3 * len(ODD)


def test_a_lone_surrogate_is_refused_by_line_before_any_call(fault, remote, tmp_path):
    prompts = tmp_path / "in.jsonl"
    prompts.write_text('{"prompt": "fine"}\n{"prompt": "scraped text \\udc00 here"}\n')  # valid JSON, invalid text
    out = tmp_path / "out.jsonl"
    with pytest.raises(ValueError, match=r'in.jsonl:2: "prompt" holds a lone surrogate \(U\+DC00 at character 13\)'):
        batch(remote, prompts, out)
    with pytest.raises(ValueError, match=r'prompts\[1\]: "prompt" holds a lone surrogate'):
        batch(remote, ["fine", "half an emoji \ud83d"], out)
    assert fault.requests == [] and not out.exists()


def test_a_file_that_is_not_utf8_is_refused_naming_its_line(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes("first\nsecond\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"in.txt:3: not UTF-8 text \(byte 0xe9\)"):
        read_prompts(path)


def test_an_input_edited_between_runs(fault, remote, tmp_path):
    """Ids default to line numbers. A prompt added at the end resumes (the new one runs); a prompt added at the
    top renumbers every line after it: the resume is refused, naming the first id whose prompt changed, and
    nothing is run or written; a new output file costs no call for the prompts answered before."""
    prompts, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    prompts.write_text("first question\nsecond question\n")
    batch(remote, prompts, out)
    prompts.write_text("first question\nsecond question\nthird question\n")
    summary = batch(remote, prompts, out)
    assert (summary.done, summary.skipped) == (1, 2)
    before, calls = out.read_bytes(), len(fault.requests)
    prompts.write_text("a new first question\nfirst question\nsecond question\nthird question\n")
    with pytest.raises(ValueError) as info:
        batch(remote, prompts, out)
    assert str(info.value).startswith(
        f"{str(out)!r} holds answers to other prompts under the same ids (3 id(s) "
        "differ): id '1' was 'first question' there but is 'a new first question' in "
    )
    assert "numbered by their line" in str(info.value) and "give every prompt its own" in str(info.value)
    assert out.read_bytes() == before and len(fault.requests) == calls
    fresh = batch(remote, prompts, tmp_path / "new.jsonl")
    assert fresh.done == 4 and fresh.usage.cached == 15 and len(fault.requests) == calls + 5


def test_other_servers_behind_the_same_model_names_are_refused(fault, tmp_path):
    """The settings id names what answers each model: the same names served elsewhere (model_urls) are other
    settings, and the answers cache keeps them apart."""
    from fault_server import FaultServer

    from moa_lab import get_backend

    out = tmp_path / "out.jsonl"
    with FaultServer() as other:
        first = get_backend(fault.url, model_urls={"a": other.url})
        batch(first, ["q"], out)
        with pytest.raises(ValueError, match="other servers or model files behind the same model names"):
            batch(get_backend(fault.url), ["q", "q2"], out)
        summary = batch(get_backend(fault.url), ["q"], tmp_path / "elsewhere.jsonl")
    # Only "a" is asked again, where it is served now (both servers answer alike, so the aggregator's call is the same).
    assert summary.usage.model_calls == 1 and summary.usage.cached == 4
    assert len(other.requests) == 1 and [r["model"] for r in fault.requests].count("a") == 1


def test_a_similarity_function_redefined_is_other_settings(fault, remote, tmp_path):
    """Hardening 22: a ``similarity=`` function enters the settings id by what it computes, not only by name: two
    lambdas, or a notebook cell's function edited and run again, do not resume each other's batch."""
    from moa_lab._plan import plan_run
    from moa_lab.runs import settings_id

    def measure(namespace: dict, body: str):
        exec(f"def alike(a, b):\n    return {body}\n", namespace)  # a cell defining the same name, as edited
        return namespace["alike"]

    first, edited, same = (
        measure({}, "1.0 if a == b else 0.5"),
        measure({}, "0.0"),
        measure({}, "1.0 if a == b else 0.5"),
    )
    ids = [
        settings_id(plan_run("q", ["a", "b", "c"], "g", backend=remote, filter_outliers=0.2, similarity=f))
        for f in (first, edited, same, lambda a, b: 1.0, lambda a, b: 0.0)
    ]
    assert ids[0] != ids[1] and ids[0] == ids[2] and ids[3] != ids[4]  # by what it computes

    def made():  # a closure that holds itself, with a default whose repr shows an address: stable, no recursion
        def alike(a, b, marker=object()):  # noqa: B008 - the point: an object with an address
            return 1.0 if a == b else alike(a, a)

        return alike

    twice = [settings_id(plan_run("q", ["a", "b", "c"], "g", backend=remote, similarity=made())) for _ in (1, 2)]
    assert twice[0] == twice[1]
    prompts, out = write_jsonl(tmp_path / "in.jsonl", 1), tmp_path / "out.jsonl"
    batch(remote, prompts, out, proposers=["a", "b", "c"], filter_outliers=0.2, similarity=first)
    with pytest.raises(ValueError, match="other settings"):
        batch(remote, prompts, out, proposers=["a", "b", "c"], filter_outliers=0.2, similarity=edited)
