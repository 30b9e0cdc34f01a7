"""Raw multilingual text → tokenizer → per-language Megatron indexed datasets + manifest, streamed.

Inputs, per language: ``<code>.jsonl`` (a ``text`` field, ``--text-field`` to choose), ``<code>.txt``
(documents separated by blank lines: lines of only whitespace, see ``lines``), either gzipped, ``<code>.parquet`` (a ``text`` column), or a directory
``<code>/`` of such files (the layout of FineWeb-2, MADLAD-400, CulturaX shards); or a YAML/JSON manifest
``{languages: {code: [paths]}}``.

The passes, each in its own module, memory independent of corpus size: find the inputs (``inputs``); count
each language's documents and plan chunks (``documents``, on the definitions of ``lines``) and pick its validation and test documents
(``splits``); without a given tokenizer, draw a bounded, seeded, family-balanced sample of documents and train
a SentencePiece tokenizer on it (``tokenizer_training``); encode in worker processes, a bounded number of
chunks in flight (``encoding``), appending to the ``.bin`` files of each document's split (``bin_writer``);
write the manifest. Output is built in a staging directory and moved into place only when complete.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from nemo_mlsl.data.bin_writer import BinWriter
from nemo_mlsl.data.documents import chunk_plan, count_documents
from nemo_mlsl.data.encoding import bounded_imap, encode_chunk, encoding_jobs, init_worker
from nemo_mlsl.data.indexed import token_dtype
from nemo_mlsl.data.inputs import discover, splittable
from nemo_mlsl.data.manifest import SCHEMA_VERSION, SPLITS, Manifest, staged_directory, write_json_atomic
from nemo_mlsl.data.splits import split_indices
from nemo_mlsl.data.tokenizer import SentencePieceTokenizer, Tokenizer, load_tokenizer
from nemo_mlsl.data.tokenizer_training import tokenizer_sample, train_tokenizer
from nemo_mlsl.errors import ConfigError, DataError
from nemo_mlsl.families import FamilyMap
from nemo_mlsl.terminal import interactive
from nemo_mlsl.typed_config import check_non_negative


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

    def __post_init__(self) -> None:
        if self.vocab_size < 64:
            raise ConfigError(f"--vocab-size must be >= 64, got {self.vocab_size}")
        if not 0 < self.character_coverage <= 1:
            raise ConfigError(f"--character-coverage must be in (0, 1], got {self.character_coverage}")
        if self.val_docs is not None and self.val_docs < 1:
            raise ConfigError(f"--val-docs is the number of validation documents per language and must be >= 1, got "
                              f"{self.val_docs} (leave it out for the default: 5% of each language, 1 to 200)")
        if self.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {self.workers}")
        check_non_negative(self.seed, "--seed")


def fingerprint(files: dict[str, list[Path]], cfg: PrepareConfig, fmap: dict[str, str]) -> str:
    """A hash of the inputs (paths, sizes, times) and every option that changes the output."""
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


def _up_to_date(out: Path, fp: str) -> Manifest | None:
    """The existing output if it was prepared from the same inputs and options; a ConfigError if from others."""
    if not (out / "manifest.json").exists():
        return None
    try:
        current: Manifest | None = Manifest.load(out)
    except DataError:  # incomplete or older data: treated like different inputs
        current = None
    if current is not None and current.doc.get("fingerprint") == fp:
        return current
    raise ConfigError(f"{out} already holds prepared data from other inputs or options; pass --force to rebuild")


def _bars(cfg: PrepareConfig) -> bool:
    """Progress bars redraw their line in place: on a terminal only (piped, their redraws would run into each other)."""
    return cfg.progress and interactive()


def _train_tokenizer(files: dict, counts: dict, fmap: dict, splits: dict, stage: Path, cfg: PrepareConfig,
                     log: Callable[[str], None]) -> Tokenizer:
    """A tokenizer trained on a bounded sample of the training documents."""
    with tqdm(total=len(files), desc="tokenizer sample", unit="lang", disable=not _bars(cfg)) as bar:
        lines = tokenizer_sample(files, counts, fmap, splits, seed=cfg.seed, chars_per_family=cfg.tokenizer_chars_per_family,
                                 text_field=cfg.text_field, bar=bar.update)
    model = train_tokenizer(lines, stage / "tokenizer", vocab_size=cfg.vocab_size, character_coverage=cfg.character_coverage,
                            threads=cfg.workers, progress=_bars(cfg), log=log)
    return SentencePieceTokenizer(model)


def _encode(files: dict, plans: dict, counts: dict, splits: dict, tokenizer: Tokenizer, installed: str, stage: Path,
            cfg: PrepareConfig) -> dict[str, dict]:
    """Encode every document into its split's ``.bin``; per language and split: documents, tokens, bytes."""
    dtype = token_dtype(tokenizer.vocab_size)
    writers = {(code, split): BinWriter(stage / split / code, dtype) for code in files for split in SPLITS}
    total_bytes = sum(p.stat().st_size for fs in files.values() for p in fs)
    bar = tqdm(total=total_bytes, desc="encode", unit="B", unit_scale=True, disable=not _bars(cfg))
    # forkserver, not fork: a process with threads (tqdm's monitor, torch's pools, a test runner's) forks children that
    # can wake holding a copy of a lock nobody will release; seen as a hang of two encode workers under pytest-xdist.
    pool = get_context("forkserver").Pool(cfg.workers, initializer=init_worker, initargs=(tokenizer.kind, installed)) \
        if cfg.workers > 1 else None
    if pool is None:
        init_worker(tokenizer.kind, installed)
    try:
        scale = total_bytes / max(1, sum(counts.values()))
        jobs = encoding_jobs(files, plans, splits, cfg.text_field, dtype)
        for code, parts, n_items in bounded_imap(pool, encode_chunk, jobs, inflight=4 * max(1, cfg.workers)):
            for split, (flat, lengths, n_bytes) in parts.items():
                writers[(code, split)].add(flat, lengths, n_bytes)
            bar.update(int(scale * n_items))
    finally:
        bar.close()
        if pool:
            pool.close()
            pool.join()
    return {code: {split: writers[(code, split)].close() for split in SPLITS} for code in sorted(files)}


def prepare(cfg: PrepareConfig, log: Callable[[str], None] | None = None) -> Manifest:
    """Run the whole preparation; a no-op when the output is up to date (unless ``force``)."""
    log = log or (lambda line: tqdm.write(line) if cfg.progress else None)
    files = discover(cfg.inputs)
    fam = FamilyMap.from_yaml(cfg.families_yaml) if cfg.families_yaml else FamilyMap.builtin()
    fmap = {code: fam.family_of(code) for code in files}
    given = load_tokenizer(cfg.tokenizer, cfg.eod_token) if cfg.tokenizer else None  # a bad one fails before any work
    out = Path(cfg.out)
    fp = fingerprint(files, cfg, fmap)
    current = None if cfg.force else _up_to_date(out, fp)
    if current is not None:
        return current

    with staged_directory(out) as stage:
        plans = {p: chunk_plan(p) for fs in tqdm(list(files.values()), desc="count", unit="lang", disable=not _bars(cfg))
                 for p in fs if splittable(p)}
        counts = {code: sum(sum(n for _, _, n in plans[p]) if p in plans else count_documents(p, cfg.text_field) for p in fs)
                  for code, fs in sorted(files.items())}
        splits = {code: split_indices(counts[code], code, cfg.seed, cfg.val_docs) for code in sorted(files)}
        tokenizer = given if given is not None else _train_tokenizer(files, counts, fmap, splits, stage, cfg, log)
        entry = tokenizer.install(stage)
        stats = _encode(files, plans, counts, splits, tokenizer, str(stage / entry["model"]), stage, cfg)
        languages = {code: {"family": fmap[code], "splits": {split: {"parts": [{"prefix": f"{split}/{code}", **s}], **s}
                                                             for split, s in stats[code].items()}}
                     for code in sorted(files)}
        families: dict[str, list[str]] = {}
        for code in sorted(fmap):
            families.setdefault(fmap[code], []).append(code)
        doc = {"schema_version": SCHEMA_VERSION, "fingerprint": fp, "seed": cfg.seed, "tokenizer": entry,
               "languages": languages, "families": families}
        write_json_atomic(stage / "manifest.json", doc)
    return Manifest.load(out)
