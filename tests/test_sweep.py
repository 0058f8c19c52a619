"""Sweeps: a notebook run for every point of a grid, on the bundled models, through the CLI and the API; killed
with SIGKILL and resumed to exactly one row per point; failed points kept; a changed notebook refused."""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from conftest import MOA, NOTEBOOKS, run

from moa_lab.sweep import load_sweep, plan_sweep, run_sweep

S, G = "smollm2-135m", "gemma3-270m"
SPEC = """\
parameters:
  prompt: "Name one colour."
  max_tokens: 8
grid:
  temperature: [0.2, 0.7]
  proposers: [[smollm2-135m, gemma3-270m], [smollm2-135m]]
"""


def statuses(outdir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (outdir / "points").glob("*/status.json")}


def kernels_and_servers() -> set[int]:
    """Every ipykernel, embedded server and llama.cpp worker process on this machine, by pid."""
    found = set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if "ipykernel_launcher" in line or "moa_lab serve" in line or "llama_cpp.server" in line:
            found.add(proc.info["pid"])
    return found


@pytest.mark.local
def test_a_2x2_sweep_killed_mid_way_resumes_to_each_point_exactly_once(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC)
    outdir = tmp_path / "out"
    command = MOA + ["sweep", str(NOTEBOOKS / "01_two_layer_moa.ipynb"), "spec.yaml", "out", "--jobs", "2",
                     "--no-progress"]
    before = kernels_and_servers()
    dry = subprocess.run(command + ["--dry-run"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0 and "4 points of" in dry.stdout and "in all: 10 model calls" in dry.stdout
    assert not outdir.exists()  # a dry run writes nothing

    sweep = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not statuses(outdir) and time.monotonic() < deadline:  # at least one point finished
        time.sleep(0.1)
    children = {p.pid for p in psutil.Process(sweep.pid).children(recursive=True)}
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    first = statuses(outdir)
    assert 1 <= len(first) < 4, first  # killed mid-way: some points finished, not all
    assert len(children) >= 3  # the kernels running and the shared embedded server with its workers
    deadline = time.monotonic() + 30
    while (kernels_and_servers() - before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert kernels_and_servers() - before == set()  # no kernel or server outlives the sweep

    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{4 - len(first)} points done, 0 failed, {len(first)} finished before, of 4" in again.stdout
    final = statuses(outdir)
    assert set(final) >= set(first) and len(final) == 4
    for name, state in first.items():  # a point finished before the kill was not run again
        assert final[name]["finished"] == state["finished"]
    table = load_sweep(outdir)
    assert len(table) == 4 and table["point"].is_unique and set(table["point"]) == set(final)
    assert (table["status"] == "ok").all()
    assert sorted(zip(table["temperature"], table["proposers"])) == sorted(
        (t, json.dumps(p)) for t in (0.2, 0.7) for p in ([S, G], [S]))
    assert sorted(table["calls"]) == [2, 2, 3, 3] and (table["completion_tokens"] <= 8 * table["calls"]).all()
    assert pd.read_csv(outdir / "results.csv")["point"].tolist() == table["point"].tolist()
    assert pd.read_parquet(outdir / "results.parquet").equals(table)
    for name in final:  # the executed notebook and its summary, beside each other
        folder = outdir / "points" / name
        assert (folder / "notebook.ipynb").is_file() and json.loads((folder / "summary.json").read_text())["final"]


@pytest.mark.local
def test_a_failed_point_keeps_its_notebook_and_error_and_runs_again_only_when_asked(tmp_path):
    notebook = tmp_path / "01.ipynb"
    shutil.copy(NOTEBOOKS / "01_two_layer_moa.ipynb", notebook)
    spec = {"grid": {"temperature": [5.0]}}  # refused by the notebook's check cell: a quick failure, no call
    summary = run(run_sweep(notebook, spec, tmp_path / "out", progress=False, html=True))
    assert (summary.done, summary.failed) == (0, 1)
    (row,) = summary.table.to_dict("records")
    assert row["status"] == "failed" and "ValueError: temperature must be a number in [0, 2], got 5.0" in row["error"]
    folder = tmp_path / "out" / "points" / row["point"]
    assert "temperature must be" in (folder / "notebook.ipynb").read_text()  # the cell's error, kept
    assert (folder / "notebook.html").read_text().startswith("<!DOCTYPE html>")
    assert run(run_sweep(notebook, spec, tmp_path / "out", progress=False)).skipped == 1  # not again
    retried = run(run_sweep(notebook, spec, tmp_path / "out", progress=False, retry_failed=True))
    assert (retried.skipped, retried.failed, len(retried.table)) == (0, 1, 1)  # again, still one row

    more = {"grid": {"temperature": [5.0, 6.0]}}  # the spec grew: only the new point runs
    grown = run(run_sweep(notebook, more, tmp_path / "out", progress=False))
    assert (grown.skipped, grown.failed, len(grown.table)) == (1, 1, 2)
    nb = json.loads(notebook.read_text())  # the notebook changed: its old points ran other cells
    nb["cells"].append({"cell_type": "markdown", "id": "new-cell", "metadata": {}, "source": "A new cell."})
    notebook.write_text(json.dumps(nb))
    with pytest.raises(ValueError, match="the notebook 01.ipynb changed since the sweep in .* ran"):
        plan_sweep(notebook, more, tmp_path / "out")
    assert len(load_sweep(tmp_path / "out")) == 2  # its results can still be read
    notebook.unlink()
    assert list(load_sweep(tmp_path / "out")["status"]) == ["failed", "failed"]  # from the folders alone


def test_only_path_parameters_are_made_absolute(tmp_path, monkeypatch):
    from moa_lab.sweep import _inputs

    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.jsonl").write_text("{}\n")
    (tmp_path / "tests").mkdir()
    given = {"prompts_path": "prompts.jsonl", "prompt": "tests", "output_path": "prompts.jsonl", "tasks_path": "gone"}
    assert _inputs(given) == {"prompts_path": str(tmp_path / "prompts.jsonl"), "prompt": "tests",
                              "output_path": "prompts.jsonl", "tasks_path": "gone"}


def test_load_sweep_of_a_folder_without_a_sweep(tmp_path):
    with pytest.raises(ValueError, match="holds no sweep"):
        load_sweep(tmp_path)


def test_a_zip_and_seeds_make_the_points_in_order():
    sweep = plan_sweep("02_three_layer_moa", {"zip": {"layers": [2, 3], "max_tokens": [8, 16]}, "seeds": [0, 1],
                                               "parameters": {"prompt": "Hi"}}, "/nonexistent/out")
    assert [p.swept for p in sweep.points] == [{"layers": 2, "max_tokens": 8, "seed": 0},
                                               {"layers": 2, "max_tokens": 8, "seed": 1},
                                               {"layers": 3, "max_tokens": 16, "seed": 0},
                                               {"layers": 3, "max_tokens": 16, "seed": 1}]
    assert all(p.parameters["prompt"] == "Hi" for p in sweep.points)
    assert [b.calls for b in sweep.estimate()] == [5, 5, 9, 9]  # the backend's 4 default proposers
    assert len({p.id for p in sweep.points}) == 4 and sweep.points[0].id.startswith("layers=2,max_tokens=8,seed=0-")
    assert not Path("/nonexistent/out").exists()
    assert os.environ.get("MOA_LAB_LOCAL_URL") is None


UNUSUAL = ["今日は何をしますか？", "Name a colour 🎨", "line\u2028separated\u2029text\x85here"]


@pytest.mark.local
def test_prompts_in_cjk_emoji_and_line_separators_travel_to_the_notebook_and_back(tmp_path):
    """Folder names stay ASCII, and each prompt reaches the kernel, sweep.json and the table unchanged. The points
    fail at the notebook's check (temperature 5): a quick round trip through papermill, without a model call."""
    spec = {"zip": {"prompt": UNUSUAL}, "parameters": {"temperature": 5.0}}
    summary = run(run_sweep("01_two_layer_moa", spec, tmp_path / "out", jobs=2, progress=False))
    assert summary.failed == 3 and len(summary.table) == 3
    assert list(summary.table["prompt"]) == UNUSUAL and list(load_sweep(tmp_path / "out")["prompt"]) == UNUSUAL
    folders = [p.name for p in (tmp_path / "out" / "points").iterdir()]
    assert len(folders) == 3 and all(name.isascii() for name in folders)
    saved = (tmp_path / "out" / "sweep.json").read_text(encoding="utf-8")
    assert "\u2028" not in saved and saved.splitlines() == saved.rstrip("\n").split("\n")  # escaped: splits right
    for row in summary.table.to_dict("records"):
        executed = (tmp_path / "out" / "points" / row["point"] / "notebook.ipynb").read_text(encoding="utf-8")
        assert json.dumps(row["prompt"])[1:-1] in executed or row["prompt"] in executed


def test_a_lone_surrogate_in_a_swept_value_is_refused_before_any_kernel(tmp_path):
    with pytest.raises(ValueError, match=r"parameter 'prompt' holds a lone surrogate \(U\+DC00"):
        plan_sweep("01_two_layer_moa", {"zip": {"prompt": ["ok", "scraped \udc00 text"]}}, tmp_path / "out")
    assert not (tmp_path / "out").exists()
