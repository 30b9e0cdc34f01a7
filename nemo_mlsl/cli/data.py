"""``mlsl synth``, ``mlsl prepare``, ``mlsl blend``: the corpus, its tokenized form and the family blend."""

from __future__ import annotations

import argparse
import os

from nemo_mlsl.cli.common import print_json, ratios_arg
from nemo_mlsl.cli.parser import positive_int
from nemo_mlsl.errors import ConfigError


def cmd_synth(a: argparse.Namespace) -> int:
    from nemo_mlsl.data.synth import SynthConfig, generate

    fams = generate(SynthConfig(families=a.families, languages_per_family=a.languages_per_family, docs=a.docs,
                                transfer=a.transfer, seed=a.seed, richness_spread=a.richness_spread,
                                size_spread=a.size_spread), a.out)
    print(f"wrote {sum(map(len, fams.values()))} languages in {len(fams)} families to {a.out} (families.yaml beside them)")
    return 0


def cmd_prepare(a: argparse.Namespace) -> int:
    if a.indexed:
        from nemo_mlsl.data.from_indexed import IndexedConfig, prepare_indexed

        if not a.tokenizer:
            raise ConfigError("--indexed needs the --tokenizer the data was made with (a SentencePiece .model, or a "
                              "Hugging Face tokenizer.json or directory)")
        if a.input:
            raise ConfigError("give either --input (text to tokenize) or --indexed (existing .bin/.idx data), not both")
        m = prepare_indexed(IndexedConfig(spec=a.indexed, tokenizer=a.tokenizer, out=a.out, families_yaml=a.families,
                                          eod_token=a.eod_token, val_docs=a.val_docs, seed=a.seed, force=a.force), log=print)
    else:
        from nemo_mlsl.data.prepare import PrepareConfig, prepare

        if not a.input:
            raise ConfigError("give --input DIR|FILE ... (text) or --indexed SPEC.yaml (existing Megatron .bin/.idx data)")
        m = prepare(PrepareConfig(inputs=a.input, out=a.out, families_yaml=a.families, vocab_size=a.vocab_size,
                                  tokenizer=a.tokenizer, eod_token=a.eod_token, val_docs=a.val_docs, workers=a.workers, seed=a.seed,
                                  force=a.force, character_coverage=a.character_coverage, text_field=a.text_field,
                                  progress=not a.no_progress))
    tok = m.family_tokens("train")
    print(f"{a.out}: {len(m.languages)} languages, {len(tok)} families, vocab {m.vocab_size} ({m.tokenizer_kind})")
    for fam, n in tok.items():
        print(f"  {fam:<16} {n:>12,} train tokens  ({', '.join(m.families[fam])})")
    return 0


def cmd_blend(a: argparse.Namespace) -> int:
    from nemo_mlsl.data.blend import BlendConfig, FamilyBlend
    from nemo_mlsl.data.manifest import Manifest
    from nemo_mlsl.mixtures import MixtureContext, compute_mixture

    m = Manifest.load(a.data)
    if a.schedule:
        return _blend_schedule(a, m)
    ratios = ratios_arg(a.ratios)
    if ratios is None:
        ratios = compute_mixture(a.mixture, MixtureContext(m.family_tokens(), budget=a.samples * a.seq_length))
    blend = FamilyBlend(m, BlendConfig(ratios, a.within, a.seq_length, a.seed, a.max_epochs, a.normalize))
    audit = blend.build(a.samples, 1).audit()
    if a.json:
        print_json({"families": audit["families"], "languages": audit["languages"]})
        return 0
    print(f"{audit['samples']} samples x {audit['seq_length']} tokens")
    print(f"{'family':<16}{'target':>9}{'realized':>10}{'tokens':>12}{'epochs':>8}")
    for fam, f in audit["families"].items():
        print(f"{fam:<16}{f['target']:>9.4f}{f['realized']:>10.4f}{f['tokens']:>12,}{f['epochs']:>8.2f}")
    print(f"{'language':<16}{'target':>9}{'realized':>10}{'tokens':>12}{'epochs':>8}")
    for lang, l in audit["languages"].items():
        print(f"{lang:<16}{l['target']:>9.4f}{l['realized']:>10.4f}{l['tokens']:>12,}{l['epochs']:>8.2f}")
    return 0


def _family_table(families: dict) -> None:
    print(f"{'family':<16}{'target':>9}{'realized':>10}{'tokens':>12}{'epochs':>8}")
    for fam, f in families.items():
        print(f"{fam:<16}{f['target']:>9.4f}{f['realized']:>10.4f}{f['tokens']:>12,}{f['epochs']:>8.2f}")


def _blend_schedule(a: argparse.Namespace, m) -> int:
    """``mlsl blend --schedule``: the audit of every interval, counted over its samples, and of the whole run."""
    from nemo_mlsl.data.blend import BlendConfig
    from nemo_mlsl.data.schedule import MixtureSchedule, ScheduledBlend

    if a.ratios:
        raise ConfigError("give --ratios or --schedule, not both (a schedule carries each interval's ratios)")
    if a.samples < 1:
        raise ConfigError(f"--samples must be >= 1, got {a.samples}")
    if a.samples % a.global_batch_size:
        raise ConfigError(f"--samples {a.samples} is not a whole number of global batches of {a.global_batch_size} "
                          "(--global-batch-size); the schedule's boundaries are in steps")
    steps = a.samples // a.global_batch_size
    schedule = MixtureSchedule.load(a.schedule, steps)
    sb = ScheduledBlend(m, BlendConfig({}, a.within, a.seq_length, a.seed, a.max_epochs, a.normalize), schedule,
                        a.global_batch_size, where=f"--schedule {a.schedule!r}:")
    built = sb.build(1)
    audits = [built.interval_audit(k) for k in range(len(schedule.intervals))]
    if a.json:
        print_json({"intervals": [{"start_step": x["start_step"], "until_step": x["until_step"], "families": x["families"],
                                   "languages": x["languages"]} for x in audits],
                    "whole": {k: v for k, v in built.audit().items() if k in ("families", "languages")}})
        return 0
    for iv, x in zip(schedule.intervals, audits):
        print(f"steps {iv.start_step}-{iv.until_step} ({iv.reason}): {x['samples']} samples x {x['seq_length']} tokens")
        _family_table(x["families"])
    whole = built.audit()
    print(f"whole run: {whole['samples']} samples x {whole['seq_length']} tokens (target: the steps-weighted mean)")
    _family_table(whole["families"])
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("synth", help="write the synthetic multilingual corpus")
    s.set_defaults(func=cmd_synth)
    s.add_argument("--out", required=True)
    s.add_argument("--families", type=int, default=4)
    s.add_argument("--languages-per-family", type=int, default=2)
    s.add_argument("--docs", type=int, default=400)
    s.add_argument("--transfer", type=float, default=0.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--richness-spread", type=float, default=1.0,
                   help="log2 of the last family's lexicon size over the first's (0: all alike)")
    s.add_argument("--size-spread", type=float, default=0.0,
                   help="log2 of the first family's documents over the last's (the default study uses 4: 16x)")

    s = sub.add_parser("prepare", help="text (or existing Megatron indexed data) -> tokenizer + indexed datasets + manifest")
    s.set_defaults(func=cmd_prepare)
    s.add_argument("--input", nargs="+", help="text: dirs of <code>.jsonl/.txt/.parquet (optionally .gz) files or <code>/ "
                                              "subdirectories of them, single files, or a YAML manifest")
    s.add_argument("--indexed", metavar="SPEC.yaml", help="existing .bin/.idx data: a YAML mapping each language to its train "
                                                          "(and optionally validation) prefix(es) and, if needed, its family")
    s.add_argument("--families", help="families YAML (overrides the built-in table)")
    s.add_argument("--out", required=True)
    s.add_argument("--vocab-size", type=int, default=2000)
    s.add_argument("--tokenizer", help="an existing tokenizer: a SentencePiece .model, or a Hugging Face tokenizer.json "
                                       "(or a directory holding one); read offline, copied into --out")
    s.add_argument("--eod-token", help="the end-of-document token of a Hugging Face tokenizer (default: </s>, <|endoftext|>, ...)")
    s.add_argument("--character-coverage", type=float, default=0.9995,
                   help="SentencePiece training: share of character occurrences with a piece of their own (rare characters "
                        "are spelled as bytes when the vocabulary has byte fallback, from 320 pieces)")
    s.add_argument("--text-field", default="text", help="the text field of .jsonl lines / column of .parquet files")
    s.add_argument("--val-docs", type=int)
    s.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    s.add_argument("--seed", type=int, default=1234)
    s.add_argument("--force", action="store_true")
    s.add_argument("--no-progress", action="store_true")

    s = sub.add_parser("blend", help="build the family blend and report target vs realized shares")
    s.set_defaults(func=cmd_blend)
    s.add_argument("--data", required=True)
    s.add_argument("--ratios", help="family=ratio,...")
    s.add_argument("--mixture", default="uniform", help="mixture spec when --ratios is absent (natural, temperature:3, unimax:2, ...)")
    s.add_argument("--within", default="natural")
    s.add_argument("--samples", type=int, required=True)
    s.add_argument("--seq-length", type=int, default=128)
    s.add_argument("--seed", type=int, default=1234)
    s.add_argument("--max-epochs", type=float, default=4.0)
    s.add_argument("--normalize", action="store_true")
    s.add_argument("--schedule", metavar="FILE", help="a mixture schedule (as mlsl train --schedule): audit each interval; "
                                                      "--samples is the run's, --global-batch-size its batch")
    s.add_argument("--global-batch-size", type=positive_int, default=1, help="with --schedule: samples per step")
    s.add_argument("--json", action="store_true")
