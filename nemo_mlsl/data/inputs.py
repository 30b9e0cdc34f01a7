"""Where each language's raw text is: input discovery (directories, single files, YAML/JSON manifests) and the
kind of each file, the first step of ``mlsl prepare``."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import IO, Iterable


from nemo_mlsl.errors import ConfigError
from nemo_mlsl.families import normalize_code
from nemo_mlsl.userfiles import read_yaml

SUFFIXES = (".jsonl", ".jsonl.gz", ".txt", ".txt.gz", ".parquet")


def code_of(path: Path) -> str | None:
    """The language code a data file's name gives (``de.jsonl.gz`` → ``de``), or None for other files."""
    for suffix in SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return None


def data_files(d: Path) -> list[Path]:
    """Every data file under a directory, sorted."""
    return sorted(p for p in d.rglob("*") if p.is_file() and code_of(p) is not None)


def discover(inputs: Iterable[str]) -> dict[str, list[Path]]:
    """Language code → input files, from directories (``<code>.<ext>`` files or ``<code>/`` subdirectories),
    single files or manifests."""
    found: dict[str, list[Path]] = {}
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise ConfigError(f"--input {item!r} does not exist")
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and code_of(p))
            subdirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and data_files(p))
            if not files and not subdirs:
                raise ConfigError(f"--input {item!r} holds no <code>.jsonl / .txt / .parquet files (optionally .gz) "
                                  "and no <code>/ directories of them")
            for p in files:
                found.setdefault(code_of(p), []).append(p)
            for d in subdirs:
                found.setdefault(d.name, []).extend(data_files(d))
        elif path.suffix in (".yaml", ".yml", ".json") and not path.name.endswith(".jsonl"):
            doc = read_yaml(path, "--input manifest", "'languages: {code: [file, ...]}'")
            langs = doc.get("languages")
            if not isinstance(langs, dict):
                raise ConfigError(f"{item}: a manifest must look like 'languages: {{code: [file, ...]}}'")
            for code, files in langs.items():
                for f in [files] if isinstance(files, str) else files:
                    p = (path.parent / f) if not Path(f).is_absolute() else Path(f)
                    if not p.exists():
                        raise ConfigError(f"{item}: file {f!r} of language {code!r} does not exist")
                    found.setdefault(str(code), []).extend(data_files(p) if p.is_dir() else [p])
        elif code_of(path):
            found.setdefault(code_of(path), []).append(path)
        else:
            raise ConfigError(f"--input {item!r}: not a directory, a manifest, or a <code>.jsonl/.txt/.parquet file")
    return {normalize_code(code): files for code, files in found.items()}


def kind_of(path: Path) -> str:
    """``parquet``, ``jsonl`` or ``txt``."""
    return "parquet" if path.name.endswith(".parquet") else "jsonl" if ".jsonl" in path.name else "txt"


def splittable(path: Path) -> bool:
    """Whether workers can read byte ranges of the file themselves (plain ``.jsonl``/``.txt``)."""
    return kind_of(path) != "parquet" and not path.name.endswith(".gz")


def open_text(path: Path) -> IO[str]:
    """The file as UTF-8 text, gunzipped on the fly; lines end at ``\n`` only, untranslated (see ``lines``)."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="\n")
    return open(path, encoding="utf-8", newline="\n")
