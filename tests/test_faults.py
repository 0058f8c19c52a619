"""Failure semantics, against the fault-injecting server over real HTTP with the real together SDK."""

import asyncio
import re
import time

import pytest
from conftest import run
from fault_server import answer_text

import moa_lab
from moa_lab import MoAError, aggregate, run_layer, run_moa
from moa_lab.prompts import references_prompt

P = "What is MoA?"


def test_two_layer_messages_seeds_and_trace(fault, remote):
    result = run(run_moa(P, ["a", "b", "a"], "agg", layers=3, backend=remote))
    assert len(result.trace) == 3 + 3 + 1
    assert [c.layer for c in result.trace] == [1, 1, 1, 2, 2, 2, 3]
    layer1 = [r for r in fault.requests[:3]]
    assert all(r["messages"] == [{"role": "user", "content": P}] for r in layer1)
    # Layer 2 and the aggregator get the seed's getFinalSystemPrompt of the layer before, and the user prompt.
    for request, previous in ((fault.requests[3], result.layers[0]), (fault.calls_to("agg")[0], result.layers[1])):
        assert request["messages"] == [
            {"role": "system", "content": references_prompt(moa_lab.prompts.AGGREGATOR_PROMPT, previous.answers)},
            {"role": "user", "content": P},
        ]
    seeds = [r["seed"] for r in fault.requests]
    assert len(set(seeds)) == len(seeds)  # the same model twice in a layer gets two different seeds
    assert result.layers[0].answers[0] != result.layers[0].answers[2]
    assert all(c.prompt_tokens == 7 and c.completion_tokens and c.attempts == 1 and c.ok for c in result.trace)
    assert result.text == answer_text(fault.calls_to("agg")[0]) == "agg answers (seed 3000, with references)."


def retry_gap(fault, model: str) -> float:
    """Seconds between the first two requests for ``model``, as the server saw them."""
    times = [t for t, r in zip(fault.arrivals, fault.requests) if r["model"] == model]
    return times[1] - times[0]


@pytest.mark.parametrize(
    "header, low, high", [("429:1.2", 1.2, 1.7), ("429-date:2", 1.0, 2.6)], ids=["seconds", "HTTP date"]
)
def test_429_waits_as_long_as_retry_after_says(fault, remote, header, low, high):
    """The wait is what the header says (longer than the 0.5 s backoff, so a header ignored would show), in both
    of its forms (an HTTP date has whole seconds: 2 s ahead is 1 to 2 s away when it arrives)."""
    fault.script("a", header)
    layer = run(run_layer(P, ["a"], backend=remote))
    assert layer.calls[0].attempts == 2 and layer.calls[0].ok
    assert low <= retry_gap(fault, "a") <= high, retry_gap(fault, "a")


@pytest.mark.parametrize(
    "header", ["429:3600", "429-date:86400", "429:Sat, 01 Jan 10000 00:00:00 GMT", "429:soon", "429:nan"]
)
def test_a_retry_after_too_long_or_unreadable_never_hangs_nor_crashes(fault, remote, header):
    """A wait past MAX_RETRY_WAIT (an hour, a day, a date in the year 10000) is not retried: the call fails at once,
    saying so. An unreadable header falls back to the usual backoff."""
    fault.script("a", header)
    t0 = time.perf_counter()
    layer = run(run_layer(P, ["a", "b"], backend=remote))
    call = layer.calls[0]
    assert time.perf_counter() - t0 < 10  # not the hour (or day) asked for: a loaded machine is slow, not that slow
    if header.endswith(("soon", "nan")):
        assert call.ok and call.attempts == 2 and 0.35 <= retry_gap(fault, "a") <= 0.8
    else:
        assert not call.ok and call.attempts == 1 and call.error.startswith("HTTP 429: ")
        assert re.search(
            r"\(the server asks to wait ([\d,]+s|indefinitely) before trying again, more than the 60s "
            r"moa_lab waits: not retried\)$",
            call.error,
        ), call.error


@pytest.mark.parametrize(
    "fault_name, stream, waiting_for",
    [
        ("ping", True, "the first token"),
        ("ping", False, "the answer"),
        ("trickle", True, "the first token"),
        ("trickle", False, "the answer"),
    ],
)
def test_timeout_bounds_the_wait_not_the_silence(fault, remote, fault_name, stream, waiting_for):
    """A server that sends keep-alive comments (or spaces) and never an answer, or one that sends the answer one
    byte every 20 ms: no read is ever idle for long, yet the call ends after ``timeout`` seconds."""
    fault.script("x", fault_name)
    t0 = time.perf_counter()
    if stream:
        with pytest.raises(MoAError) as info:
            run(aggregate(P, ["r"], "x", timeout=0.5, retries=0, backend=remote))
        error = info.value.failures[0].error
    else:
        error = run(run_layer(P, ["x", "y"], timeout=0.5, retries=0, backend=remote)).calls[0].error
    assert 0.5 <= time.perf_counter() - t0 < 5.0  # the timeout, not the endless silence (slack for a busy machine)
    assert error == f"timed out after 0.5s waiting for {waiting_for}"


def test_a_slow_stream_is_not_cut_while_its_tokens_keep_coming(fault, remote):
    """timeout bounds each token's wait, not the whole stream: a stream of 14 events, each trickled over about
    0.25 s, takes about 3 s in all (more on a loaded machine) and is whole with timeout=2 (8 times an event's
    time: a busy machine that slows the trickle does not cut it)."""
    fault.script("agg", "trickle:0.0015")
    t0 = time.perf_counter()
    text = run(aggregate(P, ["x"], "agg", timeout=2.0, retries=0, backend=remote))
    assert time.perf_counter() - t0 > 2.0 and text == "agg answers (seed 2000, with references)."


@pytest.mark.parametrize("code, retried", [(503, True), (429, True), (400, False)])
def test_an_error_event_in_a_stream_keeps_its_message(fault, remote, code, retried):
    fault.script("agg", f"stream-error:{code}")
    agg = aggregate(P, ["x"], "agg", retries=1, backend=remote)
    if retried:
        assert run(agg).startswith("agg answers") and agg.record.attempts == 2
    else:
        with pytest.raises(
            MoAError,
            match=f"agg \\(layer 2 aggregator\\): HTTP {code} in the stream: the model is overloaded, try again",
        ):
            run(agg)
        assert agg.record.attempts == 1


def test_a_lone_surrogate_in_an_answer_is_repaired_not_passed_on(fault, remote):
    """A server's answer holding half a character (a JSON \\ud83d escape) is valid text from there on: the next
    layer gets U+FFFD in its place (an HTTP request cannot carry the half), and the cache stores it."""
    fault.script("a", "surrogate")
    result = run(run_moa(P, ["a", "b"], "agg", backend=remote))
    assert result.layers[0].answers[0].endswith(" \ufffd")
    system = fault.calls_to("agg")[0]["messages"][0]["content"]
    assert "1. a answers (seed 1000, without references). \ufffd" in system
    again = run(run_moa(P, ["a", "b"], "agg", backend=remote))
    assert again.layers[0].calls[0].cached and again.layers[0].answers == result.layers[0].answers


@pytest.mark.parametrize("fault_name", ["429", "500", "502", "503", "malformed", "blank"])
def test_retryable_fault_then_success(fault, remote, fault_name):
    fault.script("a", fault_name, fault_name)
    layer = run(run_layer(P, ["a"], retries=2, backend=remote))
    assert layer.calls[0].attempts == 3 and layer.answers == ["a answers (seed 1000, without references)."]
    assert len(fault.calls_to("a")) == 3


def test_retries_exhausted_are_recorded_and_layer_goes_on(fault, remote):
    fault.script("bad", "500", "500")
    layer = run(run_layer(P, ["good", "bad"], retries=1, backend=remote))
    bad = layer.calls[1]
    assert not bad.ok and bad.attempts == 2 and "HTTP 500" in bad.error
    assert layer.answers == [layer.calls[0].text]


def test_hang_times_out(fault, remote):
    fault.script("slow", "hang")
    t0 = time.perf_counter()
    layer = run(run_layer(P, ["slow", "fast"], timeout=0.5, retries=0, backend=remote))
    assert time.perf_counter() - t0 < 5
    assert "timed out after 0.5s" in layer.calls[0].error and layer.calls[1].ok


def test_an_empty_answer_is_not_retried(fault, remote):
    fault_name, cause = "empty", "empty answer"
    fault.script("x", fault_name)
    layer = run(run_layer(P, ["x", "y"], backend=remote))
    assert cause in layer.calls[0].error and layer.calls[0].attempts == 1
    assert len(fault.calls_to("x")) == 1


def test_failed_proposer_left_out_of_references(fault, remote):
    fault.script("b", "500", "500", "500", "500")
    result = run(run_moa(P, ["a", "b", "c"], "agg", layers=3, retries=0, backend=remote))
    system = fault.requests[3]["messages"][0]["content"]
    assert "1. a answers" in system and "2. c answers" in system
    assert "None" not in system and "3." not in system
    assert [c.ok for c in result.layers[0].calls] == [True, False, True]


def test_all_proposers_fail_names_every_model(fault, remote):
    fault.script("a", "500").script("b", "malformed")
    with pytest.raises(MoAError) as info:
        run(run_moa(P, ["a", "b"], "agg", retries=0, backend=remote))
    message = str(info.value)
    assert "a (layer 1 proposer 1): HTTP 500" in message and "b (layer 1 proposer 2): malformed response" in message
    assert not fault.calls_to("agg")


def test_min_ok(fault, remote):
    fault.script("b", "503")
    with pytest.raises(MoAError, match="only 2 of 3 proposers answered"):
        run(run_layer(P, ["a", "b", "c"], min_ok=3, retries=0, backend=remote))


def test_middle_layer_failure_keeps_earlier_layers(fault, remote):
    fault.script("b", "ok", "500")
    with pytest.raises(MoAError) as info:
        run(run_moa(P, [["a", "b"], ["b"]], "agg", retries=0, backend=remote))
    assert [layer.layer for layer in info.value.layers] == [1, 2]
    assert info.value.layers[0].answers and not info.value.layers[1].answers


def test_stream_cut_keeps_layers_and_partial_text_then_reaggregate(fault, remote):
    fault.script("agg", "cut")
    chunks = []
    with pytest.raises(MoAError) as info:
        run(run_moa(P, ["a", "b"], "agg", backend=remote, on_chunk=chunks.append))
    err = info.value
    assert "agg (layer 2 aggregator): stream broke after" in str(err)
    assert err.partial == "".join(chunks) == "agg answers " and len(chunks) == 2
    assert len(fault.calls_to("agg")) == 1  # a stream that already gave text is not retried
    # Nothing lost: aggregate again from the kept layer, with no proposer called again.
    before = len(fault.requests)
    text = run(aggregate(P, err.layers[-1].answers, "agg2", backend=remote))
    assert text.startswith("agg2 answers") and len(fault.requests) == before + 1


def test_aggregator_http_failure_raises_with_layers(fault, remote):
    fault.script("agg", "500", "500")
    with pytest.raises(MoAError) as info:
        run(run_moa(P, ["a"], "agg", retries=1, stream=False, backend=remote))
    assert "agg (layer 2 aggregator): HTTP 500" in str(info.value) and info.value.layers[0].answers


def test_cut_plain_response_is_an_error(fault, remote):
    fault.script("a", "cut")
    layer = run(run_layer(P, ["a", "b"], retries=0, backend=remote))
    assert not layer.calls[0].ok and layer.calls[0].error


def test_connection_refused_names_model():
    backend = moa_lab.get_backend("http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(MoAError, match=r"m \(layer 1 proposer 1\): connection error"):
        run(run_layer(P, ["m"], retries=0, backend=backend))


def test_stream_arrives_in_chunks_and_records_usage(fault, remote):
    agg = aggregate(P, ["x", "y"], "agg", backend=remote)
    chunks = run(_collect(agg))
    assert len(chunks) > 2 and "".join(chunks) == agg.record.text
    assert agg.record.completion_tokens == len(chunks) and agg.record.prompt_tokens == 7
    with pytest.raises(RuntimeError, match="consumed once"):
        run(_collect(agg))


async def _collect(agen):
    return [c async for c in agen]


def test_on_call_sees_each_call_as_it_finishes(fault, remote):
    fault.script("slow", "delay:0.4")
    seen = []
    run(run_moa(P, ["slow", "fast"], "agg", backend=remote, on_call=lambda c: seen.append(c.model)))
    assert seen == ["fast", "slow", "agg"]


def test_layer_calls_run_concurrently(fault, remote):
    fault.latency = 0.4
    t0 = time.perf_counter()
    run(run_layer(P, ["a", "b", "c", "d"], backend=remote))
    assert fault.peak == 4  # all four at the server at once (a wall-time bound would fail on a busy machine)
    assert time.perf_counter() - t0 >= 0.4


def test_cancel_propagates(fault, remote):
    fault.script("a", "hang")

    async def main():
        task = asyncio.ensure_future(run_layer(P, ["a"], backend=remote))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())


def test_stopping_a_stream_early_marks_the_call_cancelled(fault, remote):
    agg = aggregate(P, ["x"], "agg", backend=remote)

    async def read_two():
        stream = agg.__aiter__()
        first = [await stream.__anext__(), await stream.__anext__()]
        await stream.aclose()
        return first

    first = run(read_two())
    assert agg.record.error == "cancelled" and agg.record.text == "".join(first)


@pytest.mark.parametrize("fault_name", ["stall", "ping-mid"], ids=["silent", "pinging"])
def test_a_stream_that_stops_mid_way_times_out_keeping_its_text(fault, remote, fault_name):
    """Two tokens, then nothing more: silence, or keep-alive comments and chunks without text (which do not count)."""
    fault.script("agg", fault_name)
    t0 = time.perf_counter()
    with pytest.raises(MoAError) as info:
        run(aggregate(P, ["x"], "agg", timeout=0.5, backend=remote))
    assert time.perf_counter() - t0 < 5.0  # the timeout, not the endless stall (slack for a busy machine)
    assert "stream broke after 12 characters: timed out after 0.5s waiting for the next token" in str(info.value)
    assert info.value.partial == "agg answers "
