"""Raw multilingual text → tokenizer → per-language Megatron indexed datasets + manifest, streamed.

Inputs, per language: ``<code>.jsonl`` (a ``text`` field, ``--text-field`` to choose), ``<code>.txt``
(documents separated by blank lines), either gzipped, ``<code>.parquet`` (a ``text`` column), or a directory
``<code>/`` of such files (the layout of FineWeb-2, MADLAD-400, CulturaX shards); or a YAML/JSON manifest
``{languages: {code: [paths]}}``.

Three streaming passes, memory independent of corpus size: count each language's documents; (without a
given tokenizer) draw a bounded, seeded, family-balanced sample of documents and train a SentencePiece
tokenizer on it; encode in worker processes (a bounded number of chunks in flight) and append to the
``.bin`` files of the document's split. A document's split is decided by its index, deterministically by
seed. Output is built in a staging directory and moved into place only when complete.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import os
import re
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import yaml
from tqdm.auto import tqdm

from nemo_mlsl.data.indexed import token_dtype, write_index
from nemo_mlsl.data.manifest import SCHEMA_VERSION, SPLITS, Manifest, staged_directory, write_json_atomic
from nemo_mlsl.data.tokenizer import SentencePieceTokenizer, Tokenizer, load_tokenizer
from nemo_mlsl.errors import ConfigError, DataError
from nemo_mlsl.families import FamilyMap, normalize_code
from nemo_mlsl.terminal import interactive

SUFFIXES = (".jsonl", ".jsonl.gz", ".txt", ".txt.gz", ".parquet")
SPLIT_CODE = {"train": 0, "validation": 1, "test": 2}
CHUNK_DOCS = 256
BYTE_FALLBACK_MIN_VOCAB = 320  # 256 byte pieces, 4 special ones and room for characters and merges


@dataclass
class PrepareConfig:
    inputs: list[str]
    out: str
    families_yaml: str | None = None
    vocab_size: int = 2000
    tokenizer: str | None = None
    eod_token: str | None = None
    val_docs: int | None = None
    workers: int = 1
    seed: int = 1234
    force: bool = False
    tokenizer_chars_per_family: int = 2_000_000
    character_coverage: float = 0.9995
    text_field: str = "text"
    progress: bool = True
    extra: dict = field(default_factory=dict)


# --- inputs ---------------------------------------------------------------------------------------------

def _code_of(path: Path) -> str | None:
    for suffix in SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return None


def _data_files(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*") if p.is_file() and _code_of(p) is not None)


def discover(inputs: Iterable[str]) -> dict[str, list[Path]]:
    """Language code → input files, from directories (``<code>.<ext>`` files or ``<code>/`` subdirectories),
    single files or manifests."""
    found: dict[str, list[Path]] = {}
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise ConfigError(f"--input {item!r} does not exist")
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and _code_of(p))
            subdirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and _data_files(p))
            if not files and not subdirs:
                raise ConfigError(f"--input {item!r} holds no <code>.jsonl / .txt / .parquet files (optionally .gz) "
                                  "and no <code>/ directories of them")
            for p in files:
                found.setdefault(_code_of(p), []).append(p)
            for d in subdirs:
                found.setdefault(d.name, []).extend(_data_files(d))
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
                    found.setdefault(str(code), []).extend(_data_files(p) if p.is_dir() else [p])
        elif _code_of(path):
            found.setdefault(_code_of(path), []).append(path)
        else:
            raise ConfigError(f"--input {item!r}: not a directory, a manifest, or a <code>.jsonl/.txt/.parquet file")
    return {normalize_code(code): files for code, files in found.items()}


def _open(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.name.endswith(".gz") else open(path, encoding="utf-8")


def _kind(path: Path) -> str:
    return "parquet" if path.name.endswith(".parquet") else "jsonl" if ".jsonl" in path.name else "txt"


def _parquet_batches(path: Path, text_field: str, batch: int = CHUNK_DOCS) -> Iterator[list]:
    import pyarrow.parquet as pq

    f = pq.ParquetFile(path)
    if text_field not in f.schema_arrow.names:
        raise DataError(f"{path}: no column {text_field!r} (columns: {', '.join(f.schema_arrow.names)}); choose one with --text-field")
    for b in f.iter_batches(batch_size=batch, columns=[text_field]):
        yield b.column(0).to_pylist()


def raw_items(path: Path, text_field: str = "text") -> Iterator[list]:
    """The file's documents in chunks, as cheaply as possible: raw JSON lines (parsed by the encoding workers),
    text blocks, or parquet column values. A document's index is its position in this stream."""
    kind = _kind(path)
    if kind == "parquet":
        yield from _parquet_batches(path, text_field)
        return
    with _open(path) as fh:
        if kind == "jsonl":
            chunk = []
            for line in fh:
                if line.strip():
                    chunk.append(line)
                    if len(chunk) == CHUNK_DOCS:
                        yield chunk
                        chunk = []
            if chunk:
                yield chunk
            return
        chunk, block = [], []
        for line in fh:
            if line.strip():
                block.append(line.rstrip("\n"))
            elif block:
                chunk.append("\n".join(block))
                block = []
                if len(chunk) == CHUNK_DOCS:
                    yield chunk
                    chunk = []
        if block:
            chunk.append("\n".join(block))
        if chunk:
            yield chunk


def parse_items(items: list, kind: str, text_field: str, where: tuple[Path, int]) -> list[str]:
    """Texts of a chunk (JSON lines parsed here); '' for a document without text."""
    if kind != "jsonl":
        return [t if isinstance(t, str) else "" for t in items]
    out = []
    for i, line in enumerate(items):
        try:
            text = json.loads(line)[text_field]
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{where[0]}: document {where[1] + i + 1}: expected a JSON object with a {text_field!r} field"
                            + (" (choose the field with --text-field)" if text_field == "text" else "")) from None
        out.append(text if isinstance(text, str) else "")
    return out


def read_documents(path: Path, text_field: str = "text") -> Iterator[str]:
    """Non-empty documents of one file."""
    kind = _kind(path)
    start = 0
    for chunk in raw_items(path, text_field):
        for text in parse_items(chunk, kind, text_field, (path, start)):
            if text.strip():
                yield text
        start += len(chunk)


def chunk_plan(path: Path, chunk_docs: int = CHUNK_DOCS) -> list[tuple[int, int, int]]:
    """(byte offset, byte length, documents) of consecutive chunks of a plain ``.jsonl``/``.txt`` file, from one
    binary scan: the encoding workers then read their own chunks (only gzip and parquet are read centrally)."""
    plan: list[tuple[int, int, int]] = []
    jsonl = _kind(path) == "jsonl"
    start = pos = 0
    n = 0
    in_block = False
    with open(path, "rb") as fh:
        for line in fh:
            blank = line.isspace() or not line
            if jsonl:
                if not blank:
                    if n == chunk_docs:
                        plan.append((start, pos - start, n))
                        start, n = pos, 0
                    n += 1
            elif not blank and not in_block:  # a text block (document) starts here
                if n == chunk_docs:
                    plan.append((start, pos - start, n))
                    start, n = pos, 0
                n += 1
            in_block = not blank
            pos += len(line)
    if n:
        plan.append((start, pos - start, n))
    return plan


def _splittable(path: Path) -> bool:
    return _kind(path) != "parquet" and not path.name.endswith(".gz")


def count_documents(path: Path, text_field: str = "text") -> int:
    if _kind(path) == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if _splittable(path):
        return sum(n for _, _, n in chunk_plan(path))
    return sum(len(c) for c in raw_items(path, text_field))


def read_range(path: Path, offset: int, length: int) -> list[str]:
    """The documents of one planned chunk (raw JSON lines, or text blocks)."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read(length).decode("utf-8")
    if _kind(path) == "jsonl":
        return [line for line in data.splitlines(True) if line.strip()]
    docs, block = [], []
    for line in data.splitlines():
        if line.strip():
            block.append(line)
        elif block:
            docs.append("\n".join(block))
            block = []
    if block:
        docs.append("\n".join(block))
    return docs


# --- splits, fingerprint ------------------------------------------------------------------------------

def fingerprint(files: dict[str, list[Path]], cfg: PrepareConfig, fmap: dict[str, str]) -> str:
    h = hashlib.sha256()
    for code in sorted(files):
        for p in files[code]:
            st = p.stat()
            h.update(f"{code}|{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    tok = load_tokenizer(cfg.tokenizer, cfg.eod_token).sha256 if cfg.tokenizer else ""
    opts = dict(vocab=cfg.vocab_size, tok=tok, val=cfg.val_docs, seed=cfg.seed, fam=fmap, chars=cfg.tokenizer_chars_per_family,
                cov=cfg.character_coverage, field=cfg.text_field, v=SCHEMA_VERSION)
    h.update(json.dumps(opts, sort_keys=True).encode())
    return h.hexdigest()


def _language_seed(seed: int, code: str) -> list[int]:
    return [seed, int(hashlib.md5(code.encode()).hexdigest()[:8], 16)]


def split_indices(n: int, code: str, seed: int, val_docs: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic validation and test document indices of a language with ``n`` documents (``val_docs`` each)."""
    k = val_docs if val_docs is not None else max(1, min(200, n // 20))
    if n < 2 * k + 1:
        raise DataError(
            f"language {code!r} has {n} documents, too few for {k} validation + {k} test + 1 training document; "
            f"add text or lower --val-docs"
        )
    pick = np.random.default_rng(_language_seed(seed, code)).choice(n, size=2 * k, replace=False)
    return np.sort(pick[:k]), np.sort(pick[k:])


def _split_codes(start: int, count: int, val: np.ndarray, test: np.ndarray) -> np.ndarray:
    idx = np.arange(start, start + count)
    codes = np.zeros(count, dtype=np.int8)
    codes[np.isin(idx, val)] = SPLIT_CODE["validation"]
    codes[np.isin(idx, test)] = SPLIT_CODE["test"]
    return codes


# --- tokenizer training ---------------------------------------------------------------------------------

def tokenizer_sample(files: dict[str, list[Path]], counts: dict[str, int], fmap: dict[str, str], splits: dict, cfg: PrepareConfig,
                     bar: Callable[[int], None] | None = None) -> list[str]:
    """A seeded, family-balanced sample of training-document lines, at most ``tokenizer_chars_per_family``
    characters per family: bounded whatever the corpus size, so tokenizer training time is too."""
    langs_of: dict[str, list[str]] = {}
    for code in files:
        langs_of.setdefault(fmap[code], []).append(code)
    lines: list[str] = []
    for code in sorted(files):
        budget = cfg.tokenizer_chars_per_family // len(langs_of[fmap[code]])
        size = sum(p.stat().st_size for p in files[code])
        want = min(counts[code], max(8, int(3 * budget * counts[code] / max(1, size))))  # ~3x the budget in expectation
        rng = np.random.default_rng(_language_seed(cfg.seed + 1, code))
        picked = set(rng.choice(counts[code], size=want, replace=False).tolist()) - set(splits[code][0]) - set(splits[code][1])
        used, start = 0, 0
        for path in files[code]:
            kind = _kind(path)
            for chunk in raw_items(path, cfg.text_field):
                for i in range(len(chunk)):
                    if start + i not in picked:
                        continue
                    for text in parse_items([chunk[i]], kind, cfg.text_field, (path, start + i)):
                        for line in text.replace(" . ", " .\n").splitlines():
                            line = line.strip()
                            if line and used < budget:
                                lines.append(line[:2000])
                                used += len(line)
                start += len(chunk)
                if used >= budget:
                    break
            if used >= budget:
                break
        if bar:
            bar(1)
    return lines


def fit_charset(lines: list[str], vocab_size: int, byte_fallback: bool) -> tuple[list[str], int]:
    """With byte fallback, keep in the training sample only the characters the vocabulary has room for (the most
    frequent, at most half of the pieces left after the 256 bytes): the rest never get a piece of their own and
    are spelled as bytes, losslessly, so a small vocabulary works on any script. Returns the lines and how many
    distinct characters were left to the bytes."""
    if not byte_fallback:
        return lines, 0
    counts: dict[str, int] = {}
    for line in lines:
        for ch in line:
            counts[ch] = counts.get(ch, 0) + 1
    room = max(1, (vocab_size - 4 - 256) // 2)
    if len(counts) <= room:
        return lines, 0
    keep = set(sorted(counts, key=lambda c: (-counts[c], c))[:room])
    table = {ord(c): None for c in counts if c not in keep}
    out = [t for t in (line.translate(table).strip() for line in lines) if t]
    return out, len(table)


def train_tokenizer(lines: list[str], prefix: Path, cfg: PrepareConfig, log: Callable[[str], None]) -> Path:
    import sentencepiece as spm

    byte_fallback = cfg.vocab_size >= BYTE_FALLBACK_MIN_VOCAB
    lines, dropped = fit_charset(lines, cfg.vocab_size, byte_fallback)
    coverage = cfg.character_coverage
    chars = sum(map(len, lines))
    log(f"tokenizer: training SentencePiece (unigram, vocab {cfg.vocab_size}, character coverage {coverage:.4g}, "
        f"byte fallback {'on' if byte_fallback else 'off'}) on {len(lines):,} sampled lines ({chars / 1e6:.1f}M characters)"
        + (f"; {dropped} rare characters left to byte fallback" if dropped else ""))
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as fh:
        fh.write("\n".join(lines))
        sample = fh.name
    done = threading.Event()
    started = time.time()
    # a ticker redraws its line in place: on a terminal only (piped, its redraws would run into each other)
    ticker = tqdm(total=None, desc="tokenizer", unit="s", bar_format="{desc}: training, {elapsed} elapsed",
                  disable=not (cfg.progress and interactive()))

    def tick() -> None:
        while not done.wait(1.0):
            ticker.refresh()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        spm.SentencePieceTrainer.train(
            input=sample, model_prefix=str(prefix), vocab_size=cfg.vocab_size, model_type="unigram",
            character_coverage=coverage, byte_fallback=byte_fallback, hard_vocab_limit=False,
            num_threads=max(1, cfg.workers), input_sentence_size=0, shuffle_input_sentence=False,
            pad_id=3, unk_id=0, bos_id=1, eos_id=2, minloglevel=2, split_digits=True,
        )
    except RuntimeError as err:
        match = re.search(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)", str(err))
        if match:
            raise ConfigError(
                f"--vocab-size {match.group(1)} is smaller than the {match.group(2)} distinct characters (plus special "
                f"pieces) of the corpus; use --vocab-size {int(match.group(2)) + 64} or more, or at least {BYTE_FALLBACK_MIN_VOCAB} (byte fallback "
                "then spells rare characters as bytes)"
            ) from None
        raise
    finally:
        done.set()
        thread.join()
        ticker.close()
        os.unlink(sample)
    log(f"tokenizer: trained in {time.time() - started:.1f}s")
    (prefix.parent / f"{prefix.name}.vocab").unlink(missing_ok=True)
    return prefix.parent / f"{prefix.name}.model"


# --- encoding -------------------------------------------------------------------------------------------

_TOK: Tokenizer | None = None


def _init_worker(kind: str, path: str) -> None:
    global _TOK
    _TOK = SentencePieceTokenizer(path) if kind == "sentencepiece" else load_tokenizer(path)


def _encode_chunk(job: tuple) -> tuple:
    """Parse, encode and pack one chunk: per split (flat ids with EOD after each document, lengths, bytes)."""
    lang, kind, items, codes, text_field, where, dtype = job
    if isinstance(items, tuple):  # (offset, length): the worker reads its own chunk
        items = read_range(where[0], *items)
    texts = parse_items(items, kind, text_field, where)
    keep = [i for i, t in enumerate(texts) if t.strip()]
    ids = _TOK.encode_documents([texts[i] for i in keep]) if keep else []
    lengths = np.fromiter(map(len, ids), dtype=np.int32, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=int(lengths.sum()))
    kept_codes = codes[keep] if keep else np.zeros(0, dtype=np.int8)
    n_bytes = np.fromiter((len(texts[i].encode("utf-8")) + 1 for i in keep), dtype=np.int64, count=len(keep))  # +1: EOD
    token_codes = np.repeat(kept_codes, lengths)
    out = {}
    for split, code in SPLIT_CODE.items():
        docs = kept_codes == code
        if docs.any():
            out[split] = (flat if docs.all() else flat[token_codes == code], lengths[docs], int(n_bytes[docs].sum()))
    return lang, out, len(items)


def bounded_imap(pool, fn, jobs: Iterable, inflight: int) -> Iterator:
    """``pool.imap`` in order, but with at most ``inflight`` jobs submitted ahead (``imap`` reads its whole input)."""
    pending: deque = deque()
    for job in jobs:
        pending.append(pool.apply_async(fn, (job,)) if pool else _Done(fn(job)))
        if len(pending) >= inflight:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


class _Done:
    def __init__(self, value: Any):
        self.value = value

    def get(self) -> Any:
        return self.value


class BinWriter:
    """Appends packed documents to ``prefix.bin``; ``close`` writes megatron-core's ``.idx`` for them."""

    def __init__(self, prefix: Path, dtype: type):
        prefix.parent.mkdir(parents=True, exist_ok=True)
        self.prefix, self.dtype = prefix, dtype
        self.fh = open(str(prefix) + ".bin", "wb")
        self.lengths: list[np.ndarray] = []
        self.bytes = 0

    def add(self, flat: np.ndarray, lengths: np.ndarray, n_bytes: int) -> None:
        self.fh.write(flat.tobytes())
        self.lengths.append(lengths)
        self.bytes += n_bytes

    def close(self) -> dict[str, int]:
        self.fh.close()
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, dtype=np.int32)
        write_index(str(self.prefix) + ".idx", self.dtype, lengths)
        return {"documents": int(len(lengths)), "tokens": int(lengths.sum()), "bytes": int(self.bytes)}


def _jobs(files: dict[str, list[Path]], plans: dict[Path, list], splits: dict, cfg: PrepareConfig, dtype: type) -> Iterator[tuple]:
    for code in sorted(files):
        val, test = splits[code]
        start = 0
        for path in files[code]:
            kind = _kind(path)
            if path in plans:
                chunks: Iterable = (((offset, length), n) for offset, length, n in plans[path])
            else:
                chunks = ((items, len(items)) for items in raw_items(path, cfg.text_field))
            for items, n in chunks:
                yield (code, kind, items, _split_codes(start, n, val, test), cfg.text_field, (path, start), dtype)
                start += n


# --- the whole preparation ------------------------------------------------------------------------------

def prepare(cfg: PrepareConfig, log: Callable[[str], None] | None = None) -> Manifest:
    """Run the whole preparation; a no-op when the output is up to date (unless ``force``)."""
    log = log or (lambda line: tqdm.write(line) if cfg.progress else None)
    files = discover(cfg.inputs)
    fam = FamilyMap.from_yaml(cfg.families_yaml) if cfg.families_yaml else FamilyMap.builtin()
    fmap = {code: fam.family_of(code) for code in files}
    if cfg.vocab_size < 64:
        raise ConfigError(f"--vocab-size must be >= 64, got {cfg.vocab_size}")
    if not 0 < cfg.character_coverage <= 1:
        raise ConfigError(f"--character-coverage must be in (0, 1], got {cfg.character_coverage}")
    given = load_tokenizer(cfg.tokenizer, cfg.eod_token) if cfg.tokenizer else None
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

    with staged_directory(out) as stage:
        bars = cfg.progress and interactive()
        plans = {p: chunk_plan(p) for fs in tqdm(list(files.values()), desc="count", unit="lang", disable=not bars)
                 for p in fs if _splittable(p)}
        counts = {code: sum(sum(n for _, _, n in plans[p]) if p in plans else count_documents(p, cfg.text_field) for p in fs)
                  for code, fs in sorted(files.items())}
        splits = {code: split_indices(counts[code], code, cfg.seed, cfg.val_docs) for code in sorted(files)}
        if given is None:
            with tqdm(total=len(files), desc="tokenizer sample", unit="lang", disable=not bars) as bar:
                lines = tokenizer_sample(files, counts, fmap, splits, cfg, bar.update)
            tokenizer: Tokenizer = SentencePieceTokenizer(train_tokenizer(lines, stage / "tokenizer", cfg, log))
            del lines
        else:
            tokenizer = given
        entry = tokenizer.install(stage)
        dtype = token_dtype(tokenizer.vocab_size)
        writers = {(code, split): BinWriter(stage / split / code, dtype) for code in files for split in SPLITS}
        total_bytes = sum(p.stat().st_size for fs in files.values() for p in fs)
        bar = tqdm(total=total_bytes, desc="encode", unit="B", unit_scale=True, disable=not bars)
        installed = str(stage / entry["model"])
        pool = get_context("fork").Pool(cfg.workers, initializer=_init_worker, initargs=(tokenizer.kind, installed)) \
            if cfg.workers > 1 else None
        if pool is None:
            _init_worker(tokenizer.kind, installed)
        try:
            scale = total_bytes / max(1, sum(counts.values()))
            for code, parts, n_items in bounded_imap(pool, _encode_chunk, _jobs(files, plans, splits, cfg, dtype),
                                                     inflight=4 * max(1, cfg.workers)):
                for split, (flat, lengths, n_bytes) in parts.items():
                    writers[(code, split)].add(flat, lengths, n_bytes)
                bar.update(int(scale * n_items))
        finally:
            bar.close()
            if pool:
                pool.close()
                pool.join()
        languages: dict[str, dict] = {}
        for code in sorted(files):
            entry_splits = {}
            for split in SPLITS:
                stats = writers[(code, split)].close()
                entry_splits[split] = {"parts": [{"prefix": f"{split}/{code}", **stats}], **stats}
            languages[code] = {"family": fmap[code], "splits": entry_splits}
        families: dict[str, list[str]] = {}
        for code in sorted(fmap):
            families.setdefault(fmap[code], []).append(code)
        doc = {"schema_version": SCHEMA_VERSION, "fingerprint": fp, "seed": cfg.seed, "tokenizer": entry,
               "languages": languages, "families": families}
        write_json_atomic(stage / "manifest.json", doc)
    return Manifest.load(out)
