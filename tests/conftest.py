import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fault_server import FaultServer  # noqa: E402

import moa_lab  # noqa: E402
from moa_lab.sweeps._kernel import kernel_manager_class  # noqa: E402

MOA = [str(Path(sys.executable).parent / "moa-lab")]  # the CLI of the environment running the tests
ENV = (
    "TOGETHER_API_KEY",
    "TOGETHER_BASE_URL",
    "MOA_LAB_MODEL_URLS",
    "MOA_LAB_PROPOSERS",
    "MOA_LAB_AGGREGATOR",
    "MOA_LAB_BASE_URL",
    "MOA_LAB_API_KEY",
    "MOA_LAB_MODELS",
    "RAY_ADDRESS",  # a user's cluster: the tests use only the one they start, by its address
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """Tests choose their backend explicitly; the developer's environment must not leak in. Each test has
    its own answers cache (on, as by default), so that no test is answered from another's calls."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MOA_LAB_CACHE", str(tmp_path / "moa_cache.sqlite"))


@pytest.fixture
def fault():
    with FaultServer() as server:
        yield server


@pytest.fixture
def remote(fault):
    return moa_lab.get_backend(fault.url)


@pytest.fixture(scope="session")
def local():
    """The real embedded server with the bundled models, shared by the session."""
    backend = moa_lab.get_backend("local")
    backend.server.start()
    yield backend
    backend.server.stop()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server a test starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(coro):
    return moa_lab.moa.run_sync(coro)


def write_jsonl(path: Path, n: int) -> Path:
    """A batch input of n prompts with ids p0, p1, ..."""
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Question {i}?"}) + "\n" for i in range(n)))
    return path


NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute_notebook(name: str, folder: Path, **parameters):
    """Run ``notebooks/<name>.ipynb`` under papermill in ``folder``; the executed copy is saved there as
    ``<name>.out.ipynb`` and returned."""
    import nbformat
    import papermill

    out = folder / f"{name}.out.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"),
        str(out),
        parameters=parameters,
        kernel_name="python3",
        kernel_manager_class=kernel_manager_class(),  # this Python's, whatever "python3" names for Jupyter
        cwd=str(folder),
        progress_bar=False,
    )
    return nbformat.read(out, as_version=4)


def default_sigint() -> None:
    """``preexec_fn`` of a child that a test sends Ctrl-C (SIGINT): the default disposition, as a terminal gives
    it. pytest-xdist's workers, and anything a non-interactive shell starts in the background (``cmd &``, a CI
    runner), ignore SIGINT, and a Python started so never turns SIGINT into KeyboardInterrupt."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_kernel():
    """A kernel in this Python (not whatever Jupyter finds under "python3"), started, with its client ready."""
    from jupyter_client.manager import KernelManager

    km = kernel_manager_class(KernelManager)()
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
    except RuntimeError:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        raise
    return km, kc


def check_table(path: Path, table: str) -> None:
    """A table a test generated must be the one committed (and documented); ``MOA_LAB_WRITE_TABLES=1`` rewrites
    it after a deliberate change, to be reviewed in the diff."""
    if os.environ.get("MOA_LAB_WRITE_TABLES"):
        path.write_text(table)
    print(table)
    assert path.exists() and path.read_text() == table, (
        f"{path.name} changed: see the diff, then rewrite it with MOA_LAB_WRITE_TABLES=1 if the change is meant"
    )


def text_of(cell) -> str:
    """Everything a cell printed or displayed as text."""
    parts = []
    for output in cell.get("outputs", []):
        parts.append("".join(output.get("text", "")))
        data = output.get("data", {})
        parts.append("".join(data.get("text/markdown", data.get("text/plain", ""))))
        parts.append(output.get("evalue", ""))
    return "".join(parts)


def all_text(nb) -> str:
    return "\n".join(text_of(c) for c in nb.cells if c.cell_type == "code")


def click_and_wait(panel) -> None:
    """Click the playground's Run and wait for the run to end (asserting the buttons while it runs)."""

    async def scenario():
        panel.run_button.click()
        assert panel.run_button.disabled and not panel.stop_button.disabled  # while it runs
        await panel.wait()

    run(scenario())
