"""The public API, pinned (as httpx's tests/test_exported_members.py): what ``moa_lab`` exports, that each public
folder's ``__init__`` lists its names sorted, that implementation modules are private, that the notebooks import
public names only, that ``*_sync`` keeps its coroutine's signature, and that the previous release's paths still
work one release, with a warning naming the new one."""

import ast
import importlib
import inspect
import sys
import warnings
from pathlib import Path

import pytest

import moa_lab

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "moa_lab"
#: The public modules: the package, its folders (each with an ``__init__`` listing its names), and the two modules at
#: the top that a reader opens (the algorithm; the prompts). Everything else is ``_private``.
PUBLIC = [
    "moa_lab",
    "moa_lab.engine",
    "moa_lab.evaluate",
    "moa_lab.moa",
    "moa_lab.prompts",
    "moa_lab.runs",
    "moa_lab.serve",
    "moa_lab.sweeps",
    "moa_lab.views",
]


def test_the_package_exports_these_names_and_no_others():
    """Promise 10: the public names, pinned."""
    assert moa_lab.__all__ == [
        "Backend",
        "BudgetExceeded",
        "CallRecord",
        "Estimate",
        "LayerResult",
        "MoAError",
        "MoAResult",
        "Recipe",
        "ResponseCache",
        "RunPlan",
        "Usage",
        "aggregate",
        "estimate",
        "get_backend",
        "get_cache",
        "plan_run",
        "read_results",
        "run_batch",
        "run_batch_sync",
        "run_layer",
        "run_layer_sync",
        "run_moa",
        "run_moa_sync",
        "run_plan",
        "set_prices",
    ]
    assert len(moa_lab.__all__) <= 25
    exported = {
        name for name in dir(moa_lab) if not name.startswith("_") and not inspect.ismodule(getattr(moa_lab, name))
    }
    assert exported == set(moa_lab.__all__)  # nothing else reachable at the top but the folders


@pytest.mark.parametrize("name", PUBLIC)
def test_each_public_module_lists_its_names_sorted_and_each_resolves(name):
    module = importlib.import_module(name)
    assert module.__all__ == sorted(module.__all__), f"{name}.__all__ is not sorted"
    assert len(set(module.__all__)) == len(module.__all__)
    for attr in module.__all__:
        assert getattr(module, attr) is not None, f"{name}.{attr}"
        assert not attr.startswith("_"), f"{name}.{attr}"


def test_implementation_modules_are_private():
    public = {name.replace(".", "/") for name in PUBLIC}
    loose = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(ROOT).with_suffix("")
        if path.name in ("__init__.py", "__main__.py") or path.stem.startswith("_") or str(relative) in public:
            continue
        loose.append(str(relative))
    assert loose == []


def public_names() -> dict[str, set[str]]:
    return {name: set(importlib.import_module(name).__all__) for name in PUBLIC}


def notebook_imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "moa_lab":
            yield node.lineno, node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "moa_lab":
                    yield node.lineno, a.name, []


def private_imports(paths) -> list[str]:
    names = public_names()
    bad = []
    for path in paths:
        for line, module, imported in notebook_imports(path):
            if module not in names:
                bad.append(f"{path.name}:{line} imports from {module}, not a public module")
            else:
                bad += [f"{path.name}:{line} {module}.{n} is not public" for n in imported if n not in names[module]]
    return bad


def test_the_notebooks_import_public_names_only(tmp_path):
    assert private_imports(sorted((ROOT / "notebooks").glob("*.py"))) == []
    # the check can fail: a private module, and a name that its module does not list
    lesson = tmp_path / "lesson.py"
    lesson.write_text("from moa_lab._cache import ResponseCache\nfrom moa_lab.runs import settings_id, nope\n")
    assert private_imports([lesson]) == [
        "lesson.py:1 imports from moa_lab._cache, not a public module",
        "lesson.py:2 moa_lab.runs.nope is not public",
    ]


@pytest.mark.parametrize(
    "sync, coroutine",
    [
        ("moa_lab.run_moa_sync", "moa_lab.run_moa"),
        ("moa_lab.run_layer_sync", "moa_lab.run_layer"),
        ("moa_lab.run_batch_sync", "moa_lab.run_batch"),
        ("moa_lab.sweeps.run_sweep_sync", "moa_lab.sweeps.run_sweep"),
        ("moa_lab.evaluate.evaluate_sync", "moa_lab.evaluate.evaluate"),
    ],
)
def test_a_sync_form_has_its_coroutines_signature_and_docstring(sync, coroutine):
    def find(dotted):
        module, _, name = dotted.rpartition(".")
        return getattr(importlib.import_module(module), name)

    sync_fn, coroutine_fn = find(sync), find(coroutine)
    assert inspect.signature(sync_fn) == inspect.signature(coroutine_fn)
    assert sync_fn.__name__ == sync.rpartition(".")[2] and not inspect.iscoroutinefunction(sync_fn)
    assert coroutine_fn.__doc__ in sync_fn.__doc__ and f":func:`{coroutine_fn.__name__}`" in sync_fn.__doc__


def test_the_previous_releases_paths_work_one_release_with_a_warning_naming_the_new_one():
    """Promise 10: the previous release's paths, one release more."""
    for old in ("moa_lab.widgets", "moa_lab.sweep", "moa_lab.cache", "moa_lab.evaluate.benchmark", "moa_lab.endpoint"):
        sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=r"moa_lab\.widgets is no longer a public module: .* moa_lab\.views"):
        from moa_lab.widgets import Playground
    assert Playground is importlib.import_module("moa_lab.views._playground").Playground
    with pytest.warns(DeprecationWarning, match=r"moa_lab\.sweep .*moa_lab\.sweeps"):
        import moa_lab.sweep
    assert moa_lab.sweep is importlib.import_module("moa_lab.sweeps")  # the same module, not a second copy
    with pytest.warns(DeprecationWarning, match=r"moa_lab\.cache .*from moa_lab "):
        from moa_lab.cache import ResponseCache
    assert ResponseCache is moa_lab.ResponseCache
    with pytest.warns(DeprecationWarning, match=r"moa_lab\.evaluate\.benchmark .*moa_lab\.evaluate "):
        from moa_lab.evaluate.benchmark import run_benchmark
    assert run_benchmark is importlib.import_module("moa_lab.evaluate").run_benchmark
    with pytest.warns(DeprecationWarning, match=r"moa_lab\.endpoint .*moa_lab\.serve"):
        from moa_lab.endpoint import MoAEndpoint
    assert MoAEndpoint is importlib.import_module("moa_lab.serve").MoAEndpoint
    with pytest.warns(
        DeprecationWarning, match=r"moa_lab\.SEED_PROPOSERS moved: use moa_lab\.moa\.REFERENCE_PROPOSERS"
    ):
        assert moa_lab.SEED_PROPOSERS == importlib.import_module("moa_lab.moa").REFERENCE_PROPOSERS
    with pytest.warns(DeprecationWarning, match=r"moa_lab\.check_output_path moved: use moa_lab\.runs\.check_output"):
        from moa_lab import check_output_path
    assert check_output_path is importlib.import_module("moa_lab.runs").check_output_path
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError, match="module 'moa_lab' has no attribute 'nope'"):
            moa_lab.nope  # noqa: B018 - the attribute access is the test


def test_run_batchs_ray_keywords_of_the_previous_release_work_one_release_as_ray_options(tmp_path):
    with pytest.warns(DeprecationWarning, match=r"run_batch\(actors=...\) is deprecated: pass engine=RayOptions"):
        with pytest.raises(ValueError, match="actors must be an integer >= 1, got 0"):
            moa_lab.run_batch_sync(["q"], tmp_path / "out", ["a"], "b", engine="ray", actors=0)
    assert not (tmp_path / "out").exists()  # refused before anything ran or was written
