"""One settings object: defaults declared once, a plan passed to the steps instead of its settings one by one,
checking without side effects, and the results as pandas DataFrames."""

import inspect
import json

import pandas as pd
import pytest
from conftest import run, write_jsonl

import moa_lab
from moa_lab import aggregate, estimate, plan_run, run_batch, run_layer, run_moa
from moa_lab.moa import DEFAULTS, Settings
from moa_lab.runs import results_frame
from moa_lab.views._playground import Playground

P = "Name one colour."


def test_the_defaults_are_declared_once():
    assert (DEFAULTS.temperature, DEFAULTS.max_tokens, DEFAULTS.seed, DEFAULTS.timeout, DEFAULTS.retries) == (
        0.7,
        512,
        0,
        120.0,
        3,
    )
    # No public step re-declares a setting as a parameter of its own: they all take **options.
    for function in (run_layer, aggregate, run_moa, plan_run, Playground.__init__):
        parameters = inspect.signature(function).parameters
        assert not {"temperature", "max_tokens", "timeout", "retries", "seed", "cache"} & set(parameters), function
        assert inspect.Parameter.VAR_KEYWORD in {p.kind for p in parameters.values()}


def test_a_plan_is_passed_to_the_steps_and_keywords_change_it(fault, remote):
    plan = plan_run(P, ["a", "b"], "agg", temperature=0.3, max_tokens=40, seed=5, backend=remote)
    layer = run(run_layer(P, plan.proposers[0], plan=plan))
    # the two calls run at once: they may arrive in either order
    assert sorted((r["temperature"], r["max_tokens"], r["seed"]) for r in fault.requests) == [
        (0.3, 40, 1005),
        (0.3, 40, 1006),
    ]
    text = run(aggregate(P, layer.answers, plan.aggregator, plan=plan, stream=False))
    last = fault.requests[-1]
    assert text.startswith("agg answers") and (last["temperature"], last["max_tokens"]) == (0.3, 40)
    assert last["seed"] == 5 + 1000 * plan.layers  # the aggregator's place in the plan: layer 2
    assert last["messages"][0]["content"].startswith(plan.system_prompt)
    run(run_layer(P, ["a"], plan=plan, temperature=0.9, max_tokens=None))  # a keyword changes the plan's value
    assert (fault.requests[-1]["temperature"], fault.requests[-1]["max_tokens"]) == (0.9, 512)  # None: the backend's
    assert (plan.temperature, plan.max_tokens) == (0.3, 40)  # the plan itself is unchanged


def test_settings_as_one_object(fault, remote):
    settings = Settings(temperature=0.1, max_tokens=8, seed=None, retries=0)
    result = run(run_moa(P, ["a"], "agg", settings=settings, backend=remote, stream=False))
    assert [(r["temperature"], r["max_tokens"], "seed" in r) for r in fault.requests] == [(0.1, 8, False)] * 2
    assert result.final.seed is None and not result.final.cached
    layer = run(run_layer(P, ["a"], plan=settings, backend=remote, seed=3))
    assert fault.requests[-1]["seed"] == 1003 and layer.calls[0].seed == 1003


def test_an_unknown_setting_is_named_with_the_allowed_ones(fault, remote):
    with pytest.raises(ValueError, match="unknown setting 'temprature'; the settings are: temperature, max_tokens"):
        run(run_moa(P, ["a"], "agg", temprature=0.2, backend=remote))
    assert fault.requests == []


def test_checking_opens_no_cache_file(fault, remote, tmp_path):
    cache = tmp_path / "sub" / "answers.sqlite"
    plan = plan_run(P, ["a"], "agg", cache=cache, backend=remote)
    estimate(P, ["a"], "agg", cache=cache, backend=remote)
    Playground(P, ["a"], "agg", cache=cache, backend=remote)
    assert not cache.exists() and not cache.parent.exists()  # plan_run "costs nothing": no file either
    run(moa_lab.run_plan(plan))
    assert cache.exists() and len(moa_lab.get_cache(cache)) == 2  # opened by the first call


def test_a_run_as_a_dataframe(fault, remote):
    fault.script("b", "500")
    result = run(run_moa(P, ["a", "b"], "agg", retries=0, backend=remote))
    frame = result.to_pandas()
    assert isinstance(frame, pd.DataFrame) and len(frame) == len(result.trace) == 3
    assert list(frame["status"]) == ["ok", "failed", "ok"] and list(frame["role"])[-1] == "aggregator"
    assert {"layer", "model", "seconds", "prompt_tokens", "completion_tokens", "cost", "text", "error"} <= set(frame)
    assert frame.loc[1, "error"].startswith("HTTP 500") and frame.loc[0, "text"] == result.layers[0].calls[0].text


def test_batch_results_as_a_dataframe(fault, remote, tmp_path):
    fault.script("b", "500")
    out = tmp_path / "out.jsonl"
    run(
        run_batch(
            write_jsonl(tmp_path / "in.jsonl", 3),
            out,
            ["a", "b"],
            "agg",
            layers=3,
            retries=0,
            backend=remote,
            progress=False,
        )
    )
    frame = results_frame(out)
    assert moa_lab.read_results(out, as_frame=True).equals(frame)
    assert sorted(frame["id"]) == ["p0", "p1", "p2"] and len(frame) == 3  # one row per prompt, as they finished
    assert {"layer1_1", "layer1_2", "layer2_1", "layer2_2", "layer1_1_model", "final", "calls", "cost"} <= set(frame)
    assert "layers" not in frame and "trace" not in frame
    failed = frame[frame["layer1_2"].isna()]
    assert len(failed) == 1 and set(failed["layer1_2_model"]) == {"b"}  # the one 500: its slot is empty
    assert frame["layer2_1"].str.contains("with references").all()
    assert (frame["calls"] == 5).all()


def test_a_json_summary_keeps_its_totals(fault, remote, tmp_path):
    result = run(run_moa(P, ["a", "b"], "agg", backend=remote))
    saved = json.loads(result.save(tmp_path / "run.json").read_text())
    again = moa_lab.Usage.from_dict(saved)
    assert (again.calls, again.model_calls, again.tokens, again.cost) == (3, 3, result.usage().tokens, 0.0)


def test_evaluate_needs_matplotlib_before_any_call(fault, remote, tmp_path, monkeypatch):
    import importlib.util

    from moa_lab.evaluate import builtin_tasks, evaluate, single

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    with pytest.raises(ImportError, match="matplotlib, which is not installed.*nothing was run"):
        run(evaluate(builtin_tasks(2, 1), [single("a"), single("b")], tmp_path, judge_model="A", backend=remote))
    assert fault.requests == [] and not any(tmp_path.iterdir())
