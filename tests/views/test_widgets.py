"""The playground panel, headless: set the widgets' values, click Run and Stop, assert on what they show.

ipywidgets run without a front end here (their comms fall back to dummies); each test runs its clicks inside a
running event loop, as in a kernel, and waits for the panel's task.
"""

import ast
import asyncio
import html
import re
import time

import pytest
from conftest import click_and_wait, run
from fault_server import answer_text

import moa_lab
from moa_lab.prompts import AGGREGATOR_PROMPT_EN, AGGREGATOR_PROMPT_ZH
from moa_lab.views._playground import MAX_LAYERS, Playground


def slot_texts(panel: Playground) -> list[list[str]]:
    return [[slot.value for slot in row] for row in panel.slots]


def test_run_shows_every_layer_the_stream_the_trace_and_the_settings(fault, remote):
    panel = Playground(backend=remote)
    panel.prompt.value = "Name a <colour>."
    panel.layers.value = 3
    panel.proposers[0].value = ["a", "b", "a"]
    panel.proposers[1].value = ["c", "d"]
    panel.aggregator.value = "agg"
    panel.max_tokens.value = 40
    panel.temperature.value = 0.3
    shown = []
    panel.final.observe(lambda change: shown.append(change["new"]), "value")
    click_and_wait(panel)
    streamed = [value for value in shown if "<pre" in value]  # after "waiting" and "running…"
    words = panel.final_text.split(" ")
    assert len(streamed) == len(words) > 3  # the answer grew on screen one chunk (here: a word) at a time
    assert streamed[0].endswith(f">{words[0]} </pre>") and html.escape(panel.final_text) in streamed[-1]

    assert panel.error is None and panel.result is not None
    assert panel.run_button.disabled is False and panel.stop_button.disabled is True
    assert panel.layer_tabs.titles == ("Layer 1", "Layer 2")
    slots = slot_texts(panel)
    assert [len(row) for row in slots] == [3, 2]
    assert "1. a" in slots[0][0] and "without references" in slots[0][0] and "seed 1000" in slots[0][0]
    assert "seed 1002" in slots[0][2]  # the same model twice: its own seed each time
    assert all("with references" in s and "tokens" in s for s in slots[1])
    assert panel.final_text == panel.result.text == answer_text(fault.calls_to("agg")[0])
    assert "agg answers (seed 3000, with references)." in panel.final.value
    assert "Done: 6 calls" in panel.message
    assert "Taken from</b> (lexical similarity)" in panel.attribution.value  # the answer coloured by its sources
    assert "1. c: " in panel.attribution.value and "2. d: " in panel.attribution.value
    assert 0 < panel.first_token_seconds < panel.result.seconds + 1
    # Every call went out with the form's values; the prompt is escaped in the HTML views.
    assert {r["max_tokens"] for r in fault.requests} == {40} and {r["temperature"] for r in fault.requests} == {0.3}
    assert all(m in panel.trace.value for m in ("a", "b", "c", "d", "agg"))
    assert "Name a &lt;colour&gt;." in panel.copy_area.value  # the user's text is escaped in the HTML views
    assert panel.timeline.value[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_copied_settings_reproduce_the_run(fault, remote):
    panel = Playground("Why is the sky blue?", [["a", "b"], ["b"]], "agg", backend=remote, max_tokens=30)
    panel.language.value = "中文"
    click_and_wait(panel)
    assert panel.system_prompt.value == AGGREGATOR_PROMPT_ZH

    text = panel.settings_text("papermill parameters")
    params = ast.literal_eval(text.split("=", 1)[1].split("\n#")[0])
    assert params == {
        "prompt": "Why is the sky blue?",
        "proposers": [["a", "b"], ["b"]],
        "aggregator": "agg",
        "layers": 3,
        "temperature": 0.7,
        "max_tokens": 30,
        "system_prompt": AGGREGATOR_PROMPT_ZH,
    }
    assert f"TOGETHER_BASE_URL={fault.url}" in text
    assert "&#x27;max_tokens&#x27;: 30" in panel.copy_area.value and "Copy to clipboard" in panel.copy_area.value

    panel.copy_format.value = "run_moa(...) call"
    code = panel.settings_text("run_moa(...) call")
    assert code in html.unescape(panel.copy_area.value) and "system_prompt=AGGREGATOR_PROMPT_ZH" in code
    namespace = {}
    exec(
        compile(
            "async def again():\n" + "\n".join("    " + line for line in code.splitlines()) + "\n    return result",
            "<copied>",
            "exec",
        ),
        namespace,
    )
    again = run(namespace["again"]())
    assert [c.seed for c in again.trace] == [c.seed for c in panel.result.trace]
    assert again.text == panel.result.text and again.trace[-1].model == "agg"
    assert fault.requests[-1]["messages"] == fault.requests[len(panel.result.trace) - 1]["messages"]


def test_stop_cancels_a_slow_run_and_keeps_what_finished(fault, remote):
    fault.script("slow", "delay:30")
    panel = Playground("q", ["fast", "slow"], "agg", backend=remote)

    async def scenario():
        panel.run_button.click()
        while not panel.records:  # the fast proposer's answer arrives; the slow one is still out
            await asyncio.sleep(0.02)
        t0 = time.perf_counter()
        panel.stop_button.click()
        await panel.wait()
        return time.perf_counter() - t0

    seconds = run(scenario())
    assert seconds < 10  # at once, not after the slow proposer's 30 s (slack for a busy machine)
    assert panel.task.cancelled() and panel.result is None
    assert "Stopped. 1 finished call(s)" in panel.message
    assert "fast answers" in panel.slots[0][0].value and "running" in panel.slots[0][1].value
    assert "fast" in panel.trace.value and not fault.calls_to("agg")  # no aggregator call after Stop
    assert panel.run_button.disabled is False and panel.stop_button.disabled is True

    stopped_slot = panel.slots[0][1]
    click_and_wait(panel)  # Run again: the slow proposer answers at once this time
    assert panel.result is not None and "Done: 3 calls" in panel.message and "slow answers" in panel.slots[0][1].value
    assert stopped_slot.comm is None  # the stopped run's slots were closed, not left behind


async def _click(panel):
    panel.run_button.click()
    return panel.task


def test_unknown_model_on_the_local_backend_is_refused_before_any_call(local):
    panel = Playground(backend=local)
    panel.proposers[0].value = ["smollm2-135m", "gpt-17"]
    assert run(_click(panel)) is None
    assert "unknown model 'gpt-17'" in panel.message and "smollm2-135m" in panel.message


def test_failed_proposer_shows_in_its_slot_and_the_run_goes_on(fault, remote):
    fault.script("bad", "500")
    panel = Playground("q", ["good", "bad"], "agg", backend=remote, retries=0)
    click_and_wait(panel)
    assert "failed" in panel.slots[0][1].value and "HTTP 500" in panel.slots[0][1].value
    assert "good answers" in panel.slots[0][0].value and panel.result.text.startswith("agg answers")
    assert "Done: 3 calls" in panel.message


def test_aggregator_failure_is_shown_and_the_layers_stay(fault, remote):
    fault.script("agg", "cut")
    panel = Playground("q", ["a", "b"], "agg", backend=remote, retries=0)
    click_and_wait(panel)
    assert isinstance(panel.error, moa_lab.MoAError) and "the aggregator failed" in panel.message
    assert "agg (layer 2 aggregator)" in panel.message
    assert "a answers" in panel.slots[0][0].value and "b answers" in panel.slots[0][1].value
    assert panel.final_text and panel.final_text in panel.final.value  # the part that arrived stays
    assert len(panel.records) == 3 and "agg" in panel.trace.value


def test_an_unexpected_exception_in_the_task_is_shown_with_its_traceback(fault, remote):
    panel = Playground("q", ["a"], "agg", backend=remote)

    def broken(chunk, clicked):
        raise ZeroDivisionError("a bug in a chunk handler")

    panel._on_chunk = broken
    click_and_wait(panel)
    assert "Error inside the run: ZeroDivisionError: a bug in a chunk handler" in panel.message
    assert "Traceback" in panel.message and isinstance(panel.error, ZeroDivisionError)
    assert panel.run_button.disabled is False


def test_form_controls(remote):
    panel = Playground(backend=remote, layers=4)
    assert len(panel.proposer_box.children) == 3 and panel.max_tokens.value == 512
    panel.proposers[2].value = ["x"]
    panel.layers.value = 2
    assert len(panel.proposer_box.children) == 1
    panel.layers.value = 4
    assert panel.proposers[2].value == ["x"]  # rows come back as they were
    panel.layers.value = 1
    assert "the aggregator alone" in panel.layers_help.value and panel.make_plan().calls == 1

    panel.layers.value = 2
    adder = panel.proposer_box.children[0].children[2]
    adder.value = "my-own/model"  # a name typed in, not in the list
    assert panel.proposers[0].value[-1] == "my-own/model" and adder.value == ""

    panel.system_prompt.value = "edited"
    panel.language.value = "中文"
    assert panel.system_prompt.value == AGGREGATOR_PROMPT_ZH
    panel.system_prompt.value = "edited again"
    panel.reset_button.click()
    assert panel.system_prompt.value == AGGREGATOR_PROMPT_ZH
    panel.language.value = "English"
    assert panel.system_prompt.value == AGGREGATOR_PROMPT_EN
    assert "application/vnd.jupyter.widget-view+json" in panel._repr_mimebundle_()


def test_constructor_arguments_are_checked(remote):
    with pytest.raises(ValueError, match="layers must be an integer >= 1"):
        Playground(backend=remote, layers=0)
    with pytest.raises(ValueError, match=f"at most {MAX_LAYERS} layers"):
        Playground(backend=remote, layers=MAX_LAYERS + 1)
    with pytest.raises(ValueError, match="temperature"):
        Playground(backend=remote, temperature=-1)


def test_run_without_an_event_loop_says_so(remote, fault):
    panel = Playground(backend=remote)
    panel.run_button.click()
    assert panel.task is None and "needs a running event loop" in panel.message and not fault.requests


@pytest.mark.local
def test_panel_on_the_bundled_models(local):
    """The default backend: the real llama.cpp server, the bundled models, streamed."""
    panel = Playground("Say hello.", backend=local, max_tokens=16)
    click_and_wait(panel)
    assert panel.error is None, panel.message
    assert all("tokens" in s for s in slot_texts(panel)[0]) and len(panel.slots[0]) == 4
    assert panel.final_text.strip() and panel.first_token_seconds is not None
    assert {c.model for c in panel.result.trace} == {"smollm2-135m", "gemma3-270m"}


@pytest.mark.parametrize("proposers, layers", [(["a", "a", "b"], 2), ([["a", "b"], ["c"]], None), (None, 1)])
def test_plan_settings_round_trip_through_papermill_parameters(remote, proposers, layers):
    plan = moa_lab.plan_run("q", proposers, "agg", layers=layers, max_tokens=None, backend=remote)
    params = plan.to_parameters()
    assert params["max_tokens"] == 512 and (params["proposers"] is None) == (plan.layers == 1)
    assert moa_lab.plan_run(**params, backend=remote).to_dict() == plan.to_dict()


def test_run_again_with_the_same_settings_is_answered_from_the_cache(fault, remote):
    panel = Playground("Hi", ["a", "b"], "agg", backend=remote)
    click_and_wait(panel)
    untimed = lambda: [[re.sub(r"\d+\.\d s, ", "", slot) for slot in row] for row in slot_texts(panel)]  # noqa: E731
    first = (untimed(), panel.final_text)  # a cached answer takes 0 s: the same slots but for their time
    click_and_wait(panel)
    assert len(fault.requests) == 3  # no new request
    assert (untimed(), panel.final_text) == first
    assert "Done: 3 calls (3 from the cache)" in panel.message and "cached" in panel.trace.value
    panel.max_tokens.value = 33  # another setting: called again
    click_and_wait(panel)
    assert len(fault.requests) == 6 and "from the cache" not in panel.message
