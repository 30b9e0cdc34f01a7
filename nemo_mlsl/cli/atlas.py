"""``mlsl transfer``, ``mlsl plan-languages``, ``mlsl crossover``: the ATLAS analyses."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from nemo_mlsl.cli.common import print_json, records
from nemo_mlsl.cli.parser import non_negative_int, positive_int, positive_number, refuse_unused
from nemo_mlsl.errors import ConfigError

# What each `mlsl transfer` action reads; any other option given is refused by name.
TRANSFER_OPTIONS = {
    "design": {"languages", "pairs", "rung", "tokens", "seeds", "vocab_size", "out"},
    "run": {"runs", "data", "evals", "no_progress", "backend"},
    "score": {"runs", "d_mono_fraction", "bootstrap", "families"},
    "fas": {"base", "finetuned", "out"},
    "show": {"out", "json", "published"},
}


def cmd_transfer(a: argparse.Namespace) -> int:
    from nemo_mlsl.atlas import transfer, transfer_study

    refuse_unused(a, a.parser, TRANSFER_OPTIONS[a.action], f"transfer {a.action}")
    if a.action == "show":
        langs, mat = transfer.published_matrix()
        from nemo_mlsl.outputs import output_dir

        out = output_dir(a.out or ".", "--out")
        transfer.heatmap(langs, mat, out / "transfer_published.png", "ATLAS measured BTS\n(row: target, column: source)")
        from nemo_mlsl.families import FamilyMap

        summary = transfer.summarize_matrix(langs, mat, {l: FamilyMap.builtin().family_of(l) for l in langs})
        if a.json:
            print_json({"languages": langs, "bts": [[None if v != v else v for v in row] for row in mat.tolist()], **summary})
            return 0
        print("ATLAS Bilingual Transfer Scores, measured 9x9 block (rows: target, columns: source)")
        print("       " + "".join(f"{l:>6}" for l in langs))
        for l, row in zip(langs, mat):
            print(f"{l:>6} " + "".join("     -" if v != v else f"{v:>+6.1f}" for v in row))
        print(f"symmetry (Pearson r, A->B vs B->A): {summary['symmetry_pearson_r']:+.2f}; within-family mean "
              f"{summary['family']['within_mean']:+.2f}, across-family mean {summary['family']['across_mean']:+.2f}")
        print(f"heatmap: {out / 'transfer_published.png'}")
        return 0
    if a.action == "design":
        from nemo_mlsl.recipes import load

        if not (a.languages and a.out):
            raise ConfigError("transfer design needs --languages CODE,CODE,... (at least two) and --out DIR")
        tokens = int(a.tokens)
        langs = [l.strip() for l in a.languages.split(",") if l.strip()]
        pairs = [tuple(p.split("-")) for p in a.pairs.split(",")] if a.pairs else None
        n = load(a.rung).params(a.vocab_size).non_embedding
        runs = transfer_study.design(langs, a.rung, tokens, n, pairs, a.seeds)
        transfer_study.write_design(Path(a.out), runs, langs)
        print(f"wrote {Path(a.out) / 'plan.json'} ({len(runs)} runs) and {Path(a.out) / 'families.yaml'}")
        print(f"next: mlsl prepare --input TEXT --families {Path(a.out) / 'families.yaml'} --out {Path(a.out) / 'data'}")
        print(f"      mlsl transfer run --runs {a.out} --data {Path(a.out) / 'data'}")
        return 0
    if not a.runs and a.action in ("run", "score"):
        raise ConfigError(f"transfer {a.action} needs --runs DIR (the directory `mlsl transfer design` wrote)")
    if a.action == "run":
        if not a.data:
            raise ConfigError("transfer run needs --data DIR (the prepared data of the design's languages)")
        from nemo_mlsl.data.manifest import Manifest
        from nemo_mlsl.recipes import load
        from nemo_mlsl.study.plan import load_runs
        from nemo_mlsl.study.runner import execute

        study = Path(a.runs)
        runs = load_runs(study / "plan.json")
        # Constant LR (a curve read mid-run must not depend on where the run ends) and one validation
        # every d_mono/16 tokens in every run, so the bilingual curves are as finely sampled as the monolingual.
        d_mono = min(r.tokens for r in runs)
        over = {r.run_id: ["train.schedule=constant",
                           f"train.val_every={max(1, load(r.rung).train.steps_for(d_mono) // a.evals)}"] for r in runs}
        from nemo_mlsl.backends import backend

        trained: list[str] = []

        def done(spec) -> None:
            trained.append(spec.run_id)
            if not a.no_progress:
                print(f"  [{len(trained)}/{len(runs)}] {spec.run_id}", flush=True)

        from nemo_mlsl.dirlock import hold

        with hold(study, "--runs"):
            execute(runs, study, Manifest.load(a.data), backend(a.backend).study(1, 1), law=None, overrides=over, on_done=done)
        print(f"trained {len(runs)} runs; score them with: mlsl transfer score --runs {study}")
        return 0
    if a.action == "fas":
        if not (a.base and a.finetuned):
            raise ConfigError("transfer fas needs --base RUN (the checkpoint's run) and --finetuned RUN [RUN ...]")
        out = Path(a.out or Path(a.base).parent / "fas")
        doc = transfer_study.score_finetuning(Path(a.base), [Path(d) for d in a.finetuned], out)
        print(f"wrote {out / 'fas.json'} and fas.png (rows: target, columns: source; > 0: finetuning on the source helps)")
        print("        " + "".join(f"{s:>9}" for s in doc["sources"]))
        for t, row in zip(doc["targets"], doc["fas"]):
            print(f"{t:>8}" + "".join(f"{v:>+9.3f}" for v in row))
        return 0
    family_of = None
    if a.families:
        from nemo_mlsl.families import FamilyMap

        family_of = dict(FamilyMap.from_yaml(a.families).table)
    doc = transfer_study.score(Path(a.runs), a.d_mono_fraction, a.bootstrap, family_of=family_of)
    print(f"wrote {Path(a.runs) / 'transfer.json'} and transfer.png (rows: target, columns: source)")
    for p in doc["synergistic"][:3]:
        print(f"  most synergistic:  {p['source']} -> {p['target']}  BTS {p['bts']:+.3f}")
    for p in doc["interfering"][:3]:
        print(f"  most interfering:  {p['source']} -> {p['target']}  BTS {p['bts']:+.3f}")
    for c in doc["censored"]:
        print(f"  {c['source']} -> {c['target']}: the bilingual run never reached the monolingual loss; its BTS is an "
              "upper bound (train bilingual runs longer to measure it)")
    fam = doc.get("family") or {}
    if fam.get("within_mean") is not None and fam.get("across_mean") is not None:
        print(f"  within-family mean BTS {fam['within_mean']:+.3f}, across-family {fam['across_mean']:+.3f}")
    return 0


def cmd_plan_languages(a: argparse.Namespace) -> int:
    from nemo_mlsl.atlas.multilinguality import CapacityLaw, from_records

    if not (a.from_ > 0 and a.to > 0 and math.isfinite(a.from_ * a.to)):
        raise ConfigError(f"--from and --to are numbers of languages and must be > 0; got --from {a.from_:g} --to {a.to:g}")
    if a.plot:
        from nemo_mlsl.outputs import output_file

        output_file(a.plot, "--plot")
    law = CapacityLaw.paper() if not a.fit else from_records(records(a.fit, False))
    r = a.to / a.from_
    m = law.multipliers(r)
    if a.plot:
        import numpy as np

        import matplotlib.pyplot as plt

        from nemo_mlsl.fitting.plots import legend, save

        s = np.geomspace(max(1.0, m["N"] * 0.6), m["N"] * 4, 200)
        t = law.frontier(r, s)
        fig, ax = plt.subplots(figsize=(4.6, 4))
        ax.plot(s, t * r, label=f"iso-loss frontier, K {a.from_:g} -> {a.to:g}")
        ax.scatter([m["N"]], [m["D_total"]], color="k", zorder=3, label="compute-optimal")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("model size multiplier N'/N")
        ax.set_ylabel("total token multiplier D'/D")
        legend(ax, fontsize=7)
        save(fig, Path(a.plot))
    if a.json:
        print_json({"law": law.source, "phi": law.phi, "psi": law.psi, "alpha": law.alpha, "beta": law.beta, **m})
        return 0
    print(f"from {a.from_:g} to {a.to:g} languages (r = {r:g}), {law.source} exponents phi={law.phi:.3f} psi={law.psi:.3f} "
          f"alpha={law.alpha:.3f} beta={law.beta:.3f}:")
    print(f"  model size   x{m['N']:.3f}   (r^{m['exponents']['N']:.3f})")
    print(f"  total tokens x{m['D_total']:.3f}   (r^{m['exponents']['D_total']:.3f}); per language x{m['D_per_language']:.3f}")
    print(f"  compute      x{m['compute']:.3f}   (r^{m['exponents']['compute']:.3f})")
    return 0


def cmd_crossover(a: argparse.Namespace) -> int:
    from nemo_mlsl.atlas.crossover import find_crossover, paper_crossover
    from nemo_mlsl.atlas.transfer import Curve

    if a.published:
        if not a.N or a.N <= 0:
            raise ConfigError("crossover --published needs the model size: --N (non-embedding parameters, e.g. --N 2e9)")
        c = paper_crossover(a.N)
        print(f"ATLAS relation C = 1.11e6 * N^1.65: at N={a.N:.4g}, pretraining from scratch overtakes finetuning after "
              f"{c.tokens:.4g} tokens ({c.compute:.4g} FLOPs)")
        return 0

    def curve(path: str, lang: str | None) -> Curve:
        if not Path(path).is_file():
            raise ConfigError(f"{path} does not exist: give the metrics.jsonl of a finished run (mlsl train writes RUN/metrics.jsonl)")
        try:
            pts = [json.loads(l) for l in Path(path).read_text().splitlines() if l.strip()]
            vals = [p["language_loss"][lang] if lang else float(np.mean(list(p["family_loss"].values()))) for p in pts]
            return Curve.of([p["tokens"] for p in pts], vals)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not JSON lines ({err})") from None
        except KeyError as err:
            raise ConfigError(f"{path}: a validation line has no {err}" + (f" (language {lang!r} not validated in that run)"
                              if lang else "")) from None

    import numpy as np

    if a.runs:  # a directory holding the two runs: pretrain/ and finetune/
        a.pretrain, a.finetune = str(Path(a.runs) / "pretrain" / "metrics.jsonl"), str(Path(a.runs) / "finetune" / "metrics.jsonl")
    if not (a.pretrain and a.finetune):
        raise ConfigError("give --runs DIR (with pretrain/ and finetune/ runs), or --pretrain and --finetune metrics.jsonl, or --published")
    langs = a.languages.split(",") if a.languages else [None]
    for lang in langs:
        c = find_crossover(curve(a.pretrain, lang), curve(a.finetune, lang), a.N)
        label = lang or "all families"
        print(f"{label}: pretraining overtakes finetuning after {c.tokens:,.0f} tokens"
              + (f" ({c.compute:.4g} FLOPs at N={a.N:.4g})" if c.compute else "") + f", at loss {c.loss:.4f}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("transfer", help="cross-lingual transfer: design runs, train them, score the BTS matrix, "
                                       "score finetuning runs (FAS), or show ATLAS's")
    s.set_defaults(func=cmd_transfer, parser=s)
    s.add_argument("action", choices=["design", "run", "score", "fas", "show"])
    s.add_argument("--languages")
    s.add_argument("--pairs", help="a-b,c-d (default: all pairs)")
    s.add_argument("--rung", default="cpu_60k")
    s.add_argument("--tokens", type=positive_number, default=400_000,
                   help="tokens of each monolingual run (= d_mono); bilingual runs train on 3x as many. Too few and every "
                        "pair scores near +1: the runs are step-limited, not data-limited (docs/science.md)")
    s.add_argument("--evals", type=positive_int, default=16, help="validations per d_mono tokens in every run")
    s.add_argument("--seeds", type=positive_int, default=1)
    s.add_argument("--vocab-size", type=positive_int, default=512)
    s.add_argument("--out")
    s.add_argument("--runs")
    s.add_argument("--data")
    s.add_argument("--d-mono-fraction", type=positive_number, default=1.0, help="reference point d_mono as a fraction of the monolingual run")
    s.add_argument("--bootstrap", type=non_negative_int, default=200)
    s.add_argument("--families", help="score: families.yaml grouping the languages (default: the built-in table)")
    s.add_argument("--base", help="fas: the base run the finetuning runs started from (mlsl train --init-from)")
    s.add_argument("--finetuned", nargs="+", help="fas: finetuning run directories, one source each")
    s.add_argument("--published", action="store_true")
    s.add_argument("--json", action="store_true")
    s.add_argument("--backend", default="cpu", help="run: what trains the runs (a 'nemo_mlsl.backends' entry point; default cpu)")
    s.add_argument("--no-progress", action="store_true")

    s = sub.add_parser("plan-languages", help="how N, D and compute must grow with the number of languages (ATLAS §5)")
    s.set_defaults(func=cmd_plan_languages)
    s.add_argument("--from", dest="from_", type=float, required=True)
    s.add_argument("--to", type=float, required=True)
    s.add_argument("--fit", help="capacity runs (results store) to fit the law to; default: the paper's exponents")
    s.add_argument("--plot", help="write the iso-loss frontier PNG here")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("crossover", help="when pretraining from scratch overtakes finetuning (ATLAS §6)")
    s.set_defaults(func=cmd_crossover)
    s.add_argument("--runs", help="a directory with pretrain/ and finetune/ run directories")
    s.add_argument("--pretrain", help="metrics.jsonl of the from-scratch run")
    s.add_argument("--finetune", help="metrics.jsonl of the finetuning run")
    s.add_argument("--languages", help="comma-separated; default: the mean family loss")
    s.add_argument("--N", type=float)
    s.add_argument("--published", action="store_true")
