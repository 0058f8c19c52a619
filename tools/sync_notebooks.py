"""Bring every pair in notebooks/ in sync, and keep the .ipynb without its run.

For each pair, `jupytext --sync` copies the newer side onto the other (edits made in JupyterLab with jupytext
installed are already paired on save). Then the .ipynb loses its outputs, execution counts and run metadata:
the committed notebook is the notebook, not one run of it. `make sync` runs this; `make test` checks the result.
"""

import subprocess
import sys
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KEEP = {"kernelspec", "jupytext"}  # notebook metadata that the .py keeps too


def strip(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nb.metadata = {k: v for k, v in nb.metadata.items() if k in KEEP}
    for cell in nb.cells:
        cell.metadata = {k: v for k, v in cell.metadata.items() if k in ("tags", "lines_to_next_cell")}
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, path)


def main() -> None:
    for stem in sorted({p.stem for p in NOTEBOOKS.glob("*.ipynb")} | {p.stem for p in NOTEBOOKS.glob("*.py")}):
        ipynb, py = NOTEBOOKS / f"{stem}.ipynb", NOTEBOOKS / f"{stem}.py"
        subprocess.run(
            [sys.executable, "-m", "jupytext", "--quiet", "--sync", str(ipynb if ipynb.exists() else py)], check=True
        )  # a new .py gets its .ipynb (the pairing is in jupytext.toml)
        strip(ipynb)
        print(f"synced {ipynb.with_suffix('.py').name} <-> {ipynb.name}")


if __name__ == "__main__":
    main()
