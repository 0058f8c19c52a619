"""Bad input is refused before any model is called; backends are chosen from the environment; keys stay secret."""

import asyncio
import json

import pytest
from conftest import run

import moa_lab
from moa_lab import aggregate, get_backend, plan_run, run_layer, run_moa
from moa_lab.runs import check_output_path

P = "What is MoA?"


def test_backend_choice_from_environment(monkeypatch, fault):
    assert get_backend().kind == "local"
    assert get_backend().default_proposers == moa_lab.moa.LOCAL_PROPOSERS
    monkeypatch.setenv("TOGETHER_API_KEY", "tok-123456789")
    together = get_backend()
    assert together.kind == "together" and together.default_proposers == moa_lab.moa.REFERENCE_PROPOSERS
    assert together.default_aggregator == moa_lab.moa.REFERENCE_AGGREGATOR
    monkeypatch.setenv("TOGETHER_BASE_URL", fault.url + "/v1/")
    url = get_backend()
    assert url.kind == "url" and url.base_url == fault.url  # a trailing /v1 is accepted and dropped
    monkeypatch.setenv("MOA_LAB_PROPOSERS", "m1, m2")
    monkeypatch.setenv("MOA_LAB_AGGREGATOR", "m3")
    result = run(run_moa(P, backend=get_backend()))
    assert [c.model for c in result.trace] == ["m1", "m2", "m3"]


def test_per_model_urls_send_models_to_other_servers(fault):
    from fault_server import FaultServer

    with FaultServer() as other:
        backend = get_backend(fault.url, model_urls={"elsewhere": other.url})
        run(run_layer(P, ["here", "elsewhere"], backend=backend))
        assert [r["model"] for r in fault.requests] == ["here"]
        assert [r["model"] for r in other.requests] == ["elsewhere"]


def test_per_model_urls_from_environment(monkeypatch, fault):
    monkeypatch.setenv("MOA_LAB_MODEL_URLS", json.dumps({"x": fault.url}))
    backend = get_backend("local")
    backend.check_models(["x", "smollm2-135m"])  # x is known through its URL
    assert backend.model_urls == {"x": fault.url}
    monkeypatch.setenv("MOA_LAB_MODEL_URLS", "x")
    with pytest.raises(ValueError, match="not of the form name=url"):
        get_backend()


KEY = "sk-FAKE-0123456789abcdefSECRET"


def test_api_key_never_in_repr_trace_or_errors(fault):
    backend = get_backend(fault.url, api_key=KEY)
    assert KEY not in repr(backend) and KEY not in backend.describe()
    fault.script("a", "echo-auth").script("agg", "echo-auth")
    layer = run(run_layer(P, ["a", "b"], backend=backend))
    assert "Bearer ***" in layer.calls[0].error  # the server did see the key, the record does not
    with pytest.raises(moa_lab.MoAError) as info:
        run(run_moa(P, ["b"], "agg", backend=backend))
    text = str(info.value) + repr(info.value.failures) + json.dumps([vars(c) for c in layer.calls])
    assert KEY not in text and "HTTP 401" in text


def test_sync_wrappers_in_a_script_and_inside_a_running_loop(fault, remote):
    result = moa_lab.run_moa_sync(P, ["a"], "agg", backend=remote)
    assert result.text.startswith("agg answers")
    assert "".join(aggregate(P, ["x"], "agg", backend=remote)).startswith("agg answers")  # sync iteration

    async def jupyter_like_cell():  # a cell runs inside the kernel's loop; the sync forms must still work
        layer = moa_lab.run_layer_sync(P, ["a", "b"], backend=remote)
        chunks = list(aggregate(P, layer.answers, "agg", backend=remote))
        return layer, chunks

    layer, chunks = asyncio.run(jupyter_like_cell())
    assert len(layer.answers) == 2 and len(chunks) > 1


def test_results_are_plain_data(fault, remote):
    result = run(run_moa(P, ["a", "b"], "agg", backend=remote))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["final"] == result.text and [len(layer["answers"]) for layer in data["layers"]] == [2]
    assert len(data["trace"]) == 3
    table = result.summary().splitlines()
    assert table[0].split() == list(moa_lab._trace.COLUMNS) and table[-1].startswith("agg")


def test_layers_1_is_the_aggregator_alone(fault, remote):
    result = run(run_moa(P, ["a"], "agg", layers=1, backend=remote))
    assert result.layers == [] and [r["model"] for r in fault.requests] == ["agg"]
    assert fault.requests[0]["messages"] == [{"role": "user", "content": P}]


def test_chinese_prompt_is_exported():
    assert moa_lab.prompts.AGGREGATOR_PROMPT_ZH.endswith("模型的响应：")
    assert moa_lab.prompts.AGGREGATOR_PROMPT == moa_lab.prompts.AGGREGATOR_PROMPT_EN
    assert moa_lab.prompts.references_prompt("S", ["x", "y"]) == "S\n1. x\n2. y"


def test_breaking_out_of_a_sync_stream_closes_it_inside_a_running_loop(fault, remote):
    async def jupyter_like_cell():
        agg = aggregate(P, ["x"], "agg", backend=remote)
        for _ in agg:
            break
        return agg.record.error, agg.record.text  # read at once: a kernel's loop never shuts down to finalize it

    error, text = asyncio.run(jupyter_like_cell())
    assert error == "cancelled" and text


def test_plan_run_resolves_defaults_per_backend(fault, remote, monkeypatch):
    def no_start(self):
        raise AssertionError("plan_run started the local server")

    monkeypatch.setattr(moa_lab.engine.LocalServer, "start", no_start)  # costs nothing: no server is started
    local = plan_run(P, backend="local")
    assert local.proposers == [list(moa_lab.moa.LOCAL_PROPOSERS)] and local.aggregator == moa_lab.moa.LOCAL_AGGREGATOR
    assert plan_run(P, max_tokens=None, backend="local").max_tokens == 64
    plan = plan_run(P, layers=3, max_tokens=None, system_prompt=None, backend=remote)
    assert (
        plan.proposers == [list(moa_lab.moa.REFERENCE_PROPOSERS)] * 2
        and plan.aggregator == moa_lab.moa.REFERENCE_AGGREGATOR
    )
    assert (plan.max_tokens, plan.system_prompt, plan.layers, plan.calls) == (
        512,
        moa_lab.prompts.AGGREGATOR_PROMPT,
        3,
        9,
    )
    assert "layer 3: aggregator" in str(plan) and json.dumps(plan.to_dict())
    assert fault.requests == []


def test_max_tokens_none_is_the_backends_default_in_every_call(fault, remote):
    run(run_moa(P, ["a"], "agg", max_tokens=None, backend=remote))
    run(run_layer(P, ["b"], max_tokens=None, backend=remote))
    assert [r["max_tokens"] for r in fault.requests] == [512, 512, 512]


def test_output_path_checks(tmp_path):
    assert check_output_path("") is None and check_output_path(None) is None
    assert check_output_path(tmp_path / "new" / "run.json") == tmp_path / "new" / "run.json"
    with pytest.raises(ValueError, match="is a folder"):
        check_output_path(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        check_output_path(tmp_path / "file" / "run.json")


def test_an_alias_name_given_twice_is_refused_naming_both_places(tmp_path):
    """Hardening 21: a repeated alias name (in one file, a JSON object's repeated key, two files, a flag and a
    file) is refused naming both places, never resolved silently to its last target."""
    from moa_lab._cli import parse_alias_args

    lines = tmp_path / "a.txt"
    lines.write_text("# aliases\nfast=smollm2-135m\nfast=gemma3-270m\n")
    with pytest.raises(ValueError, match=rf"the alias 'fast' is given twice: {lines}:2 .* and {lines}:3"):
        parse_alias_args([], [str(lines)])
    obj = tmp_path / "a.json"
    obj.write_text('{"fast": "smollm2-135m", "fast": "gemma3-270m"}')
    with pytest.raises(ValueError, match="the alias 'fast' is given twice"):
        parse_alias_args([], [str(obj)])
    one = tmp_path / "one.txt"
    one.write_text("fast=smollm2-135m\n")
    with pytest.raises(ValueError, match=rf"{one}:1 \('smollm2-135m'\) and --alias fast=gemma3-270m"):
        parse_alias_args(["fast=gemma3-270m"], [str(one)])
    assert parse_alias_args(["quick=gemma3-270m"], [str(one)]) == {"fast": "smollm2-135m", "quick": "gemma3-270m"}
