"""The answers cache (one SQLite file): hits make no request, misses do, off means off, a bad file is rebuilt."""

import sqlite3
import warnings

import pytest
from conftest import run

import moa_lab
from moa_lab import run_moa
from moa_lab._cache import CacheWarning, ResponseCache, get_cache

P = "What is MoA?"
FAKE_KEY = "sk-FAKE-cache-key-0123456789"


def moa(remote, **kw):
    chunks = []
    result = run(run_moa(P, ["a", "b"], "agg", backend=remote, on_chunk=chunks.append, **kw))
    return result, chunks


def test_a_second_identical_run_makes_no_request_and_replays_the_stream(fault, remote):
    """Promise 7: an identical run is answered from the cache."""
    first, first_chunks = moa(remote)
    assert len(fault.requests) == 3 and all(c.status == "ok" for c in first.trace)
    second, second_chunks = moa(remote)
    assert len(fault.requests) == 3  # not one more
    assert [c.status for c in second.trace] == ["cached"] * 3 and all(c.attempts == 0 for c in second.trace)
    assert second.text == first.text and second.layers[0].answers == first.layers[0].answers
    assert len(second_chunks) > 3 and "".join(second_chunks) == "".join(first_chunks)  # streamed, word by word
    assert [(c.prompt_tokens, c.completion_tokens) for c in second.trace] == [
        (c.prompt_tokens, c.completion_tokens) for c in first.trace
    ]
    assert second.usage().model_calls == 0 and second.usage().cached == 3 and second.usage().cost == 0


@pytest.mark.parametrize(
    "change", [dict(temperature=0.3), dict(seed=7), dict(max_tokens=99), dict(system_prompt="Combine these:")]
)
def test_anything_that_changes_the_answer_is_a_miss(fault, remote, change):
    """Promise 7: what changes the answer misses the cache."""
    moa(remote)
    second, _ = moa(remote, **change)
    changed = 1 if "system_prompt" in change else 3  # the system prompt reaches only the aggregator here
    assert len(fault.requests) == 3 + changed
    assert sum(c.status == "ok" for c in second.trace) == changed


def test_another_model_or_server_is_a_miss(fault, remote):
    moa(remote)
    run(run_moa(P, ["a", "c"], "agg", backend=remote))
    assert [r["model"] for r in fault.requests[3:]] == ["c", "agg"]  # "a" hit; "c" and the new aggregation missed
    other = moa_lab.get_backend(fault.url + "/v1")  # the same server root: a hit
    moa(other)
    assert len(fault.requests) == 5


@pytest.mark.parametrize("how", ["argument", "env"])
def test_cache_off(fault, remote, monkeypatch, how):
    kw = {"cache": False} if how == "argument" else {}
    if how == "env":
        monkeypatch.setenv("MOA_LAB_CACHE", "off")
    moa(remote, **kw)
    moa(remote, **kw)
    assert len(fault.requests) == 6


def test_no_seed_means_a_new_sample_every_time(fault, remote):
    moa(remote, seed=None)
    moa(remote, seed=None)
    assert len(fault.requests) == 6


def test_failures_and_cut_streams_are_not_cached(fault, remote):
    fault.script("b", "500")
    fault.script("agg", "cut")
    with pytest.raises(moa_lab.MoAError):
        moa(remote, retries=0)
    second, _ = moa(remote, retries=0)
    assert [c.status for c in second.trace] == ["cached", "ok", "ok"]


def test_the_cache_file_never_holds_the_api_key(fault, tmp_path, monkeypatch):
    monkeypatch.setenv("TOGETHER_API_KEY", FAKE_KEY)
    backend = moa_lab.get_backend(fault.url)
    moa(backend)
    assert fault.requests  # the key was sent to the server...
    cache = get_cache()
    cache.close()
    for path in tmp_path.glob("moa_cache.sqlite*"):  # ...but is in no cache file (WAL included)
        assert FAKE_KEY.encode() not in path.read_bytes()
    monkeypatch.setenv("TOGETHER_API_KEY", "sk-another-key")  # another key: the same answers, from the cache
    moa(moa_lab.get_backend(fault.url), cache=ResponseCache(cache.path))
    assert len(fault.requests) == 3


def test_a_cache_that_fails_mid_run_turns_itself_off_without_failing_the_run(fault, remote, tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    cache._db.close()  # the file's connection dies under it (as when a disk goes away)
    with pytest.warns(CacheWarning, match="off for the rest"):
        result, _ = moa(remote, cache=cache)
    assert result.text and len(fault.requests) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        moa(remote, cache=cache)  # quietly uncached now
    assert len(fault.requests) == 6


def test_bad_cache_arguments_are_refused_before_any_call(fault, remote, tmp_path):
    for bad in (3, "", tmp_path):
        with pytest.raises(ValueError, match="cache"):
            moa(remote, cache=bad)
    assert fault.requests == []


def test_the_default_location_is_the_user_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("MOA_LAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert moa_lab._cache.default_path() == tmp_path / "xdg" / "moa_lab" / "responses.sqlite"


def test_two_processes_can_share_a_cache_file(tmp_path):
    a, b = ResponseCache(tmp_path / "shared.sqlite"), ResponseCache(tmp_path / "shared.sqlite")
    a.put("k", "m", "text", 1, 2)
    assert b.get("k").text == "text"
    assert sqlite3.connect(tmp_path / "shared.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
