"""External benchmarks on public runs nobody here produced. RegMix's runs (Liu et al., ICLR 2025; MIT licence): every applicable law of the
registry and RegMix's own method (one LightGBM regressor per domain) side by side, in one run.

Fit on the 512 runs of the 1M-parameter model; per-domain MAPE (%) and R² on the 256 unseen 1M mixtures; Spearman
correlation between the predicted and the observed average domain loss of the 60M and 1B models (the mixtures are
ranked with the 1M fit at its own (N, D), as RegMix ranks them). The chosen law is the one `--law auto` picks by
cross-validation on the 512 training runs only. LightGBM uses RegMix's published settings (gbdt, regression,
learning rate 0.01, up to 1000 trees, early stopping after 3 rounds) with the stopping set drawn from the training
runs (10%), not from the test mixtures.

    python benchmarks/external.py [REGMIX_DIR] [--json OUT.json] [--laws a,b,c]

Given olmix's public DCLM swarm instead (a directory holding ``ratios.csv`` and ``metrics.csv``, or its parent
holding ``dclm_swarm/``), imported exactly as olmix publishes it: K-fold cross-validation over its 127 runs (the
folds `mlsl fit --law auto` uses: seeded, over distinct mixtures) on all 110 downstream targets, for every law
that can take targets that are no training family, each law's whole cross-validation capped at ``--cap-s``
seconds (a law over its cap is reported as such, not scored), and on the same folds olmix's own method (its
log-linear law per target, ``olmix_loglinear.py``) and one LightGBM regressor per target (RegMix's settings).
Per method: the mean over targets of the held-out R² and MAPE, each pooled over the folds.

    python benchmarks/external.py ../shared/data/olmix [--folds 5] [--cap-s 600] [--laws a,b] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from nemo_mlsl.errors import MLSLError
from nemo_mlsl.fitting.lawfit import fit, regression_metrics
from nemo_mlsl.importers.csv_pair import CsvPairSpec, import_csv_pair
from nemo_mlsl.importers.olmix import import_olmix
from nemo_mlsl.fitting.observations import Observations
from nemo_mlsl.fitting.predict import predict_runs
from nemo_mlsl.fitting.selection import LawScore, choose, default_laws, mixture_folds, select_law, why_not

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"1m": (1e6, 1e9), "60m": (6e7, 1e9), "1B": (1e9, 25e9)}  # (N, D) of each model size (the README's budgets)
SHARE, LOSS = r"train_the_pile_(?P<family>.+)", r"metric/the_pile_(?P<family>.+)_val_loss"


def load(root: Path, split: str, size: str) -> list[dict]:
    N, D = SIZES[size]
    spec = CsvPairSpec(str(root / f"{split}_mixture_{size}.csv"), str(root / f"{split}_pile_loss_{size}.csv"),
                       share_pattern=SHARE, loss_pattern=LOSS, N=N, D=D, run_prefix=f"{split}{size}-")
    return import_csv_pair(spec)


def matrix(records: list[dict], keys: list[str], field: str) -> np.ndarray:
    return np.array([[float(r[field].get(k, np.nan)) for k in keys] for r in records])


def score(pred: np.ndarray, obs: np.ndarray, domains: list[str]) -> dict:
    per = {d: regression_metrics(obs[:, j], pred[:, j]) for j, d in enumerate(domains)}
    return {"domains": per, "mape": float(np.mean([m["mape"] for m in per.values()])),
            "r2": float(np.mean([m["r2"] for m in per.values()]))}


def law_predictions(lf, records: list[dict], domains: list[str], at: tuple[float, float] | None = None) -> np.ndarray:
    """[runs, domains] predicted losses; ``at`` replaces each run's (N, D) (ranking with the 1M fit)."""
    recs = [{**r, "N": at[0], "D": at[1], "family_loss": {}} for r in records] if at else records
    out = np.full((len(recs), len(domains)), np.nan)
    index = {r["run_id"]: i for i, r in enumerate(recs)}
    for e in predict_runs(lf, recs):
        if e["family"] in domains:
            out[index[e["run_id"]], domains.index(e["family"])] = e["predicted"]
    return out


def lightgbm_fit_predict(X: np.ndarray, Y: np.ndarray, X_tests: list[np.ndarray], seed: int = 42) -> list[np.ndarray]:
    """One LightGBM regressor per column of ``Y`` with RegMix's settings; predictions [runs, targets] for each of
    ``X_tests``. The early-stopping set is 10% of the training rows (drawn with ``seed``), never a test row."""
    import lightgbm as lgb

    stop = np.random.default_rng(seed).permutation(len(X))[: max(1, len(X) // 10)]
    fit_rows = np.setdiff1d(np.arange(len(X)), stop)
    outs = [np.zeros((len(t), Y.shape[1])) for t in X_tests]
    for j in range(Y.shape[1]):
        model = lgb.LGBMRegressor(boosting_type="gbdt", objective="regression", n_estimators=1000, learning_rate=1e-2,
                                  random_state=seed, verbosity=-1, n_jobs=1)  # one thread: deterministic, no oversubscription
        with warnings.catch_warnings():  # eval_set is renamed in lightgbm 4.7; the old name still works everywhere
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message=".*eval_set.*")
            model.fit(X[fit_rows], Y[fit_rows, j], eval_set=[(X[stop], Y[stop, j])], eval_metric="l2",
                      callbacks=[lgb.early_stopping(stopping_rounds=3, verbose=False)])
        for out, t in zip(outs, X_tests):
            out[:, j] = model.predict(t)
    return outs


def lightgbm_predictions(train: list[dict], tests: list[list[dict]], shares: list[str], domains: list[str], seed: int = 42):
    return lightgbm_fit_predict(matrix(train, shares, "ratios"), matrix(train, domains, "family_loss"),
                                [matrix(t, shares, "ratios") for t in tests], seed)


def rank_corr(pred: np.ndarray, obs: np.ndarray) -> float:
    return float(spearmanr(pred.mean(axis=1), obs.mean(axis=1)).statistic)


# -- olmix's public DCLM swarm ------------------------------------------------------------------------------------

OLMIX_N, OLMIX_D = 30e6, 3e9  # every run of the swarm: a 30M-parameter proxy on 3B tokens (its README)


def olmix_swarm_dir(root: Path) -> Path | None:
    for d in (root, root / "dclm_swarm"):
        if (d / "ratios.csv").is_file() and (d / "metrics.csv").is_file():
            return d
    return None


def _law_cv_child(spec: str, obs: Observations, folds: int, seed: int, conn) -> None:
    try:
        reason = why_not(spec, obs)
        score = LawScore(spec, skipped=reason) if reason else select_law(obs, [spec], folds=folds, seed=seed).scores[0]
    except MLSLError as err:
        score = LawScore(spec, skipped=str(err))
    conn.send(score)
    conn.close()


def capped_law_score(spec: str, obs: Observations, folds: int, seed: int, cap_s: float) -> tuple[LawScore, float]:
    """The law's cross-validation exactly as `mlsl fit --law auto` scores it, in a child process stopped after
    ``cap_s`` seconds (then the law is reported as over its cap); and the wall seconds it took."""
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    t0 = time.perf_counter()
    child = ctx.Process(target=_law_cv_child, args=(spec, obs, folds, seed, send), daemon=True)
    child.start()
    send.close()
    score = recv.recv() if recv.poll(cap_s) else None
    child.join(1.0 if score is not None else 0.0)
    if child.is_alive():
        child.terminate()
        child.join()
    took = time.perf_counter() - t0
    if score is None:
        score = LawScore(spec, skipped=f"its {folds}-fold cross-validation did not finish within the {cap_s:.0f} s cap (--cap-s)")
    return score, took


def per_target(observed: np.ndarray, predicted: np.ndarray, targets: list[str]) -> dict[str, dict]:
    return {t: regression_metrics(observed[:, j], predicted[:, j]) for j, t in enumerate(targets)}


def summary(per: dict[str, dict]) -> dict:
    r2 = np.array([m["r2"] for m in per.values()])
    return {"r2": float(np.mean(r2)), "r2_median": float(np.median(r2)),
            "mape": float(np.mean([m["mape"] for m in per.values()])), "targets": per}


def olmix_baselines(obs: Observations, folds: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, dict]:
    """olmix's log-linear law and LightGBM per target, on the same folds; held-out predictions pooled over them."""
    from olmix_loglinear import fit_predict  # this directory's own implementation of olmix's regressor

    X, Y, targets = obs.P, obs.L, list(obs.targets)
    out = {}
    for name, method in (("olmix log-linear (Huber)", lambda tr, te: fit_predict(X[tr], Y[tr], X[te])),
                         ("LightGBM (RegMix)", lambda tr, te: lightgbm_fit_predict(X[tr], Y[tr], [X[te]])[0])):
        t0 = time.perf_counter()
        pred = np.full(Y.shape, np.nan)
        for train, test in folds:
            pred[test] = method(train, test)
        out[name] = {**summary(per_target(Y, pred, targets)), "wall_s": time.perf_counter() - t0}
    return out


def olmix_benchmark(swarm: Path, a: argparse.Namespace) -> int:
    notes: list[str] = []
    records = import_olmix(str(swarm), N=OLMIX_N, D=OLMIX_D, notes=notes)
    obs = Observations.from_records(records)
    targets = list(obs.targets)
    strangers = [t for t in targets if t not in obs.families]
    print(f"olmix swarm {swarm}: {len(obs)} runs, {len(obs.families)} training domains, {len(targets)} targets "
          f"({len(strangers)} of them no training domain); N = {OLMIX_N:g}, D = {OLMIX_D:g} for every run")
    for n in notes:
        print(f"  {n}")
    specs = a.laws.split(",") if a.laws else default_laws()
    print(f"\n{a.folds}-fold cross-validation over the runs (seed 0, folds over distinct mixtures); "
          f"each law's cross-validation capped at {a.cap_s:.0f} s:")
    scores, rows = [], {}
    for spec in specs:
        score, took = capped_law_score(spec, obs, a.folds, 0, a.cap_s)
        scores.append(score)
        if score.skipped:
            print(f"  {spec}: not scored ({score.skipped[:200]})")
            continue
        m = score.splits["mixtures"]
        if "error" in m:
            print(f"  {spec}: not scored ({m['error'][:200]})")
            continue
        rows[spec] = {**summary(m["families"]), "wall_s": took, "params": score.n_params / len(targets)}
        print(f"  {spec}: mean held-out R² {rows[spec]['r2']:.3f}, MAPE {rows[spec]['mape']:.3f}% ({took:.0f} s)")
    ranked = [s for s in scores if not s.skipped and s.scored]
    chosen = choose(ranked)[0] if ranked else None
    print(f"chosen by the selection's criterion (`mlsl fit --law auto`): {chosen}")
    folds = mixture_folds(obs, a.folds, 0)  # the very folds select_law scored the laws on
    base = olmix_baselines(obs, folds)
    for name, r in base.items():
        r["params"] = len(obs.families) + 1 if name.startswith("olmix") else None
    rows.update(base)

    print(f"\n| method | params per target | mean held-out R² ({len(targets)} targets) | median R² | mean MAPE % | wall s |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        mark = " (chosen)" if name == chosen else ""
        params = "–" if r["params"] is None else f"{r['params']:.0f}"
        print(f"| {name}{mark} | {params} | {r['r2']:.3f} | {r['r2_median']:.3f} | {r['mape']:.3f} | {r['wall_s']:.0f} |")
    best_name = max(base, key=lambda k: base[k]["r2"])
    best = base[best_name]
    if chosen in rows:
        mine = rows[chosen]
        wins = sum(mine["targets"][t]["r2"] >= best["targets"][t]["r2"] for t in targets)
        print(f"\n{chosen} vs {best_name}, per target: R² at or above on {wins} of {len(targets)} targets")
        ok = mine["r2"] >= best["r2"]
        print(f"target: chosen law's mean held-out R² >= the best baseline's ({best_name}): {'met' if ok else 'NOT met'} "
              f"({mine['r2']:.3f} vs {best['r2']:.3f}; MAPE {mine['mape']:.3f}% vs {best['mape']:.3f}%)")
    if a.json:
        Path(a.json).write_text(json.dumps({"chosen": chosen, "folds": a.folds, "cap_s": a.cap_s,
                                            "laws": [s.to_dict() for s in scores], "methods": rows}, indent=1, default=float))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default=str(ROOT.parent / "shared" / "data" / "regmix"))
    ap.add_argument("--laws", help="comma-separated laws (default: every registered law)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--json", help="write the numbers here")
    ap.add_argument("--cap-s", type=float, default=600.0,
                    help="olmix swarm: the most seconds one law's whole cross-validation may take (default 600)")
    a = ap.parse_args(argv)
    root = Path(a.root)
    swarm = olmix_swarm_dir(root)
    if swarm is not None:
        return olmix_benchmark(swarm, a)
    if not (root / "train_mixture_1m.csv").is_file():
        print(f"external.py: error: {root} holds neither the RegMix runs (train_mixture_1m.csv ...) nor an olmix swarm "
              "(ratios.csv and metrics.csv, or dclm_swarm/ holding them)", file=sys.stderr)
        return 2
    train, test1m, test60m, test1b = load(root, "train", "1m"), load(root, "test", "1m"), load(root, "test", "60m"), load(root, "test", "1B")
    obs = Observations.from_records(train)
    domains, shares = list(obs.evaluated), list(obs.families)
    y1m, y60m, y1b = (matrix(t, domains, "family_loss") for t in (test1m, test60m, test1b))
    print(f"RegMix runs: {len(train)} train (1M), {len(test1m)} unseen 1M, {len(test60m)} at 60M, {len(test1b)} at 1B; "
          f"{len(shares)} training domains, {len(domains)} evaluated")

    t0 = time.perf_counter()
    try:
        sel = select_law(obs, a.laws.split(",") if a.laws else None, folds=a.folds)
        chosen, scores, selection = sel.chosen, sel.scores, sel.to_dict()
    except MLSLError as err:
        chosen, scores, selection = None, [], None
        print(f"no law applies: {err}")
    print(f"law selection by {a.folds}-fold cross-validation on the 512 training runs: {time.perf_counter() - t0:.1f} s; "
          f"chosen: {chosen}")
    rows: dict[str, dict] = {}
    for s in scores:
        if s.skipped:
            print(f"  {s.spec}: skipped ({s.skipped[:160]})")
            continue
        t0 = time.perf_counter()
        try:
            lf = fit(s.spec, obs)
            p1m = law_predictions(lf, test1m, domains)
            at = (SIZES["1m"][0], SIZES["1m"][1])
            p60, p1b = law_predictions(lf, test60m, domains, at), law_predictions(lf, test1b, domains, at)
        except MLSLError as err:
            print(f"  {s.spec}: failed ({err})")
            continue
        rows[s.spec] = {**score(p1m, y1m, domains), "spearman_60m": rank_corr(p60, y60m), "spearman_1b": rank_corr(p1b, y1b),
                        "fit_s": time.perf_counter() - t0, "cv_mape": s.mean_mape}
    t0 = time.perf_counter()
    g1m, g60, g1b = lightgbm_predictions(train, [test1m, test60m, test1b], shares, domains)
    rows["LightGBM (RegMix)"] = {**score(g1m, y1m, domains), "spearman_60m": rank_corr(g60, y60m),
                                 "spearman_1b": rank_corr(g1b, y1b), "fit_s": time.perf_counter() - t0, "cv_mape": None}

    print("\n| method | CV MAPE % (512 train) | per-domain MAPE % (256 unseen 1M) | mean R² | Spearman 60M | Spearman 1B | fit s |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        mark = " (chosen)" if name == chosen else ""
        cv = "–" if r["cv_mape"] is None else f"{r['cv_mape']:.3f}"
        print(f"| {name}{mark} | {cv} | {r['mape']:.3f} | {r['r2']:.3f} | {r['spearman_60m']:.3f} | {r['spearman_1b']:.3f} | {r['fit_s']:.1f} |")
    lgbm = rows["LightGBM (RegMix)"]
    if chosen in rows:
        best = rows[chosen]
        print(f"\nper domain, MAPE % on the unseen 1M mixtures ({chosen} vs LightGBM):")
        for d in domains:
            print(f"  {d:<20} {best['domains'][d]['mape']:7.3f}  {lgbm['domains'][d]['mape']:7.3f}")
        mape_ok, rank_ok = best["mape"] <= lgbm["mape"], best["spearman_1b"] > lgbm["spearman_1b"]
        print(f"\ntarget: chosen law's per-domain MAPE <= LightGBM's: {'met' if mape_ok else 'NOT met'} "
              f"({best['mape']:.3f} vs {lgbm['mape']:.3f}); 1B rank correlation above LightGBM's: "
              f"{'met' if rank_ok else 'NOT met'} ({best['spearman_1b']:.3f} vs {lgbm['spearman_1b']:.3f})")
    if a.json:
        Path(a.json).write_text(json.dumps({"chosen": chosen, "selection": selection, "methods": rows}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
