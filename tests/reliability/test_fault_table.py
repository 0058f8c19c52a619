"""Promise 1: a fault never crashes a run without a cause.

Every fault the fault-injecting server can produce, at every place of a run, once (the next attempt is
answered) and always (every attempt fails): the run either succeeds with the failure in its trace, or raises
:class:`MoAError` naming the model, the layer and the cause. The outcomes form a table, generated here and
checked against ``fault_table.md``.
"""

from __future__ import annotations

import re
import socket
from functools import cache
from pathlib import Path

import pytest
from conftest import check_table, run
from fault_server import FaultServer

from moa_lab import MoAError, aggregate, get_backend, run_moa

P = "What is MoA?"
RETRIES, TIMEOUT = 1, 0.4
TABLE = Path(__file__).with_name("fault_table.md")

#: fault → how the fault server is told (None: the model's URL is a closed port).
FAULTS = {
    "429": "429",
    "429 + Retry-After 1 s": "429:1",
    "429 + Retry-After 1 h": "429:3600",
    "500": "500",
    "502": "502",
    "503": "503",
    "hang past timeout": "hang",
    "keep-alive pings, no answer": "ping",
    "answer trickled byte by byte": "trickle",
    "connection refused": None,
    "stream cut mid-way": "cut",
    "stream stalls mid-way": "stall",
    "stream pings mid-way": "ping-mid",
    "error event in the stream": "stream-error",
    "malformed body": "malformed",
    "empty body": "blank",
    "empty content": "empty",
}
STREAM_ONLY = ("stream stalls mid-way", "stream pings mid-way", "error event in the stream")
NOT_RETRIED = ("empty content", "429 + Retry-After 1 h")
#: place → (proposers, aggregator, stream, the failing call's label in errors). The faulty model is "x".
PLACES = {
    "layer 1 proposer": ([["x", "a"]], "agg", False, "layer 1 proposer 1"),
    "middle layer proposer": ([["a", "b"], ["x", "c"]], "agg", False, "layer 2 proposer 1"),
    "sole layer 1 proposer": ([["x"]], "agg", False, "layer 1 proposer 1"),
    "aggregator, streamed": ([["a", "b"]], "x", True, "layer 2 aggregator"),
    "aggregator, not streamed": ([["a", "b"]], "x", False, "layer 2 aggregator"),
}
MODES = ("once", "always")

CAUSES = [  # the start of a call's error text → its short name in the table
    (r"stream broke after \d+ characters", "stream broke, partial kept"),
    (r"HTTP (\d+) in the stream", r"HTTP \1 in the stream"),
    (r"HTTP 429: .*not retried\)$", "HTTP 429, wait too long"),
    (r"HTTP (\d+)", r"HTTP \1"),
    (r"timed out after", "timeout"),
    (r"connection error", "connection error"),
    (r"the stream ended before the model finished", "stream ended early"),
    (r"malformed (response|stream chunk)", "malformed"),
    (r"empty response body", "empty body"),
    (r"the model returned an empty answer", "empty answer"),
]


def cause(error: str) -> str:
    for pattern, name in CAUSES:
        match = re.match(pattern, error)
        if match:
            return match.expand(name)
    raise AssertionError(f"a cause the table does not know: {error!r}")


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # closed when the socket is: nothing listens there


def not_applicable(fault: str, place: str, mode: str) -> bool:
    streamed = PLACES[place][2]
    return (fault == "connection refused" and mode == "once") or (fault in STREAM_ONLY and not streamed)


@cache
def outcome(fault: str, place: str, mode: str) -> str:
    """Run one cell and check what every cell must hold; return its text for the table."""
    if not_applicable(fault, place, mode):
        return "-"
    proposers, aggregator, stream, label = PLACES[place]
    with FaultServer() as server:
        script = FAULTS[fault]
        urls = {}
        if script is None:
            urls = {"x": closed_port_url()}
        else:
            server.script("x", *([script] * (1 if mode == "once" else RETRIES + 1)))
        backend = get_backend(server.url, model_urls=urls)
        chunks: list[str] = []
        try:
            result = run(
                run_moa(
                    P,
                    proposers,
                    aggregator,
                    layers=len(proposers) + 1,
                    retries=RETRIES,
                    timeout=TIMEOUT,
                    stream=stream,
                    cache=False,
                    backend=backend,
                    on_chunk=chunks.append,
                )
            )
        except MoAError as err:  # any other exception fails the test here, with its type
            return _failed_run(err, server, backend, label, chunks)
        finally:
            if fault == "429 + Retry-After 1 s":  # the wait is the header's (the backoff would be 0.5 s)
                arrivals = [t for t, r in zip(server.arrivals, server.requests) if r["model"] == "x"]
                assert 0.95 <= arrivals[1] - arrivals[0] <= 1.6, arrivals
        return _finished_run(result, server, label, stream, chunks)


def _finished_run(result, server, label, stream, chunks) -> str:
    x = next(c for c in result.trace if c.model == "x")
    assert result.text.strip() and (not stream or "".join(chunks) == result.text)
    for request in server.requests:  # a failed answer is never passed on, nor a "None"
        for message in request["messages"]:
            assert "None" not in message["content"] and not re.search(r"^\d+\.\s*$", message["content"], re.M)
    assert len(result.trace) == sum(len(layer.calls) for layer in result.layers) + 1
    if x.ok:
        return "ok" if x.attempts == 1 else f"ok after {attempts(x)}"
    assert x.error and x.describe_failure().startswith(f"x ({label}): "), x.describe_failure()
    if x.text:  # a partial answer is left out of the next layer's references
        assert not any(x.text in m["content"] for r in server.requests for m in r["messages"])
    return f"ok, failure in trace: {cause(x.error)} ({attempts(x)})"


def _failed_run(err: MoAError, server, backend, label, chunks) -> str:
    message = str(err)
    (x,) = [c for c in err.failures if c.model == "x"]
    assert f"x ({label}): " in message and x.error in message, message  # the model, the layer, the cause
    assert err.partial == ("".join(chunks) if x.role == "aggregator" else "")
    if x.role == "aggregator":  # nothing lost: the proposers' layers are kept; aggregate again from them
        assert [layer.layer for layer in err.layers] == [1] and len(err.layers[0].answers) == 2
        before = len(server.requests)
        text = run(aggregate(P, err.layers[-1].answers, "agg2", cache=False, backend=backend))
        assert text.startswith("agg2 answers") and [r["model"] for r in server.requests[before:]] == ["agg2"]
    else:
        assert [layer.layer for layer in err.layers] == list(range(1, x.layer + 1))
    partial = ", partial kept" if err.partial and "partial kept" not in cause(x.error) else ""
    return f"MoAError: {cause(x.error)}{partial} ({attempts(x)})"


def attempts(call) -> str:
    return "1 attempt" if call.attempts == 1 else f"{call.attempts} attempts"


CELLS = [(f, p, m) for f in FAULTS for p in PLACES for m in MODES]


@pytest.mark.parametrize("fault, place, mode", CELLS, ids=[f"{f}|{p}|{m}" for f, p, m in CELLS])
def test_fault_cell(fault, place, mode):
    text = outcome(fault, place, mode)
    if text == "-":
        return
    midstream = fault in ("stream cut mid-way", "stream stalls mid-way", "stream pings mid-way") and PLACES[place][2]
    retryable = fault not in NOT_RETRIED and not midstream  # a stream that gave text is kept
    if mode == "once" and retryable:
        assert text == "ok after 2 attempts", text  # a passing fault is retried away
    if (
        mode == "always"
        and place == "sole layer 1 proposer"
        or place.startswith("aggregator")
        and (mode == "always" or not retryable)
    ):
        assert text.startswith("MoAError"), text  # nothing to go on with: the run stops, naming the cause
    if place in ("layer 1 proposer", "middle layer proposer"):
        assert text.startswith("ok"), text  # the other proposer's answer carries the layer


def render() -> str:
    head = "| fault | place | " + " | ".join(MODES) + " |\n|---|---|" + "---|" * len(MODES) + "\n"
    rows = [f"| {f} | {p} | " + " | ".join(outcome(f, p, m) for m in MODES) + " |" for f in FAULTS for p in PLACES]
    note = (
        f"Generated by tests/reliability/test_fault_table.py: retries={RETRIES}, timeout={TIMEOUT}s. "
        "once: the first attempt meets the fault, the next is answered; always: every attempt meets it. "
        "-: does not apply (a refused connection cannot pass; a stall, pings mid-way or an error event need a "
        "stream).\n\n"
    )
    return note + head + "\n".join(rows) + "\n"


def test_the_generated_table_is_the_documented_one():
    check_table(TABLE, render())
