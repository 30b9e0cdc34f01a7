"""Raw multilingual text → SentencePiece tokenizer → per-language Megatron indexed datasets + manifest.

Input is a directory of ``<code>.jsonl`` (``text`` field) / ``<code>.txt`` (documents separated by
blank lines) files, optionally gzipped, or a YAML/JSON manifest ``{languages: {code: [paths]}}``.
Documents are split train/validation/test per language, deterministically by seed. The output is
built in a staging directory and moved into place only when complete.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import yaml
from tqdm.auto import tqdm

from nemo_mlsl.data.manifest import SCHEMA_VERSION, SPLITS, Manifest, write_json_atomic
from nemo_mlsl.errors import ConfigError, DataError
from nemo_mlsl.families import FamilyMap, normalize_code

SUFFIXES = (".jsonl", ".jsonl.gz", ".txt", ".txt.gz")


@dataclass
class PrepareConfig:
    inputs: list[str]
    out: str
    families_yaml: str | None = None
    vocab_size: int = 2000
    tokenizer: str | None = None
    val_docs: int | None = None
    workers: int = 1
    seed: int = 1234
    force: bool = False
    tokenizer_chars_per_family: int = 2_000_000
    progress: bool = True
    extra: dict = field(default_factory=dict)


def _code_of(path: Path) -> str | None:
    for suffix in SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return None


def discover(inputs: Iterable[str]) -> dict[str, list[Path]]:
    """Language code → input files, from directories, single files or manifests."""
    found: dict[str, list[Path]] = {}
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise ConfigError(f"--input {item!r} does not exist")
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and _code_of(p))
            if not files:
                raise ConfigError(f"--input {item!r} holds no <code>.jsonl / <code>.txt files (optionally .gz)")
            for p in files:
                found.setdefault(_code_of(p), []).append(p)
        elif path.suffix in (".yaml", ".yml", ".json") and not path.name.endswith(".jsonl"):
            doc = yaml.safe_load(path.read_text()) or {}
            langs = doc.get("languages") if isinstance(doc, dict) else None
            if not isinstance(langs, dict):
                raise ConfigError(f"{item}: a manifest must look like 'languages: {{code: [file, ...]}}'")
            for code, files in langs.items():
                for f in [files] if isinstance(files, str) else files:
                    p = (path.parent / f) if not Path(f).is_absolute() else Path(f)
                    if not p.exists():
                        raise ConfigError(f"{item}: file {f!r} of language {code!r} does not exist")
                    found.setdefault(str(code), []).append(p)
        elif _code_of(path):
            found.setdefault(_code_of(path), []).append(path)
        else:
            raise ConfigError(f"--input {item!r}: not a directory, a manifest, or a <code>.jsonl/.txt file")
    for code in found:
        normalize_code(code)
    return found


def _open(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.name.endswith(".gz") else open(path, encoding="utf-8")


def read_documents(path: Path) -> Iterator[str]:
    """Documents of one file: JSONL ``text`` fields, or blank-line-separated blocks of a text file."""
    with _open(path) as fh:
        if ".jsonl" in path.name:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    text = json.loads(line)["text"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise DataError(f"{path}:{lineno}: expected a JSON object with a 'text' field") from None
                if text.strip():
                    yield text
        else:
            block: list[str] = []
            for line in fh:
                if line.strip():
                    block.append(line.rstrip("\n"))
                elif block:
                    yield "\n".join(block)
                    block = []
            if block:
                yield "\n".join(block)


def fingerprint(files: dict[str, list[Path]], cfg: PrepareConfig, fmap: dict[str, str]) -> str:
    h = hashlib.sha256()
    for code in sorted(files):
        for p in files[code]:
            st = p.stat()
            h.update(f"{code}|{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    tok_hash = hashlib.sha256(Path(cfg.tokenizer).read_bytes()).hexdigest() if cfg.tokenizer else ""
    opts = dict(vocab=cfg.vocab_size, tok=tok_hash, val=cfg.val_docs, seed=cfg.seed, fam=fmap,
                chars=cfg.tokenizer_chars_per_family, v=SCHEMA_VERSION)
    h.update(json.dumps(opts, sort_keys=True).encode())
    return h.hexdigest()


def split_documents(docs: list[str], code: str, seed: int, val_docs: int | None) -> dict[str, list[str]]:
    """Deterministic per-language document split; validation and test get ``val_docs`` each."""
    n = len(docs)
    k = val_docs if val_docs is not None else max(1, min(200, n // 20))
    if n < 2 * k + 1:
        raise DataError(
            f"language {code!r} has {n} documents, too few for {k} validation + {k} test + 1 training document; "
            f"add text or lower --val-docs"
        )
    rng = np.random.default_rng([seed, int(hashlib.md5(code.encode()).hexdigest()[:8], 16)])
    order = rng.permutation(n)
    pick = lambda idx: [docs[i] for i in sorted(idx)]
    return {"validation": pick(order[:k]), "test": pick(order[k : 2 * k]), "train": pick(order[2 * k :])}


def _tokenizer_sample(by_family: dict[str, dict[str, list[str]]], chars_per_family: int) -> list[str]:
    """A family-balanced sample of lines so that no script dominates the vocabulary."""
    lines: list[str] = []
    for fam in sorted(by_family):
        langs = by_family[fam]
        budget = chars_per_family // max(1, len(langs))
        for code in sorted(langs):
            used = 0
            for doc in langs[code]:
                for line in doc.replace(" . ", " .\n").splitlines():
                    line = line.strip()
                    if line:
                        lines.append(line[:2000])
                        used += len(line)
                if used >= budget:
                    break
    return lines


def train_tokenizer(lines: list[str], prefix: Path, vocab_size: int, threads: int) -> None:
    import sentencepiece as spm

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as fh:
        fh.write("\n".join(lines))
        sample = fh.name
    try:
        _train_spm(spm, sample, prefix, vocab_size, threads)
    finally:
        os.unlink(sample)


def _train_spm(spm, sample: str, prefix: Path, vocab_size: int, threads: int) -> None:
    try:
        spm.SentencePieceTrainer.train(
            input=sample, model_prefix=str(prefix), vocab_size=vocab_size, model_type="unigram",
            character_coverage=1.0, byte_fallback=vocab_size >= 1024, hard_vocab_limit=False,
            num_threads=max(1, threads), input_sentence_size=0, shuffle_input_sentence=False,
            pad_id=3, unk_id=0, bos_id=1, eos_id=2, minloglevel=2, split_digits=True,
        )
    except RuntimeError as err:
        match = re.search(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)", str(err))
        if match:
            raise ConfigError(
                f"--vocab-size {match.group(1)} is smaller than the {match.group(2)} distinct characters (plus special "
                f"pieces) of the corpus; use --vocab-size {int(match.group(2)) + 64} or more"
            ) from None
        raise


_SP = None


def _init_worker(model: str) -> None:
    global _SP
    import sentencepiece as spm

    _SP = spm.SentencePieceProcessor(model_file=model)


def _encode(docs: list[str]) -> list[list[int]]:
    return _SP.encode(docs)


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _write_indexed(out_prefix: Path, encoded: Iterable[list[int]], eod: int) -> tuple[int, int]:
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    builder = IndexedDatasetBuilder(str(out_prefix) + ".bin", dtype=np.int32)
    docs = tokens = 0
    for ids in encoded:
        arr = np.asarray(list(ids) + [eod], dtype=np.int32)
        builder.add_document(arr, [len(arr)])
        docs += 1
        tokens += len(arr)
    builder.finalize(str(out_prefix) + ".idx")
    return docs, tokens


def prepare(cfg: PrepareConfig) -> Manifest:
    """Run the whole preparation; a no-op when the output is up to date (unless ``force``)."""
    files = discover(cfg.inputs)
    fam = FamilyMap.from_yaml(cfg.families_yaml) if cfg.families_yaml else FamilyMap.builtin()
    fmap = {code: fam.family_of(code) for code in files}
    if cfg.vocab_size < 64:
        raise ConfigError(f"--vocab-size must be >= 64, got {cfg.vocab_size}")
    if cfg.tokenizer and not Path(cfg.tokenizer).exists():
        raise ConfigError(f"--tokenizer {cfg.tokenizer!r} does not exist")
    out = Path(cfg.out)
    fp = fingerprint(files, cfg, fmap)
    if (out / "manifest.json").exists() and not cfg.force:
        try:
            current: Manifest | None = Manifest.load(out)
        except DataError:  # incomplete or older data: treated like different inputs
            current = None
        if current is not None and current.doc.get("fingerprint") == fp:
            return current
        raise ConfigError(f"{out} already holds prepared data from other inputs or options; pass --force to rebuild")

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        splits: dict[str, dict[str, list[str]]] = {}
        bar = tqdm(sorted(files), desc="read+split", unit="lang", disable=not cfg.progress)
        for code in bar:
            docs = [d for p in files[code] for d in read_documents(p)]
            splits[code] = split_documents(docs, code, cfg.seed, cfg.val_docs)
        if cfg.tokenizer:
            shutil.copy(cfg.tokenizer, stage / "tokenizer.model")
        else:
            by_family: dict[str, dict[str, list[str]]] = {}
            for code, parts in splits.items():
                by_family.setdefault(fmap[code], {})[code] = parts["train"]
            train_tokenizer(_tokenizer_sample(by_family, cfg.tokenizer_chars_per_family), stage / "tokenizer",
                            cfg.vocab_size, cfg.workers)
            (stage / "tokenizer.vocab").unlink(missing_ok=True)
        model = str(stage / "tokenizer.model")
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=model)
        eod = sp.eos_id() if sp.eos_id() >= 0 else sp.piece_to_id("</s>")
        languages: dict[str, dict] = {}
        total_bytes = sum(len(d.encode()) for parts in splits.values() for docs in parts.values() for d in docs)
        bar = tqdm(total=total_bytes, desc="encode", unit="B", unit_scale=True, disable=not cfg.progress)
        ctx = get_context("fork")
        pool = ctx.Pool(cfg.workers, initializer=_init_worker, initargs=(model,)) if cfg.workers > 1 else None
        if pool is None:
            _init_worker(model)
        try:
            for code in sorted(splits):
                entry = {"family": fmap[code], "splits": {}}
                for split in SPLITS:
                    docs = splits[code][split]
                    chunks = _chunks(docs, 64)
                    mapped = pool.imap(_encode, chunks) if pool else map(_encode, chunks)

                    def stream():
                        for chunk, enc in zip(chunks, mapped):
                            bar.update(sum(len(d.encode()) for d in chunk))
                            yield from enc

                    n_docs, n_tok = _write_indexed(stage / split / code, stream(), eod)
                    n_bytes = sum(len(d.encode()) + 1 for d in docs)  # +1: the document separator (EOD)
                    entry["splits"][split] = {"prefix": f"{split}/{code}", "documents": n_docs, "tokens": n_tok, "bytes": n_bytes}
                languages[code] = entry
        finally:
            bar.close()
            if pool:
                pool.close()
                pool.join()
        families: dict[str, list[str]] = {}
        for code in sorted(fmap):
            families.setdefault(fmap[code], []).append(code)
        doc = {
            "schema_version": SCHEMA_VERSION,
            "fingerprint": fp,
            "seed": cfg.seed,
            "tokenizer": {"model": "tokenizer.model", "type": "sentencepiece", "vocab_size": sp.get_piece_size(), "eod_id": eod,
                          "pad_id": sp.pad_id() if sp.pad_id() >= 0 else sp.get_piece_size()},
            "languages": languages,
            "families": families,
        }
        write_json_atomic(stage / "manifest.json", doc)
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
    return Manifest.load(out)
