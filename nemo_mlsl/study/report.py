"""The study report: headline, fit, independence, confirmation at the largest rung, compute, commands.

Every number comes from a record in ``results.jsonl`` or from ``fit/fit.json``. Comparisons carry the
study's own seed noise, and a difference smaller than twice its noise is called "within noise".
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from nemo_mlsl.fitting import plots
from nemo_mlsl.data.manifest import Manifest, write_json_atomic
from nemo_mlsl.fitting.independence import controlled_test, residual_correlations, seed_noise, summarize
from nemo_mlsl.fitting.observations import Observations
from nemo_mlsl.fitting.optimize import predicted_losses, unit_losses
from nemo_mlsl.study import power
from nemo_mlsl.study.plan import FIT_PURPOSES



def _skipped(out: Path) -> dict[str, str]:
    plan = out / "plan.json"
    return dict(json.loads(plan.read_text()).get("skipped_baselines") or {}) if plan.exists() else {}


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(map(str, r)) + " |" for r in rows]


def _progress(out: Path, cfg, runs, records, elapsed: float) -> dict[str, Any]:
    done = {r["run_id"]: r for r in records}
    lines = [f"# Study `{cfg.name}` (in progress)", "", f"{len(done)} of {len(runs)} planned runs finished after {elapsed:.0f}s. "
             "The live fit after every run is in [fit_live/report.md](fit_live/report.md).", ""]
    fams = sorted(next(iter(done.values()))["family_loss"]) if done else []
    rows = [[r.run_id, r.purpose, r.rung, f"{r.tokens:,}"] + ([f"{done[r.run_id]['family_loss'][f]:.4f}" for f in fams] if r.run_id in done else ["…"] * len(fams))
            for r in runs]
    lines += _table(["run", "purpose", "rung", "D", *fams], rows) + [""]
    (out / "report.md").write_text("\n".join(lines))
    return {"partial": True, "done": len(done), "planned": len(runs)}


def write_study_report(out: Path, cfg, runs, records: list[Mapping[str, Any]], rep, manifest: Manifest, *,
                       elapsed: float, partial: bool = False) -> dict[str, Any]:
    out = Path(out)
    if partial or rep is None:
        return _progress(out, cfg, runs, records, elapsed)
    fit_doc = rep.doc
    fams = sorted(fit_doc["families"])
    fit_recs = [r for r in records if r.get("purpose") in FIT_PURPOSES]
    obs = Observations.from_records(fit_recs)
    noise = seed_noise(obs)
    sigma = noise["sigma"]
    opt = fit_doc["optimal"]
    N, D = float(opt["N"]), float(opt["D"])
    z = unit_losses(fit_doc, N, D)
    weights = opt.get("weights")  # the optimizer's: the confirmation judges the objective the optimum minimised

    confirm: dict[str, dict[int, Mapping[str, Any]]] = {}
    for r in records:
        if r.get("purpose") == "confirm":
            confirm.setdefault(r["mixture"], {})[int(r.get("seed", 0))] = r
    naive = {r["mixture"]: r for r in records if r.get("purpose") == "naive"}
    rows, comp = [], {}
    for name, by_seed in confirm.items():
        rec = next(iter(by_seed.values()))
        pred = predicted_losses(fit_doc, rec["ratios"], float(rec["N"]), float(rec["D"]))  # the run's own N and D (whole steps)
        obs_l = {f: float(np.mean([r["family_loss"][f] for r in by_seed.values()])) for f in fams}
        nv = naive.get(name, {}).get("family_loss", {})
        comp[name] = {
            "ratios": rec["ratios"], "observed": obs_l, "predicted": pred, "naive": nv, "seeds": sorted(by_seed),
            "totals_by_seed": {str(k): power.total(r["family_loss"], z, cfg.objective.type, weights) for k, r in sorted(by_seed.items())},
            "abs_error": {f: abs(pred[f] - obs_l[f]) for f in fams},
            "naive_abs_error": {f: abs(nv[f] - obs_l[f]) for f in fams if f in nv},
            "total_observed": power.total(obs_l, z, cfg.objective.type, weights),
            "total_predicted": power.total(pred, z, cfg.objective.type, weights),
        }
    arms = sorted({r["mixture"] for r in records if r.get("purpose") == "confirm" and r.get("adaptive")})
    static = {k: v for k, v in comp.items() if k not in arms}
    gains = _gains(static, sigma)
    adaptive = {name: adaptive_summary(name, static, comp[name], sigma, records, out) for name in arms}
    law_mae = float(np.mean([e for c in static.values() for e in c["abs_error"].values()])) if static else None
    naive_mae = float(np.mean([e for c in static.values() for e in c["naive_abs_error"].values()])) if naive else None

    ind_tests = controlled_test(obs, noise)
    ind = summarize(ind_tests)
    resid = {}
    for f in fams:
        j = obs.target_index(f)
        has = np.isfinite(obs.L[:, j])  # a run may have no loss on f: its residual is NaN, skipped below
        data = rep.lawfit.law.data_for(obs, f)
        resid[f] = np.full(len(obs), np.nan)
        resid[f][has] = np.log(data.loss) - rep.lawfit.fits[f].log_predict(data)
    rcorr = residual_correlations(obs, resid)

    files = []
    if comp:
        files.append(plots.ratio_bars({"optimal": opt["ratios"], **opt["baselines"]}, out / "optimal_vs_baselines.png",
                                      opt.get("ci"), "optimal ratios (95% bootstrap CI) vs baselines").name)
        files.append(_plot_confirmation(static, fams, out / "confirmation.png", sigma).name)
        if gains:
            files.insert(0, _plot_gains(gains, out / "gains.png").name)
    files.append(_plot_realized([r for r in records if not r.get("adaptive")], fams, out / "realized_vs_target.png").name)
    for name, a in adaptive.items():
        files.append(_plot_adaptive(name, a, fams, out / f"{_slug(name)}.png").name)

    total_flops = sum(float(r.get("flops", 0)) for r in records)
    total_wall = sum(float(r.get("wall_time_s", 0)) for r in records)
    # γ is He et al.'s exponent; laws without it (cross-family, ATLAS) report none.
    gam = {f: (fit_doc["families"][f]["params"].get("gamma"), fit_doc["families"][f]["ci"].get("gamma")) for f in fams}
    summary = {
        "study": cfg.name, "runs": len(records), "law": law_choice(cfg, fit_doc), "gamma": {f: g for f, (g, _) in gam.items()},
        "gamma_ci": {f: ci for f, (_, ci) in gam.items()}, "optimal_ratios": opt["ratios"], "optimal_ci": opt.get("ci"),
        "data_caps": opt.get("caps"), "binding_caps": opt.get("binding_caps", []),
        "skipped_baselines": _skipped(out),
        "confirm_rung": cfg.confirm_rung, "N_confirm": N, "D_confirm": D, "comparison": comp, "gains": gains,
        "adaptive": adaptive,
        "law_mean_abs_error": law_mae, "naive_mean_abs_error": naive_mae, "seed_noise": noise,
        "independence": {"passed": ind["passed"], "tests": ind_tests, "residual_correlations": rcorr},
        "compute": {"flops": total_flops, "train_wall_time_s": total_wall, "elapsed_s": elapsed},
    }
    write_json_atomic(out / "summary.json", summary)
    (out / "report.md").write_text(_markdown(cfg, summary, fit_doc, manifest, files, ind_tests, rcorr))
    return summary


def _gains(comp: Mapping[str, Any], sigma: float | None, reference: str = "optimal") -> dict[str, Any]:
    """Optimum (``reference``) vs each baseline over their paired seeds: mean difference, its noise, the verdict, and
    the power.

    The verdict is ``power.confirm``'s: the noise of one seed's difference is the std of the paired differences
    pooled over the baselines when there are >= 2 seeds, with the threshold of that estimator at the 2σ level,
    else √2·σ of the total (σ: the study's seed repeats; threshold 2). The detectable gain and the seeds needed
    are computed for that same test (``power.detectable_gain``, ``power.seeds_needed``)."""
    if reference not in comp:
        return {}
    opt = comp[reference]
    names = [name for name in comp if name != reference]
    if not names:
        return {}
    paired = {name: [k for k in comp[name]["totals_by_seed"] if k in opt["totals_by_seed"]] for name in names}
    width = max(1, max(len(s) for s in paired.values()))
    diffs = np.full((len(names), width), np.nan)
    for i, name in enumerate(names):
        for j, k in enumerate(paired[name]):
            diffs[i, j] = comp[name]["totals_by_seed"][k] - opt["totals_by_seed"][k]
        if not paired[name]:  # no seed in common (not planned): the difference of the mean totals, one "pair"
            diffs[i, 0] = comp[name]["total_observed"] - opt["total_observed"]
    levels = [0.5 * (comp[name]["total_observed"] + opt["total_observed"]) for name in names]
    test = power.confirm(diffs, [power.unpaired_sd(sigma, lv) for lv in levels] if sigma else None)
    calls = test.calls() if test.se is not None else [None] * len(names)
    gains = {}
    for i, name in enumerate(names):
        c = comp[name]
        n = max(int(test.seeds[i]), 1)
        diff = float(test.difference[i])
        if test.dof:
            source = f"paired differences of {n} seeds, pooled over {test.pooled} baseline(s) ({test.dof} dof)"
        else:
            source = "√2·σ of the total (seed repeats)" if test.se is not None else "none"
        se = float(test.se[i]) if test.se is not None else None
        k = float(test.threshold[i])
        pred_abs = c["total_predicted"] - opt["total_predicted"]
        g: dict[str, Any] = {"difference": diff, "noise_sd": se, "verdict": power.verdict(calls[i]),
                             "relative": diff / c["total_observed"], "seeds": n, "threshold": k, "noise_source": source,
                             "predicted": pred_abs, "predicted_relative": pred_abs / c["total_predicted"]}
        if se is not None:
            sd, b = float(test.sd[i]), test.pooled or len(names)
            det = power.detectable_gain(sd, n, b)
            g.update({"interval": [diff - k * se, diff + k * se], "band_relative": k * se / c["total_observed"],
                      "detectable": det, "detectable_relative": det / c["total_observed"],
                      "seeds_needed": power.seeds_needed(pred_abs, sd, b, one_seed=not test.dof), "sd_per_seed": sd})
        gains[name] = g
    return gains


def _slug(name: str) -> str:
    return name.replace(":", "_").replace(".", "p")


def _history(out: Path, run_id: str) -> list[dict[str, Any]]:
    """The validations a run logged, in step order: the CPU path's ``runs/ID/metrics.jsonl``, else the
    ``adaptive_history.jsonl`` an adaptive NeMo or Bridge run writes (in NeMo's log directory under ``runs/ID/``);
    none if neither is there."""
    run = Path(out) / "runs" / run_id
    path = run / "metrics.jsonl"
    if path.is_file():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip().startswith("{")]
        return sorted(rows, key=lambda r: r.get("step", 0))
    from nemo_mlsl.policies import ADAPTIVE_HISTORY_FILE, read_history

    # a resumed NeMo run's earlier attempts are in run_<k>/ beside its log directory's own file: the first of each step
    paths = sorted(run.rglob(ADAPTIVE_HISTORY_FILE), key=lambda p: (not p.parent.name.startswith("run_"), str(p))) \
        if run.is_dir() else []
    first = read_history(paths)
    return [first[s] for s in sorted(first)]


def adaptive_summary(name: str, static: Mapping[str, Any], arm: Mapping[str, Any], sigma: float | None,
                     records: Sequence[Mapping[str, Any]], out: Path) -> dict[str, Any]:
    """An adaptive arm against every static mixture of the confirmation (the same paired test as the optimum's, the
    adaptive arm as the reference: a positive gain means the adaptive run did better), its schedule per seed, its
    validation history, and its compute against the study's."""
    gains = _gains({**static, name: arm}, sigma, reference=name)
    for other, g in gains.items():  # the verdict in the arm's words: which of the two runs did better
        g["verdict"] = g["verdict"].replace("optimal better", f"{name} better").replace("baseline better", f"{other} better")
    runs = sorted((r for r in records if r.get("mixture") == name and r.get("purpose") == "confirm"), key=lambda r: int(r.get("seed", 0)))
    static_runs = [r for r in records if r.get("purpose") == "confirm" and r.get("mixture") in static]
    phase1 = [r for r in records if r.get("purpose") in FIT_PURPOSES]
    per_run = float(np.mean([float(r.get("flops", 0)) for r in runs])) if runs else 0.0
    wall = float(np.mean([float(r.get("wall_time_s", 0)) for r in runs])) if runs else 0.0
    static_wall = float(np.mean([float(r.get("wall_time_s", 0)) for r in static_runs])) if static_runs else 0.0
    study_flops = sum(float(r.get("flops", 0)) for r in records if not r.get("adaptive"))
    return {
        "gains": gains, "seeds": [int(r.get("seed", 0)) for r in runs], "settings": dict(runs[0]["adaptive"]) if runs else {},
        "schedules": {str(r.get("seed", 0)): (r.get("schedule") or {}).get("intervals", []) for r in runs},
        "history": {str(r.get("seed", 0)): _history(out, r["run_id"]) for r in runs},
        "compute": {"flops_per_run": per_run, "study_flops": study_flops,
                    "phase1_flops": sum(float(r.get("flops", 0)) for r in phase1),
                    "fraction_of_study": per_run / study_flops if study_flops else None,
                    "wall_per_run_s": wall, "static_wall_per_run_s": static_wall,
                    "wall_ratio": wall / static_wall if static_wall else None},
    }


def adaptive_lines(summary: Mapping[str, Any]) -> list[str]:
    """The terminal's lines for each adaptive arm: its gain over each static mixture with the band, and its cost."""
    out = []
    for name, a in (summary.get("adaptive") or {}).items():
        for other, g in a["gains"].items():
            band = f" ± {100 * g['band_relative']:.2f}% (2σ, {g['seeds']} paired seed(s))" if g.get("noise_sd") else f" ({g['seeds']} seed(s), no noise estimate)"
            out.append(f"{name} vs {other}: {100 * g['relative']:+.2f}%{band}: {g['verdict']}")
        c = a["compute"]
        if c["fraction_of_study"] is not None:
            out.append(f"{name}: one run costs {100 * c['fraction_of_study']:.1f}% of the study's training FLOPs"
                       + (f", {c['wall_ratio']:.2f}x a static run's wall time (its validations and decisions)" if c["wall_ratio"] else ""))
    return out


def _plot_adaptive(name: str, a: Mapping[str, Any], fams: Sequence[str], path: Path) -> Path:
    """The adaptive arm over training: each family's ratio (one line style per seed) and its validation loss."""
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 6.2), sharex=True)
    styles = ["-", "--", ":", "-."]
    for s_i, (seed, intervals) in enumerate(a["schedules"].items()):
        ls = styles[s_i % len(styles)]
        for j, f in enumerate(fams):
            xs = [v for iv in intervals for v in (iv["start_step"], iv["until_step"])]
            ys = [iv["ratios"].get(f, 0.0) for iv in intervals for _ in (0, 1)]
            top.plot(xs, ys, ls, color=f"C{j}", lw=1.4, label=f if s_i == 0 else None)
        hist = a["history"].get(seed, [])
        for j, f in enumerate(fams):
            pts = [(h["step"], h["family_loss"][f]) for h in hist if f in h.get("family_loss", {})]
            if pts:
                bottom.plot(*zip(*pts), ls, color=f"C{j}", lw=1.2, marker="." if len(pts) < 30 else None)
    top.set_ylabel("family ratio")
    top.set_title(f"{name}: ratios decided during the run (line style: seed)")
    plots.legend(top, fontsize=7, ncol=min(4, len(fams)))
    bottom.set_ylabel("validation loss (fixed samples)")
    bottom.set_xlabel("training step")
    return plots.save(fig, path)


def gain_lines(summary: Mapping[str, Any]) -> list[str]:
    """The terminal's headline per baseline: predicted and observed gain, its 2σ band, the detectable gain, the verdict."""
    out = []
    for name, g in summary["gains"].items():
        band = (f" ± {100 * g['band_relative']:.2f}% (2σ, {g['seeds']} paired seed(s)); detectable {100 * g['detectable_relative']:.2f}%"
                if g.get("noise_sd") else f" ({g['seeds']} seed(s), no noise estimate)")
        out.append(f"gain over {name}: observed {100 * g['relative']:+.2f}%{band}; predicted {100 * g['predicted_relative']:+.2f}%: "
                   f"{g['verdict']}")
    return out


def _plot_gains(gains: Mapping[str, Any], path: Path) -> Path:
    """The headline: observed gain over each baseline (%) with its 2σ interval, the noise band around 0, the
    gain the confirmation can detect and the law's predicted gain."""
    import matplotlib.pyplot as plt

    names = list(gains)
    fig, ax = plt.subplots(figsize=(6.4, 1.9 + 0.7 * len(names)))
    for i, name in enumerate(names):
        g = gains[name]
        if g.get("noise_sd"):
            half = 100 * g["band_relative"]
            ax.fill_between([-half, half], i - 0.35, i + 0.35, color="grey", alpha=0.25, lw=0, label="noise band (±2σ)" if i == 0 else None)
            ax.errorbar([100 * g["relative"]], [i], xerr=[[half], [half]], fmt="o", color="C0", capsize=4,
                        label="observed gain, 2σ interval" if i == 0 else None)
            det = 100 * g["detectable_relative"]
            ax.plot([det, det], [i - 0.35, i + 0.35], color="C3", ls="--", lw=1.5, label="detectable gain" if i == 0 else None)
        else:
            ax.plot([100 * g["relative"]], [i], "o", color="C0", label="observed gain (no noise estimate)" if i == 0 else None)
        ax.plot([100 * g["predicted_relative"]], [i], "x", color="C2", ms=8, label="predicted by the law" if i == 0 else None)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(names)), [f"vs {n}" for n in names])
    ax.set_ylim(-0.7, len(names) - 0.3)
    ax.invert_yaxis()
    ax.set_xlabel("gain of the optimum: baseline's total loss minus the optimum's (%)")
    ax.set_title("optimum vs baselines at the largest rung")
    plots.legend(ax, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, frameon=False)
    return plots.save(fig, path)


def _plot_confirmation(comp: Mapping[str, Any], fams: Sequence[str], path: Path, sigma: float | None) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5))
    for name, c in comp.items():
        o = [c["observed"][f] for f in fams]
        ax.scatter(o, [c["predicted"][f] for f in fams], label=f"law: {name}", marker="o")
        if c["naive"]:
            ax.scatter(o, [c["naive"][f] for f in fams], label=f"naive: {name}", marker="x")
    lims = ax.get_xlim()
    ax.plot(lims, lims, "k--", lw=0.8)
    if sigma:
        xs = np.linspace(*lims, 10)
        ax.fill_between(xs, xs * np.exp(-2 * sigma), xs * np.exp(2 * sigma), color="grey", alpha=0.2, label="±2σ seed noise")
    ax.set_xlabel("observed loss at the largest rung")
    ax.set_ylabel("predicted loss")
    plots.legend(ax, fontsize=6)
    return plots.save(fig, path)


def _plot_realized(records: Sequence[Mapping[str, Any]], fams: Sequence[str], path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    for f in fams:
        pts = [(r["ratios"][f], r["realized_ratios"][f]) for r in records if "realized_ratios" in r]
        if pts:
            ax.scatter(*zip(*pts), s=12, label=f)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("target family ratio")
    ax.set_ylabel("realized ratio (from the built sample index)")
    plots.legend(ax, fontsize=7)
    return plots.save(fig, path)


def law_choice(cfg, fit_doc: Mapping[str, Any]) -> dict[str, Any]:
    """Which law the study's optimum comes from, its form, and why: named in the config, or chosen by the
    cross-validation of ``law: auto`` (the runner up and the held-out MAPE of both)."""
    from nemo_mlsl.registry import LAWS

    name = str(fit_doc["law"])
    try:
        cls = LAWS.get(name.split(":")[0])
        formula, separable = cls.formula, bool(cls.separable)
    except Exception:  # a third-party law no longer installed: the fit still names it
        formula, separable = "", False
    out: dict[str, Any] = {"name": name, "formula": formula, "separable": separable,
                           "optimum": "KKT closed form" if separable else "SLSQP over the simplex (optimal_general)",
                           "how": "auto" if "selection" in fit_doc else "named in the config"}
    sel = fit_doc.get("selection")
    if sel:
        # held-out MAPE over the splits the choice compared the laws on (every remaining law was scored on them)
        on = list(sel.get("compared_on") or [])

        def mape_of(x: Mapping[str, Any]) -> float | None:
            vals = [x["splits"][k]["mape"] for k in on if "mape" in x["splits"].get(k, {})]
            return float(np.mean(vals)) if on and len(vals) == len(on) else x["mean_heldout_mape"]

        mape = {x["law"]: mape_of(x) for x in sel["laws"] if not x["skipped"] and mape_of(x) is not None}
        out["candidates"] = [x["law"] for x in sel["laws"]]
        out["skipped"] = {x["law"]: x["skipped"] for x in sel["laws"] if x["skipped"]}
        out["compared_on"] = on
        out["heldout_mape"] = mape
        out["runner_up"] = next((n for n in sorted(mape, key=mape.get) if n != sel["chosen"]), None)
    return out


def _law_line(s: Mapping[str, Any]) -> str:
    c = s["law"]
    line = f"- **Law**: `{c['name']}`" + (f", {c['formula']}" if c["formula"] else "") + f" (optimum by {c['optimum']})"
    if c["how"] != "auto":
        return line + "; named in the study config."
    mape = c["heldout_mape"]
    why = f"; chosen by cross-validation (law: auto) among {len(c['candidates'])} laws a study can take"
    if c["name"] in mape:
        why += f": held-out MAPE {mape[c['name']]:.3f}%" + (f" on the {', '.join(c['compared_on'])} split(s)" if c.get("compared_on") else "")
        if c.get("runner_up"):
            why += f" vs {mape[c['runner_up']]:.3f}% for `{c['runner_up']}`, the runner-up"
    if c["skipped"]:
        why += f"; skipped: {', '.join(f'`{n}`' for n in c['skipped'])}"
    return line + why + " (table below, [Law selection](#law-selection))."


def _markdown(cfg, s: Mapping[str, Any], fit_doc, manifest: Manifest, files, ind_tests, rcorr) -> str:
    fams = sorted(s["gamma"])
    sig = s["seed_noise"]["sigma"]
    L = [f"# Study `{cfg.name}`", ""]
    L += ["## Headline", ""]
    L += [_law_line(s)]
    if any(g is not None for g in s["gamma"].values()):
        L += ["- **γ per family** (95% bootstrap CI): " + "; ".join(
            f"{f} {s['gamma'][f]:.3f}" + (f" [{s['gamma_ci'][f][0]:.3f}, {s['gamma_ci'][f][1]:.3f}]" if s["gamma_ci"][f] else "")
            for f in fams if s["gamma"][f] is not None)]
    L += [f"- **Optimal ratios** ({cfg.objective.type} objective, at N={s['N_confirm']:,.0f}, D={s['D_confirm']:,.0f}"
          + (", 95% bootstrap CI" if s.get("optimal_ci") else "") + "): " + ", ".join(
        f"{f} {p:.3f}" + (f" [{s['optimal_ci'][f][0]:.3f}, {s['optimal_ci'][f][1]:.3f}]" if s.get("optimal_ci") else "")
        for f, p in s["optimal_ratios"].items())]
    if s.get("binding_caps"):
        caps = ", ".join(f"{f} at {s['data_caps'][f]:.3f}" for f in s["binding_caps"])
        L += [f"- **Data caps bind**: {caps} (the most "
              f"that {'family' if len(s['binding_caps']) == 1 else 'these families'} can take at D={s['D_confirm']:,.0f} without a "
              "language repeating past the recipe's max_data_epochs); the law alone would sample more."]
    if s["law_mean_abs_error"] is not None:
        L += [f"- **Largest rung ({cfg.confirm_rung})**, predicted from the smaller rungs vs observed: mean absolute error "
              f"{s['law_mean_abs_error']:.4f} nats per family" + (f" (naive prediction, the next-smaller rung's observed loss: "
              f"{s['naive_mean_abs_error']:.4f})" if s["naive_mean_abs_error"] is not None else "") + "."]
    for name, g in s["gains"].items():
        c, o = s["comparison"][name]["total_observed"], s["comparison"]["optimal"]["total_observed"]
        band = (f" ± {100 * g['band_relative']:.2f}% (2σ level, {g['noise_source']}); detectable gain "
                f"{100 * g['detectable_relative']:.2f}%" if g.get("noise_sd") else "")
        L += [f"- **Optimal vs {name}** ({g['seeds']} paired seed(s)): predicted gain {100 * g['predicted_relative']:+.2f}%, observed "
              f"{100 * g['relative']:+.2f}%{band}: **{g['verdict']}** (observed total {cfg.objective.type} loss {o:.4f} vs {c:.4f}; "
              f"{name} minus optimal {g['difference']:+.4f})."]
    L += [f"- **Seed noise**: σ = {100 * sig:.2f}% of loss (std of log loss between seeds, {s['seed_noise']['groups']} repeated points)."
          if sig else "- **Seed noise**: not measured (no repeated design points)."]
    L += ["- **Independence hypothesis**: " + ("not rejected: every controlled test finds the spread within seed noise "
          "(F test at 5%, Holm-corrected)." if s["independence"]["passed"] else
          "violated in at least one controlled test (F test at 5%, Holm-corrected; see below)."
          if any(t.get("independent") is False for t in ind_tests) else "not decided (no seed noise or no controlled group).")]
    L += ["", "## Design", "", f"Corpus: {len(manifest.languages)} languages in {len(fams)} families "
          f"({', '.join(f'{f}: {len(v)}' for f, v in manifest.families.items())}), vocabulary {manifest.vocab_size}. "
          f"Rungs fitted: {', '.join(cfg.fit_rungs)}; token budgets {', '.join(f'{t:,}' for t in cfg.tokens)}; "
          f"{cfg.design.mixtures} scrambled-Sobol mixtures per setting (floor {cfg.design.floor})"
          + (f" and {cfg.design.zeros} that leave one family out (share 0)" if cfg.design.zeros else "") + f"; largest rung {cfg.confirm_rung} "
          f"at D={cfg.confirm_tokens:,}. {s['runs']} runs in total.", ""]
    L += ["## Fit", "", f"Law `{fit_doc['law']}`. See [fit/report.md](fit/report.md) for the full table and figures. In-sample R² "
          f"{fit_doc['metrics']['in_sample']['overall']['r2']:.4f}, MAPE {fit_doc['metrics']['in_sample']['overall']['mape']:.2f}%.", ""]
    if fit_doc.get("selection"):
        from nemo_mlsl.fitting.selection import selection_markdown

        sel = selection_markdown(fit_doc["selection"])
        L += ["## Law selection", "", sel[0].replace("## Law selection: ", "") + " (cross-validated on the phase-1 runs; "
              "the same table is in [fit/report.md](fit/report.md)).", ""] + sel[2:]
    L += ["## Confirmation at the largest rung", ""]
    if s["gains"]:
        L += ["Every mixture ran with the same seeds (paired: a seed's effect cancels in the differences). A gain is beyond "
              "noise when it exceeds k times the noise of its mean, the noise being the std of the paired differences pooled "
              "over the baselines (they share the optimum's runs) and k the threshold at which a baseline as good as the "
              "optimum is called beyond noise with the probability of a ±2σ normal band, 4.55% (k = 2 with one seed, the "
              "noise then √2·σ of the total); the detectable gain is the one this test calls beyond noise with "
              f"{100 * power.POWER:.0f}% probability (docs/science.md, power of the confirmation).", ""]
        L += _table(["baseline", "seeds", "predicted gain", "observed gain", "2σ band", "detectable gain", "seeds needed", "verdict"],
                    [[n, g["seeds"], f"{100 * g['predicted_relative']:+.2f}%", f"{100 * g['relative']:+.2f}%",
                      f"±{100 * g['band_relative']:.2f}%" if g.get("noise_sd") else "–",
                      f"{100 * g['detectable_relative']:.2f}%" if g.get("noise_sd") else "–",
                      g.get("seeds_needed") or "–", g["verdict"]] for n, g in s["gains"].items()]) + [""]
    for name, why in s.get("skipped_baselines", {}).items():
        L += [f"- Baseline `{name}` was not trained: {why}."]
    if s.get("skipped_baselines"):
        L += [""]
    rows = []
    for name, c in s["comparison"].items():
        for f in fams:
            err = c["abs_error"][f]
            nerr = c["naive_abs_error"].get(f)
            within = sig is not None and abs(math.log(c["predicted"][f] / c["observed"][f])) <= 2 * sig
            rows.append([name, f, f"{c['ratios'][f]:.3f}", f"{c['predicted'][f]:.4f}", f"{c['observed'][f]:.4f}", f"{err:.4f}",
                         f"{c['naive'][f]:.4f}" if f in c["naive"] else "–", f"{nerr:.4f}" if nerr is not None else "–",
                         "yes" if within else "no"])
    L += _table(["mixture", "family", "ratio", "predicted", "observed", "|error|", "naive", "|naive error|", "within 2σ"], rows) + [""]
    L += _table(["mixture", f"observed total ({cfg.objective.type})", "predicted total"],
                [[n, f"{c['total_observed']:.4f}", f"{c['total_predicted']:.4f}"] for n, c in s["comparison"].items()]) + [""]
    for name, a in (s.get("adaptive") or {}).items():
        st = a["settings"]
        L += [f"## Adaptive mixture `{name}`", "",
              f"One run per paired seed at {cfg.confirm_rung} (D={cfg.confirm_tokens:,}) that starts on `{cfg.adaptive.start}` and "
              f"lets the `{st.get('policy')}` policy choose the next {st.get('interval')} steps' ratios at every boundary from its "
              f"own validation history (minimum share {st.get('min_share')}, smoothing {st.get('smoothing')}"
              f"{'' if st.get('max_change', 1.0) >= 1 else ', at most ' + str(st.get('max_change')) + ' moved per decision'}). Compared with every "
              "static mixture by the paired test above, the adaptive run as the reference: a positive difference means the "
              "adaptive run's total loss was lower.", ""]
        L += _table(["vs", "seeds", "observed difference", "2σ band", "detectable", "verdict"],
                    [[n, g["seeds"], f"{100 * g['relative']:+.2f}%", f"±{100 * g['band_relative']:.2f}%" if g.get("noise_sd") else "–",
                      f"{100 * g['detectable_relative']:.2f}%" if g.get("noise_sd") else "–", g["verdict"]]
                     for n, g in a["gains"].items()]) + [""]
        c = a["compute"]
        if c["fraction_of_study"] is not None:
            L += [f"Cost: one adaptive run is {c['flops_per_run']:.3g} training FLOPs, {100 * c['fraction_of_study']:.1f}% of the "
                  f"study's {c['study_flops']:.3g} (phase 1 alone: {c['phase1_flops']:.3g})"
                  + (f"; its wall time is {c['wall_ratio']:.2f}x a static confirmation run's (the validations at every boundary "
                     "and the decisions)" if c["wall_ratio"] else "") + ".", ""]
        for seed, intervals in a["schedules"].items():
            L += [f"Seed {seed}: " + "; ".join(f"steps {iv['start_step']}-{iv['until_step']}: " + ", ".join(
                f"{f} {iv['ratios'][f]:.2f}" for f in sorted(iv["ratios"])) for iv in intervals), ""]
    dof = s["seed_noise"].get("dof") or 0
    L += ["## Independence check", "", "Controlled runs: one family's ratio fixed while the others vary; the spread of its mean "
          "log loss over those mixtures is compared with seed noise by an F test (the seed noise σ is estimated from the "
          f"repeated runs, {dof} dof: F(mixtures − 1, {dof})), at the 5% level after Holm's correction across the "
          f"{len(ind_tests)} group(s) tested. The noise column is the noise of a mixture's mean (σ/√seeds, in rms).", ""]
    L += _table(["family", "fixed ratio", "mixtures", "spread %", "95% CI", "noise %", "p-value", "Holm p", "independent"],
                [[t["family"], t["fixed_ratio"], t["mixtures"], f"{t['spread_pct']:.2f}", f"[{t['spread_ci_pct'][0]:.2f}, {t['spread_ci_pct'][1]:.2f}]",
                  f"{t['noise_pct']:.2f}" if t["noise_pct"] else "–", f"{t['p_value']:.3f}" if t["p_value"] is not None else "–",
                  f"{t['p_holm']:.3f}" if t.get("p_holm") is not None else "–",
                  {True: "yes", False: "**no**", None: "?"}[t["independent"]]] for t in ind_tests]) + [""]
    strong = sorted(rcorr, key=lambda c: -abs(c["r"]))[:6]
    L += ["Largest residual correlations of a family's loss with another family's ratio (joint-law residuals; 0 under independence):", ""]
    L += _table(["family", "other family's ratio", "r", "95% CI"], [[c["family"], c["other"], f"{c['r']:+.2f}", f"[{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}]"]
                                                              for c in strong]) + [""]
    comp = s["compute"]
    L += ["## Compute", "", f"{s['runs']} runs, {comp['flops']:.3g} training FLOPs, {comp['train_wall_time_s']:.0f}s of training wall time, "
          f"{comp['elapsed_s']:.0f}s for the whole study.", ""]
    L += ["## Commands", "", "```", f"mlsl study --config {cfg.source} --out <STUDY_DIR>", "```", "",
          "Each run is equivalent to `mlsl train --recipe <rung> --data <STUDY_DIR>/corpus/data --ratios <ratios> --tokens <D> "
          "--seed <seed> --out <STUDY_DIR>/runs/<run_id>`; `plan.json` lists every run, `results.jsonl` every record, "
          "`tb/` the TensorBoard logs of all runs side by side (`tensorboard --logdir <STUDY_DIR>/tb`).", ""]
    L += ["## Figures", ""] + [f"![{f}]({f})" for f in files] + [f"![fit/{f}](fit/{f})" for f in
                                                                  ("loss_vs_ratio.png", "predicted_vs_observed.png", "loss_vs_N.png")] + [""]
    return "\n".join(L)
