"""Bad input is refused before any model is called; backends are chosen from the environment; keys stay secret."""

import asyncio
import json

import pytest
from conftest import run

import moa_lab
from moa_lab import aggregate, check_output_path, get_backend, plan_run, run_layer, run_moa

P = "What is MoA?"

BAD = [
    ("empty prompt", lambda b: run_moa("  ", ["a"], "g", backend=b), "prompt must be a non-empty string"),
    ("prompt not str", lambda b: run_moa(None, ["a"], "g", backend=b), "prompt must be a non-empty string"),
    ("no proposers", lambda b: run_moa(P, [], "g", backend=b), "proposers is empty"),
    ("proposers a string", lambda b: run_moa(P, "abc", "g", backend=b), "proposers must be a list of model names"),
    ("model not str", lambda b: run_moa(P, ["a", 3], "g", backend=b), "holds 3"),
    ("empty model name", lambda b: run_moa(P, ["a", ""], "g", backend=b), "non-empty string"),
    ("aggregator not str", lambda b: run_moa(P, ["a"], 7, backend=b), "aggregator holds 7"),
    ("layers 0", lambda b: run_moa(P, ["a"], "g", layers=0, backend=b), "layers must be an integer >= 1"),
    ("layers -1", lambda b: run_moa(P, ["a"], "g", layers=-1, backend=b), "got -1"),
    ("layers float", lambda b: run_moa(P, ["a"], "g", layers=2.5, backend=b), "got 2.5"),
    ("per-layer mismatch", lambda b: run_moa(P, [["a"], ["b"]], "g", layers=4, backend=b), "makes layers=3"),
    ("empty layer list", lambda b: run_moa(P, [["a"], []], "g", backend=b), "proposers of layer 2 is empty"),
    ("temperature high", lambda b: run_moa(P, ["a"], "g", temperature=2.5, backend=b), "temperature must be"),
    ("temperature negative", lambda b: run_layer(P, ["a"], temperature=-0.1, backend=b), "got -0.1"),
    ("temperature str", lambda b: run_layer(P, ["a"], temperature="hot", backend=b), "got 'hot'"),
    ("max_tokens 0", lambda b: run_moa(P, ["a"], "g", max_tokens=0, backend=b), "max_tokens must be an integer >= 1"),
    ("max_tokens float", lambda b: run_layer(P, ["a"], max_tokens=1.5, backend=b), "got 1.5"),
    ("max_tokens bool", lambda b: run_layer(P, ["a"], max_tokens=True, backend=b), "got True"),
    ("timeout 0", lambda b: run_layer(P, ["a"], timeout=0, backend=b), "timeout must be a positive number"),
    ("retries -1", lambda b: run_layer(P, ["a"], retries=-1, backend=b), "retries must be an integer >= 0"),
    ("min_ok too big", lambda b: run_layer(P, ["a", "b"], min_ok=3, backend=b), "from 1 to the number of proposers (2)"),
    ("previous None inside", lambda b: run_layer(P, ["a"], previous=["x", None], backend=b), "every answer must be a string"),
    ("previous empty", lambda b: run_layer(P, ["a"], previous=[], backend=b), "previous answers are empty"),
    ("answers a string", lambda b: aggregate(P, "xy", "g", backend=b), "answers must be a list"),
    ("aggregate empty prompt", lambda b: aggregate("", ["x"], "g", backend=b), "prompt must be"),
    ("aggregate layer 0", lambda b: aggregate(P, ["x"], "g", layer=0, backend=b), "layer must be an integer >= 1"),
    ("aggregator empty", lambda b: plan_run(P, ["a"], "", backend=b), "every model name must be a non-empty string"),
    ("system_prompt not str", lambda b: plan_run(P, ["a"], "g", system_prompt=3, backend=b), "system_prompt must be"),
    ("seed a string", lambda b: plan_run(P, ["a"], "g", seed="1", backend=b), "seed must be an integer or None"),
    ("output_path a number", lambda b: check_output_path(3), "output_path must be a file path"),
]


@pytest.mark.parametrize("what, call, message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_before_any_call(fault, remote, what, call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        obj = call(remote)
        run(obj) if asyncio.iscoroutine(obj) else None
    assert fault.requests == []


def test_unknown_model_on_local_backend_lists_known_ones():
    backend = get_backend("local")
    with pytest.raises(ValueError, match=r"unknown model 'Qwen/Qwen2-72B-Instruct'.*smollm2-135m, gemma3-270m"):
        run(run_moa(P, ["smollm2-135m", "Qwen/Qwen2-72B-Instruct"], "smollm2-135m", backend=backend))


@pytest.mark.parametrize("value", ["ftp://x", "localhost:8000", 42])
def test_bad_backend_values(value):
    with pytest.raises(ValueError):
        get_backend(value)


def test_backend_choice_from_environment(monkeypatch, fault):
    assert get_backend().kind == "local"
    assert get_backend().default_proposers == moa_lab.LOCAL_PROPOSERS
    monkeypatch.setenv("TOGETHER_API_KEY", "tok-123456789")
    together = get_backend()
    assert together.kind == "together" and together.default_proposers == moa_lab.SEED_PROPOSERS
    assert together.default_aggregator == moa_lab.SEED_AGGREGATOR
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
    assert table[0].split() == list(moa_lab.trace.COLUMNS) and table[-1].startswith("agg")


def test_layers_1_is_the_aggregator_alone(fault, remote):
    result = run(run_moa(P, ["a"], "agg", layers=1, backend=remote))
    assert result.layers == [] and [r["model"] for r in fault.requests] == ["agg"]
    assert fault.requests[0]["messages"] == [{"role": "user", "content": P}]


def test_chinese_prompt_is_exported():
    assert moa_lab.AGGREGATOR_PROMPT_ZH.endswith("模型的响应：")
    assert moa_lab.AGGREGATOR_PROMPT == moa_lab.AGGREGATOR_PROMPT_EN
    assert moa_lab.references_prompt("S", ["x", "y"]) == "S\n1. x\n2. y"


def test_breaking_out_of_a_sync_stream_closes_it_inside_a_running_loop(fault, remote):
    async def jupyter_like_cell():
        agg = aggregate(P, ["x"], "agg", backend=remote)
        for _ in agg:
            break
        return agg.record.error, agg.record.text  # read at once: a kernel's loop never shuts down to finalize it

    error, text = asyncio.run(jupyter_like_cell())
    assert error == "cancelled" and text


def test_plan_run_resolves_defaults_per_backend(fault, remote):
    local = plan_run(P, backend="local")  # costs nothing: no server is started
    assert local.proposers == [list(moa_lab.LOCAL_PROPOSERS)] and local.aggregator == moa_lab.LOCAL_AGGREGATOR
    assert plan_run(P, max_tokens=None, backend="local").max_tokens == 64
    assert local.backend.server.url is None
    plan = plan_run(P, layers=3, max_tokens=None, system_prompt=None, backend=remote)
    assert plan.proposers == [list(moa_lab.SEED_PROPOSERS)] * 2 and plan.aggregator == moa_lab.SEED_AGGREGATOR
    assert (plan.max_tokens, plan.system_prompt, plan.layers, plan.calls) == (512, moa_lab.AGGREGATOR_PROMPT, 3, 9)
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
