"""The family-ratio blend, built by megatron-core's ``BlendedMegatronDatasetBuilder`` (no home-made sampler).

Family ratios × within-family weights give one weight per language prefix for the training split.
Validation is a single blend over every language's validation split with the same number of
samples per language, independent of the training ratios, so a trainer keeps one validation
dataloader; ``dataset_id`` of each sample indexes ``validation_languages``. It is one fixed set
(``validation_set``): sized by samples per language, never by the run's length or evaluation count,
shuffled with ``VALIDATION_SEED``, never the run's seed, and read from its first sample at every
evaluation (``ValidationWindow``), so every run of a study, on every backend, is scored on the same
samples in the same order.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from filelock import FileLock

from nemo_mlsl.data.manifest import Manifest
from nemo_mlsl.errors import ConfigError
from nemo_mlsl.mixtures import check_epochs, language_weights, parse_ratios, validate_ratios
from nemo_mlsl.typed_config import check_non_negative, check_positive

DEFAULT_MAX_EPOCHS = 4.0
VALIDATION_SEED = 1234  # the validation set's shuffle: the same for every run, whatever the run's own seed


class _SpecialTokens:
    """The tokenizer facts megatron's GPTDataset needs (EOD and pad ids, vocabulary size), hashable into its cache key."""

    def __init__(self, eod: int, pad: int, kind: str, sha256: str, vocab_size: int | None = None):
        self.eod = eod
        self.pad = pad
        self.vocab_size = vocab_size
        self.unique_identifiers = {"class": kind, "model": sha256[:16], "eod": eod, "pad": pad}


class _Tagged:
    """A single GPTDataset seen as a one-member blend (megatron returns no BlendedDataset then)."""

    def __init__(self, dataset: Any):
        self.dataset = dataset
        self.dataset_index = np.zeros(len(dataset), dtype=np.int16)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> dict:
        return {"dataset_id": np.int16(0), **self.dataset[idx]}


@dataclass(frozen=True)
class BlendConfig:
    """What the blend needs besides the prepared data."""

    ratios: Mapping[str, float]
    within: str = "natural"
    seq_length: int = 128
    seed: int = 1234
    max_epochs: float = DEFAULT_MAX_EPOCHS
    normalize: bool = False

    def __post_init__(self) -> None:
        if self.seq_length < 2:
            raise ConfigError(f"seq_length must be >= 2, got {self.seq_length}")
        check_positive(self.max_epochs, "max_epochs (--max-epochs)", "how often a language's data may repeat")
        check_non_negative(self.seed, "--seed")


@dataclass
class FamilyBlend:
    """Resolved weights and the megatron datasets built from them."""

    manifest: Manifest
    config: BlendConfig
    family_ratios: dict[str, float] = field(init=False)
    weights: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        cfg = self.config
        self.family_ratios = validate_ratios(cfg.ratios, self.manifest.family_tokens(), normalize=cfg.normalize)
        self.weights = language_weights(self.family_ratios, self.manifest.family_languages(), cfg.within)

    @property
    def train_parts(self) -> list[tuple[str, str, float]]:
        """(language, prefix, weight) of every training dataset, in ``dataset_id`` order: languages with weight > 0,
        each split over its prefixes in proportion to their tokens."""
        out = []
        for lang in self.manifest.languages:
            w = self.weights.get(lang, 0.0)
            if w <= 0:
                continue
            parts = self.manifest.parts(lang, "train")
            total = sum(p.tokens for p in parts)
            out += [(lang, p.prefix, w * p.tokens / total) for p in parts if p.tokens > 0]
        return out

    @property
    def train_languages(self) -> list[str]:
        """The language of each training ``dataset_id`` (a language with several prefixes appears once for each)."""
        return [lang for lang, _, _ in self.train_parts]

    @property
    def validation_languages(self) -> list[str]:
        """Every language, in ``dataset_id`` order of the validation blend."""
        return list(self.manifest.languages)

    def check_epochs(self, train_samples: int) -> dict[str, float]:
        """Epochs per family; every language is checked too (a small language in a family sampled
        ``within: uniform`` can repeat far more often than its family as a whole)."""
        budget = float(train_samples) * self.config.seq_length
        epochs = check_epochs(self.family_ratios, self.manifest.family_tokens(), budget, self.config.max_epochs)
        check_epochs(self.weights, self.manifest.tokens(), budget, self.config.max_epochs, what="language",
                     hint=f" (its weight is its family's ratio x its share within the family, within: {self.config.within}; "
                          "'natural' never repeats a language more than its family)")
        return epochs

    def build(self, train_samples: int, val_samples_per_language: int, cache_dir: str | Path | None = None) -> "BuiltBlend":
        """Build the training blend (the run's seed) and the study's fixed validation set (``validation_set``);
        megatron caches its indices under ``cache_dir``."""
        if train_samples < 1 or val_samples_per_language < 1:
            raise ConfigError("train_samples and val_samples_per_language must be >= 1")
        epochs = self.check_epochs(train_samples)
        train_ds = self.build_train(train_samples, cache_dir)
        val_ds = validation_set(self.manifest, val_samples_per_language, self.config.seq_length, cache_dir)
        return BuiltBlend(self, train_ds, val_ds, epochs, train_samples)

    def build_train(self, train_samples: int, cache_dir: str | Path | None = None) -> Any:
        """megatron's training blend of ``train_samples`` samples with the config's seed (no epoch check: ``build``
        and a schedule's build check the caps over what they draw)."""
        from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
        from megatron.core.datasets.gpt_dataset import GPTDataset

        cache = _cache_dir(self.manifest, cache_dir)
        parts = self.train_parts
        train = ([prefix for _, prefix, _ in parts], [w for _, _, w in parts])
        with _quiet_build(cache):
            train_ds, _, _ = BlendedMegatronDatasetBuilder(
                GPTDataset, [train_samples, None, None], lambda: True,
                _gpt_config(self.manifest, self.config.seed, self.config.seq_length, cache, [train, None, None])
            ).build()
        return train_ds if hasattr(train_ds, "dataset_index") else _Tagged(train_ds)


def _cache_dir(manifest: Manifest, cache_dir: str | Path | None) -> Path:
    """Always our own cache directory: without one, megatron writes its sample indices under each dataset's prefix,
    i.e. beside a user's existing .bin/.idx files."""
    cache = Path(cache_dir) if cache_dir else manifest.root / ".cache"
    cache.mkdir(parents=True, exist_ok=True)
    return cache


@contextlib.contextmanager
def _quiet_build(cache: Path):
    """Megatron's blended dataset caches only under torch.distributed (a single process gets a one-member group);
    without it megatron says so at WARNING for every build. One builder at a time per cache: megatron writes its
    index files unlocked, and a concurrent reader of the same data directory (two runs of a study, two test
    workers) could load a half-written index. Within a multi-rank job megatron's builder orders the ranks itself
    (rank 0 first, then a barrier), and a file lock held across that barrier would deadlock."""
    import torch.distributed as dist

    logging.getLogger("megatron.core.datasets").setLevel(logging.ERROR)
    in_job = dist.is_initialized() and dist.get_world_size() > 1
    with warnings.catch_warnings(), one_process_group(), (contextlib.nullcontext() if in_job else
                                                         FileLock(str(cache / ".build.lock"))):
        warnings.simplefilter("ignore")
        yield


def _gpt_config(m: Manifest, seed: int, seq_length: int, cache: Path | None, blend_per_split: list) -> Any:
    from megatron.core.datasets.gpt_dataset import GPTDatasetConfig

    return GPTDatasetConfig(
        random_seed=seed, sequence_length=seq_length, blend_per_split=blend_per_split,
        path_to_cache=str(cache) if cache else None,
        tokenizer=_SpecialTokens(m.eod_id, m.pad_id, m.tokenizer_kind, m.tokenizer_sha256, m.vocab_size),
        reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False, create_attention_mask=False,
        mid_level_dataset_surplus=0.005,
    )


def validation_set(manifest: Manifest, samples_per_language: int, seq_length: int, cache_dir: str | Path | None = None) -> Any:
    """The study's fixed validation set: ``samples_per_language`` x languages samples of megatron's blend over every
    language's validation split (equal weights, ``dataset_id`` = index in ``manifest.languages``), shuffled with
    ``VALIDATION_SEED``. It depends on the data, the count and the sequence length only: never on a run's length,
    evaluation count, batch size or seed, so every run and every backend scores the same samples in the same order."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset

    if samples_per_language < 1:
        raise ConfigError(f"val_samples_per_language must be >= 1, got {samples_per_language}")
    langs = list(manifest.languages)
    val = ([manifest.prefix(l, "validation") for l in langs], [1.0] * len(langs))
    cache = _cache_dir(manifest, cache_dir)
    with _quiet_build(cache):
        _, val_ds, _ = BlendedMegatronDatasetBuilder(
            GPTDataset, [None, samples_per_language * len(langs), None], lambda: True,
            _gpt_config(manifest, VALIDATION_SEED, seq_length, cache, [None, val, None])
        ).build()
    val_ds = val_ds if hasattr(val_ds, "dataset_index") else _Tagged(val_ds)
    return _Prefix(val_ds, samples_per_language * len(langs))


class _Prefix:
    """The first ``n`` samples of a megatron blend (its surplus samples are not part of the set)."""

    def __init__(self, dataset: Any, n: int):
        self.dataset, self.n = dataset, n
        self.dataset_index = np.asarray(dataset.dataset_index[:n])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx: int) -> dict:
        if not 0 <= idx < self.n:
            raise IndexError(idx)
        return self.dataset[idx]


def validation_batches(samples: int, global_batch_size: int) -> int:
    """Global batches one evaluation reads to cover a validation set of ``samples`` (NeMo's ``limit_val_batches``,
    Megatron-Bridge's ``eval_iters``)."""
    return max(1, -(-int(samples) // int(global_batch_size)))


class ValidationWindow:
    """What one evaluation reads: the fixed validation set from its first sample, padded to whole global batches.

    Sample ``i`` of the window is sample ``i`` of the set; past the set's end (the last global batch's remainder)
    it repeats the set's first samples with a zero loss mask, so they add no loss and no tokens: every evaluation
    scores exactly the set. Trainers that read validation as one stream (Megatron-Bridge) restart it per evaluation."""

    def __init__(self, fixed: Any, global_batch_size: int):
        self.fixed = fixed
        self.samples = len(fixed)
        self.length = validation_batches(self.samples, global_batch_size) * int(global_batch_size)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, idx: int) -> dict:
        if not 0 <= idx < self.length:
            raise IndexError(idx)
        if idx < self.samples:
            return self.fixed[idx]
        sample = dict(self.fixed[idx % self.samples])
        sample["loss_mask"] = sample["loss_mask"] * 0  # padding: no loss, no tokens
        return sample


def blended_counts(weights: Sequence[float], samples: int) -> np.ndarray:
    """Samples drawn from each dataset among the first ``samples`` of a megatron blend with these weights, by
    megatron-core's own index builder (the blend draws greedily, so the first n entries do not depend on its size):
    what a run has consumed after ``samples`` samples, without the trainer's dataset at hand."""
    from megatron.core.datasets import helpers

    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    n = max(0, int(samples))
    index, sample_index = np.zeros(n, dtype=np.int16), np.zeros(n, dtype=np.int64)
    if n:
        helpers.build_blending_indices(index, sample_index, w, len(w), n, False)
    return np.bincount(index.astype(np.int64), minlength=len(w))


@contextlib.contextmanager
def one_process_group():
    """A one-process gloo group (in-memory store, no port) while megatron builds, unless one exists already.

    torch wraps ``sys.excepthook`` at every ``init_process_group`` (a ``[rank0]:`` prefix per wrap); the hook in
    place before is put back, so a traceback after N blends carries no prefix rather than N."""
    import sys

    import torch.distributed as dist

    if dist.is_initialized():
        yield
        return
    hook = sys.excepthook
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()
        sys.excepthook = hook


@dataclass
class BuiltBlend:
    """Datasets plus the lookup tables that turn a sample's ``dataset_id`` into a language and family."""

    blend: FamilyBlend
    train: Any
    validation: Any
    family_epochs: dict[str, float]
    train_samples: int | None = None  # as requested; megatron's index holds a few more, never drawn

    @property
    def train_languages(self) -> list[str]:
        return self.blend.train_languages

    @property
    def validation_languages(self) -> list[str]:
        return self.blend.validation_languages

    @property
    def families(self) -> list[str]:
        return sorted(self.blend.manifest.families)

    def family_index_of_language(self, languages: Sequence[str]) -> list[int]:
        fams = self.families
        return [fams.index(self.blend.manifest.family_of(l)) for l in languages]

    def audit(self) -> dict[str, dict]:
        """Target vs realized share per family and language, counted over the requested samples of the built index."""
        drawn = np.asarray(self.train.dataset_index[: self.train_samples], dtype=np.int64)
        return audit_drawn(self.blend, self.train_languages, drawn)


def audit_drawn(blend: FamilyBlend, languages: Sequence[str], drawn: np.ndarray) -> dict[str, dict]:
    """The audit of drawn samples (``drawn``: their ``dataset_id``, indexing ``languages``) against ``blend``'s targets."""
    counts = np.bincount(np.asarray(drawn, dtype=np.int64), minlength=len(languages))
    total = counts.sum()
    seq = blend.config.seq_length
    m = blend.manifest
    per_language = {lang: 0 for lang in m.languages}
    for lang, n in zip(languages, counts.tolist()):
        per_language[lang] += n
    train_tokens = m.tokens("train")
    langs: dict[str, dict] = {}
    families: dict[str, dict] = {}
    for lang, n in per_language.items():
        tokens = n * seq
        fam = m.family_of(lang)
        langs[lang] = {
            "family": fam, "target": blend.weights.get(lang, 0.0), "realized": n / total,
            "samples": n, "tokens": tokens, "epochs": tokens / max(1, train_tokens[lang]),
        }
        f = families.setdefault(fam, {"target": blend.family_ratios[fam], "realized": 0.0, "samples": 0, "tokens": 0})
        f["realized"] += n / total
        f["samples"] += n
        f["tokens"] += tokens
    fam_tokens = m.family_tokens("train")
    for fam, f in families.items():
        f["epochs"] = f["tokens"] / max(1, fam_tokens[fam])
    return {"families": dict(sorted(families.items())), "languages": langs, "samples": int(total), "seq_length": seq}


def blend_paths(data_dir: str, ratios: str | Mapping[str, float] | None, within: str = "natural", normalize: bool = False, *,
                train_samples: int | None = None, seq_length: int = 128, max_epochs: float = DEFAULT_MAX_EPOCHS) -> dict[str, Any]:
    """The blend in the flat ``[w, prefix, ...]`` form megatron-based trainers take (NeMo's ``PreTrainingDataModule``
    ``paths``; Megatron-Bridge's ``blend_per_split``) plus the lookup tables the family callbacks need; with ``train_samples``
    the epoch caps of every family and language are checked here, before any job is submitted. ``ratios`` is a
    mapping or the CLI form ``fam=p,fam=p``."""
    if ratios is None:
        raise ConfigError("a run on the family blend needs family ratios: ratios='fam=p,...' (or --ratios)")
    if isinstance(ratios, str):
        ratios = parse_ratios(ratios)
    m = Manifest.load(data_dir)
    blend = FamilyBlend(m, BlendConfig(dict(ratios), within, seq_length=seq_length, max_epochs=max_epochs, normalize=normalize))
    if train_samples:
        blend.check_epochs(train_samples)
    train: list[Any] = []
    for _, prefix, weight in blend.train_parts:
        train += [weight, prefix]
    val: list[Any] = []
    for lang in blend.validation_languages:
        val += [1.0, m.prefix(lang, "validation")]
    return {
        "paths": {"train": train, "validation": val, "test": val},
        "validation_languages": blend.validation_languages,
        "family_of": {l: m.family_of(l) for l in m.languages},
        "bytes_per_token": m.bytes_per_token("validation"),
        "tokenizer_model": str(m.tokenizer_path),
        "tokenizer_kind": m.tokenizer_kind,
        "family_ratios": blend.family_ratios,
        "vocab_size": m.vocab_size,
        "train_languages": blend.train_languages,
        "train_tokens": m.tokens("train"),
        "family_tokens": m.family_tokens("train"),
        "cache_dir": str(m.root / ".cache"),  # megatron's sample indices: in the data directory, never beside a user's prefixes
    }
