"""External benchmark on the public RegMix runs (Liu et al., ICLR 2025; MIT licence): every applicable law of the
registry and RegMix's own method (one LightGBM regressor per domain) side by side, in one run.

Fit on the 512 runs of the 1M-parameter model; per-domain MAPE (%) and R² on the 256 unseen 1M mixtures; Spearman
correlation between the predicted and the observed average domain loss of the 60M and 1B models (the mixtures are
ranked with the 1M fit at its own (N, D), as RegMix ranks them). The chosen law is the one `--law auto` picks by
cross-validation on the 512 training runs only. LightGBM uses RegMix's published settings (gbdt, regression,
learning rate 0.01, up to 1000 trees, early stopping after 3 rounds) with the stopping set drawn from the training
runs (10%), not from the test mixtures.

    python benchmarks/external.py [REGMIX_DIR] [--json OUT.json] [--laws a,b,c]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from nemo_mlsl.errors import MLSLError
from nemo_mlsl.fitting.lawfit import fit, regression_metrics
from nemo_mlsl.importers.csv_pair import CsvPairSpec, import_csv_pair
from nemo_mlsl.fitting.observations import Observations
from nemo_mlsl.fitting.predict import predict_runs
from nemo_mlsl.fitting.selection import select_law

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


def lightgbm_predictions(train: list[dict], tests: list[list[dict]], shares: list[str], domains: list[str], seed: int = 42):
    import lightgbm as lgb

    X = matrix(train, shares, "ratios")
    Y = matrix(train, domains, "family_loss")
    stop = np.random.default_rng(seed).permutation(len(train))[: len(train) // 10]
    fit_rows = np.setdiff1d(np.arange(len(train)), stop)
    outs = [np.zeros((len(t), len(domains))) for t in tests]
    for j in range(len(domains)):
        model = lgb.LGBMRegressor(boosting_type="gbdt", objective="regression", n_estimators=1000, learning_rate=1e-2,
                                  random_state=seed, verbosity=-1, n_jobs=1)  # one thread: deterministic, no oversubscription
        with warnings.catch_warnings():  # eval_set is renamed in lightgbm 4.7; the old name still works everywhere
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message=".*eval_set.*")
            model.fit(X[fit_rows], Y[fit_rows, j], eval_set=[(X[stop], Y[stop, j])], eval_metric="l2",
                      callbacks=[lgb.early_stopping(stopping_rounds=3, verbose=False)])
        for out, t in zip(outs, tests):
            out[:, j] = model.predict(matrix(t, shares, "ratios"))
    return outs


def rank_corr(pred: np.ndarray, obs: np.ndarray) -> float:
    return float(spearmanr(pred.mean(axis=1), obs.mean(axis=1)).statistic)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default=str(ROOT.parent / "shared" / "data" / "regmix"))
    ap.add_argument("--laws", help="comma-separated laws (default: every registered law)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--json", help="write the numbers here")
    a = ap.parse_args(argv)
    root = Path(a.root)
    if not (root / "train_mixture_1m.csv").is_file():
        print(f"external.py: error: {root} does not hold the RegMix runs (train_mixture_1m.csv ...)", file=sys.stderr)
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
