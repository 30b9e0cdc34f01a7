"""Fitting speed, each against a baseline measured in the same run.

``python benchmarks/fit.py`` (default): the joint family law with 200 bootstrap replicates on 200 runs
(5 families), vs a per-family scipy.optimize.curve_fit loop over the same grid of initial points.
``python benchmarks/fit.py --every-law``: every registered built-in law on 1,000 runs x 5 families with 100
bootstrap replicates, vs curve_fit (least squares on log loss, numerical Jacobian) from the same best start
for the full fit and for every replicate (timed on a few replicates and scaled to 100).
Both report the objective each reaches (Huber on log residuals, lower is better).
``python benchmarks/fit.py --swarm [--regmix DIR] [--parts selection,regmix,bootstrap] [--jobs N]``: the fitter
against its own reference path (``reference=True``: the algorithm before the speed-ups, one process), each measured
in the same run, on law selection (every applicable law, its folds and extrapolation splits, the chosen law refitted
on all runs) over 1,000 runs x 5 targets and over RegMix's 512 runs x 13 targets, and on 100 bootstrap replicates
of every built-in law over 1,000 runs x 5 targets; with whether the results are the same bit for bit."""

import argparse
import json
import time
import warnings

import numpy as np
from scipy.optimize import curve_fit

from threadpoolctl import threadpool_limits

from nemo_mlsl.fitting.lawfit import fit, huber, make_law
from nemo_mlsl.laws.base import grid_product
from nemo_mlsl.laws.joint_family import JointFamilyLaw
from nemo_mlsl.fitting.observations import FamilyData, Observations

EVERY_LAW = ("family_power", "joint_family", "chinchilla:total", "atlas", "ye_mixing", "shukor_additive", "shukor_joint",
             "loglinear")


def records(n_runs=200, families=5, seed=0):
    rng = np.random.default_rng(seed)
    fams = [f"f{i}" for i in range(families)]
    t = dict(E=rng.uniform(1, 2, families), a=np.log(rng.uniform(200, 600, families)), al=rng.uniform(0.25, 0.4, families),
             b=np.log(rng.uniform(200, 800, families)), be=rng.uniform(0.25, 0.35, families), g=rng.uniform(0.05, 0.2, families))
    out = []
    for i in range(n_runs):
        N, D = 10 ** rng.uniform(6, 8), 10 ** rng.uniform(8, 10)
        p = np.maximum(rng.dirichlet(np.full(families, 2.0)), 0.03)
        p /= p.sum()
        L = (t["E"] + np.exp(t["a"]) / N ** t["al"] + np.exp(t["b"]) / D ** t["be"]) * p ** -t["g"] * np.exp(rng.normal(0, 0.01, families))
        out.append({"run_id": f"r{i}", "N": N, "D": D, "ratios": dict(zip(fams, p)), "family_loss": dict(zip(fams, L))})
    return out


def main(n_starts_baseline: int = 48) -> None:
    obs = Observations.from_records(records())
    law = JointFamilyLaw()
    t = time.perf_counter()
    lf = fit("joint_family", obs, bootstrap=200, seed=0)
    ours = time.perf_counter() - t
    ours_obj = sum(f.objective for f in lf.fits.values())

    # Baseline: curve_fit (least squares in log space) from every grid start, per family; timed on a subset
    # of starts and scaled to the full grid, then bootstrap cost scaled from the full-data fit.
    t = time.perf_counter()
    base_obj, n_full = 0.0, None
    for fam in obs.families:
        data = FamilyData.of(obs, fam)
        params = law.params(data)
        grid = grid_product(params)
        n_full = len(grid)
        lo, hi = [p.lower for p in params], [p.upper for p in params]
        X = np.arange(len(data.loss))
        f = lambda x, *th: law.log_predict(np.array(th), data)
        best = np.inf
        for x0 in grid[np.linspace(0, len(grid) - 1, n_starts_baseline).astype(int)]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    th, _ = curve_fit(f, X, np.log(data.loss), p0=np.clip(x0, lo, hi), bounds=(lo, hi), maxfev=2000)
                except RuntimeError:
                    continue
            best = min(best, float(huber(np.log(data.loss) - law.log_predict(th, data)).sum()))
        base_obj += best
    base_subset = time.perf_counter() - t
    base_full = base_subset * n_full / n_starts_baseline * (1 + 200)  # every start, for the fit and each replicate
    print(f"200 runs x 5 families, joint law, {n_full} grid starts per family")
    print(f"nemo-mlsl fit + 200 bootstrap replicates: {ours:8.1f} s   objective {ours_obj:.6f}")
    print(f"curve_fit loop: {base_subset:.1f} s for {n_starts_baseline} starts x 5 families (one fit, no bootstrap); "
          f"scaled to {n_full} starts and 201 fits: {base_full:,.0f} s   objective {base_obj:.6f}")
    print(f"speed-up: {base_full / ours:,.0f}x   (even against one full-data curve_fit pass over {n_starts_baseline} starts: "
          f"{base_subset / ours:.2f}x)")
    print(json.dumps({"ours_s": ours, "baseline_subset_s": base_subset, "baseline_full_s": base_full,
                      "ours_objective": ours_obj, "baseline_objective": base_obj}))


def grid_records(families=5, per=50, seed=0):
    """1,000 runs: 50 mixtures at each of 4 N x 5 D settings (settings shared, so family_power applies too)."""
    rng = np.random.default_rng(seed)
    fams = [f"f{i}" for i in range(families)]
    g = rng.uniform(0.05, 0.2, families)
    out = []
    for N in (1e6, 1e7, 1e8, 1e9):
        for D in (1e8, 3e8, 1e9, 3e9, 1e10):
            for _ in range(per):
                p = np.maximum(rng.dirichlet(np.full(families, 2.0)), 0.03)
                p /= p.sum()
                L = (1.5 + 400 / N ** 0.3 + 600 / D ** 0.3) * p ** -g * np.exp(rng.normal(0, 0.01, families))
                out.append({"run_id": f"r{len(out)}", "N": N, "D": D, "ratios": dict(zip(fams, p)), "family_loss": dict(zip(fams, L))})
    return out


def curve_fit_baseline(spec: str, obs: Observations, lf, replicates: int, timed: int, seed: int = 0) -> tuple[float, float]:
    """Seconds for curve_fit on the full data and ``replicates`` resamples (timed on ``timed``, scaled), and its
    full-data objective; each fit starts where nemo-mlsl's grid search put its best start."""
    law = make_law(spec)
    rng = np.random.default_rng(seed)
    resamples = [np.sort(rng.integers(0, len(obs), len(obs))) for _ in range(timed)]
    t0, obj = time.perf_counter(), 0.0
    for target, tf in lf.fits.items():
        bound = tf.law
        for k, idx in enumerate([None] + resamples):
            data = bound.data_for(obs if idx is None else obs.subset(idx), target)
            params = bound.params(data)
            lo, hi = np.array([p.lower for p in params]), np.array([p.upper for p in params])
            grid = np.clip(bound.start_grid(data), lo, hi)
            with np.errstate(all="ignore"):
                scores = np.nan_to_num(huber(np.log(data.loss) - bound.log_predict(grid, data)).sum(axis=-1), nan=np.inf)
            x0 = np.clip(grid[int(np.argmin(scores))], lo + 1e-12 * (hi - lo), hi - 1e-12 * (hi - lo))
            f = lambda x, *th: bound.log_predict(np.array(th), data)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    th, _ = curve_fit(f, np.arange(len(data.loss)), np.log(data.loss), p0=x0, bounds=(lo, hi), maxfev=2000)
                except (RuntimeError, ValueError):
                    th = x0
            if idx is None:
                obj += float(huber(np.log(data.loss) - bound.log_predict(th, data)).sum())
    spent = time.perf_counter() - t0
    per_fit = spent / (1 + timed)
    return per_fit * (1 + replicates), obj


def every_law(laws=EVERY_LAW, replicates: int = 100, timed: int = 2) -> None:
    obs = Observations.from_records(grid_records())
    print(f"{len(obs)} runs x {len(obs.families)} families, {replicates} bootstrap replicates; baseline: curve_fit from the "
          f"same best start for the fit and each replicate (timed on {timed} replicates, scaled to {replicates})")
    rows = []
    for spec in laws:
        with threadpool_limits(limits=1, user_api="blas"):
            t = time.perf_counter()
            lf = fit(spec, obs, bootstrap=replicates, seed=0)
            ours = time.perf_counter() - t
            base, base_obj = curve_fit_baseline(spec, obs, lf, replicates, timed)
        ours_obj = sum(f.objective for f in lf.fits.values())
        k = max(len(f.theta) for f in lf.fits.values())
        mape = lf.metrics["in_sample"]["overall"]["mape"]
        rows.append({"law": spec, "seconds": ours, "baseline_seconds": base, "ratio": base / ours, "params": k,
                     "objective": ours_obj, "baseline_objective": base_obj, "mape": mape})
        print(f"{spec:<18} {k:>3} params  nemo-mlsl {ours:8.1f} s  curve_fit {base:9.1f} s  speed-up {base / ours:6.1f}x  "
              f"objective {ours_obj:.6f} vs {base_obj:.6f}  in-sample MAPE {mape:.2f}%", flush=True)
    print(json.dumps(rows))


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished worker processes (user and system)."""
    import os

    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


CPU: dict = {}  # the CPU seconds of the last ``timed`` call


def timed(f):
    t, c = time.perf_counter(), cpu_seconds()
    out = f()
    CPU["last"] = cpu_seconds() - c
    return out, time.perf_counter() - t


def selection_row(name: str, obs: Observations, jobs: int) -> dict:
    """Law selection and the chosen law's refit on all runs (no bootstrap), reference path then ours."""
    from nemo_mlsl.fitting.selection import select_law

    def run(**kw):
        sel = select_law(obs, **kw)
        lf = fit(sel.chosen, obs, **kw)
        doc = sel.to_dict()
        for law in doc["laws"]:
            law.pop("fit_s")
        return doc, lf

    (ref_doc, ref_lf), ref_s = timed(lambda: run(reference=True))
    ref_cpu = CPU["last"]
    (doc, lf), ours = timed(lambda: run(jobs=jobs))
    cpu = CPU["last"]
    same = json.dumps(doc, sort_keys=True) == json.dumps(ref_doc, sort_keys=True) and \
        all(a.theta.tobytes() == b.theta.tobytes() for a, b in zip(lf.fits.values(), ref_lf.fits.values()))
    row = {"what": name, "runs": len(obs), "targets": len(lf.fits), "chosen": doc["chosen"], "seconds": ours,
           "reference_seconds": ref_s, "ratio": ref_s / ours, "identical": same, "cpu_seconds": cpu, "reference_cpu_seconds": ref_cpu}
    print(f"{name:<44} ours {ours:7.1f} s  reference {ref_s:7.1f} s  ratio {ref_s / ours:5.2f}x  chosen {doc['chosen']}  "
          f"table and refit identical: {same}", flush=True)
    print(f"{'':<44} CPU seconds: ours {cpu:7.1f} (all processes)  reference {ref_cpu:7.1f}  ratio {ref_cpu / cpu:5.2f}x",
          flush=True)
    return row


def bootstrap_row(spec: str, obs: Observations, replicates: int, jobs: int) -> dict:
    ref, ref_s = timed(lambda: fit(spec, obs, bootstrap=replicates, seed=0, reference=True))
    ref_cpu = CPU["last"]
    lf, ours = timed(lambda: fit(spec, obs, bootstrap=replicates, seed=0, jobs=jobs))
    cpu = CPU["last"]
    obj, ref_obj = (sum(f.objective for f in x.fits.values()) for x in (lf, ref))
    same = all(a.theta.tobytes() == b.theta.tobytes() and a.boot.tobytes() == b.boot.tobytes()
               for a, b in zip(lf.fits.values(), ref.fits.values()))
    row = {"law": spec, "seconds": ours, "reference_seconds": ref_s, "ratio": ref_s / ours, "objective": obj,
           "reference_objective": ref_obj, "objective_rel_diff": abs(obj - ref_obj) / ref_obj, "identical": same,
           "replicates_fitted": min(f.replicates_fitted for f in lf.fits.values()), "cpu_seconds": cpu,
           "reference_cpu_seconds": ref_cpu}
    print(f"  {spec:<18} ours {ours:7.1f} s  reference {ref_s:7.1f} s  ratio {ref_s / ours:5.2f}x  "
          f"CPU s {cpu:6.1f} vs {ref_cpu:6.1f} ({ref_cpu / cpu:4.2f}x)  objective {obj:.9f} "
          f"(rel. diff {row['objective_rel_diff']:.1e})  fits and replicates identical: {same}", flush=True)
    return row


def swarm(parts=("selection", "regmix", "bootstrap"), regmix: str | None = None, laws=EVERY_LAW, replicates: int = 100,
          jobs: int | None = None, cli_store: str | None = None) -> None:
    import os
    import subprocess
    import sys
    import tempfile

    from nemo_mlsl.fitting.parallel import available_cores, check_jobs

    jobs = check_jobs(jobs)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{available_cores()} cores, jobs {jobs}; load average at the start {load:.1f} (other work on the machine "
          f"inflates both columns; the ratio compares them measured in the same run; CPU seconds, summed over the "
          f"worker processes, depend far less on that load)", flush=True)
    rows: dict = {}
    grid = Observations.from_records(grid_records())
    if "selection" in parts:
        rows["selection"] = selection_row("law selection + refit, 1,000 runs x 5 targets", grid, jobs)
        with tempfile.TemporaryDirectory() as tmp:
            store = os.path.join(tmp, "runs.jsonl")
            with open(store, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in grid_records())
            cmd = [sys.executable, "-m", "nemo_mlsl.cli", "fit", "--runs", store, "--out", os.path.join(tmp, "fit"), "--law", "auto",
                   "--bootstrap", "0", "--jobs", str(jobs), "--no-progress"]
            _, cli_s = timed(lambda: subprocess.run(cmd, check=True, capture_output=True))
        rows["selection"]["cli_seconds"] = cli_s
        print(f"  `mlsl fit --law auto --bootstrap 0 --jobs {jobs}` on those runs, end to end (report, plots): {cli_s:.1f} s",
              flush=True)
    if "regmix" in parts:
        if not regmix:
            print("regmix: skipped (give --regmix DIR: the public RegMix runs)")
        else:
            from pathlib import Path

            sys.path.insert(0, str(Path(__file__).parent))
            from external import load

            obs = Observations.from_records(load(Path(regmix), "train", "1m"))
            rows["regmix"] = selection_row(f"law selection + refit, RegMix {len(obs)} runs", obs, jobs)
    if "bootstrap" in parts:
        print(f"{len(grid)} runs x 5 targets, {replicates} bootstrap replicates (the full fit, then each replicate from its optimum):",
              flush=True)
        rows["bootstrap"] = [bootstrap_row(spec, grid, replicates, jobs) for spec in laws]
    print(json.dumps(rows))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every-law", action="store_true", help="every law on 1,000 runs x 5 families, 100 replicates")
    ap.add_argument("--laws", default=",".join(EVERY_LAW), help="with --every-law: which laws (comma-separated)")
    ap.add_argument("--replicates", type=int, default=100)
    ap.add_argument("--swarm", action="store_true", help="selection and bootstrap at swarm scale vs the reference path")
    ap.add_argument("--parts", default="selection,regmix,bootstrap", help="with --swarm: which figures")
    ap.add_argument("--regmix", help="with --swarm: the RegMix runs (e.g. ../shared/data/regmix)")
    ap.add_argument("--jobs", type=int, help="with --swarm: worker processes (default: every core)")
    a = ap.parse_args()
    if a.swarm:
        swarm(tuple(a.parts.split(",")), a.regmix, tuple(a.laws.split(",")), a.replicates, a.jobs)
    elif a.every_law:
        every_law(tuple(a.laws.split(",")), a.replicates)
    else:
        main()
