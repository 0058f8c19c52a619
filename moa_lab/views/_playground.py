"""The MoA playground: an ipywidgets panel to edit a run's settings, run it, and watch every layer.

``Playground()`` in a notebook cell shows the panel (JupyterLab, Notebook, Voila). Run starts the MoA as a
task on the kernel's running event loop, so the kernel stays free; Stop cancels it. Proposers' answers show
in their slots as each one arrives, the aggregator's answer streams in, and after the run the trace table,
the timeline and the run's settings (as papermill parameters or a ``run_moa`` call) appear below.
Needs ``pip install moa_lab[notebooks]`` (ipywidgets, matplotlib).

Over 300 lines: one panel (the playground): its widgets, their callbacks and the run they drive belong together.
"""

from __future__ import annotations

import asyncio
import html
import os
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import ipywidgets as w

from moa_lab._backends import Backend, get_backend
from moa_lab._conversation import PromptInput, last_user, turns
from moa_lab._plan import RunPlan, plan_run
from moa_lab._recipe import Recipe
from moa_lab._records import CallRecord, MoAError
from moa_lab._results import MoAResult
from moa_lab._settings import COMBINE_MODES, Settings
from moa_lab.moa import run_plan
from moa_lab.prompts import AGGREGATOR_PROMPT_EN, AGGREGATOR_PROMPT_ZH
from moa_lab.views._display import call_stats, timeline_png, trace_table

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from moa_lab._settings import Options

SYSTEM_PROMPTS = {"English": AGGREGATOR_PROMPT_EN, "中文": AGGREGATOR_PROMPT_ZH}
MAX_LAYERS = 6
_PRE = "white-space:pre-wrap;margin:0;font-size:0.9em;line-height:1.35"
_FORMATS = ("papermill parameters", "run_moa(...) call", "recipe file (YAML)")
_WIDE = {"description_width": "90px"}


def _full(**layout) -> w.Layout:
    return w.Layout(width="auto", flex="1 1 auto", **layout)


def _slot_html(call: CallRecord | None, model: str, index: int, state: str) -> str:
    head = f"<b>{index + 1}. {html.escape(model)}</b>"
    if call is None:
        return f"{head} <i style='color:#777'>{state}</i>"
    if not call.ok:
        return f"{head} <span style='color:#b00'>failed</span>{_pre(call.error or '', 'color:#b00')}"
    return f"{head} <span style='color:#777'>{call_stats(call)}</span>{_pre(call.text or '')}"


def _pre(text: str, style: str = "") -> str:
    return f"<pre style='{_PRE};{style}'>{html.escape(text)}</pre>"


class Playground:
    """An MoA panel. Arguments pre-fill the form (as for :func:`moa_lab.plan_run`; None: the backend's defaults),
    or ``plan=`` a checked plan (its prompt, models and settings; the arguments given change them).

    Each Run checks the form with :func:`plan_run` (a bad value shows a message and calls nothing), then makes
    ``plan.calls`` model calls: each layer's proposers at once, the layers in turn, the aggregator streamed.
    After a run: ``result`` (a :class:`MoAResult`, or None), ``error`` (the exception, if any), ``records``
    (every finished call, also after a failure or Stop), ``plan``, ``first_token_seconds`` (from the click to
    the aggregator's first chunk) and ``message`` (the status line). ``await panel.wait()`` waits for the task.
    The settings the form does not show (``timeout``, ``retries``, ``seed``, ``cache``...) apply to every run.
    """

    def __init__(
        self,
        prompt: PromptInput | None = None,
        proposers: Sequence[str] | Sequence[Sequence[str]] | None = None,
        aggregator: str | None = None,
        *,
        layers: int | None = None,
        plan: RunPlan | None = None,
        backend: Backend | str | None = None,
        **options: Unpack[Options],
    ) -> None:
        if plan is not None and not isinstance(plan, RunPlan):
            raise ValueError(f"plan must be a RunPlan (from plan_run), got {plan!r}")
        if plan is not None:
            prompt = plan.prompt if prompt is None else prompt
            proposers = plan.proposers if proposers is None else proposers
            aggregator = plan.aggregator if aggregator is None else aggregator
            backend = plan.backend if backend is None else backend
        if prompt is None:
            prompt = "What are some fun things to do in San Francisco?"
        self.backend = b = get_backend(backend)
        base = plan.settings if plan is not None else Settings(max_tokens=None)  # the backend's default length
        start = plan_run(prompt, proposers, aggregator, layers=layers, settings=base, backend=b, **options)
        #: The conversation's turns before the prompt box's (a conversation given as ``prompt``; "Next turn"
        #: adds the last run's prompt and answer): every run sees them.
        self.history: list[dict[str, str]] = turns(start.prompt)[:-1]
        self.settings: Settings = start.settings  # what the form's values change, run by run
        if start.layers > MAX_LAYERS:
            raise ValueError(f"layers={start.layers}: the playground shows at most {MAX_LAYERS} layers")
        self.models = list(dict.fromkeys(b.known_models or (*b.default_proposers, b.default_aggregator)))
        self._initial = start.proposers or [list(b.default_proposers)]
        self.task: asyncio.Task | None = None
        self.plan: RunPlan | None = None
        self.result: MoAResult | None = None
        self.error: BaseException | None = None
        self.first_token_seconds: float | None = None
        self.records: list[CallRecord] = []
        self.final_text = self.message = ""

        self.prompt = w.Textarea(last_user(start.prompt), description="Prompt", style=_WIDE, rows=3, layout=_full())
        self.history_view = w.HTML()
        self.next_turn_button = w.Button(description="Next turn", icon="reply", disabled=True)
        self.next_turn_button.on_click(lambda _: self.next_turn())
        self.layers = w.IntSlider(start.layers, min=1, max=MAX_LAYERS, description="Layers", style=_WIDE)
        self.layers_help = w.HTML()
        self.proposer_box = w.VBox()
        self.proposers: list[w.TagsInput] = []  # one per proposer layer, kept when the layer count goes down
        self._rows: list[w.HBox] = []
        self.aggregator = w.Combobox(
            value=start.aggregator,
            options=self.models,
            ensure_option=False,
            description="Aggregator",
            style=_WIDE,
            placeholder="any model name",
        )
        self.temperature = w.FloatSlider(
            start.temperature, min=0.0, max=2.0, step=0.05, description="Temperature", style=_WIDE
        )
        self.max_tokens = w.IntText(start.max_tokens, description="max_tokens", style=_WIDE)
        self.combine = w.Dropdown(
            options=list(COMBINE_MODES), value=start.settings.combine, description="Combine", style=_WIDE
        )
        self.shuffle = w.Checkbox(start.settings.shuffle_references, description="Shuffle references", indent=False)
        self.language = w.ToggleButtons(options=list(SYSTEM_PROMPTS), description="Prompt of", style=_WIDE)
        self.system_prompt = w.Textarea(start.system_prompt, rows=5, layout=_full(), description="System", style=_WIDE)
        self.reset_button = w.Button(description="Reset system prompt", icon="undo")
        self.run_button = w.Button(description="Run", button_style="primary", icon="play")
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.status = w.HTML()
        self.layer_tabs = w.Tab(layout=w.Layout(display="none"))  # shown from the first run on
        self.slots: list[list[w.HTML]] = []
        self.final, self.trace, self.copy_area = w.HTML(), w.HTML(), w.HTML()
        self.attribution = w.HTML()  # after a run: the final answer coloured by the reference each sentence came from
        self.timeline = w.Image(format="png", layout=w.Layout(max_width="900px", display="none"))
        self.copy_format = w.ToggleButtons(
            options=_FORMATS, description="Settings as", style={**_WIDE, "button_width": "170px"}
        )

        self.layers.observe(self._layout_layers, "value")
        self.language.observe(lambda _: self._reset_prompt(), "value")
        self.reset_button.on_click(lambda _: self._reset_prompt())
        self.run_button.on_click(self._on_run)
        self.stop_button.on_click(self._on_stop)
        self.copy_format.observe(lambda _: self._show_settings(), "value")
        for widget, name in [
            (self.prompt, "prompt"),
            (self.layers, "layers"),
            (self.aggregator, "aggregator"),
            (self.max_tokens, "max-tokens"),
            (self.temperature, "temperature"),
            (self.combine, "combine"),
            (self.shuffle, "shuffle"),
            (self.system_prompt, "system-prompt"),
            (self.run_button, "run"),
            (self.stop_button, "stop"),
            (self.status, "status"),
            (self.final, "final"),
            (self.attribution, "attribution"),
            (self.trace, "trace"),
            (self.timeline, "timeline"),
            (self.copy_area, "copy"),
        ]:
            widget.add_class(f"moa-{name}")  # stable handles for the browser test and for styling
        self._layout_layers()
        self.widget = w.VBox(
            [
                w.HTML(f"<b>MoA playground</b> · {html.escape(b.describe())}"),
                self.history_view,
                self.prompt,
                w.HBox([self.layers, self.layers_help]),
                self.proposer_box,
                self.aggregator,
                w.HBox([self.temperature, self.max_tokens]),
                w.HBox([self.combine, self.shuffle]),
                w.Accordion(
                    [w.VBox([w.HBox([self.language, self.reset_button]), self.system_prompt])],
                    titles=("Aggregator system prompt (the paper's)",),
                ),
                w.HBox([self.run_button, self.stop_button, self.next_turn_button, self.status]),
                self.layer_tabs,
                w.HTML("<b>Aggregator</b>"),
                self.final,
                self.attribution,
                self.trace,
                self.timeline,
                self.copy_format,
                self.copy_area,
            ]
        )
        self._show_settings()
        self._show_history()

    def _repr_mimebundle_(self, **kwargs):
        """The panel; as text (papermill, a terminal): what the form holds."""
        return {**self.widget._repr_mimebundle_(**kwargs), "text/plain": repr(self)}

    def __repr__(self) -> str:
        layers = self.layers.value
        rows = [f"  layer {k + 1}: {', '.join(t.value)}" for k, t in enumerate(self.proposers[: layers - 1])]
        return "\n".join(
            [
                f"MoA playground on the {self.backend.describe()}",
                f"  prompt: {self.prompt.value!r}",
                *rows,
                f"  aggregator (layer {layers}): {self.aggregator.value}",
                f"  temperature {self.temperature.value:g}, max_tokens {self.max_tokens.value}, combine "
                f"{self.combine.value}" + (", references shuffled" if self.shuffle.value else ""),
            ]
        )

    # --- the form -------------------------------------------------------------------------------------------

    def _layout_layers(self, _=None) -> None:
        """One row of proposers per proposer layer: the models as tags, and a box to pick or type another."""
        count = self.layers.value - 1
        while len(self.proposers) < count:
            number = len(self.proposers) + 1
            tags = w.TagsInput(
                value=list(self._initial[min(number, len(self._initial)) - 1]), allow_duplicates=True, layout=_full()
            )
            tags.add_class(f"moa-proposers-{number}")
            add = w.Combobox(
                options=self.models,
                ensure_option=False,
                placeholder="add a model (pick or type)",
                layout=w.Layout(width="260px"),
                continuous_update=False,
            )
            add.observe(lambda change, tags=tags, add=add: self._add_model(tags, add, change["new"]), "value")
            self.proposers.append(tags)
            self._rows.append(
                w.HBox([w.HTML(f"<b>Layer {number}</b> proposers", layout=w.Layout(width="140px")), tags, add])
            )
        self.proposer_box.children = self._rows[:count]
        self.layers_help.value = (
            f"<i>{count} proposer layer(s), then the aggregator</i>" if count else "<i>the aggregator alone</i>"
        )

    @staticmethod
    def _add_model(tags: w.TagsInput, add: w.Combobox, name: str) -> None:
        if name.strip():
            tags.value = [*tags.value, name.strip()]
            add.value = ""

    def next_turn(self) -> None:
        """Go on with the conversation: the last run's prompt and final answer join the earlier turns, and the
        prompt box is emptied for the next user turn (which every model then reads after them)."""
        if self.result is None:
            raise ValueError("no finished run to go on from: run one first")
        self.history = self.result.messages
        self.prompt.value = ""
        self.next_turn_button.disabled = True
        self._show_history()

    def _show_history(self) -> None:
        rows = [
            f"<div style='margin:2px 0'><b>{m['role']}</b>: {html.escape(m['content'])}</div>" for m in self.history
        ]
        self.history_view.value = (
            f"<details open><summary>Earlier turns ({len(rows)})</summary>{''.join(rows)}</details>" if rows else ""
        )

    def _reset_prompt(self) -> None:
        self.system_prompt.value = SYSTEM_PROMPTS[self.language.value]

    def make_plan(self) -> RunPlan:
        """The form's settings, checked (ValueError naming a bad value). Calls no model."""
        prompt = self.prompt.value
        return plan_run(
            [*self.history, {"role": "user", "content": prompt}] if self.history else prompt,
            [list(t.value) for t in self.proposers[: self.layers.value - 1]] or None,
            self.aggregator.value.strip(),
            layers=self.layers.value,
            settings=self.settings,
            backend=self.backend,
            system_prompt=self.system_prompt.value,
            temperature=self.temperature.value,
            max_tokens=self.max_tokens.value,
            combine=self.combine.value,
            shuffle_references=self.shuffle.value,
        )

    # --- a run ----------------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def wait(self) -> None:
        """Wait for the running task, if any (its outcome is shown in the panel, never raised here)."""
        if self.task is not None:
            await asyncio.wait([self.task])

    def _on_run(self, _=None) -> None:
        if self.running:
            return
        try:
            plan = self.make_plan()
        except ValueError as exc:
            self._say(f"Not started: {exc}", error=True)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._say("Not started: Run needs a running event loop (a Jupyter kernel or Voila).", error=True)
            return
        self._start(plan)
        self.task = loop.create_task(self._run(plan, time.perf_counter()))
        self.task.add_done_callback(self._finished)

    def _on_stop(self, _=None) -> None:
        if self.running and self.task is not None:
            self.task.cancel()
            self._say("Stopping…")

    def _start(self, plan: RunPlan) -> None:
        self.plan, self.result, self.error, self.first_token_seconds = plan, None, None, None
        self.records, self.final_text = [], ""
        self.run_button.disabled, self.stop_button.disabled = True, False
        for old in [*self.layer_tabs.children, *(slot for row in self.slots for slot in row)]:
            old.close()  # the last run's slots: their front-end views go too
        slot_layout = dict(flex="1 1 0", min_width="180px", border="1px solid #ddd", padding="4px")
        self.slots = [
            [w.HTML(_slot_html(None, m, i, "waiting"), layout=w.Layout(**slot_layout)) for i, m in enumerate(models)]
            for models in plan.proposers
        ]
        for slot in (slot for row in self.slots for slot in row):
            slot.add_class("moa-slot")
        self.layer_tabs.children = [w.HBox(row, layout=w.Layout(flex_flow="row wrap")) for row in self.slots]
        self.layer_tabs.titles = tuple(f"Layer {k + 1}" for k in range(len(self.slots)))
        self.layer_tabs.layout.display = None if self.slots else "none"
        self.final.value = f"<i style='color:#777'>{html.escape(plan.aggregator)}: waiting</i>"
        self.trace.value, self.timeline.value, self.timeline.layout.display = "", b"", "none"
        self.attribution.value = ""
        self._show_settings()

    async def _run(self, plan: RunPlan, clicked: float) -> None:
        if plan.backend.server is not None and not plan.backend.server.url:
            self._say("Starting the embedded llama.cpp server (once per kernel, a few seconds)…")
            await plan.backend.ready()
        self._layer_running(1, plan)
        self.result = await run_plan(plan, on_call=self._on_call, on_chunk=lambda chunk: self._on_chunk(chunk, clicked))

    def _layer_running(self, number: int, plan: RunPlan) -> None:
        if number <= len(plan.proposers):
            self.layer_tabs.selected_index = number - 1
            for i, (slot, model) in enumerate(zip(self.slots[number - 1], plan.proposers[number - 1])):
                slot.value = _slot_html(None, model, i, "running…")
            self._say(f"Layer {number} of {plan.layers}: {len(plan.proposers[number - 1])} proposers at once…")
        else:
            mode = plan.settings.combine
            who = "counting the stated answers (no call)" if mode == "vote" else f"{plan.aggregator}: running…"
            self.final.value = f"<i style='color:#777'>{html.escape(who)}</i>"
            self._say(f"Layer {plan.layers} of {plan.layers}: the aggregator ({mode})…")

    def _on_call(self, call: CallRecord) -> None:
        self.records.append(call)
        if call.role == "aggregator":
            return
        self.slots[call.layer - 1][call.index].value = _slot_html(call, call.model, call.index, "")
        finished = sum(c.layer == call.layer and c.role != "aggregator" for c in self.records)
        if finished == len(self.slots[call.layer - 1]):
            if self.plan is not None:
                self._layer_running(call.layer + 1, self.plan)

    def _on_chunk(self, chunk: str, clicked: float) -> None:
        if self.first_token_seconds is None:
            self.first_token_seconds = time.perf_counter() - clicked
            self._say(f"Aggregator streaming; first token {self.first_token_seconds:.2f} s after Run")
        self.final_text += chunk
        self.final.value = _pre(self.final_text)

    def _finished(self, task: asyncio.Task) -> None:
        """The task's outcome, shown: done, stopped, a model's failure, or any other exception with its traceback."""
        try:
            self._show_trace()  # first: "Done" means everything is on screen
            if task.cancelled():
                self._say(f"Stopped. {len(self.records)} finished call(s) kept below.", error=True)
            elif task.exception() is None and self.result is not None and self.plan is not None:
                r, cached = self.result, sum(c.cached for c in self.result.trace)
                from_cache = f" ({cached} from the cache)" if cached else ""
                for layer in range(len(r.layers), len(self.plan.proposers)):  # skipped by an early stop
                    for i, slot in enumerate(self.slots[layer]):
                        slot.value = _slot_html(None, self.plan.proposers[layer][i], i, "skipped (early stop)")
                notes = "".join(f"\n{note}" for note in r.notes)
                if r.layers and r.text:  # what the answer took from which reference (the run's similarity)
                    self.attribution.value = r.attribution()._repr_html_()
                self.next_turn_button.disabled = False
                self._say(
                    f"Done: {len(r.trace)} calls{from_cache} in {r.seconds:.1f} s; first token "
                    f"{self.first_token_seconds or 0:.2f} s after Run.{notes}"
                )
            elif isinstance(task.exception(), MoAError):
                self.error = task.exception()
                self._say(f"Failed: {self.error}", error=True)
                if self.records and self.records[-1].role == "aggregator" and not self.records[-1].ok:
                    self.final.value += _pre(self.records[-1].error or "", "color:#b00")
            else:
                self.error = exc = task.exception()
                assert exc is not None  # not cancelled, and it raised
                text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                self._say(f"Error inside the run: {type(exc).__name__}: {exc}\n\n{text}", error=True)
        except Exception as exc:  # noqa: BLE001 - a display bug must not vanish into the loop's log
            self._say(f"Error showing the run's outcome: {type(exc).__name__}: {exc}", error=True)
        finally:
            self.run_button.disabled, self.stop_button.disabled = False, True

    def _show_trace(self) -> None:
        calls = self.result.trace if self.result else sorted(self.records, key=lambda c: (c.layer, c.index))
        if not calls:
            return
        self.trace.value = "<b>Trace</b>" + trace_table(calls).html
        if any(c.started for c in calls):
            self.timeline.value, self.timeline.layout.display = timeline_png(calls), None

    def _say(self, text: str, error: bool = False) -> None:
        self.message = text
        self.status.value = _pre(text, "color:#b00" if error else "color:#333")

    # --- the run's settings, to reproduce it ----------------------------------------------------------------

    def settings_text(self, fmt: str = _FORMATS[0]) -> str:
        """The last run's settings as papermill parameters (a dict) or a ``run_moa(...)`` call; '' before a run."""
        if self.plan is None:
            return ""
        if fmt == _FORMATS[2]:
            return "# save as my.yaml; then: moa-lab ask --recipe my.yaml PROMPT\n" + Recipe.from_plan(self.plan).text()
        return self.plan.to_code() if fmt == _FORMATS[1] else self.plan.parameters_text()

    def save_recipe(self, path: str | os.PathLike) -> Path:
        """Save the last run's recipe (its models and settings, without the prompt) as YAML, or JSON for a
        ``.json`` name: ``moa-lab ask --recipe``, ``moa-lab serve --recipe`` and the notebooks load it."""
        if self.plan is None:
            raise ValueError("no run yet: run one first, then save its recipe")
        return Recipe.from_plan(self.plan).save(path)

    def _show_settings(self) -> None:
        text = self.settings_text(self.copy_format.value)
        if not text:
            self.copy_area.value = "<i style='color:#777'>The settings of the last run appear here.</i>"
            return
        copy = (
            "navigator.clipboard.writeText(this.parentElement.querySelector('textarea').value)"
            ".then(() => { this.textContent = 'Copied'; }, () => { this.textContent = 'Copy failed: select "
            "the text and press Ctrl+C'; })"
        )
        rows = text.count("\n") + 2
        self.copy_area.value = (
            f'<textarea readonly rows="{rows}" '
            'style="width:100%;box-sizing:border-box;font-family:monospace;font-size:0.85em">'
            f"{html.escape(text)}</textarea>"
            f'<button class="moa-copy-button" onclick="{html.escape(copy)}">Copy to clipboard</button>'
        )
