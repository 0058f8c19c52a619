"""YAML and JSON files of settings (a sweep's spec; prices), read strictly: a name given twice in one mapping is
refused, naming it and its line, where the parsers' default would silently keep the last value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class DuplicateKey(ValueError):
    """A mapping in a settings file gives one name twice."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(f"the name {key!r} is given twice in one mapping")
        out[key] = value
    return out


def _yaml_loader():
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise DuplicateKey(
                        f"the name {key!r} is given twice in one mapping (line {seen[key]} and line "
                        f"{key_node.start_mark.line + 1})"
                    )
                seen[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep=deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, StrictLoader.construct_mapping)
    return StrictLoader


def loads(text: str, suffix: str) -> Any:
    """``text`` parsed as JSON (``suffix`` ``.json``) or YAML (any other): DuplicateKey for a name given twice in
    one mapping; the parser's own error for text that is not valid."""
    if suffix.lower() == ".json":
        return json.loads(text, object_pairs_hook=_no_duplicates)
    import yaml

    return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass


def load_file(path: Path, what: str) -> Any:
    """The file's value (ValueError naming ``what`` and the file if it cannot be read or parsed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {what} {str(path)!r}: {exc.strerror}") from None
    try:
        return loads(text, path.suffix)
    except Exception as exc:  # noqa: BLE001 - yaml and json raise their own error types
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise ValueError(f"{what} {str(path)!r} is not valid {kind}: {exc}") from None
