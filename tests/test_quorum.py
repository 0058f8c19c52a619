"""Quorum (k of n) and per-layer deadline: the layer moves on, stragglers are cancelled and recorded as such."""

import time

import pytest
from conftest import run

from moa_lab import MoAError, run_layer, run_moa

P = "What is MoA?"
MODELS = ["a", "b", "c", "slow"]


def test_quorum_moves_on_and_cancels_the_straggler(fault, remote):
    fault.script("slow", "hang")
    seen = []
    t0 = time.perf_counter()
    result = run(run_moa(P, MODELS, "agg", quorum=3, backend=remote, on_call=seen.append))
    assert time.perf_counter() - t0 < 5  # not the hang's 60 s
    straggler = result.layers[0].calls[3]
    assert straggler.status == "straggler" and straggler.straggler and not straggler.ok
    assert "quorum (3 of 4 answered)" in straggler.error
    assert straggler in seen  # the views hear about it too
    assert len(result.layers[0].answers) == 3
    system = fault.calls_to("agg")[0]["messages"][0]["content"]
    assert "slow answers" not in system and "\n3. c answers" in system and "\n4." not in system
    assert result.usage().stragglers == 1 and result.usage().failed == 0


def test_quorum_counts_answers_not_failures(fault, remote):
    fault.script("a", "500")
    fault.script("slow", "delay:0.5")
    layer = run(run_layer(P, MODELS, quorum=3, retries=0, backend=remote))
    assert [c.status for c in layer.calls] == ["failed", "ok", "ok", "ok"]  # it waited for "slow"


def test_quorum_in_every_layer(fault, remote):
    fault.script("slow", "hang", "hang")
    result = run(run_moa(P, MODELS, "agg", layers=3, quorum=3, backend=remote))
    assert [layer.calls[3].status for layer in result.layers] == ["straggler", "straggler"]


def test_deadline_moves_on_with_what_arrived(fault, remote):
    fault.script("slow", "delay:20")
    t0 = time.perf_counter()
    layer = run(run_layer(P, MODELS, deadline=2, backend=remote))  # 2 s: room for a busy machine's first calls
    assert 2 <= time.perf_counter() - t0 < 5
    assert [c.status for c in layer.calls] == ["ok", "ok", "ok", "straggler"]
    assert "deadline of 2s passed" in layer.calls[3].error


def test_deadline_with_too_few_answers_names_the_stragglers(fault, remote):
    fault.script("slow", "delay:20")
    with pytest.raises(MoAError) as err:
        run(run_moa(P, MODELS, "agg", deadline=2, min_ok=4, backend=remote))
    assert "only 3 of 4" in str(err.value) and "slow (layer 1 proposer 4): straggler" in str(err.value)
    assert fault.calls_to("agg") == []


def test_off_by_default_waits_for_everyone(fault, remote):
    fault.script("slow", "delay:0.6")
    layer = run(run_layer(P, MODELS, backend=remote))
    assert all(c.status == "ok" for c in layer.calls)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(quorum=5), "quorum"),
        (dict(quorum=0), "quorum"),
        (dict(quorum=2.5), "quorum"),
        (dict(quorum=1, min_ok=2), "quorum"),
        (dict(deadline=0), "deadline"),
        (dict(deadline=-1), "deadline"),
        (dict(deadline="10"), "deadline"),
        (dict(deadline=float("inf")), "deadline"),
    ],
)
def test_bad_quorum_or_deadline_is_refused_before_any_call(fault, remote, kw, match):
    with pytest.raises(ValueError, match=match):
        run(run_moa(P, MODELS, "agg", backend=remote, **kw))
    with pytest.raises(ValueError, match=match):
        run(run_layer(P, MODELS, backend=remote, **kw))
    assert fault.requests == []
