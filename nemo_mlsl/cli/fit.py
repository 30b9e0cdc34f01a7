"""``mlsl fit``, ``mlsl report``, ``mlsl optimize``: laws fitted to run records, and the optimal ratios."""

from __future__ import annotations

import argparse
from typing import Any

from nemo_mlsl.cli.common import add_fit_speed_args, fit_progress, print_json, ratios_arg, records
from nemo_mlsl.errors import ConfigError
from nemo_mlsl.mixtures import check_spec


def cmd_fit(a: argparse.Namespace) -> int:
    from nemo_mlsl.fitting.report import fit_and_report

    rep = fit_and_report(records(a.runs, a.dedupe, stream=True), a.out, law=a.law, bootstrap=a.bootstrap, seed=a.seed,
                         holdout=a.holdout, objective=a.objective, drop_zero_shares=a.drop_zero_shares, jobs=a.jobs,
                         progress=fit_progress(a))
    doc = rep.doc
    if "selection" in doc:
        sel = doc["selection"]
        scored = [s for s in sel["laws"] if not s["skipped"]]
        print(f"law selection: {len(scored)} of {len(sel['laws'])} laws cross-validated (held out: {', '.join(sel['splits'])}); "
              f"chose {sel['chosen']} (table in {a.out}/report.md)")
    print(f"fitted {doc['law']} to {doc['n_runs']} runs -> {a.out}/fit.json, report.md")
    for w in doc.get("warnings", []):
        print(f"  warning: {w}")
    per = doc["metrics"]["in_sample"]["families"]
    for fam, entry in doc["families"].items():
        g = entry["params"].get("gamma")
        ci = entry["ci"].get("gamma")
        what = (f" gamma {g:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")) if g is not None else \
            f" {len(entry['params'])} parameters" + (f", MAPE {per[fam]['mape']:.2f}%" if fam in per else "")
        print(f"  {fam:<16}{what}")
    ov = doc["metrics"]["in_sample"]["overall"]
    print(f"  in-sample R2 {ov['r2']:.4f}  MAPE {ov['mape']:.2f}%")
    if "holdout" in doc["metrics"]:
        h = doc["metrics"]["holdout"]["overall"]
        print(f"  held-out ({a.holdout}) R2 {h['r2']:.4f}  MAPE {h['mape']:.2f}%")
    return 0


def _min_ratio(text: str | None) -> Any:
    """``--min-ratio 0.02`` (every family) or ``--min-ratio fam=0.05,...`` (per family)."""
    if not text:
        return 0.0
    if "=" in text:
        return ratios_arg(text)
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--min-ratio {text!r} must be a number (e.g. 0.02) or family=ratio pairs (e.g. amber=0.05)") from None


def cmd_optimize(a: argparse.Namespace) -> int:
    from nemo_mlsl.data.blend import DEFAULT_MAX_EPOCHS
    from nemo_mlsl.fitting.lawfit import load_fit_doc
    from nemo_mlsl.fitting.optimize import optimal_from_fit

    doc = load_fit_doc(a.fit)
    check_spec(a.within, "--within")
    min_ratio: Any = _min_ratio(a.min_ratio)
    caps = None
    if a.data:
        from nemo_mlsl.data.manifest import Manifest
        from nemo_mlsl.mixtures import data_caps

        if a.D is None:
            raise ConfigError("--data caps the ratios at max_epochs x tokens / D: give the token budget --D")
        caps = data_caps(Manifest.load(a.data).family_languages(), a.D, a.max_epochs or DEFAULT_MAX_EPOCHS, a.within)
    elif a.max_epochs is not None:
        raise ConfigError("--max-epochs needs --data DIR (the prepared data whose token counts the caps come from)")
    out = optimal_from_fit(doc, N=a.N, D=a.D, objective=a.objective, weights=ratios_arg(a.weights), min_ratio=min_ratio,
                           caps=caps, targets=a.targets)
    if a.json:
        print_json(out)
        return 0
    for g in out.get("targets") or []:
        print(f"target {g['pattern']}: weight {g['weight']:g}" + (f" shared by {len(g['members'])} targets" if len(g["members"]) > 1 else ""))
    print(f"optimal ratios ({out['objective']}, law {out['law']}, N={out['N']}, D={out['D']}):")
    for fam, p in out["ratios"].items():
        ci = out.get("ci", {}).get(fam)
        cap = (out.get("caps") or {}).get(fam)
        binds = fam in out.get("binding_caps", [])
        print(f"  {fam:<16} {p:.4f}" + (f"  [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
              + (f"  data cap {cap:.4f}" + (" (binding)" if binds else "") if cap is not None else ""))
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from nemo_mlsl.fitting.report import fit_and_report

    rep = fit_and_report(records(a.runs, a.dedupe, stream=True), a.out, law=a.law, bootstrap=a.bootstrap, seed=a.seed,
                         drop_zero_shares=a.drop_zero_shares, jobs=a.jobs, progress=fit_progress(a))
    print(f"wrote {', '.join(rep.files)} to {a.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    for name, help_ in (("fit", "fit a law to run records"), ("report", "rewrite the fit report")):
        s = sub.add_parser(name, help=help_)
        s.set_defaults(func=cmd_fit if name == "fit" else cmd_report)
        s.add_argument("--runs", required=True, help="results.jsonl or a study directory")
        s.add_argument("--law", default="joint_family", help="a registered law (name or name:arg), or 'auto': every "
                       "applicable law cross-validated, the lowest held-out error chosen")
        s.add_argument("--out", required=True)
        s.add_argument("--bootstrap", type=int, default=200)
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--dedupe", action="store_true")
        s.add_argument("--drop-zero-shares", action="store_true",
                       help="for a law that cannot represent a family with no share of its own (family_power, joint_family): "
                            "fit each family on the runs that train on it")
        add_fit_speed_args(s)
        if name == "fit":
            s.add_argument("--holdout", choices=["largest-N", "largest-D", "mixtures"])
            s.add_argument("--objective", default="normalized", choices=["normalized", "raw"])

    s = sub.add_parser("optimize", help="optimal family ratios from a fit")
    s.set_defaults(func=cmd_optimize)
    s.add_argument("--fit", required=True)
    s.add_argument("--N", type=float)
    s.add_argument("--D", type=float)
    s.add_argument("--data", help="prepared data: cap each family so that no language repeats more than --max-epochs times in D tokens")
    s.add_argument("--max-epochs", type=float, help="epoch cap of each language with --data (default 4, as the recipes)")
    s.add_argument("--within", default="natural", help="within-family sampling of the planned run (for the per-language caps)")
    s.add_argument("--objective", default="normalized", choices=["normalized", "raw"])
    s.add_argument("--weights", help="per-target weights by name, e.g. amber=2,ruby=1 (default 1 each)")
    s.add_argument("--targets", help="the targets the optimum serves, as NAME, PATTERN or PATTERN=WEIGHT items, e.g. "
                   "'arc_*=1,hellaswag*=1': a pattern's weight is shared by the targets it matches (their mean); "
                   "targets not named weigh 0")
    s.add_argument("--min-ratio")
    s.add_argument("--json", action="store_true")
