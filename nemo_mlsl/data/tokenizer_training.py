"""Training the SentencePiece tokenizer of ``mlsl prepare``: a bounded, seeded, family-balanced sample of training
documents, a character set that fits the vocabulary, and the trainer run with a progress ticker."""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from nemo_mlsl.data.documents import parse_items, raw_items
from nemo_mlsl.data.inputs import kind_of
from nemo_mlsl.data.splits import language_seed
from nemo_mlsl.errors import ConfigError
from nemo_mlsl.terminal import interactive

BYTE_FALLBACK_MIN_VOCAB = 320  # 256 byte pieces, 4 special ones and room for characters and merges


def tokenizer_sample(files: dict[str, list[Path]], counts: dict[str, int], fmap: dict[str, str], splits: dict, *,
                     seed: int, chars_per_family: int, text_field: str = "text",
                     bar: Callable[[int], None] | None = None) -> list[str]:
    """A seeded, family-balanced sample of training-document lines, at most ``chars_per_family`` characters per
    family: bounded whatever the corpus size, so tokenizer training time is too."""
    langs_of: dict[str, list[str]] = {}
    for code in files:
        langs_of.setdefault(fmap[code], []).append(code)
    lines: list[str] = []
    for code in sorted(files):
        budget = chars_per_family // len(langs_of[fmap[code]])
        size = sum(p.stat().st_size for p in files[code])
        want = min(counts[code], max(8, int(3 * budget * counts[code] / max(1, size))))  # ~3x the budget in expectation
        rng = np.random.default_rng(language_seed(seed + 1, code))
        picked = set(rng.choice(counts[code], size=want, replace=False).tolist()) - set(splits[code][0]) - set(splits[code][1])
        used, start = 0, 0
        for path in files[code]:
            kind = kind_of(path)
            for chunk in raw_items(path, text_field):
                for i in range(len(chunk)):
                    if start + i not in picked:
                        continue
                    for text in parse_items([chunk[i]], kind, text_field, (path, start + i)):
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


def train_tokenizer(lines: list[str], prefix: Path, *, vocab_size: int, character_coverage: float, threads: int = 1,
                    progress: bool = True, log: Callable[[str], None] = print) -> Path:
    """Train a unigram SentencePiece model on ``lines`` into ``prefix.model`` (byte fallback from
    ``BYTE_FALLBACK_MIN_VOCAB`` pieces up); a vocabulary too small for the alphabet is a ``ConfigError``."""
    import sentencepiece as spm

    byte_fallback = vocab_size >= BYTE_FALLBACK_MIN_VOCAB
    lines, dropped = fit_charset(lines, vocab_size, byte_fallback)
    chars = sum(map(len, lines))
    log(f"tokenizer: training SentencePiece (unigram, vocab {vocab_size}, character coverage {character_coverage:.4g}, "
        f"byte fallback {'on' if byte_fallback else 'off'}) on {len(lines):,} sampled lines ({chars / 1e6:.1f}M characters)"
        + (f"; {dropped} rare characters left to byte fallback" if dropped else ""))
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as fh:
        fh.write("\n".join(lines))
        sample = fh.name
    done = threading.Event()
    started = time.time()
    # a ticker redraws its line in place: on a terminal only (piped, its redraws would run into each other)
    ticker = tqdm(total=None, desc="tokenizer", unit="s", bar_format="{desc}: training, {elapsed} elapsed",
                  disable=not (progress and interactive()))

    def tick() -> None:
        while not done.wait(1.0):
            ticker.refresh()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        spm.SentencePieceTrainer.train(
            input=sample, model_prefix=str(prefix), vocab_size=vocab_size, model_type="unigram",
            character_coverage=character_coverage, byte_fallback=byte_fallback, hard_vocab_limit=False,
            num_threads=max(1, threads), input_sentence_size=0, shuffle_input_sentence=False,
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
