"""Local tokenizers: a SentencePiece ``.model`` or a Hugging Face ``tokenizer.json`` (a file, or a directory
holding one), read offline. Prepared data keeps its own copy (``DATA/tokenizer.model`` or ``DATA/tokenizer/``)
and records its kind and SHA-256 in the manifest, so runs, checkpoints and NeMo recipes all use the same one.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from nemo_mlsl.errors import ConfigError

EOD_CANDIDATES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|eot_id|>", "[SEP]", "<|im_end|>")
PAD_CANDIDATES = ("<pad>", "[PAD]", "<|pad|>", "<|finetune_right_pad_id|>")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Tokenizer(ABC):
    """What the data path needs from a tokenizer."""

    kind: str
    path: Path  # the file that defines it (hashed)
    vocab_size: int
    eod_id: int
    pad_id: int  # never in the data (megatron masks the loss of pad positions), so it differs from EOD

    @abstractmethod
    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (no special tokens added)."""

    def encode_documents(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's ids followed by the end-of-document id (what an indexed dataset stores)."""
        return [ids + [self.eod_id] for ids in self.encode(texts)]

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``."""

    @property
    def sha256(self) -> str:
        return sha256_of(self.path)

    @abstractmethod
    def install(self, data_dir: Path) -> dict:
        """Copy into a prepared data directory; returns the manifest's ``tokenizer`` entry."""

    def entry(self, model: str) -> dict:
        return {"kind": self.kind, "model": model, "sha256": self.sha256, "vocab_size": self.vocab_size,
                "eod_id": self.eod_id, "pad_id": self.pad_id}


class SentencePieceTokenizer(Tokenizer):
    kind = "sentencepiece"

    def __init__(self, path: str | Path):
        import sentencepiece as spm

        self.path = Path(path)
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(self.path))
        except (OSError, RuntimeError) as err:
            raise ConfigError(f"--tokenizer {str(path)!r} is not a SentencePiece model ({err})") from None
        self.vocab_size = self.sp.get_piece_size()
        self.eod_id = self.sp.eos_id() if self.sp.eos_id() >= 0 else self.sp.piece_to_id("</s>")
        self.pad_id = self.sp.pad_id() if self.sp.pad_id() >= 0 else self.vocab_size

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return self.sp.encode(list(texts), num_threads=1)

    def encode_documents(self, texts: Sequence[str]) -> list[list[int]]:
        if self.sp.eos_id() == self.eod_id:
            return self.sp.encode(list(texts), add_eos=True, num_threads=1)
        return super().encode_documents(texts)

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([int(i) for i in ids])

    def install(self, data_dir: Path) -> dict:
        dest = data_dir / "tokenizer.model"
        if self.path.resolve() != dest.resolve():
            shutil.copy(self.path, dest)
        return self.entry("tokenizer.model")


class HFTokenizer(Tokenizer):
    """A Hugging Face fast tokenizer from its ``tokenizer.json`` (the ``tokenizers`` library, nothing downloaded)."""

    kind = "huggingface"

    def __init__(self, path: str | Path, eod_token: str | None = None):
        from tokenizers import Tokenizer as RustTokenizer

        p = Path(path)
        self.path = p / "tokenizer.json" if p.is_dir() else p
        config = p / "tokenizer_config.json" if p.is_dir() else None
        if eod_token is None and config is not None and config.is_file():
            eod_token = json.loads(config.read_text()).get("eos_token") or None
        if not self.path.is_file():
            raise ConfigError(f"--tokenizer {str(path)!r}: no tokenizer.json there (give a SentencePiece .model, a "
                              "Hugging Face tokenizer.json, or a directory holding one)")
        try:
            self.tok = RustTokenizer.from_file(str(self.path))
        except Exception as err:  # noqa: BLE001 - the library raises plain Exceptions for malformed files
            raise ConfigError(f"--tokenizer {str(self.path)!r} is not a Hugging Face tokenizer.json ({err})") from None
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)
        names = [eod_token] if eod_token else list(EOD_CANDIDATES)
        eod = next((self.tok.token_to_id(t) for t in names if self.tok.token_to_id(t) is not None), None)
        if eod is None:
            raise ConfigError(f"tokenizer {str(self.path)!r} has none of the end-of-document tokens {names}; name yours "
                              "with --eod-token TOKEN (the token your indexed data separates documents with)")
        self.eod_id = int(eod)
        pad = next((self.tok.token_to_id(t) for t in PAD_CANDIDATES if self.tok.token_to_id(t) is not None), None)
        self.pad_id = int(pad) if pad is not None and pad != self.eod_id else self.vocab_size
        self.eod_token = self.tok.id_to_token(self.eod_id)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def install(self, data_dir: Path) -> dict:
        d = data_dir / "tokenizer"
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.path, d / "tokenizer.json")
        # enough for transformers' (and NeMo's) AutoTokenizer to load the directory offline
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": self.eod_token,
                  "model_max_length": 1_000_000_000}
        (d / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
        return self.entry("tokenizer")


def load_tokenizer(path: str | Path, eod_token: str | None = None) -> Tokenizer:
    """A SentencePiece ``.model``, or a Hugging Face ``tokenizer.json`` / directory holding one."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"--tokenizer {str(path)!r} does not exist")
    if p.is_dir() or p.suffix == ".json":
        return HFTokenizer(p, eod_token)
    return SentencePieceTokenizer(p)


@dataclass(frozen=True)
class TokenizerEntry:
    """The manifest's record of the data's tokenizer (schema 1 manifests hold a SentencePiece model)."""

    kind: str
    model: str
    sha256: str | None
    vocab_size: int
    eod_id: int
    pad_id: int

    @classmethod
    def of(cls, doc: dict) -> "TokenizerEntry":
        return cls(doc.get("kind") or doc.get("type") or "sentencepiece", doc["model"], doc.get("sha256"), int(doc["vocab_size"]),
                   int(doc["eod_id"]), int(doc["pad_id"]))

