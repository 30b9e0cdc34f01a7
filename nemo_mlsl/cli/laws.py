"""``mlsl compare`` and ``mlsl predict``: laws cross-validated side by side, and predictions from a saved fit."""

from __future__ import annotations

import argparse

from nemo_mlsl.cli.common import add_fit_speed_args, fit_progress, print_json, ratios_arg, records
from nemo_mlsl.errors import ConfigError


def cmd_compare(a: argparse.Namespace) -> int:
    from nemo_mlsl.fitting.compare import compare_laws

    laws = [x.strip() for x in a.laws.split(",") if x.strip()] if a.laws else None
    doc = compare_laws(records(a.runs, a.dedupe, stream=True), laws, a.out, folds=a.folds, seed=a.seed, jobs=a.jobs,
                       progress=fit_progress(a))
    print(f"compared {len(doc['laws'])} laws on {doc['n_runs']} runs (held out: {', '.join(doc['splits'])}) "
          f"-> {a.out}/report.md, compare.json, heldout_mape.png")
    for s in doc["laws"]:
        if s["skipped"]:
            print(f"  {s['law']:<16} skipped: {s['skipped']}")
            continue
        cells = "  ".join(f"{x} " + (f"{s['splits'][x]['mape']:.2f}%" if "mape" in s["splits"].get(x, {}) else "–")
                          for x in doc["splits"])
        print(f"  {s['law']:<16} held-out MAPE {cells}")
    print(f"chosen: {doc['chosen']} ({doc['criterion']})")
    return 0


def cmd_predict(a: argparse.Namespace) -> int:
    from nemo_mlsl.fitting.lawfit import LawFit, load_fit_doc
    from nemo_mlsl.fitting.predict import prediction_metrics, predict_runs, query_record

    lf = LawFit.from_dict(load_fit_doc(a.fit))
    if a.runs:
        if a.ratios or a.N is not None or a.D is not None:
            raise ConfigError("give either --runs or --N, --D and --ratios, not both")
        runs = records(a.runs, a.dedupe)
    else:
        if a.N is None or a.D is None or not a.ratios:
            raise ConfigError("say what to predict: --runs RUNS.jsonl, or --N, --D and --ratios fam=p,...")
        runs = [query_record(a.N, a.D, ratios_arg(a.ratios), lf)]
    preds = predict_runs(lf, runs, level=a.level)
    metrics = prediction_metrics(preds)
    if a.json:
        print_json({"predictions": preds, **({"metrics": metrics} if metrics else {})})
        return 0
    print(f"law {lf.spec}: {len(preds)} predictions ({a.level:.0%} bootstrap intervals)")
    for p in preds:
        band = f"  [{p['lo']:.4f}, {p['hi']:.4f}]" if p["lo"] is not None else ""
        seen = f"  observed {p['observed']:.4f}" if "observed" in p else ""
        print(f"  {p['run_id']:<16} {p['family']:<16} {p['predicted']:.4f}{band}{seen}")
    if metrics:
        o = metrics["overall"]
        r2 = "–" if o["r2"] is None else f"{o['r2']:.4f}"
        print(f"  scored on {o['n']} observed losses: R2 {r2}  RMSE(log L) {o['rmse_log']:.4f}  MAPE {o['mape']:.2f}%")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("compare", help="cross-validate laws on held-out mixtures and extrapolation in N and D")
    s.set_defaults(func=cmd_compare)
    s.add_argument("--runs", required=True, help="results.jsonl or a study directory")
    s.add_argument("--laws", help="comma-separated laws (default: every registered law)")
    s.add_argument("--out", required=True)
    s.add_argument("--folds", type=int, default=5, help="folds of held-out mixtures (replicate seeds stay together)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--dedupe", action="store_true")
    add_fit_speed_args(s)

    s = sub.add_parser("predict", help="predicted loss per family from a fit (with bootstrap intervals; scored where observed)")
    s.set_defaults(func=cmd_predict)
    s.add_argument("--fit", required=True, help="fit.json written by mlsl fit")
    s.add_argument("--runs", help="run records to predict (results.jsonl); their observed losses are scored")
    s.add_argument("--N", type=float)
    s.add_argument("--D", type=float)
    s.add_argument("--ratios", help="fam=p,... (families left out have share 0)")
    s.add_argument("--level", type=float, default=0.95, help="interval level")
    s.add_argument("--dedupe", action="store_true")
    s.add_argument("--json", action="store_true", help='one object {"predictions": [...], "metrics": {...}}')
