"""``mlsl prepare --indexed SPEC.yaml``: bring existing Megatron indexed data (``.bin/.idx`` per language, made
by Megatron's or NeMo's ``preprocess_data`` with the team's own tokenizer) into a study without re-tokenizing
or copying it.

SPEC::

    languages:
      de: {train: /data/de_text_document}                  # one prefix, or a list of prefixes
      fr: {train: [/data/fr_00_text_document, /data/fr_01_text_document], validation: /data/fr_val_text_document}
      xx: {train: /data/xx_text_document, family: my_family}   # a code the built-in table does not know

Counts come from the ``.idx`` files. Without a validation prefix, a seeded set of documents of the first
training prefix becomes the validation split: new index files in the data directory point into the
user's ``.bin`` (nothing is rewritten), and the training index of that prefix leaves those documents out.
Bytes per token (for bits per byte) are measured per language by decoding a seeded sample of validation
documents with the tokenizer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from nemo_mlsl.data.indexed import IndexedData
from nemo_mlsl.data.manifest import SCHEMA_VERSION, Manifest, staged_directory, write_json_atomic
from nemo_mlsl.data.tokenizer import Tokenizer, load_tokenizer
from nemo_mlsl.errors import ConfigError, DataError
from nemo_mlsl.families import FamilyMap, normalize_code
from nemo_mlsl.typed_config import check_non_negative
from nemo_mlsl.userfiles import read_yaml


@dataclass
class IndexedConfig:
    spec: str
    tokenizer: str
    out: str
    families_yaml: str | None = None
    eod_token: str | None = None
    val_docs: int | None = None
    seed: int = 1234
    sample_docs: int = 200  # documents decoded per language for bytes per token (and checked against the vocabulary)
    force: bool = False

    def __post_init__(self) -> None:
        if self.val_docs is not None and self.val_docs < 1:
            raise ConfigError(f"--val-docs is the number of validation documents carved out per language and must be >= 1, "
                              f"got {self.val_docs} (leave it out for the default: 5% of each language, 1 to 200)")
        if self.sample_docs < 1:
            raise ConfigError(f"sample_docs must be >= 1, got {self.sample_docs}")
        check_non_negative(self.seed, "--seed")


@dataclass
class LanguageSpec:
    code: str
    family: str
    train: list[str]
    validation: str | None
    test: str | None


def _prefixes(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"{where} must be a prefix or a list of prefixes (PREFIX for PREFIX.bin/PREFIX.idx), got {value!r}")


def read_spec(path: Path, families: FamilyMap) -> list[LanguageSpec]:
    if not path.is_file():
        raise ConfigError(f"--indexed {str(path)!r} does not exist")
    doc = read_yaml(path, "--indexed", "'languages: {code: {train: PREFIX, validation: PREFIX, family: NAME}}'")
    langs = doc.get("languages")
    if not isinstance(langs, dict) or not langs:
        raise ConfigError(f"{path}: expected 'languages: {{code: {{train: PREFIX, validation: PREFIX, family: NAME}}}}'")
    resolve = lambda p: str(Path(p) if Path(p).is_absolute() else (path.parent / p).resolve())  # noqa: E731
    out = []
    for code, entry in langs.items():
        where = f"{path}: languages.{code}"
        if not isinstance(entry, dict) or "train" not in entry:
            raise ConfigError(f"{where} needs a 'train' prefix (or list of prefixes)")
        unknown = sorted(set(entry) - {"train", "validation", "test", "family"})
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; valid: train, validation, test, family")
        tag = normalize_code(str(code))
        if entry.get("family"):
            family = str(entry["family"])
        else:
            try:
                family = families.family_of(tag)
            except ConfigError:
                raise ConfigError(f"{where}: the built-in table does not know {tag!r}; give its family (family: NAME) "
                                  "or a --families YAML") from None
        single = {}
        for split in ("validation", "test"):
            if entry.get(split) is not None:
                ps = _prefixes(entry[split], f"{where}.{split}")
                if len(ps) != 1:
                    raise ConfigError(f"{where}.{split}: give one {split} prefix per language (the scores are per language)")
                single[split] = resolve(ps[0])
        out.append(LanguageSpec(tag, family, [resolve(p) for p in _prefixes(entry["train"], f"{where}.train")],
                                single.get("validation"), single.get("test")))
    return sorted(out, key=lambda s: s.code)


def _open(prefix: str, code: str, split: str, tok: Tokenizer) -> IndexedData:
    data = IndexedData.open(prefix, f"language {code!r}, {split}")
    if data.documents == 0:
        raise DataError(f"{prefix} (language {code!r}, {split}) holds no documents")
    top = int(np.iinfo(data.dtype).max) if np.issubdtype(data.dtype, np.integer) else None
    if top is not None and top < tok.vocab_size - 1 and tok.vocab_size > 65536:
        raise DataError(f"{prefix}.bin stores {np.dtype(data.dtype).name} tokens, which cannot hold the ids of the "
                        f"{tok.vocab_size:,}-token vocabulary of --tokenizer: data and tokenizer do not match")
    return data


def _check_ids(data: IndexedData, docs: np.ndarray, code: str, tok: Tokenizer) -> None:
    top = max((int(data.document(int(d)).max(initial=0)) for d in docs), default=0)
    if top >= tok.vocab_size:
        raise DataError(f"{data.prefix}.bin (language {code!r}) holds token id {top}, not below the {tok.vocab_size:,} ids of "
                        "--tokenizer: the data was made with another tokenizer; give that one")


def _bytes_per_token(data: IndexedData, docs: np.ndarray, tok: Tokenizer) -> float:
    tokens = n_bytes = 0
    for d in docs:
        ids = data.document(int(d))
        body = ids[:-1] if len(ids) and ids[-1] == tok.eod_id else ids
        n_bytes += len(tok.decode(body.tolist()).encode("utf-8")) + (len(ids) - len(body))  # the EOD stands for a separator
        tokens += len(ids)
    return n_bytes / max(1, tokens)


def _fingerprint(specs: list[LanguageSpec], tok: Tokenizer, cfg: IndexedConfig) -> str:
    h = hashlib.sha256()
    for s in specs:
        for p in [*s.train, s.validation, s.test]:
            if p:
                for ext in (".bin", ".idx"):
                    f = Path(p + ext)
                    st = f.stat() if f.exists() else None
                    h.update(f"{s.code}|{s.family}|{f}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}\n".encode())
    h.update(json.dumps({"tok": tok.sha256, "val": cfg.val_docs, "seed": cfg.seed, "sample": cfg.sample_docs,
                         "v": SCHEMA_VERSION}).encode())
    return h.hexdigest()


def prepare_indexed(cfg: IndexedConfig, log: Callable[[str], None] = lambda line: None) -> Manifest:
    """Write ``OUT/manifest.json`` (and the tokenizer, and index files for a carved validation split) for existing
    indexed data; a no-op when up to date (unless ``force``)."""
    families = FamilyMap.from_yaml(cfg.families_yaml) if cfg.families_yaml else FamilyMap.builtin()
    tok = load_tokenizer(cfg.tokenizer, cfg.eod_token)
    specs = read_spec(Path(cfg.spec), families)
    out = Path(cfg.out)
    fp = _fingerprint(specs, tok, cfg)
    if (out / "manifest.json").exists() and not cfg.force:
        current = Manifest.load(out, check_files=False)
        if current.doc.get("fingerprint") == fp:
            return current
        raise ConfigError(f"{out} already holds prepared data from other inputs or options; pass --force to rebuild")
    with staged_directory(out) as stage:
        languages: dict[str, dict] = {}
        for s in specs:
            rng = np.random.default_rng([cfg.seed, int(hashlib.md5(s.code.encode()).hexdigest()[:8], 16)])
            train = [_open(p, s.code, "train", tok) for p in s.train]
            parts = {"train": [{"prefix": p.prefix, "documents": p.documents, "tokens": p.tokens} for p in train]}
            if s.validation:
                val = _open(s.validation, s.code, "validation", tok)
                parts["validation"] = [{"prefix": val.prefix, "documents": val.documents, "tokens": val.tokens}]
                val_data, val_docs = val, np.arange(val.documents)
            else:  # carve: a seeded set of the first training prefix's documents
                first = train[0]
                k = cfg.val_docs if cfg.val_docs is not None else max(1, min(200, first.documents // 20))
                if first.documents < k + 1:
                    raise DataError(f"{first.prefix} (language {s.code!r}) has {first.documents} documents, too few to carve "
                                    f"{k} for validation; give a validation prefix or lower --val-docs")
                held = np.sort(rng.choice(first.documents, size=k, replace=False))
                kept = np.setdiff1d(np.arange(first.documents), held)
                v_tokens = first.write_subset(stage / "validation" / s.code, held)
                t_tokens = first.write_subset(stage / "train" / s.code, kept)
                parts["train"][0] = {"prefix": f"train/{s.code}", "documents": len(kept), "tokens": t_tokens,
                                     "source": first.prefix}
                parts["validation"] = [{"prefix": f"validation/{s.code}", "documents": k, "tokens": v_tokens,
                                        "source": first.prefix}]
                val_data, val_docs = first, held
            if s.test:
                test = _open(s.test, s.code, "test", tok)
                parts["test"] = [{"prefix": test.prefix, "documents": test.documents, "tokens": test.tokens}]
            sample = np.sort(rng.choice(val_docs, size=min(cfg.sample_docs, len(val_docs)), replace=False))
            for data in train:
                _check_ids(data, np.sort(rng.choice(data.documents, size=min(cfg.sample_docs, data.documents), replace=False)),
                           s.code, tok)
            _check_ids(val_data, sample, s.code, tok)
            bpt = _bytes_per_token(val_data, sample, tok)
            splits = {}
            for split, rows in parts.items():
                for r in rows:
                    r["bytes"] = int(round(r["tokens"] * bpt))
                splits[split] = {"parts": rows, **{k: sum(r[k] for r in rows) for k in ("documents", "tokens", "bytes")}}
            languages[s.code] = {"family": s.family, "splits": splits, "bytes_per_token": bpt, "bytes_measured_on": len(sample)}
            log(f"  {s.code:<8} {s.family:<16} {splits['train']['tokens']:>14,} train tokens in {len(train)} prefix(es); "
                f"{splits['validation']['documents']:,} validation documents; {bpt:.3f} bytes/token")
        fams: dict[str, list[str]] = {}
        for s in specs:
            fams.setdefault(s.family, []).append(s.code)
        doc = {"schema_version": SCHEMA_VERSION, "fingerprint": fp, "seed": cfg.seed, "source": {"indexed": str(Path(cfg.spec).resolve())},
               "tokenizer": tok.install(stage), "languages": languages, "families": fams}
        write_json_atomic(stage / "manifest.json", doc)
    return Manifest.load(out)
