"""A sweep's spec, checked and turned into points before anything runs (:func:`plan_sweep`): which notebook, its
parameters cell, every point's parameters and folder, and whether OUTDIR may hold it. No kernel, no file.

Over 300 lines: every check a spec gets before anything runs, and the points it makes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moa_lab._config_files import load_file
from moa_lab._estimate import estimate
from moa_lab._unicode import surrogate_error

SPEC_KEYS = ("parameters", "grid", "zip", "seeds")
#: A point is finished when its folder holds ``status.json``; OUTDIR's ``sweep.json`` records the sweep.
STATUS_FILE, SWEEP_FILE = "status.json", "sweep.json"
#: The parameters a sweep sets itself in each point's folder, unless the spec gives them.
OUTPUTS = {"output_path": "summary", "output_dir": "output"}
_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list": (list, tuple), "dict": (dict,)}


@dataclass(frozen=True)
class Point:
    """One run of the notebook: ``parameters`` are every parameter the sweep gives it; ``swept`` those that vary."""

    id: str
    parameters: dict = field(hash=False)
    swept: dict = field(hash=False)


@dataclass
class Sweep:
    """A checked sweep (:func:`plan_sweep`): the notebook, its content's hash, the spec and its points. Nothing
    has run or been written to make it."""

    notebook: Path
    notebook_hash: str
    spec: dict
    points: list[Point]
    outdir: Path
    declared: dict  # the notebook's parameters cell: name -> (type, default)
    changed: str | None = None  # how the spec differs from the last run's in OUTDIR (None: the same, or none)

    def folder(self, point: Point) -> Path:
        return self.outdir / "points" / point.id

    def status(self, point: Point) -> dict | None:
        """The finished point's status (``ok`` or ``failed``, error, seconds), or None if it has not finished."""
        return read_status(self.folder(point))

    def estimate(self, prices=None):
        """Each point's model calls and bounds (:func:`moa_lab._estimate`) where the notebook's MoA run is given by
        its ``prompt``, ``proposers`` and ``aggregator`` parameters (a notebook may make a few calls more); None
        for other notebooks (a playground, a sweep, an evaluation over a pool). No call."""

        if not {"prompt", "proposers", "aggregator"} <= set(self.declared):
            return None
        names = (
            "proposers",
            "aggregator",
            "layers",
            "temperature",
            "max_tokens",
            "system_prompt",
            "seed",
            "combine",
            "top_k",
            "window",
            "roles",
            "max_references",
        )
        out = []
        for point in self.points:
            args = {k: _value(self.declared, point.parameters, k) for k in names if k in self.declared}
            args.setdefault("layers", 2)
            out.append(
                estimate(
                    _value(self.declared, point.parameters, "prompt"),
                    args.pop("proposers"),
                    args.pop("aggregator"),
                    prices=prices,
                    **args,
                )
            )
        return out

    def describe(self, prices=None) -> str:
        """The points, one per line, and the calls/tokens/cost bound when it can be known (``--dry-run``)."""
        bounds = self.estimate(prices)
        lines = [f"{len(self.points)} points of {self.notebook} into {self.outdir}"]
        for number, point in enumerate(self.points):
            state = self.status(point)
            done = f"  [{state['status']}]" if state else ""
            bound = f"  ({bounds[number].calls} calls)" if bounds else ""
            lines.append(f"  {point.id}{bound}{done}")
        if bounds:
            calls = sum(b.calls for b in bounds)
            costs = [b.max_cost for b in bounds]
            cost = "unknown (a model has no price)" if None in costs else f"≤ ${sum(costs):.4f}"
            lines.append(
                f"in all: {calls} model calls (at most; fewer from the cache), ≤ "
                f"{sum(b.max_prompt_tokens for b in bounds)} prompt + "
                f"{sum(b.max_completion_tokens for b in bounds)} completion tokens, cost {cost}"
            )
        else:
            lines.append(
                "(no estimate: the notebook's run is not given by `prompt`, `proposers` and `aggregator` parameters)"
            )
        return "\n".join(lines)


@dataclass
class SweepSummary:
    """What one :func:`run_sweep` did, and the sweep's table (every finished point: :func:`load_sweep`)."""

    outdir: Path
    total: int
    done: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    table: Any = None

    def __str__(self) -> str:
        return (
            f"{self.outdir}: {self.done} points done, {self.failed} failed, {self.skipped} finished before, "
            f"of {self.total}, in {self.seconds:.1f}s"
        )


def read_status(folder: Path) -> dict | None:
    """A point's ``status.json`` (written last: the point finished), or None."""
    try:
        return json.loads((folder / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_spec(spec: Mapping | str | os.PathLike) -> dict:
    """A spec as a dict: given as one, or read from a YAML or JSON file (ValueError if it cannot be read)."""
    if isinstance(spec, Mapping):
        return dict(spec)
    if not isinstance(spec, (str, os.PathLike)):
        raise ValueError(f"spec must be a dict or a YAML/JSON file, got {spec!r}")
    path = Path(spec)
    value = load_file(path, "the sweep spec")  # a name given twice in one mapping is refused
    if not isinstance(value, dict):
        raise ValueError(f"the sweep spec {str(path)!r} must hold a mapping with {', '.join(SPEC_KEYS)}")
    return value


def notebook_hash(path: Path) -> str:
    """A short hash of what a notebook does: its cells' types and sources (not outputs, ids or metadata)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cells = [(c.cell_type, c.source) for c in nb.cells]
    return hashlib.sha256(json.dumps(cells).encode("utf-8", "surrogatepass")).hexdigest()[:12]


#: Where a notebook named without a folder is looked for, after the current folder: ./notebooks, and moa_lab's own.
NOTEBOOK_FOLDERS = (Path("notebooks"), Path(__file__).resolve().parents[2] / "notebooks")


def _notebook(path) -> Path:
    """The .ipynb to run: a path; the .py of a jupytext pair (its .ipynb); or a bare name such as
    ``02_three_layer_moa``, looked for in :data:`NOTEBOOK_FOLDERS`."""
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"notebook must be the path of an .ipynb file, got {path!r}")
    path = Path(path)
    if not path.exists() and len(path.parts) == 1:
        name = path.name if path.suffix else path.name + ".ipynb"
        path = next((folder / name for folder in NOTEBOOK_FOLDERS if (folder / name).is_file()), path)
    if path.suffix == ".py" and path.with_suffix(".ipynb").is_file():  # a jupytext pair: run its .ipynb, if the same
        _check_pair(path, path.with_suffix(".ipynb"))
        path = path.with_suffix(".ipynb")
    if not path.is_file():
        raise ValueError(f"notebook {str(path)!r} not found")
    if path.suffix != ".ipynb":
        raise ValueError(f"notebook {str(path)!r} is not an .ipynb file (papermill runs .ipynb notebooks)")
    return path.resolve()


def _check_pair(py: Path, ipynb: Path) -> None:
    """The ``.py`` of a jupytext pair names its ``.ipynb``, which is what papermill runs: refused (naming both files
    and the first cell that differs) unless the two hold the same cells, so that an edit made to the ``.py`` alone
    never silently runs the old code."""
    import jupytext

    try:
        cells = [[(c.cell_type, c.source.strip()) for c in jupytext.read(str(f)).cells] for f in (py, ipynb)]
    except Exception as exc:  # noqa: BLE001 - jupytext and nbformat raise their own error types
        raise ValueError(
            f"notebook {str(py)!r} cannot be read as a jupytext pair: {type(exc).__name__}: {exc}"
        ) from None
    if cells[0] != cells[1]:
        first = next((i for i, (a, b) in enumerate(zip(*cells)) if a != b), min(map(len, cells)))
        raise ValueError(
            f"{str(py)!r} and {str(ipynb)!r} are out of sync (they differ from cell {first + 1}); papermill "
            f"would run the .ipynb's old cells: sync them (make sync, or jupytext --sync {py.name}), or "
            "name the .ipynb to run it as it is"
        )


def _declared(path: Path) -> dict:
    import papermill

    try:
        found = papermill.inspect_notebook(str(path))
    except Exception as exc:  # noqa: BLE001 - not JSON, not a notebook
        raise ValueError(f"notebook {str(path)!r} cannot be read: {type(exc).__name__}: {exc}") from None
    if not found:
        raise ValueError(f'notebook {str(path)!r} has no cell tagged "parameters": a sweep has nothing to set')
    return {name: (p["inferred_type_name"], p["default"]) for name, p in found.items()}


def _check_value(notebook: Path, declared: dict, name: str, value: Any) -> None:
    if name not in declared:
        raise ValueError(
            f"parameter {name!r} is not in the parameters cell of {notebook.name}; its parameters: "
            f"{', '.join(declared)}"
        )
    kind, default = declared[name]
    allowed = _TYPES.get(kind)
    if allowed is not None and (not isinstance(value, allowed) or isinstance(value, bool) and bool not in allowed):
        raise ValueError(
            f"parameter {name!r} of {notebook.name} is {kind} (its cell says {name}: {kind} = {default}), got {value!r}"
        )
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        raise ValueError(f"parameter {name!r}: {value!r} cannot be passed to a notebook (not JSON)") from None
    problem = surrogate_error(text, f"parameter {name!r}")  # no notebook, file or model can take it
    if problem:
        raise ValueError(problem)


def _lists(spec: dict, key: str, notebook: Path, declared: dict) -> dict[str, list]:
    value = spec.get(key) or {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{key} must map parameter names to lists of values, got {value!r}")
    for name, values in value.items():
        if not isinstance(values, (list, tuple)):
            raise ValueError(f"{key} {name!r} must be a list of values, got {values!r}")
        if not values:
            raise ValueError(f"{key} {name!r} is empty: give at least one value")
        for v in values:
            _check_value(notebook, declared, name, v)
    return {name: list(values) for name, values in value.items()}


def _slug(swept: dict) -> str:
    def text(v) -> str:
        if isinstance(v, (list, tuple)):
            return "+".join(text(x) for x in v)
        return str(v)

    slug = ",".join(f"{k}={text(v)}" for k, v in swept.items()) or "point"
    slug = re.sub(r"[^A-Za-z0-9._=+,-]+", "_", slug).strip("_")
    return slug[:60].rstrip("_,+")


def _point_id(nb_hash: str, parameters: dict, swept: dict) -> str:
    key = json.dumps({"notebook": nb_hash, "parameters": parameters}, sort_keys=True)
    return f"{_slug(swept)}-{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}"


def _value(declared: dict, parameters: dict, name: str):
    """A parameter's value in a point: given, or the notebook's default."""
    if name in parameters:
        return parameters[name]
    import ast

    try:
        return ast.literal_eval(declared[name][1])
    except (ValueError, SyntaxError):
        return None


def plan_sweep(notebook: str | os.PathLike, spec: Mapping | str | os.PathLike, outdir: str | os.PathLike) -> Sweep:
    """Check a sweep and list its points; ValueError naming a bad value. Nothing runs and nothing is written:
    the notebook must exist and have a parameters cell; every parameter must be one of its cell's, of its type;
    grids and zips must not be empty (zip's lists of one length); ``seeds`` needs a ``seed`` parameter; OUTDIR
    must be empty, new, or hold this sweep (the same notebook, unchanged)."""
    path = _notebook(notebook)
    spec = read_spec(spec)
    unknown = [k for k in spec if k not in SPEC_KEYS]
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} in the sweep spec; its keys: {', '.join(SPEC_KEYS)}")
    declared = _declared(path)
    fixed = spec.get("parameters") or {}
    if not isinstance(fixed, Mapping):
        raise ValueError(f"parameters must map names to values, got {fixed!r}")
    for name, value in fixed.items():
        _check_value(path, declared, name, value)
    grid, zipped = _lists(spec, "grid", path, declared), _lists(spec, "zip", path, declared)
    lengths = {len(v) for v in zipped.values()}
    if len(lengths) > 1:
        raise ValueError(
            f"zip's lists must have one length, got {', '.join(f'{k}: {len(v)}' for k, v in zipped.items())}"
        )
    seeds = spec.get("seeds")
    if seeds is not None:
        if (
            not isinstance(seeds, (list, tuple))
            or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
        ):
            raise ValueError(f"seeds must be a non-empty list of integers, got {seeds!r}")
        if "seed" not in declared:
            raise ValueError(
                f"seeds need a `seed` parameter, and {path.name} has none; its parameters: {', '.join(declared)}"
            )
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds repeat a value: {seeds!r}")
    twice = (set(fixed) & (set(grid) | set(zipped))) | (set(grid) & set(zipped))
    if seeds is not None:
        twice |= {"seed"} & (set(fixed) | set(grid) | set(zipped))
    if twice:
        raise ValueError(f"parameter {sorted(twice)[0]!r} is given twice (in parameters, grid, zip or as seeds)")
    nb_hash = notebook_hash(path)
    rows = [dict(zip(zipped, values)) for values in zip(*zipped.values())] if zipped else [{}]
    points, seen = [], set()
    for combo in itertools.product(*grid.values()):
        for row in rows:
            for seed in seeds if seeds is not None else [None]:
                swept = {**dict(zip(grid, combo)), **row, **({} if seed is None else {"seed": seed})}
                parameters = {**fixed, **swept}
                point = Point(_point_id(nb_hash, parameters, swept), parameters, swept)
                if point.id in seen:
                    raise ValueError(f"two points of the spec are the same ({point.id}): a list repeats a value")
                seen.add(point.id)
                points.append(point)
    outdir, before = _check_outdir(outdir, path, nb_hash)
    changed = None
    if before is not None and set(before) != seen:
        new, gone = len(seen - set(before)), len(set(before) - seen)
        changed = (
            f"the spec changed since the last run in {str(outdir)!r}: {new} new point(s), {gone} no longer in "
            "it (their folders stay, left out of the table)"
        )
    return Sweep(path, nb_hash, spec, points=points, outdir=outdir, declared=declared, changed=changed)


def _check_outdir(outdir, notebook: Path, nb_hash: str) -> tuple[Path, dict | None]:
    """OUTDIR, if this sweep may write there, and the points of the last run there (None: a new sweep)."""
    if not isinstance(outdir, (str, os.PathLike)) or not str(outdir).strip():
        raise ValueError(f"OUTDIR must be a folder path, got {outdir!r}")
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise ValueError(f"OUTDIR {str(outdir)!r} is a file, not a folder")
    outdir = outdir.resolve()
    record = outdir / SWEEP_FILE
    if record.is_file():
        try:
            before = json.loads(record.read_text(encoding="utf-8"))
        except ValueError:
            raise ValueError(f"{str(record)!r} is damaged (not JSON); give another OUTDIR") from None
        if before.get("notebook") != str(notebook):
            raise ValueError(
                f"OUTDIR {str(outdir)!r} holds another sweep (of {before.get('notebook')}); give another "
                "OUTDIR for this one"
            )
        if before.get("notebook_hash") != nb_hash:
            raise ValueError(
                f"the notebook {notebook.name} changed since the sweep in {str(outdir)!r} ran (its cells "
                f"are not the ones its points ran): give another OUTDIR"
            )
        return outdir, dict(before.get("points") or {})
    if outdir.is_dir() and any(p.name != ".lock" for p in outdir.iterdir()):
        raise ValueError(f"OUTDIR {str(outdir)!r} holds files but no sweep ({SWEEP_FILE}); give an empty or new folder")
    return outdir, None


def outputs(sweep: Sweep, point: Point) -> dict:
    """The output parameters the sweep sets in the point's folder (the notebook's own suffix kept)."""
    out = {}
    for name, stem in OUTPUTS.items():
        if name in sweep.declared and name not in point.parameters:
            default = str(_value(sweep.declared, {}, name) or "")
            out[name] = stem + (Path(default).suffix if name == "output_path" else "")
    return out
