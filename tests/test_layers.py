"""The package's architecture, checked: no import circle, and imports flow one way, from the layers a README reader
sees (README: Design) down to the foundations, never up. Every import counts, deferred or for type checking."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "moa_lab"

#: Lowest first. A module may import from its own layer and the layers below it, never from a layer above.
LAYERS = {
    "foundations": [
        "_unicode",
        "_jsonl",
        "_logs",
        "_config_files",
        "_conversation",
        "prompts",
        "_similarity",
        "_attribution",
        "_answers",
        "_rendering",
        "_cache",
        "_limits",
    ],
    "settings": ["_settings"],
    "records": ["_records", "_usage", "_trace", "_results", "_validation"],
    "engine": ["engine"],
    "calls": ["_backends", "_sync", "_budget", "_calls", "_plan", "_recipe", "_estimate"],
    "recipe": ["_combine", "moa"],
    "runs": ["runs"],
    "sweeps and evaluate": ["sweeps", "evaluate"],
    "views": ["views"],
    "serve": ["serve"],
    "cli": ["_terminal_chat", "_cli", "__main__", "_deprecated", "__init__"],
}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports (a package's __init__ importing its own children excluded)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = (
                ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
                if node.level
                else (node.module or "")
            )
            for alias in node.names:
                target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                if target in known:
                    out.add(target)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
    return {t for t in out if t != name and not name.startswith(t + ".")}


def layer_of(module: str) -> int:
    parts = module.split(".")
    head = parts[1] if len(parts) > 1 else "__init__"
    for rank, members in enumerate(LAYERS.values()):
        if head in members:
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS (and to README's Design)")


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_every_module_has_a_layer_and_imports_only_its_own_or_lower_ones():
    names = list(LAYERS)
    upward = [
        f"{m} ({names[layer_of(m)]}) imports {t} ({names[layer_of(t)]})"
        for m, targets in graph().items()
        for t in sorted(targets)
        if layer_of(t) > layer_of(m)
    ]
    assert upward == []


def test_no_import_circle():
    edges, circles, index, low, stack, on = graph(), [], {}, {}, [], set()

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert circles == []


def test_the_check_finds_a_circle_and_an_upward_import(tmp_path, monkeypatch):
    """The checks can fail: a package whose settings import the CLI has both."""
    package = tmp_path / "moa_lab"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "_settings.py").write_text("from moa_lab._cli import main\n")
    (package / "_cli.py").write_text("from moa_lab import _settings\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", package)
    import pytest

    with pytest.raises(AssertionError, match="moa_lab._settings .settings. imports moa_lab._cli .cli."):
        test_every_module_has_a_layer_and_imports_only_its_own_or_lower_ones()
    with pytest.raises(AssertionError, match="moa_lab._cli.*moa_lab._settings"):
        test_no_import_circle()


def test_no_module_over_300_lines_without_a_reason_at_its_top():
    long = [
        f"{path.relative_to(PACKAGE.parent)} ({n} lines)"
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 300
        and "Over 300 lines:" not in path.read_text(encoding="utf-8")[:2000]
    ]
    assert long == []


def long_positional_calls(package: Path) -> list[str]:
    return [
        f"{path.relative_to(package.parent)}:{node.lineno} {ast.unparse(node.func)}(... {len(node.args)} positional)"
        for path in sorted(package.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and len(node.args) >= 7
    ]


def test_no_call_passes_seven_or_more_positional_arguments(tmp_path):
    """Options travel as keywords or one object (RayOptions, BatchJob), never as a long row of positions."""
    assert long_positional_calls(PACKAGE) == []
    (tmp_path / "moa_lab").mkdir()
    (tmp_path / "moa_lab" / "x.py").write_text("f(1, 2, 3, 4, 5, 6)\ng(1, 2, 3, 4, 5, 6, 7)\n")
    assert long_positional_calls(tmp_path / "moa_lab") == ["moa_lab/x.py:2 g(... 7 positional)"]
