"""Reading the files users hand us (YAML specs, JSON documents) with errors that name the file, the line and
the fix, instead of a parser's traceback. (Writing outputs: ``nemo_mlsl.outputs``.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from nemo_mlsl.errors import ConfigError, MLSLError


def _text(path: Path, what: str) -> str:
    if not path.exists():
        raise ConfigError(f"{what} {str(path)!r} does not exist")
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} is a directory; give the file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} {str(path)!r} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None


def read_yaml(path: str | Path, what: str, shape: str) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; ``shape`` (e.g. ``'families: {family: [codes]}'``) is the fix
    shown when the file is empty, malformed or of another shape."""
    path = Path(path)
    text = _text(path, what)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(f"{what} {str(path)!r} is not valid YAML{where} ({problem}); expected {shape}") from None
    if not isinstance(doc, dict):
        got = "empty" if doc is None else f"a {type(doc).__name__}"
        raise ConfigError(f"{what} {str(path)!r} is {got}, not a mapping; expected {shape}")
    return doc


def read_json(path: str | Path, what: str, fix: str, error: type[MLSLError] = ConfigError) -> Any:
    """A JSON file; ``fix`` says how to write a good one (e.g. ``'re-run `mlsl prepare --force`'``)."""
    path = Path(path)
    text = _text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise error(f"{what} {str(path)!r} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
                          f"{fix}") from None
