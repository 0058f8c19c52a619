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
from conftest import MOA, NOTEBOOKS, default_sigint, run

from moa_lab.sweeps import load_sweep, plan_sweep, run_sweep

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
@pytest.mark.kernel
def test_a_2x2_sweep_killed_mid_way_resumes_to_each_point_exactly_once(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC)
    outdir = tmp_path / "out"
    command = MOA + [
        "sweep",
        str(NOTEBOOKS / "01_two_layer_moa.ipynb"),
        "spec.yaml",
        "out",
        "--jobs",
        "2",
        "--no-progress",
    ]
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
        (t, json.dumps(p)) for t in (0.2, 0.7) for p in ([S, G], [S])
    )
    assert sorted(table["calls"]) == [2, 2, 3, 3] and (table["completion_tokens"] <= 8 * table["calls"]).all()
    assert pd.read_csv(outdir / "results.csv")["point"].tolist() == table["point"].tolist()
    assert pd.read_parquet(outdir / "results.parquet").equals(table)
    for name in final:  # the executed notebook and its summary, beside each other
        folder = outdir / "points" / name
        assert (folder / "notebook.ipynb").is_file() and json.loads((folder / "summary.json").read_text())["final"]


@pytest.mark.local
@pytest.mark.kernel
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
    from moa_lab.sweeps._run import _inputs

    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.jsonl").write_text("{}\n")
    (tmp_path / "tests").mkdir()
    given = {"prompts_path": "prompts.jsonl", "prompt": "tests", "output_path": "prompts.jsonl", "tasks_path": "gone"}
    assert _inputs(given) == {
        "prompts_path": str(tmp_path / "prompts.jsonl"),
        "prompt": "tests",
        "output_path": "prompts.jsonl",
        "tasks_path": "gone",
    }


def test_load_sweep_of_a_folder_without_a_sweep(tmp_path):
    with pytest.raises(ValueError, match="holds no sweep"):
        load_sweep(tmp_path)


def test_a_zip_and_seeds_make_the_points_in_order():
    sweep = plan_sweep(
        "02_three_layer_moa",
        {"zip": {"layers": [2, 3], "max_tokens": [8, 16]}, "seeds": [0, 1], "parameters": {"prompt": "Hi"}},
        "/nonexistent/out",
    )
    assert [p.swept for p in sweep.points] == [
        {"layers": 2, "max_tokens": 8, "seed": 0},
        {"layers": 2, "max_tokens": 8, "seed": 1},
        {"layers": 3, "max_tokens": 16, "seed": 0},
        {"layers": 3, "max_tokens": 16, "seed": 1},
    ]
    assert all(p.parameters["prompt"] == "Hi" for p in sweep.points)
    assert [b.calls for b in sweep.estimate()] == [5, 5, 9, 9]  # the backend's 4 default proposers
    assert len({p.id for p in sweep.points}) == 4 and sweep.points[0].id.startswith("layers=2,max_tokens=8,seed=0-")
    assert not Path("/nonexistent/out").exists()
    assert os.environ.get("MOA_LAB_LOCAL_URL") is None


UNUSUAL = ["今日は何をしますか？", "Name a colour 🎨", "line\u2028separated\u2029text\x85here"]


@pytest.mark.local
@pytest.mark.kernel
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


def small_notebook(path: Path, parameters: str, body: str) -> Path:
    """A notebook of two cells: ``parameters`` (tagged) and ``body``."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(body),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


#: A point that sleeps while the file ``hold`` exists (at most a minute): a point that is running when a test acts.
HOLD = small_notebook.__doc__ and (
    "hold = ''\nn = 0",
    "import os, time\nt = time.monotonic()\n"
    "while hold and os.path.exists(hold) and time.monotonic() - t < 60:\n"
    "    time.sleep(0.1)\nprint('point', n)",
)


def no_server(monkeypatch, fault=None) -> dict:
    """A backend that needs no embedded server (the points make no call): the sweep starts none."""
    url = fault.url if fault is not None else "http://127.0.0.1:9"
    monkeypatch.setenv("MOA_LAB_BASE_URL", url)
    return {**os.environ, "MOA_LAB_BASE_URL": url}


def wait_until(condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.kernel
def test_a_second_sweep_on_the_same_outdir_is_refused_while_the_first_runs(tmp_path, monkeypatch):
    env = no_server(monkeypatch)
    notebook = small_notebook(tmp_path / "hold.ipynb", *HOLD)
    hold = tmp_path / "hold"
    hold.write_text("")
    (tmp_path / "spec.json").write_text(json.dumps({"parameters": {"hold": str(hold)}, "grid": {"n": [1]}}))
    command = MOA + ["sweep", str(notebook), "spec.json", "out", "--no-progress"]
    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: list((tmp_path / "out" / "points").glob("*")))  # its point is running
        second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "is in use by another sweep" in second.stderr, second.stderr
        (point,) = (tmp_path / "out" / "points").iterdir()
        assert point.is_dir() and not (point / "status.json").exists()  # the running point was left alone
    finally:
        hold.unlink()
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0 and "1 points done, 0 failed" in out, err


@pytest.mark.local
@pytest.mark.kernel
def test_ctrl_c_leaves_the_running_point_unfinished_and_stops_its_kernel(tmp_path):
    """Ctrl-C reaches the whole foreground process group (the sweep, and before, its embedded server): the sweep
    exits 130, the running point has no status (a rerun runs it), its kernel and the server are gone."""
    notebook = small_notebook(tmp_path / "hold.ipynb", *HOLD)
    hold = tmp_path / "hold"
    hold.write_text("")
    (tmp_path / "spec.json").write_text(json.dumps({"parameters": {"hold": str(hold)}, "grid": {"n": [1, 2]}}))
    command = MOA + ["sweep", str(notebook), "spec.json", "out", "--jobs", "2", "--no-progress"]
    sweep = subprocess.Popen(
        command,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal gives a command
        preexec_fn=default_sigint,  # and Ctrl-C's default meaning, however the tests were started
    )
    wait_until(
        lambda: (
            len(
                [
                    p
                    for p in psutil.Process(sweep.pid).children(recursive=True)
                    if "ipykernel_launcher" in " ".join(p.cmdline())
                ]
            )
            == 2
        ),
        120,
    )
    children = psutil.Process(sweep.pid).children(recursive=True)
    assert any("moa_lab serve" in " ".join(p.cmdline()) for p in children)  # the embedded server runs
    os.killpg(sweep.pid, signal.SIGINT)
    out, err = sweep.communicate(timeout=60)
    assert sweep.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert statuses(tmp_path / "out") == {}  # both points unfinished: not recorded failed
    _, alive = psutil.wait_procs(children, timeout=20)
    assert alive == [], [p.cmdline() for p in alive]  # kernels, server and its workers all stopped
    hold.unlink()
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "2 points done, 0 failed, 0 finished before" in again.stdout, again.stderr


@pytest.mark.local
@pytest.mark.kernel
def test_the_shared_server_killed_after_a_point_is_started_again_and_relative_models_paths_work(tmp_path, monkeypatch):
    """Your model given by a relative MOA_LAB_MODELS path (the kernels run in their point folders), and the
    sweep's embedded server SIGKILLed after the first point: started again on its port, every point answers."""
    from moa_lab.engine._local import default_server, model_path

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mine.gguf").symlink_to(model_path(S))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOA_LAB_MODELS", "mine=models/mine.gguf")
    body = (
        "import moa_lab\n"
        "r = moa_lab.run_moa_sync('Say hi', ['mine'], 'mine', max_tokens=4, cache=False, retries=0, seed=n)\n"
        "print(r.text)"
    )
    notebook = small_notebook(tmp_path / "call.ipynb", "n = 0", body)
    server = default_server()
    killed = []

    def kill_after_the_first_point() -> None:
        wait_until(lambda: statuses(tmp_path / "out"), 240)
        killed.append((server.url, server._proc.pid))
        server._proc.kill()

    import threading

    watcher = threading.Thread(target=kill_after_the_first_point, daemon=True)
    watcher.start()
    summary = run(run_sweep(notebook, {"grid": {"n": [1, 2, 3]}}, "out", jobs=1, progress=False))
    watcher.join(timeout=5)
    assert killed and summary.done == 3 and summary.failed == 0, summary.table.to_dict("records")
    assert server.restarts >= 1 and server.url == killed[0][0] and server._proc.pid != killed[0][1]
    server.stop()


@pytest.mark.kernel
def test_a_full_disk_stops_the_sweep_with_one_message_and_starts_no_new_kernel(tmp_path, monkeypatch):
    """Files may not grow past 80 KiB (a disk that fills): the second point's notebook cannot be written; the
    sweep stops saying so, that point is left unfinished (nothing torn) and the third never starts."""
    import resource

    env = no_server(monkeypatch)
    notebook = small_notebook(tmp_path / "big.ipynb", "size = 1", "print('x' * size)")
    (tmp_path / "spec.json").write_text(json.dumps({"grid": {"size": [10, 200_000, 20]}}))

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (80 * 1024, 80 * 1024))

    done = subprocess.run(
        MOA + ["sweep", str(notebook), "spec.json", "out", "--jobs", "1", "--no-progress"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit,
    )
    assert done.returncode == 1 and "File too large; the sweep stopped" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    points = sorted((tmp_path / "out" / "points").iterdir())
    assert len(points) == 2  # the third point's kernel never started
    first, second = sorted(points, key=lambda p: "size=10-" not in p.name)
    assert (first / "status.json").exists() and not (second / "status.json").exists()
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_every_notebook_dry_runs(tmp_path):
    for notebook in sorted(NOTEBOOKS.glob("*.ipynb")):
        described = plan_sweep(notebook, {}, tmp_path / "out").describe()
        assert described.startswith(f"1 points of {notebook}"), described
    (tmp_path / "spec.yaml").write_text("grid: {n: [2, 3]}\n")
    dry = subprocess.run(
        MOA + ["sweep", str(NOTEBOOKS / "07_moa_variants.ipynb"), "spec.yaml", "out", "--dry-run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dry.returncode == 0 and "2 points of" in dry.stdout and "no estimate" in dry.stdout, dry.stderr
    assert not (tmp_path / "out").exists()


def test_the_py_of_a_pair_in_sync_runs_its_ipynb(tmp_path):
    for suffix in (".py", ".ipynb"):
        shutil.copy(NOTEBOOKS / f"01_two_layer_moa{suffix}", tmp_path / f"nb{suffix}")
    sweep = plan_sweep(tmp_path / "nb.py", {"grid": {"seed": [1]}}, tmp_path / "out")
    assert sweep.notebook == (tmp_path / "nb.ipynb").resolve()


@pytest.mark.kernel
def test_points_run_in_this_python_whatever_kernel_jupyter_finds_under_python3(tmp_path, monkeypatch):
    """Hardening 19: a user-level "python3" kernel of another Python (a conda base, a ``pip --user`` install)
    comes first in Jupyter's search; the points still run in the Python that runs the sweep. And hardening 24: two
    points at once, after a notebook ran in the sweep's own thread (jupyter_core's event loop kept in its
    context), each get a loop of their own: before, all but one failed with "This event loop is already running"
    (the CJK sweep test's "async_start_new_kernel was never awaited")."""
    import sys

    from jupyter_core.utils import ensure_event_loop

    ensure_event_loop()  # what a papermill run in this thread leaves behind

    other = Path(os.path.realpath(sys.executable))  # the venv's base interpreter: no moa_lab, no ipykernel
    assert Path(sys.prefix) != Path(sys.base_prefix), "the tests run in a virtual environment"
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    kernel = {"argv": [str(other), "-m", "ipykernel_launcher", "-f", "{connection_file}"], "display_name": "Python 3",
              "language": "python"}  # fmt: skip
    (spec_dir / "kernel.json").write_text(json.dumps(kernel))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    no_server(monkeypatch)
    notebook = small_notebook(tmp_path / "where.ipynb", "n = 0", "import sys, moa_lab\nprint(sys.executable, n)")
    summary = run(run_sweep(notebook, {"grid": {"n": [1, 2, 3]}}, tmp_path / "out", jobs=2, progress=False))
    errors = [json.loads((p / "status.json").read_text())["error"] for p in (tmp_path / "out" / "points").iterdir()]
    assert summary.failed == 0 and errors == [None] * 3, errors
    for point in (tmp_path / "out" / "points").iterdir():
        assert sys.executable in (point / "notebook.ipynb").read_text()
