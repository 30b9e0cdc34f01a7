"""A synthetic multilingual corpus with known structure: the default corpus of the CPU study.

Each family has its own script (disjoint character sets), word order, agreement classes and
proto-lexicon; languages of a family derive their lexicon from the proto-lexicon by a few
language-specific sound changes, so they share most structure. ``transfer`` is the share of each
family's sentences borrowed from its partner: families pair up (amber-cobalt, jade-ruby, ...; an odd
last family has none) and borrow words, grammar and script from each other, like related families.
Training on one family of a pair then teaches part of the other, so the loss of a family depends on
its partner's ratio. At 0 no two families share a single character (apart from space and '.'), so
what a model learns from one family cannot help another by content.
Documents carry a topic that skews their nouns, giving structure above the sentence level.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.typed_config import check_non_negative
from nemo_mlsl.outputs import output_dir

# (consonants, vowels) per script; syllabic scripts use one character per syllable.
SCRIPTS: list[tuple[str, str]] = [
    ("bdfgklmnprstvz", "aeiou"),  # Latin lower case
    ("бвгджзклмнпрстфх", "аеиоуя"),  # Cyrillic
    ("βγδζθκλμνξπρστφχ", "αεηιου"),  # Greek
    ("բգդզթժլխծկհձղճմյնշչպջռսվտր", "աեէըիոօ"),  # Armenian
    ("ბგდვზთკლმნპჟრსტფქღყშჩცძწჭხ", "აეიოუ"),  # Georgian
    ("かきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもらりるれろ", ""),  # Hiragana (syllabic)
    ("カキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモラリルレロ", ""),  # Katakana (syllabic)
    ("ᎠᎡᎢᎣᎤᎥᎦᎧᎨᎩᎪᎫᎬᎭᎮᎯᎰᎱᎲᎳᎴᎵᎶᎷᎸᎹᎺᎻᎼᎽᎾᏀᏁᏂᏃᏄᏅ", ""),  # Cherokee (syllabic)
]
ORDERS = ["SVO", "SOV", "VSO", "VOS", "OSV", "OVS"]
# Colour names: a family called "gamma" or "alpha" reads as a law parameter in every report.
FAMILY_NAMES = ["amber", "cobalt", "jade", "ruby", "slate", "coral", "ivory", "onyx"]


@dataclass(frozen=True)
class SynthConfig:
    """Shape of the synthetic corpus."""

    families: int = 4
    languages_per_family: int = 2
    docs: int = 400
    transfer: float = 0.0
    seed: int = 0
    sentences_per_doc: tuple[int, int] = (4, 10)
    nouns: int = 240
    verbs: int = 120
    adjectives: int = 60
    classes: int = 3
    richness_spread: float = 1.0
    size_spread: float = 0.0  # log2 of the first family's documents over the last family's (0: all alike)

    def validate(self) -> None:
        if not 1 <= self.families <= len(SCRIPTS):
            raise ConfigError(f"--families must be in 1..{len(SCRIPTS)} (one script each), got {self.families}")
        if self.languages_per_family < 1:
            raise ConfigError(f"--languages-per-family must be >= 1, got {self.languages_per_family}")
        if self.docs < 10:
            raise ConfigError(f"--docs must be >= 10 (train/validation/test splits need documents), got {self.docs}")
        if not -8.0 <= self.richness_spread <= 8.0:
            raise ConfigError(f"--richness-spread must be in [-8, 8] (log2 of the last family's vocabulary richness over the "
                              f"first's; 0: all alike), got {self.richness_spread}")
        if not -8.0 <= self.size_spread <= 8.0:
            raise ConfigError(f"size_spread must be in [-8, 8] (log2 of the first family's documents over the last's), got {self.size_spread}")
        if not 0.0 <= self.transfer <= 1.0:
            raise ConfigError(f"--transfer must be in [0, 1], got {self.transfer}")
        check_non_negative(self.seed, "--seed")


class _Lexicon:
    """Word forms and Zipfian frequencies of one family's (or the shared) language."""

    def __init__(self, rng: np.random.Generator, script: tuple[str, str], cfg: SynthConfig, scale: float = 1.0):
        self.script = script
        self.syllables = self._syllables(script)
        n_nouns, n_verbs = max(8, int(cfg.nouns * scale)), max(4, int(cfg.verbs * scale))
        self.nouns = self._words(rng, n_nouns, 1, 3)
        self.verbs = self._words(rng, n_verbs, 1, 3)
        self.adjectives = self._words(rng, max(4, int(cfg.adjectives * scale)), 1, 2)
        self.determiners = self._words(rng, cfg.classes * 2, 1, 1)
        self.class_suffix = self._words(rng, cfg.classes, 1, 1)
        self.noun_class = rng.integers(0, cfg.classes, size=n_nouns)
        self.order = ORDERS[int(rng.integers(0, len(ORDERS)))]
        # Verb → preferred object nouns: a selectional preference a model can learn with capacity.
        self.objects_of = rng.integers(0, n_nouns, size=(n_verbs, 6))

    @staticmethod
    def _syllables(script: tuple[str, str]) -> list[str]:
        cons, vows = script
        return [c + v for c in cons for v in vows] if vows else list(cons)

    def _words(self, rng: np.random.Generator, n: int, lo: int, hi: int) -> list[str]:
        n = min(n, sum(len(self.syllables) ** k for k in range(lo, hi + 1)))
        words: list[str] = []
        seen: set[str] = set()
        while len(words) < n:
            w = "".join(rng.choice(self.syllables, size=int(rng.integers(lo, hi + 1))))
            if w not in seen:
                seen.add(w)
                words.append(w)
        return words


def _position(cfg: SynthConfig, f: int) -> float:
    """Family ``f``'s place from -0.5 (first) to +0.5 (last)."""
    return (f / (cfg.families - 1) if cfg.families > 1 else 0.5) - 0.5


def _size_scale(cfg: SynthConfig, f: int) -> float:
    """Family ``f``'s document count relative to ``docs``: 2^(-size_spread·position), so the first family is the largest
    for a positive spread (natural sampling then favours it)."""
    return 2.0 ** (-cfg.size_spread * _position(cfg, f))


def _zipf(n: int, s: float = 1.1) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** s
    return w / w.sum()


def _sound_changes(rng: np.random.Generator, script: tuple[str, str], k: int) -> dict[str, str]:
    """A language's systematic character substitutions relative to its family's proto-language."""
    chars = list(script[0])
    src = rng.choice(chars, size=min(k, len(chars)), replace=False)
    dst = rng.permutation(src)
    return {str(a): str(b) for a, b in zip(src, dst) if a != b}


def _apply(word: str, changes: dict[str, str]) -> str:
    return "".join(changes.get(ch, ch) for ch in word)


def _sentence(rng: np.random.Generator, lex: _Lexicon, topic: np.ndarray, changes: dict[str, str]) -> str:
    subj = int(rng.choice(len(lex.nouns), p=topic))
    verb = int(rng.choice(len(lex.verbs), p=_zipf(len(lex.verbs))))
    obj = int(rng.choice(lex.objects_of[verb])) if rng.random() < 0.7 else int(rng.choice(len(lex.nouns), p=topic))

    def phrase(noun: int) -> list[str]:
        cls = int(lex.noun_class[noun])
        words = [lex.determiners[cls * 2 + int(rng.integers(0, 2))]]
        if rng.random() < 0.4:
            words.append(lex.adjectives[int(rng.choice(len(lex.adjectives), p=_zipf(len(lex.adjectives))))] + lex.class_suffix[cls])
        words.append(lex.nouns[noun] + lex.class_suffix[cls])
        return words

    # The verb agrees with the subject's noun class: a dependency across the phrase.
    parts = {"S": phrase(subj), "V": [lex.verbs[verb] + lex.class_suffix[int(lex.noun_class[subj])]], "O": phrase(obj)}
    words = [w for role in lex.order for w in parts[role]]
    return " ".join(_apply(w, changes) for w in words) + " ."


def generate(cfg: SynthConfig, out: str | Path) -> dict[str, list[str]]:
    """Write ``<code>.jsonl`` per language plus ``families.yaml`` and ``synth.json``; return family → codes."""
    cfg.validate()
    out = output_dir(out, "--out")
    root = np.random.default_rng(cfg.seed)
    lexicons = []
    for f in range(cfg.families):
        # Families differ in richness (lexicon size), so they differ in how much more data helps them.
        scale = 2.0 ** (cfg.richness_spread * _position(cfg, f))
        lexicons.append(_Lexicon(np.random.default_rng([cfg.seed, f]), SCRIPTS[f], cfg, scale))
    families: dict[str, list[str]] = {}
    code_index = 0
    for f in range(cfg.families):
        lex = lexicons[f]
        partner = f ^ 1 if (f ^ 1) < cfg.families else None
        shared = lexicons[partner] if partner is not None else lex
        name = FAMILY_NAMES[f]
        families[name] = []
        for j in range(cfg.languages_per_family):
            code = "q" + chr(ord("a") + code_index // 26) + chr(ord("a") + code_index % 26)
            code_index += 1
            lang_rng = np.random.default_rng([cfg.seed, f, j])
            changes = {} if j == 0 else _sound_changes(lang_rng, SCRIPTS[f], 4)
            n_docs = max(10, int(round(cfg.docs * _size_scale(cfg, f) * float(root.uniform(0.5, 1.5)))))
            with open(out / f"{code}.jsonl", "w", encoding="utf-8") as fh:
                for _ in range(n_docs):
                    topic = _zipf(len(lex.nouns))[lang_rng.permutation(len(lex.nouns))]
                    n_sent = int(lang_rng.integers(cfg.sentences_per_doc[0], cfg.sentences_per_doc[1] + 1))
                    sents = []
                    for _ in range(n_sent):
                        use_shared = cfg.transfer > 0 and partner is not None and lang_rng.random() < cfg.transfer
                        src = shared if use_shared else lex
                        sents.append(_sentence(lang_rng, src, _zipf(len(src.nouns)) if use_shared else topic, {} if use_shared else changes))
                    fh.write(json.dumps({"text": " ".join(sents)}, ensure_ascii=False) + "\n")
            families[name].append(code)
    (out / "families.yaml").write_text(yaml.safe_dump({"families": families}, sort_keys=True))
    meta = {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()}, "families": families}
    (out / "synth.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return families
