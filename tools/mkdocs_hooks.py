"""MkDocs hook: the lessons (notebooks/*.ipynb, outputs stripped) become pages under lessons/, read where they are
(no copy to keep in sync); mkdocs-jupyter renders them. Files outside docs/ that pages link to (the tests, the
benchmarks' results) resolve to the repository on the web."""

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]  # tools/ is beside notebooks/


def on_files(files, config):
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        files.append(File.generated(config, f"lessons/{notebook.name}", abs_src_path=str(notebook)))
    return files
