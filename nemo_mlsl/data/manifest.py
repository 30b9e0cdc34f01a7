"""``DATA/manifest.json``: what ``mlsl prepare`` produced, and the one place that reads it back."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nemo_mlsl.errors import DataError
from nemo_mlsl.outputs import honour_umask, output_dir, write_json_atomic  # noqa: F401 - write_json_atomic: imported from here by many
from nemo_mlsl.userfiles import read_json

if TYPE_CHECKING:
    from nemo_mlsl.data.tokenizer import TokenizerEntry

SCHEMA_VERSION = 2
READS = (1, 2)  # schema 1: one SentencePiece tokenizer, one prefix per language and split, every split
SPLITS = ("train", "validation", "test")


@contextlib.contextmanager
def staged_directory(out: Path):
    """Build a data directory in a staging directory beside ``out`` and swap it in only when complete: a failure
    (or a kill) leaves ``out`` as it was and no half-written directory behind."""
    output_dir(out, "--out", create=False)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        honour_umask(stage, directory=True)  # mkdtemp makes it 0700, and it becomes ``out``
        yield stage
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, trash / "old")
            os.replace(stage, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


@dataclass(frozen=True)
class SplitStats:
    prefix: str  # the first (usually only) part's prefix
    documents: int
    tokens: int
    bytes: int


@dataclass(frozen=True)
class Part:
    """One Megatron indexed dataset (``prefix``.bin/.idx) of a language's split."""

    prefix: str  # absolute, or relative to the data directory
    documents: int
    tokens: int
    bytes: int


@dataclass(frozen=True)
class Manifest:
    """A prepared data directory: languages, families, tokenizer and per-split statistics.

    A split of a language is one or more indexed datasets ("parts": several training prefixes of existing
    Megatron data); prefixes are relative to the directory (data ``mlsl prepare`` wrote) or absolute (data it
    points at, which it never copies)."""

    root: Path
    doc: dict[str, Any]

    @classmethod
    def load(cls, root: str | Path, check_files: bool = True) -> "Manifest":
        root = Path(root).resolve()  # every prefix and the tokenizer absolute: what a job or NeMo's data module receives
        path = root / "manifest.json"
        if not path.exists():
            raise DataError(f"{path} not found: prepare the data first with `mlsl prepare --input ... --out {root}`")
        doc = read_json(path, "manifest", f"re-run `mlsl prepare --force --out {root}`", DataError)
        if not isinstance(doc, dict) or doc.get("schema_version") not in READS:
            raise DataError(
                f"{path}: schema_version {doc.get('schema_version') if isinstance(doc, dict) else None!r}, this nemo-mlsl reads {list(READS)}; "
                "re-run `mlsl prepare --force`"
            )
        manifest = cls(root, doc)
        if check_files:
            manifest.check_files()
        return manifest

    def check_files(self) -> None:
        for lang in self.languages:
            for split in self.splits(lang):
                for part in self.parts(lang, split):
                    for ext in (".bin", ".idx"):
                        if not Path(part.prefix + ext).exists():
                            raise DataError(
                                f"missing {part.prefix}{ext} (language {lang!r}, split {split!r}); the data directory is "
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

    def splits(self, lang: str) -> list[str]:
        return [s for s in SPLITS if s in self.doc["languages"][lang]["splits"]]

    def parts(self, lang: str, split: str) -> list[Part]:
        """The split's indexed datasets, with absolute prefixes."""
        entry = self.doc["languages"][lang]["splits"].get(split)
        if entry is None:
            raise DataError(f"language {lang!r} has no {split!r} split in {self.root / 'manifest.json'}")
        rows = entry["parts"] if "parts" in entry else [entry]
        return [Part(str(self.root / r["prefix"]), int(r["documents"]), int(r["tokens"]), int(r["bytes"])) for r in rows]

    def stats(self, lang: str, split: str) -> SplitStats:
        parts = self.parts(lang, split)
        return SplitStats(prefix=parts[0].prefix, documents=sum(p.documents for p in parts), tokens=sum(p.tokens for p in parts),
                          bytes=sum(p.bytes for p in parts))

    def prefix(self, lang: str, split: str) -> str:
        """The one indexed dataset of a split (validation and test have one per language)."""
        parts = self.parts(lang, split)
        if len(parts) != 1:
            raise DataError(f"language {lang!r} has {len(parts)} {split!r} prefixes where one is needed")
        return parts[0].prefix

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
    def tokenizer(self) -> "TokenizerEntry":
        from nemo_mlsl.data.tokenizer import TokenizerEntry

        return TokenizerEntry.of(self.doc["tokenizer"])

    @property
    def tokenizer_path(self) -> Path:
        """The tokenizer's file or directory inside the data directory."""
        return self.root / self.doc["tokenizer"]["model"]

    @property
    def tokenizer_kind(self) -> str:
        return self.tokenizer.kind

    @property
    def tokenizer_sha256(self) -> str:
        from nemo_mlsl.data.tokenizer import sha256_of

        recorded = self.tokenizer.sha256
        if recorded:
            return recorded
        path = self.tokenizer_path
        return sha256_of(path / "tokenizer.json" if path.is_dir() else path)

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
