"""Store → fit → optimal ratios → ``fit.json``, ``report.md`` and plots: the one path every caller uses
(``mlsl fit``/``mlsl report``, the fitting callback after each run, and the study)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from nemo_mlsl.fitting import plots
from nemo_mlsl.outputs import output_dir, write_json_atomic
from nemo_mlsl.errors import ConfigError
from nemo_mlsl.fitting.lawfit import LawFit, fit, fit_with_holdout, holdout_split
from nemo_mlsl.mixtures import MixtureContext, compute_mixture
from nemo_mlsl.fitting.observations import Observations
from nemo_mlsl.fitting.progress import FitProgress
from nemo_mlsl.fitting.optimize import optimal_from_fit, predicted_losses, settings_of, unit_losses
from nemo_mlsl.fitting.selection import AUTO, select_law, selection_markdown


@dataclass
class FitReport:
    lawfit: LawFit
    doc: dict[str, Any]
    optimal: dict[str, Any] | None
    files: list[str] = field(default_factory=list)


def baselines(families: list[str], tokens: Mapping[str, float] | None, budget: float | None) -> dict[str, dict[str, float]]:
    """Uniform, natural, temperature (τ=3.33, mT5's α=0.3) and UniMax (1 epoch) ratios, where computable."""
    out = {"uniform": {f: 1 / len(families) for f in families}}
    if tokens:
        ctx = MixtureContext(tokens={f: int(tokens[f]) for f in families}, budget=budget)
        out["natural"] = compute_mixture("natural", ctx)
        out["temperature:3.33"] = compute_mixture("temperature:3.33", ctx)
        if budget:
            try:
                out["unimax:1"] = compute_mixture("unimax:1", ctx)
            except ConfigError:
                pass  # the data cannot fill the budget at one epoch: no UniMax baseline
    return out


def fit_and_report(
    records: Iterable[Mapping[str, Any]],
    out: str | Path,
    *,
    law: str = "joint_family",
    bootstrap: int = 100,
    seed: int = 0,
    holdout: str | None = None,
    N: float | None = None,
    D: float | None = None,
    objective: str = "normalized",
    weights: Mapping[str, float] | None = None,
    targets: str | Sequence[str] | Mapping[str, float] | None = None,
    min_ratio: float | Mapping[str, float] = 0.0,
    tokens: Mapping[str, float] | None = None,
    caps: Mapping[str, float] | None = None,
    title: str = "Scaling-law fit",
    figures: tuple[str, ...] | None = None,
    candidates: Sequence[str] | None = None,
    drop_zero_shares: bool = False,
    jobs: int | None = 1,
    progress: FitProgress | None = None,
) -> FitReport:
    """Fit ``law`` to ``records`` and write the report files under ``out``. ``caps`` are the families' data
    caps at (N, D) (``mixtures.data_caps``): the optimum respects them and the report names those that bind.
    ``law="auto"`` selects the law by cross-validation among ``candidates`` (default: every registered law).
    ``jobs``: worker processes for the fits (None: every core; the same result for any number); ``progress``: a
    line (or a bar's step) per fold and law of the selection and per target of the fit."""
    out = output_dir(out, "--out")
    obs = Observations.from_records(records)
    selection = None
    if law == AUTO:
        selection = select_law(obs, candidates, seed=seed, jobs=jobs, progress=progress)
        law = selection.chosen
    test = None
    if holdout:
        lf = fit_with_holdout(law, obs, holdout, bootstrap=bootstrap, seed=seed, drop_zero_shares=drop_zero_shares, jobs=jobs,
                              progress=progress)
        test = obs.subset(holdout_split(obs, holdout, seed)[1])
    else:
        lf = fit(law, obs, bootstrap=bootstrap, seed=seed, drop_zero_shares=drop_zero_shares, jobs=jobs, progress=progress)
    doc = lf.to_dict()
    if selection:
        doc["selection"] = selection.to_dict()
    if law.split(":")[0] == "family_power" and N is None and D is None:
        N, D = settings_of(doc)[-1]  # L* is known only at the fitted settings: report at the largest
    N = N if N is not None else float(obs.N.max())
    D = D if D is not None else float(obs.D.max())
    optimal = None
    if lf.law.mixture_aware:  # KKT for the separable laws, the simplex optimizer for the others
        optimal = optimal_from_fit(doc, N=N, D=D, objective=objective, weights=weights, min_ratio=min_ratio, caps=caps,
                                   targets=targets)
        base = baselines(list(optimal["ratios"]), tokens if tokens is None or set(optimal["ratios"]) <= set(tokens) else None, D)
        z = unit_losses(doc, N, D)
        optimal["comparison"] = {
            name: _total(doc, r, N, D, z, objective, optimal["weights"]) for name, r in {"optimal": optimal["ratios"], **base}.items()
        }
        optimal["baselines"] = base
        doc["optimal"] = optimal
    write_json_atomic(out / "fit.json", doc)
    files = ["fit.json"]
    want = lambda name: figures is None or name in figures
    if want("loss_vs_ratio"):
        files.append(plots.loss_vs_ratio(lf, out / "loss_vs_ratio.png").name)
    if want("predicted_vs_observed"):
        files.append(plots.predicted_vs_observed(lf, out / "predicted_vs_observed.png", test).name)
    if want("loss_vs_N") and len(set(obs.N.tolist())) > 1 and "alpha" in next(iter(lf.fits.values())).names:
        files.append(plots.loss_vs_N(lf, out / "loss_vs_N.png").name)
    if optimal and want("optimal_ratios"):
        files.append(plots.ratio_bars({"optimal": optimal["ratios"], **optimal["baselines"]}, out / "optimal_ratios.png",
                                      optimal.get("ci"), f"optimal ({objective}) vs baselines at N={N:.3g}, D={D:.3g}").name)
    (out / "report.md").write_text(render_markdown(lf, doc, title, files))
    files.append("report.md")
    return FitReport(lf, doc, optimal, files)


def _total(doc: Mapping, ratios: Mapping[str, float], N: float, D: float, z: Mapping[str, float], objective: str,
           weights: Mapping[str, float]) -> dict:
    """The optimizer's own objective at ``ratios``: Σ_t w_t L_t / Z_t (a target the optimum does not serve has w_t = 0)."""
    pred = predicted_losses(doc, ratios, N, D)
    norm = {f: weights.get(f, 0.0) * pred[f] / (z[f] if objective == "normalized" else 1.0) for f in pred}
    return {"ratios": dict(ratios), "predicted_loss": pred, "total": float(sum(norm.values()))}


def _fmt(x: float) -> str:
    return f"{x:.4g}"


MAX_TABLE_COLUMNS = 10


def table_columns(lf: LawFit) -> list[str]:
    """Parameter columns of the report's table: the union over families in first-seen order (laws such as
    ATLAS name parameters per family: tau[<its transfer families>]), without the per-setting L*; the
    per-family weights of a cross-family law only while the table stays readable."""
    names: list[str] = []
    for f in lf.fits.values():
        names += [n for n in f.names if n not in names and not n.startswith("log_Lstar")]
    if len(names) > MAX_TABLE_COLUMNS:
        names = [n for n in names if "[" not in n]
    return names


def render_markdown(lf: LawFit, doc: Mapping, title: str, files: list[str]) -> str:
    fitted = sorted({e["replicates_fitted"] for e in doc["families"].values()})
    boot = (f"{doc['bootstrap']} bootstrap replicates requested, "
            + (f"{fitted[0]}" if len(fitted) == 1 else f"{fitted[0]}–{fitted[-1]}") + " fitted per family"
            if doc["bootstrap"] else "no bootstrap")
    lines = [f"# {title}", "", f"Law `{doc['law']}`: `{doc['formula']}`, fitted to {doc['n_runs']} runs "
             f"(Huber δ=1e-3 on log loss, multi-start L-BFGS-B; {boot}, seed {doc['seed']}).", ""]
    lines += [f"> **Warning:** {w}." for w in doc.get("warnings", [])] + ([""] if doc.get("warnings") else [])
    short = table_columns(lf)
    if doc.get("selection"):
        lines += selection_markdown(doc["selection"])
    strangers = [t for t in doc["families"] if t not in set(doc.get("mixture") or doc["families"])]
    if strangers:
        lines += [f"{len(strangers)} of the {len(doc['families'])} targets are no training family (each predicted from the "
                  "whole mixture): " + ", ".join(f"`{t}`" for t in strangers[:8]) + (" ..." if len(strangers) > 8 else "") + ".", ""]
    lines += ["## Fitted parameters (95% bootstrap intervals)", "", "| target | " + " | ".join(short) + " | R² | MAPE % |",
              "|" + "---|" * (len(short) + 3)]
    per = doc["metrics"]["in_sample"]["families"]
    for fam, entry in doc["families"].items():
        cells = []
        for n in short:
            v, ci = entry["params"].get(n), entry["ci"].get(n)
            cells.append("–" if v is None else _fmt(v) + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""))
        m = per.get(fam)
        lines.append(f"| {fam} | " + " | ".join(cells) + (f" | {m['r2']:.3f} | {m['mape']:.2f} |" if m else " | – | – |"))
    hidden = sorted({n for f in lf.fits.values() for n in f.names} - set(short))
    if hidden:
        lines += ["", f"{len(hidden)} more parameters per family (one L* per (N, D) setting, or one weight per family of the "
                  "mixture) are in fit.json."]
    ov = doc["metrics"]["in_sample"]["overall"]
    lines += ["", f"In-sample: R² {ov['r2']:.4f}, RMSE(log L) {ov['rmse_log']:.4f}, MAPE {ov['mape']:.2f}% over {ov['n']} points.", ""]
    if "holdout" in doc["metrics"]:
        h = doc["metrics"]["holdout"]
        o = h["overall"]
        lines += [f"Held out ({h['kind']}, {h['test_runs']} runs; fitted on {h['train_runs']}): R² {o['r2']:.4f}, "
                  f"RMSE(log L) {o['rmse_log']:.4f}, MAPE {o['mape']:.2f}%.", ""]
    if doc.get("optimal"):
        opt = doc["optimal"]
        lines += [f"## Optimal sampling ratios ({opt['objective']} objective, N={_fmt(opt['N'])}, D={_fmt(opt['D'])})", "",
                  "| family | optimal | 95% CI | " + " | ".join(opt["baselines"]) + " |", "|" + "---|" * (3 + len(opt["baselines"]))]
        for fam, p in opt["ratios"].items():
            ci = opt.get("ci", {}).get(fam)
            lines.append(f"| {fam} | {p:.4f} | " + (f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "–") + " | "
                         + " | ".join(f"{b[fam]:.4f}" for b in opt["baselines"].values()) + " |")
        if opt.get("caps"):
            binding = opt.get("binding_caps") or []
            lines += ["", "Data caps (the largest ratio with no language repeating more than max_epochs times at D): "
                      + ", ".join(f"{f} ≤ {c:.4g}" for f, c in opt["caps"].items()) + ". "
                      + (f"**Binding at the optimum: {', '.join(binding)}** (the law would sample more of "
                         f"{'it' if len(binding) == 1 else 'them'} if the data allowed)." if binding else "None binds at the optimum.")]
        if opt.get("targets"):
            lines += ["", "Targets the optimum serves (a pattern's weight shared by the targets it matches; the others weigh 0): "
                      + "; ".join(f"`{g['pattern']}` weight {g['weight']:g} over {len(g['members'])} target"
                                  + ("s" if len(g["members"]) > 1 else "") for g in opt["targets"]) + "."]
        weighted = any(w != 1.0 for w in opt.get("weights", {}).values()) or bool(opt.get("targets"))
        lines += ["", "Predicted total loss (" + ("weighted " if weighted else "") + "sum over targets"
                  + (", each divided by its loss at its reference mixture: p=1 for a "
                  "family, the uniform mixture for any other target" if opt["objective"] == "normalized" else "") + "):", ""]
        for name, c in opt["comparison"].items():
            lines.append(f"- {name}: {c['total']:.4f}")
        lines.append("")
    if len(lf.fits) > plots.MAX_PANELS:
        lines += [f"Per-target figures draw the first {plots.MAX_PANELS} of the {len(lf.fits)} targets (every target's numbers "
                  "are in fit.json).", ""]
    lines += ["## Figures", ""] + [f"![{f}]({f})" for f in files if f.endswith(".png")] + [""]
    return "\n".join(lines)
