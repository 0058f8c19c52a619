"""Conversations and recipes: OpenAI-style ``messages`` through every way in (run_moa, the batch, the playground,
``moa-lab chat``), and recipe files (``--recipe``, the playground's box), against the fault server, which records
every request as it arrived."""

import json
import subprocess

from conftest import MOA, click_and_wait, default_sigint, run

from moa_lab import estimate, plan_run, run_batch, run_moa
from moa_lab._recipe import Recipe
from moa_lab._usage import call_bound
from moa_lab.prompts import build_messages, references_prompt
from moa_lab.runs import read_results
from moa_lab.views._playground import Playground

SYSTEM = {"role": "system", "content": "Reply in French. 日本語も可 🍣"}
TURNS = [
    SYSTEM,
    {"role": "user", "content": [{"type": "text", "text": "Name a river."}]},
    {"role": "assistant", "content": "La Seine."},
    {"role": "user", "content": "And\u2028a mountain?"},
]


def test_what_each_call_sees_of_a_conversation():
    # a string prompt: the seed's calls, unchanged
    assert build_messages("q", None, "S") == [{"role": "user", "content": "q"}]
    assert build_messages("q", ["x"], "S") == [
        {"role": "system", "content": references_prompt("S", ["x"])},
        {"role": "user", "content": "q"},
    ]
    # a conversation: the user's system message first, then the proposer's role, then the references
    checked = plan_run(messages=TURNS, backend="http://127.0.0.1:9").prompt
    assert checked[1] == {"role": "user", "content": "Name a river."}  # text parts joined
    out = build_messages(checked, ["x", "y"], "S", role="R")
    assert out[0] == {"role": "system", "content": SYSTEM["content"] + "\n\nR\n\n" + references_prompt("S", ["x", "y"])}
    assert out[1:] == list(checked[1:])
    assert build_messages(checked, None, "S") == list(checked)  # layer 1 without a role: the conversation as it is


def test_run_moa_with_messages_sends_the_whole_conversation_to_every_call(fault, remote):
    result = run(run_moa(messages=TURNS, proposers=["a", "b"], aggregator="g", backend=remote, max_tokens=20))
    proposers, aggregator = fault.requests[:2], fault.requests[2]
    for body in proposers:
        assert body["messages"] == [SYSTEM, {"role": "user", "content": "Name a river."}, *TURNS[2:]]
    system = aggregator["messages"][0]
    assert system["role"] == "system" and system["content"].startswith(SYSTEM["content"] + "\n\n")
    assert "1. a answers" in system["content"] and aggregator["messages"][1:] == proposers[0]["messages"][1:]
    # the conversation goes on from the result, and is in its record
    assert result.messages[-1] == {"role": "assistant", "content": result.text}
    assert result.to_dict()["messages"][-1]["content"] == "And\u2028a mountain?"
    assert result.to_dict()["prompt"] == "And\u2028a mountain?"
    # the estimate bounds what was sent, call by call
    bound = estimate(TURNS, ["a", "b"], "g", backend=remote, max_tokens=20)
    sent = [call_bound(b["messages"]) for b in proposers] + [
        call_bound(aggregator["messages"], result.layers[0].answers, 20)  # a reference counts max_tokens at most
    ]
    assert bound.calls == 3 and bound.max_prompt_tokens >= sum(sent)
    again = run(run_moa(messages=TURNS, proposers=["a", "b"], aggregator="g", backend=remote, max_tokens=20))
    assert all(c.cached for c in again.trace) and len(fault.requests) == 3  # the cache keys the whole conversation


def test_a_batch_line_may_carry_messages_and_resumes(fault, remote, tmp_path):
    source = tmp_path / "in.jsonl"
    lines = [{"id": "c", "messages": TURNS}, {"id": "p", "prompt": "Name a lake."}]
    source.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
    out = tmp_path / "out.jsonl"
    run(run_batch(source, out, ["a"], "g", backend=remote, progress=False))
    rows = {r["id"]: r for r in read_results(out)}
    assert (
        rows["c"]["messages"][-1]["content"] == "And\u2028a mountain?" and rows["c"]["prompt"] == "And\u2028a mountain?"
    )
    assert "messages" not in rows["p"] and rows["c"]["status"] == rows["p"]["status"] == "ok"
    sent = len(fault.requests)
    summary = run(run_batch(source, out, ["a"], "g", backend=remote, progress=False))
    assert summary.skipped == 2 and len(fault.requests) == sent  # resumed: nothing twice


def test_a_recipe_round_trips_and_the_cli_and_the_playground_use_it(fault, remote, tmp_path):
    plan = plan_run("q", [["a", "b"], ["c"]], "g", backend=remote, temperature=0.2, combine="rank", top_k=1)
    recipe = Recipe.from_plan(plan)
    for name in ("r.yaml", "r.json"):
        loaded = Recipe.from_file(recipe.save(tmp_path / name))
        assert loaded.plan("q").to_dict() == plan.to_dict()

    # moa-lab ask --recipe: the recipe's models and settings; a flag given changes its value
    fault.script("g", "say:1")  # the ranking
    done = subprocess.run(
        [*MOA, "ask", "Hi", "--recipe", str(tmp_path / "r.yaml"), "--temperature", "0.5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(b["model"] for b in fault.requests) == ["a", "b", "c", "g", "g"]  # rank: two aggregator calls
    assert {b["temperature"] for b in fault.requests} == {0.5}

    panel = Playground("q", ["a"], "g", backend=remote, combine="vote")
    click_and_wait(panel)
    text = panel.settings_text("recipe file (YAML)")
    assert "combine: vote" in text and "moa-lab ask --recipe" in text
    assert Recipe.from_file(panel.save_recipe(tmp_path / "p.yaml")).options["combine"] == "vote"


def test_the_playground_goes_on_to_a_next_turn(fault, remote):
    panel = Playground("Name a river.", ["a"], "g", backend=remote)
    click_and_wait(panel)
    first = panel.result.text
    panel.next_turn()
    assert panel.prompt.value == "" and "Earlier turns (2)" in panel.history_view.value
    panel.prompt.value = "And a mountain?"
    click_and_wait(panel)
    last = fault.requests[-1]["messages"]
    assert last[-3:] == [
        {"role": "user", "content": "Name a river."},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "And a mountain?"},
    ]


def test_moa_lab_chat_keeps_the_history_and_shows_the_trace(fault):
    done = subprocess.run(
        [*MOA, "chat", "--backend", fault.url, "--proposers", "a,b", "--aggregator", "g"],
        input="Name a river.\n/trace\nAnd a mountain?\n/reset\nHi\n/quit\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "g answers" in done.stdout and "agg    g" in done.stdout and "(a new conversation)" in done.stdout
    turns = [len(b["messages"]) for b in fault.requests if b["model"] == "a"]
    assert turns == [1, 3, 1]  # the second turn read the first; after /reset, a new conversation
    second = [b for b in fault.requests if b["model"] == "a"][1]["messages"]
    assert second[0] == {"role": "user", "content": "Name a river."} and second[1]["role"] == "assistant"


def test_a_flag_given_wins_over_the_recipe_even_at_its_default_value(fault, tmp_path):
    """Hardening 18: ``--temperature 0.7 --seed 0`` (the built-in defaults) over a recipe with 0.2 and 5 sends
    0.7 and seed 0, for ``ask``, ``batch`` and ``chat``; a flag not given leaves the recipe's value."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"backend: {fault.url}\nproposers: [a]\naggregator: g\ntemperature: 0.2\nseed: 5\nretries: 1\n")
    flags = ["--recipe", str(recipe), "--temperature", "0.7", "--seed", "0", "--no-cache"]
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": 1, "prompt": "Hi"}\n')
    for command, more, stdin in (
        (["ask", "Hi"], [], None),
        (["batch", str(prompts), str(tmp_path / "out.jsonl")], ["--no-progress"], None),
        (["chat"], [], "Hi\n/quit\n"),
    ):
        start = len(fault.requests)
        done = subprocess.run([*MOA, *command, *flags, *more], input=stdin, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        sent = fault.requests[start:]
        assert {b["temperature"] for b in sent} == {0.7}, command
        assert {b["seed"] for b in sent} == {1000, 2000}, command  # each call's own seed, from seed 0 (5: 1005, 2005)
    done = subprocess.run([*MOA, "ask", "Hi", "--recipe", str(recipe), "--no-cache"], capture_output=True, text=True)
    assert done.returncode == 0 and {b["temperature"] for b in fault.requests[-2:]} == {0.2}


def test_ctrl_c_at_the_chat_prompt_leaves_without_a_traceback(fault):
    """Hardening 20: Ctrl-C while ``you>`` waits for a line exits 130, with no KeyboardInterrupt traceback."""
    import signal
    import time

    proc = subprocess.Popen(
        [*MOA, "chat", "--backend", fault.url, "--proposers", "a", "--aggregator", "g"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,  # Ctrl-C as from a terminal, however the tests were started
    )
    deadline = time.monotonic() + 60
    seen = ""
    while "you> " not in seen and time.monotonic() < deadline:
        seen += proc.stdout.read(1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
