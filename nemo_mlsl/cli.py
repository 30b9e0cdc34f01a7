"""``mlsl``: the command line. Thin: parse, call the core (or a plugin), print."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from nemo_mlsl.errors import MLSLError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    COMMANDS[fn.__name__.removeprefix("cmd_").replace("_", "-")] = fn
    return fn


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=float))


def _ratios_arg(text: str | None) -> dict[str, float] | None:
    from nemo_mlsl.mixtures import parse_ratios

    return parse_ratios(text) if text else None


@command
def cmd_synth(a: argparse.Namespace) -> int:
    from nemo_mlsl.data.synth import SynthConfig, generate

    fams = generate(SynthConfig(families=a.families, languages_per_family=a.languages_per_family, docs=a.docs,
                                transfer=a.transfer, seed=a.seed), a.out)
    print(f"wrote {sum(map(len, fams.values()))} languages in {len(fams)} families to {a.out} (families.yaml beside them)")
    return 0


@command
def cmd_prepare(a: argparse.Namespace) -> int:
    from nemo_mlsl.data.prepare import PrepareConfig, prepare

    m = prepare(PrepareConfig(inputs=a.input, out=a.out, families_yaml=a.families, vocab_size=a.vocab_size,
                              tokenizer=a.tokenizer, val_docs=a.val_docs, workers=a.workers, seed=a.seed, force=a.force))
    tok = m.family_tokens("train")
    print(f"{m.root}: {len(m.languages)} languages, {len(tok)} families, vocab {m.vocab_size}")
    for fam, n in tok.items():
        print(f"  {fam:<16} {n:>12,} train tokens  ({', '.join(m.families[fam])})")
    return 0


@command
def cmd_blend(a: argparse.Namespace) -> int:
    from nemo_mlsl.data.blend import BlendConfig, FamilyBlend
    from nemo_mlsl.data.manifest import Manifest
    from nemo_mlsl.mixtures import MixtureContext, compute_mixture

    m = Manifest.load(a.data)
    ratios = _ratios_arg(a.ratios)
    if ratios is None:
        ratios = compute_mixture(a.mixture, MixtureContext(m.family_tokens(), budget=a.samples * a.seq_length))
    blend = FamilyBlend(m, BlendConfig(ratios, a.within, a.seq_length, a.seed, a.max_epochs, a.normalize))
    audit = blend.build(a.samples, 1).audit()
    if a.json:
        _print_json({"families": audit["families"], "languages": audit["languages"]})
        return 0
    print(f"{audit['samples']} samples x {audit['seq_length']} tokens")
    print(f"{'family':<16}{'target':>9}{'realized':>10}{'tokens':>12}{'epochs':>8}")
    for fam, f in audit["families"].items():
        print(f"{fam:<16}{f['target']:>9.4f}{f['realized']:>10.4f}{f['tokens']:>12,}{f['epochs']:>8.2f}")
    print(f"{'language':<16}{'target':>9}{'realized':>10}{'tokens':>12}{'epochs':>8}")
    for lang, l in audit["languages"].items():
        print(f"{lang:<16}{l['target']:>9.4f}{l['realized']:>10.4f}{l['tokens']:>12,}{l['epochs']:>8.2f}")
    return 0


@command
def cmd_train(a: argparse.Namespace) -> int:
    from mlsl_lightning.train import TrainRequest, train

    result = train(TrainRequest(recipe=a.recipe, data=a.data, ratios=_ratios_arg(a.ratios), out=a.out, overrides=a.overrides,
                                within=a.within, max_steps=a.max_steps, tokens=a.tokens, seed=a.seed, resume=a.resume,
                                normalize=a.normalize, store=a.store, law=a.law))
    print(f"wrote {Path(a.out) / 'result.json'}: N={result['N']:,} D={result['D']:,}")
    for fam, loss in result["family_loss"].items():
        print(f"  {fam:<16} loss {loss:.4f}  bpb {result['family_bpb'][fam]:.4f}")
    return 0


def _records(path: str, dedupe: bool) -> list[dict]:
    from nemo_mlsl.results import ResultsStore

    return ResultsStore(path).read(dedupe=dedupe)


@command
def cmd_fit(a: argparse.Namespace) -> int:
    from nemo_mlsl.analysis import fit_and_report

    rep = fit_and_report(_records(a.runs, a.dedupe), a.out, law=a.law, bootstrap=a.bootstrap, seed=a.seed,
                         holdout=a.holdout, objective=a.objective)
    doc = rep.doc
    print(f"fitted {doc['law']} to {doc['n_runs']} runs -> {a.out}/fit.json, report.md")
    for fam, entry in doc["families"].items():
        g = entry["params"].get("gamma")
        ci = entry["ci"].get("gamma")
        print(f"  {fam:<16}" + (f" gamma {g:.4f}" if g is not None else "") + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""))
    ov = doc["metrics"]["in_sample"]["overall"]
    print(f"  in-sample R2 {ov['r2']:.4f}  MAPE {ov['mape']:.2f}%")
    if "holdout" in doc["metrics"]:
        h = doc["metrics"]["holdout"]["overall"]
        print(f"  held-out ({a.holdout}) R2 {h['r2']:.4f}  MAPE {h['mape']:.2f}%")
    return 0


def _weights(text: str | None) -> dict[str, float] | None:
    return _ratios_arg(text) if text else None


@command
def cmd_optimize(a: argparse.Namespace) -> int:
    from nemo_mlsl.optimize import optimal_from_fit

    path = Path(a.fit)
    if not path.exists():
        from nemo_mlsl.errors import ConfigError

        raise ConfigError(f"--fit {a.fit!r} does not exist; write it with `mlsl fit`")
    doc = json.loads(path.read_text())
    min_ratio: Any = float(a.min_ratio) if a.min_ratio and "=" not in a.min_ratio else (_ratios_arg(a.min_ratio) or 0.0)
    out = optimal_from_fit(doc, N=a.N, D=a.D, objective=a.objective, weights=_weights(a.weights), min_ratio=min_ratio)
    if a.json:
        _print_json(out)
        return 0
    print(f"optimal ratios ({out['objective']}, law {out['law']}, N={out['N']}, D={out['D']}):")
    for fam, p in out["ratios"].items():
        ci = out.get("ci", {}).get(fam)
        print(f"  {fam:<16} {p:.4f}" + (f"  [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""))
    return 0


@command
def cmd_report(a: argparse.Namespace) -> int:
    from nemo_mlsl.analysis import fit_and_report

    rep = fit_and_report(_records(a.runs, a.dedupe), a.out, law=a.law, bootstrap=a.bootstrap, seed=a.seed)
    print(f"wrote {', '.join(rep.files)} to {a.out}")
    return 0


def _cpu_train_fn(request: dict) -> dict:
    from mlsl_lightning.train import TrainRequest, train

    return train(TrainRequest(**request))


@command
def cmd_study(a: argparse.Namespace) -> int:
    from nemo_mlsl.study.config import load_study
    from nemo_mlsl.study.runner import Study

    cfg = load_study(a.config, quick=a.quick)
    out = Path(a.out)
    if a.backend == "nemo":
        from nemo_mlsl.study.nemo_plan import print_nemo_plan

        return print_nemo_plan(cfg, out, dry_run=a.dry_run)
    study = Study(cfg, out, _cpu_train_fn, progress=not a.no_progress)
    if a.dry_run:
        plan = study.run(dry_run=True)
        print(f"study {cfg.name}: {len(plan['phase1'])} phase-1 runs (phase 2, the largest rung at the optimum and baselines, "
              "is planned after the fit)")
        for r in plan["phase1"]:
            print(f"  {r.run_id:<44} {r.rung:<9} N={r.N:>10,} D={r.tokens:>10,} " + " ".join(f"{f}={p:.3f}" for f, p in r.ratios.items()))
        return 0
    s = study.run(resume=a.resume)
    print()
    print(f"Report: {out / 'report.md'}  (figures beside it; TensorBoard: tensorboard --logdir {out / 'tb'})")
    print("gamma per family: " + ", ".join(f"{f} {g:.3f}" for f, g in s["gamma"].items()))
    print("optimal ratios:   " + ", ".join(f"{f} {p:.3f}" for f, p in s["optimal_ratios"].items()))
    c = s["comparison"].get("optimal")
    if c:
        print(f"largest rung {s['confirm_rung']} at the optimum, predicted vs observed loss:")
        for f in c["observed"]:
            print(f"  {f:<10} predicted {c['predicted'][f]:.4f}  observed {c['observed'][f]:.4f}  |error| {c['abs_error'][f]:.4f}")
    for name, g in s["gains"].items():
        print(f"gain over {name}: {g['difference']:+.4f} total {s.get('objective', '')}loss ({100 * g['relative']:+.2f}%): {g['verdict']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlsl", description="Multilingual scaling-law studies (family law, ATLAS).")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write the synthetic multilingual corpus")
    s.add_argument("--out", required=True)
    s.add_argument("--families", type=int, default=4)
    s.add_argument("--languages-per-family", type=int, default=2)
    s.add_argument("--docs", type=int, default=400)
    s.add_argument("--transfer", type=float, default=0.0)
    s.add_argument("--seed", type=int, default=0)

    s = sub.add_parser("prepare", help="text -> tokenizer + Megatron indexed datasets + manifest")
    s.add_argument("--input", nargs="+", required=True)
    s.add_argument("--families", help="families YAML (overrides the built-in table)")
    s.add_argument("--out", required=True)
    s.add_argument("--vocab-size", type=int, default=2000)
    s.add_argument("--tokenizer", help="an existing SentencePiece model (skips training one)")
    s.add_argument("--val-docs", type=int)
    s.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    s.add_argument("--seed", type=int, default=1234)
    s.add_argument("--force", action="store_true")

    s = sub.add_parser("blend", help="build the family blend and report target vs realized shares")
    s.add_argument("--data", required=True)
    s.add_argument("--ratios", help="family=ratio,...")
    s.add_argument("--mixture", default="uniform", help="mixture spec when --ratios is absent (natural, temperature:3, unimax:2, ...)")
    s.add_argument("--within", default="natural")
    s.add_argument("--samples", type=int, required=True)
    s.add_argument("--seq-length", type=int, default=128)
    s.add_argument("--seed", type=int, default=1234)
    s.add_argument("--max-epochs", type=float, default=4.0)
    s.add_argument("--normalize", action="store_true")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("train", help="train one run on CPU with per-family validation")
    s.add_argument("--recipe", required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--ratios", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--within", default="natural")
    s.add_argument("--max-steps", type=int)
    s.add_argument("--tokens", type=float)
    s.add_argument("--seed", type=int, default=1234)
    s.add_argument("--resume", action="store_true")
    s.add_argument("--normalize", action="store_true")
    s.add_argument("--store", help="results store to append to (refits and reports after the run)")
    s.add_argument("--law", default="joint_family")
    s.add_argument("overrides", nargs="*", help="recipe overrides key=value (e.g. train.lr=1e-3)")

    for name, help_ in (("fit", "fit a law to run records"), ("report", "rewrite the fit report")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("--runs", required=True, help="results.jsonl or a study directory")
        s.add_argument("--law", default="joint_family")
        s.add_argument("--out", required=True)
        s.add_argument("--bootstrap", type=int, default=200)
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--dedupe", action="store_true")
        if name == "fit":
            s.add_argument("--holdout", choices=["largest-N", "largest-D", "mixtures"])
            s.add_argument("--objective", default="normalized", choices=["normalized", "raw"])

    s = sub.add_parser("optimize", help="optimal family ratios from a fit")
    s.add_argument("--fit", required=True)
    s.add_argument("--N", type=float)
    s.add_argument("--D", type=float)
    s.add_argument("--objective", default="normalized", choices=["normalized", "raw"])
    s.add_argument("--weights")
    s.add_argument("--min-ratio")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("study", help="run a whole scaling-law study (design, runs, fit, optimum, confirmation, report)")
    s.add_argument("--config", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--backend", choices=["cpu", "nemo"], default="cpu")
    s.add_argument("--dry-run", action="store_true")
    s.add_argument("--resume", action="store_true")
    s.add_argument("--quick", action="store_true", help="the config's quick variant (tests, CI)")
    s.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except MLSLError as err:
        print(f"mlsl {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
