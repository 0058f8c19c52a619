"""Records and their notebook views: a run assembled from steps, its JSON summary, tables and the timeline."""

import json

import matplotlib
from conftest import run

from moa_lab import MoAResult, aggregate, run_layer, run_moa
from moa_lab.prompts import build_messages
from moa_lab.views._display import layer_table, messages_view, plot_timeline, trace_table

matplotlib.use("Agg")
P = "What is <MoA>?"


def test_steps_run_by_hand_equal_run_moa(fault, remote):
    """The notebooks' cell-by-cell form makes the same calls, with the same seeds, as run_moa."""
    layer = run(run_layer(P, ["a", "b"], backend=remote))
    final = aggregate(P, layer.answers, "agg", backend=remote)
    assert run(final)  # await the aggregation: the whole text
    by_hand = MoAResult(P, [layer], final.record)
    whole = run(run_moa(P, ["a", "b"], "agg", backend=remote))
    assert [(c.layer, c.model, c.seed, c.text) for c in by_hand.trace] == [
        (c.layer, c.model, c.seed, c.text) for c in whole.trace
    ]
    first, last = by_hand.trace[0], by_hand.final
    assert 0 < by_hand.seconds == (last.started + last.seconds) - first.started


def test_summary_file(tmp_path, fault, remote):
    fault.script("b", "500", "500", "500", "500")
    result = run(run_moa(P, ["a", "b"], "agg", retries=3, backend=remote))
    path = result.save(tmp_path / "deep" / "run.json", settings={"x": 1})
    data = json.loads(path.read_text())
    assert data["calls"] == 3 and data["failed_calls"] == 1 and data["settings"] == {"x": 1}
    assert data["layers"][0]["models"] == ["a", "b"] and len(data["layers"][0]["answers"]) == 1
    assert data["layers"][0]["errors"][0].startswith("b (layer 1 proposer 2): HTTP 500")
    assert data["completion_tokens"] == sum(c["completion_tokens"] or 0 for c in data["trace"]) > 0


def test_views_escape_html_and_have_text_forms(fault, remote):
    fault.script("b", "echo-auth")
    result = run(run_moa(P, ["a", "b"], "agg", backend=remote))
    table = layer_table(result.layers[0])
    assert "<th" in table._repr_html_() and "&lt;" not in table._repr_html_()
    assert "failed: HTTP 401" in table._repr_html_() and "[layer 1] 2. b" in repr(table)
    messages = messages_view(build_messages(P, ["x <y>"], "S"))
    assert "What is &lt;MoA&gt;?" in messages._repr_html_() and "1. x &lt;y&gt;" in messages._repr_html_()
    assert repr(messages) == "--- system ---\nS\n1. x <y>\n\n--- user ---\nWhat is <MoA>?"
    trace = trace_table(result)
    assert trace._repr_html_().count("<tr>") == 4 and repr(trace) == result.summary()


def test_timeline_has_a_bar_per_call(fault, remote):
    result = run(run_moa(P, [["a", "b"], ["c"]], "agg", backend=remote))
    figure = plot_timeline(result)
    ax = figure.axes[0]
    assert len(ax.patches) == 4
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["L1 #1 a", "L1 #2 b", "L2 #1 c", "aggregator agg"]
    starts = [bar.get_x() for bar in ax.patches]
    assert starts[0] == 0 and starts[2] >= max(starts[:2]) and starts[3] >= starts[2]  # layers in sequence
