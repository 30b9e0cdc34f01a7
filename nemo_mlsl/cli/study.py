"""``mlsl study``: a whole scaling-law study on any registered backend."""

from __future__ import annotations

import argparse
from pathlib import Path

from nemo_mlsl.backends import BACKENDS, backend
from nemo_mlsl.registry import LAUNCHERS


def cmd_study(a: argparse.Namespace) -> int:
    from nemo_mlsl.study.config import load_study, with_executor
    from nemo_mlsl.study.report import adaptive_lines, gain_lines
    from nemo_mlsl.study.backend import launcher
    from nemo_mlsl.study.runner import Study, run_specs

    cfg = with_executor(load_study(a.config, quick=a.quick), type=a.executor, max_parallel=a.max_parallel)
    out = Path(a.out).resolve()  # jobs on other nodes and in other working directories see the same paths
    plugin = backend(a.backend)
    trainer = plugin.study(cfg.executor.gpus_per_run, cfg.executor.nodes_per_run)
    # (out/jobs, not a path with a "nemo_run" component: NeMo-Run mangles those)
    study = Study(cfg, out, trainer, launcher(cfg.executor, out / "jobs", f"mlsl-{cfg.name}"), progress=not a.no_progress)
    if a.dry_run:
        plan = study.run(dry_run=True)
        runs = plan["phase1"]
        print(f"study {cfg.name}: {len(runs)} phase-1 {plugin.runs_label} on the {a.backend} backend, executor {cfg.executor.type} "
              f"(at most {cfg.executor.max_parallel} in flight); phase 2, the largest rung at the optimum and baselines, "
              "is planned after the fit")
        if cfg.adaptive is not None:
            ad = cfg.adaptive
            print(f"  and the adaptive arm {ad.name}: at {cfg.confirm_rung} on the confirmation's paired seeds, from {ad.start}, "
                  f"the {ad.policy} policy deciding every {ad.interval} steps (min share {ad.min_share}, smoothing {ad.smoothing}"
                  + (f", at most {ad.max_change} of the mixture moved per decision" if ad.max_change < 1 else "") + ")")
        for r in runs:
            print(f"  {r.run_id:<44} {r.rung:<9} N={r.N:>10,} D={r.tokens:>10,} " + " ".join(f"{f}={p:.3f}" for f, p in r.ratios.items()))
        power_lines, _ = study.dry_run_power(plan)
        print()
        print("\n".join(power_lines))
        spec = run_specs(runs[:1], out, plan["manifest"], law=cfg.law, within=cfg.within)[0]
        print(f"\nfirst run ({spec.run_id}):")
        print(trainer.describe(spec))
        return 0
    s = study.run(resume=a.resume)
    print()
    print(f"Report: {out / 'report.md'}  (figures beside it; TensorBoard: tensorboard --logdir {out / 'tb'})")
    law = s["law"]
    if law["how"] == "auto":
        mape = law["heldout_mape"].get(law["name"])
        print(f"law: {law['name']} (chosen by cross-validation among {len(law['candidates'])} laws"
              + (f", held-out MAPE {mape:.3f}% on {'/'.join(law['compared_on']) or 'every split'}" if mape is not None else "")
              + (f"; runner-up {law['runner_up']} {law['heldout_mape'][law['runner_up']]:.3f}%" if law.get("runner_up") else "") + ")")
    else:
        print(f"law: {law['name']} (named in the study config)")
    if any(g is not None for g in s["gamma"].values()):  # He et al.'s exponent; cross-family laws and ATLAS have none
        print("gamma per family: " + ", ".join(f"{f} {g:.3f}" for f, g in s["gamma"].items() if g is not None))
    print("optimal ratios:   " + ", ".join(f"{f} {p:.3f}" for f, p in s["optimal_ratios"].items()))
    ci = s.get("optimal_ci")
    if ci:
        print("  95% bootstrap:  " + ", ".join(f"{f} [{ci[f][0]:.3f}, {ci[f][1]:.3f}]" for f in s["optimal_ratios"]))
    if s.get("binding_caps"):
        print("data caps binding at the optimum: " + ", ".join(f"{f} <= {s['data_caps'][f]:.3f}" for f in s["binding_caps"]))
    c = s["comparison"].get("optimal")
    if c:
        print(f"largest rung {s['confirm_rung']} at the optimum, predicted vs observed loss:")
        for f in c["observed"]:
            print(f"  {f:<10} predicted {c['predicted'][f]:.4f}  observed {c['observed'][f]:.4f}  |error| {c['abs_error'][f]:.4f}")
    for line in gain_lines(s) + adaptive_lines(s):
        print(line)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("study", help="run a whole scaling-law study (design, runs, fit, optimum, confirmation, report)")
    s.set_defaults(func=cmd_study)
    s.add_argument("--config", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--backend", choices=BACKENDS.names(), default="cpu",
                   help="what trains a run: the CPU Lightning path, NeMo 2 recipes or Megatron-Bridge (GPUs), or any "
                        "backend registered under the 'nemo_mlsl.backends' entry points")
    s.add_argument("--executor", choices=LAUNCHERS.names(),
                   help="where runs execute: in this process one after the other (inline, the default), or as jobs of "
                        "NeMo-Run's local or Slurm executor, or a launcher registered under the 'nemo_mlsl.launchers' entry points "
                        "(overrides the study YAML's executor.type)")
    s.add_argument("--max-parallel", type=int, help="at most this many runs in flight (executor.max_parallel)")
    s.add_argument("--dry-run", action="store_true")
    s.add_argument("--resume", action="store_true")
    s.add_argument("--quick", action="store_true", help="the config's quick variant (tests, CI)")
    s.add_argument("--no-progress", action="store_true")
