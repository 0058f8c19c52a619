"""The project's files agree with each other: notebook pairs in sync and without outputs; environment.yml
names what pyproject.toml names."""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PAIRS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.py"))


def test_every_notebook_is_a_pair():
    assert PAIRS, "no notebooks found"
    assert sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")) == PAIRS


@pytest.mark.parametrize("name", PAIRS)
def test_committed_notebook_has_no_outputs(name):
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    params = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
    assert len(params) == 1, "one papermill parameters cell"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("source, target", [("py", "ipynb"), ("ipynb", "py")])
def test_pair_is_in_sync(tmp_path, monkeypatch, name, source, target):
    """Regenerate one side of the pair from the other (in a copy, with the project's jupytext.toml): it must
    come out as committed (byte for byte, but for the .ipynb's cell ids). `make sync` fixes a pair that is not."""
    shutil.copy(ROOT / "jupytext.toml", tmp_path)
    (tmp_path / "notebooks").mkdir()
    shutil.copy(ROOT / "notebooks" / f"{name}.{source}", tmp_path / "notebooks")
    fmt = "py:percent" if target == "py" else "ipynb"
    from jupytext.cli import jupytext  # its command line, in this process (a subprocess costs ~3 s of CPU)

    monkeypatch.chdir(tmp_path)
    assert jupytext(["--quiet", "--to", fmt, f"notebooks/{name}.{source}"]) in (None, 0)
    regenerated = (tmp_path / "notebooks" / f"{name}.{target}").read_text()
    committed = (ROOT / "notebooks" / f"{name}.{target}").read_text()
    if target == "ipynb":  # cell ids are random for cells made from text: compare all but them
        regenerated, committed = _without_ids(regenerated), _without_ids(committed)
    assert regenerated == committed, f"notebooks/{name}.{target} is out of sync with its .{source}: run `make sync`"


def _without_ids(text: str) -> dict:
    nb = json.loads(text)
    for cell in nb["cells"]:
        cell.pop("id", None)
    return nb


def _requirements(entries) -> dict[str, Requirement]:
    out = {}
    for entry in entries:
        if isinstance(entry, str) and not entry.startswith("-"):
            req = Requirement(entry)
            out[canonicalize_name(req.name)] = req
    return out


def test_environment_yml_names_every_dependency_of_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _requirements(project["dependencies"] + project["optional-dependencies"]["notebooks"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    have = {**_requirements(conda), **_requirements(pip)}
    assert {"python", "pip"} <= set(have)
    assert str(have["python"].specifier) == project["requires-python"]
    assert "-e .[pack]" in pip, "moa_lab itself, with the demo's models"
    for name, req in wanted.items():
        assert name in have, f"environment.yml lacks {req}"
        assert have[name].specifier == req.specifier and have[name].extras == req.extras, (
            f"environment.yml has {have[name]}, pyproject.toml {req}"
        )


@pytest.mark.parametrize("name", PAIRS)
def test_papermill_sees_every_parameter(name):
    """papermill parses the parameters cell itself (for --help-notebook and its checks); a line it cannot
    parse is silently unknown to it."""
    import ast

    import nbformat
    import papermill

    path = ROOT / "notebooks" / f"{name}.ipynb"
    cell = next(c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    assigned = {
        node.target.id if isinstance(node, ast.AnnAssign) else node.targets[0].id
        for node in ast.parse(cell.source).body
        if isinstance(node, (ast.Assign, ast.AnnAssign))
    }
    assert "max_tokens" in assigned and ({"prompt", "prompts_path", "tasks_path", "data_dir"} & assigned)  # read
    params = papermill.inspect_notebook(str(path))
    assert assigned == set(params), f"papermill cannot parse: {sorted(assigned - set(params))}"


def test_each_reliability_promise_names_tests_that_say_so():
    """docs/reliability.md: every ``tests/...py::test_name`` under "Promise N" exists, and says "Promise N" in its
    docstring or its module's; every promise names at least one test."""
    import ast
    import re

    page = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    sections = re.split(r"^## Promise (\d+)\. ", page, flags=re.M)[1:]
    assert [int(n) for n in sections[::2]] == list(range(1, len(sections) // 2 + 1)) and len(sections) >= 20
    problems = []
    for number, text in zip(sections[::2], sections[1::2]):
        refs = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", text)
        if not refs:
            problems.append(f"promise {number} names no test")
        for path, name in refs:
            file = ROOT / path
            if not file.exists():
                problems.append(f"promise {number}: {path} does not exist")
                continue
            tree = ast.parse(file.read_text(encoding="utf-8"))
            functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
            if name not in functions:
                problems.append(f"promise {number}: {path} has no {name}")
            elif f"Promise {number}" not in (ast.get_docstring(functions[name]) or "") + (
                ast.get_docstring(tree) or ""
            ):
                problems.append(f"promise {number}: {path}::{name} does not say 'Promise {number}'")
    assert problems == []
