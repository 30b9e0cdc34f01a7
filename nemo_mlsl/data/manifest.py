"""``DATA/manifest.json``: what ``mlsl prepare`` produced, and the one place that reads it back."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_mlsl.errors import DataError

SCHEMA_VERSION = 1
SPLITS = ("train", "validation", "test")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON through a temporary file and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True, ensure_ascii=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class SplitStats:
    prefix: str
    documents: int
    tokens: int
    bytes: int


@dataclass(frozen=True)
class Manifest:
    """A prepared data directory: languages, families, tokenizer and per-split statistics."""

    root: Path
    doc: dict[str, Any]

    @classmethod
    def load(cls, root: str | Path, check_files: bool = True) -> "Manifest":
        root = Path(root)
        path = root / "manifest.json"
        if not path.exists():
            raise DataError(f"{path} not found: prepare the data first with `mlsl prepare --input ... --out {root}`")
        doc = json.loads(path.read_text())
        if doc.get("schema_version") != SCHEMA_VERSION:
            raise DataError(
                f"{path}: schema_version {doc.get('schema_version')!r}, this nemo-mlsl reads {SCHEMA_VERSION}; "
                "re-run `mlsl prepare --force`"
            )
        manifest = cls(root, doc)
        if check_files:
            manifest.check_files()
        return manifest

    def check_files(self) -> None:
        for lang in self.languages:
            for split in SPLITS:
                prefix = self.prefix(lang, split)
                for ext in (".bin", ".idx"):
                    if not Path(prefix + ext).exists():
                        raise DataError(
                            f"missing {prefix}{ext} (language {lang!r}, split {split!r}); the data directory is "
                            f"incomplete: re-run `mlsl prepare --force --out {self.root}`"
                        )

    @property
    def languages(self) -> list[str]:
        return sorted(self.doc["languages"])

    @property
    def families(self) -> dict[str, list[str]]:
        return {fam: list(codes) for fam, codes in sorted(self.doc["families"].items())}

    def family_of(self, lang: str) -> str:
        return self.doc["languages"][lang]["family"]

    def stats(self, lang: str, split: str) -> SplitStats:
        s = self.doc["languages"][lang]["splits"][split]
        return SplitStats(prefix=s["prefix"], documents=s["documents"], tokens=s["tokens"], bytes=s["bytes"])

    def prefix(self, lang: str, split: str) -> str:
        return str(self.root / self.stats(lang, split).prefix)

    def tokens(self, split: str = "train") -> dict[str, int]:
        return {lang: self.stats(lang, split).tokens for lang in self.languages}

    def family_tokens(self, split: str = "train") -> dict[str, int]:
        toks = self.tokens(split)
        return {fam: sum(toks[l] for l in langs) for fam, langs in self.families.items()}

    def family_languages(self, split: str = "train") -> dict[str, dict[str, int]]:
        toks = self.tokens(split)
        return {fam: {l: toks[l] for l in langs} for fam, langs in self.families.items()}

    def bytes_per_token(self, split: str = "validation") -> dict[str, float]:
        return {lang: self.stats(lang, split).bytes / max(1, self.stats(lang, split).tokens) for lang in self.languages}

    @property
    def tokenizer_path(self) -> Path:
        return self.root / self.doc["tokenizer"]["model"]

    @property
    def vocab_size(self) -> int:
        return int(self.doc["tokenizer"]["vocab_size"])

    @property
    def pad_id(self) -> int:
        """Never present in the data: megatron masks the loss of pad tokens, so it must differ from EOD."""
        return int(self.doc["tokenizer"]["pad_id"])

    @property
    def eod_id(self) -> int:
        return int(self.doc["tokenizer"]["eod_id"])
