import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fault_server import FaultServer  # noqa: E402

import moa_lab  # noqa: E402

ENV = ("TOGETHER_API_KEY", "TOGETHER_BASE_URL", "MOA_LAB_MODEL_URLS", "MOA_LAB_PROPOSERS", "MOA_LAB_AGGREGATOR")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """Tests choose their backend explicitly; the developer's environment must not leak in."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


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


def run(coro):
    return moa_lab.run_sync(coro)
