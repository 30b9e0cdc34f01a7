"""Running a study: corpus → phase-1 runs (refit after each) → fit → optimum → phase-2 runs → report.

Training goes through ``train_fn(request) -> record`` (the CPU Lightning trainer from the CLI), so
this module stays free of frameworks. Every finished run is one line in ``results.jsonl`` before the
next starts; ``--resume`` skips those and restarts the one that was in progress.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from nemo_mlsl.analysis import fit_and_report
from nemo_mlsl.data.manifest import Manifest
from nemo_mlsl.errors import ConfigError
from nemo_mlsl.mixtures import MixtureContext, compute_mixture, data_caps
from nemo_mlsl.recipes import load as load_recipe
from nemo_mlsl.results import ResultsStore
from nemo_mlsl.study import plan as planning
from nemo_mlsl.study.plan import FIT_PURPOSES
from nemo_mlsl.study.config import StudyConfig
from nemo_mlsl.study.design import _rounded
from nemo_mlsl.study.report import write_study_report

TrainFn = Callable[[Mapping[str, Any]], Mapping[str, Any]]


def prepare_corpus(cfg: StudyConfig, out: Path, progress: bool = True) -> Manifest:
    from nemo_mlsl.data.prepare import PrepareConfig, prepare
    from nemo_mlsl.data.synth import SynthConfig, generate

    c = cfg.corpus
    if c.prepared:
        return Manifest.load(c.prepared)
    inputs, families = c.text, c.families
    if c.synth is not None:
        raw = out / "corpus" / "raw"
        if not (raw / "families.yaml").exists():
            generate(SynthConfig(**c.synth), raw)
        inputs, families = [str(raw)], str(raw / "families.yaml")
    return prepare(PrepareConfig(inputs=list(inputs), out=str(out / "corpus" / "data"), families_yaml=families,
                                 vocab_size=c.vocab_size, workers=2, progress=progress))


@dataclass
class Study:
    cfg: StudyConfig
    out: Path
    train_fn: TrainFn | None = None
    progress: bool = True
    log: Callable[[str], None] = print
    started: float = field(default_factory=time.time)

    @property
    def store(self) -> ResultsStore:
        return ResultsStore(self.out / "results.jsonl")

    def n_params(self, vocab: int) -> dict[str, int]:
        rungs = [*self.cfg.fit_rungs, self.cfg.confirm_rung]
        return {r: load_recipe(r).params(vocab).non_embedding for r in rungs}

    def run(self, resume: bool = False, dry_run: bool = False) -> dict[str, Any]:
        out = self.out
        if self.store.path.exists() and self.store.read(dedupe=True) and not resume and not dry_run:
            raise ConfigError(f"{out} already holds a study; pass --resume to continue it, or choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        manifest = prepare_corpus(self.cfg, out, self.progress)
        families = sorted(manifest.families)
        nparams = self.n_params(manifest.vocab_size)
        if nparams[self.cfg.confirm_rung] <= max(nparams[r] for r in self.cfg.fit_rungs):
            raise ConfigError(f"ladder.confirm {self.cfg.confirm_rung!r} must be larger than every fit rung")
        runs1 = planning.phase1(self.cfg, families, nparams)
        plan_path = out / "plan.json"
        old = planning.load_runs(plan_path) if plan_path.exists() else []
        if old:
            planning.check_same([r for r in old if r.phase == 1], runs1)
        if dry_run:
            return {"phase1": runs1, "manifest": manifest, "n_params": nparams}
        planning.save(plan_path, self.cfg, runs1 + [r for r in old if r.phase == 2])
        self._execute(runs1, manifest, len(runs1) + len([r for r in old if r.phase == 2]) or len(runs1))
        records = self.store.read(dedupe=True)
        fit_records = [r for r in records if r.get("purpose") in FIT_PURPOSES]
        N, D = nparams[self.cfg.confirm_rung], self.cfg.confirm_tokens
        fam_tokens = manifest.family_tokens("train")
        # The optimum must be trainable at the largest rung: no language past its recipe's epoch cap.
        caps = data_caps(manifest.family_languages(), D, load_recipe(self.cfg.confirm_rung).train.max_data_epochs, self.cfg.within)
        self.log(f"fitting {self.cfg.law} to {len(fit_records)} runs (bootstrap {self.cfg.bootstrap}) ...")
        rep = fit_and_report(fit_records, out / "fit", law=self.cfg.law, bootstrap=self.cfg.bootstrap, seed=self.cfg.seed,
                             N=N, D=D, objective=self.cfg.objective.type, weights=self.cfg.objective.weights,
                             min_ratio=self.cfg.objective.min_ratio, tokens=fam_tokens, caps=caps,
                             title=f"Study {self.cfg.name}: fit")
        runs2 = [r for r in old if r.phase == 2]
        if not runs2:
            ctx = MixtureContext(fam_tokens, budget=float(D))
            mixtures = {"optimal": _rounded(dict(rep.optimal["ratios"]))}
            for spec in self.cfg.baselines:
                mixtures[spec] = _rounded(compute_mixture(spec, ctx))
            runs2 = planning.phase2(self.cfg, mixtures, nparams)
            planning.save(plan_path, self.cfg, runs1 + runs2, {"optimal": rep.optimal})
        self._execute(runs2, manifest, len(runs1) + len(runs2), offset=len(runs1))
        summary = write_study_report(out, self.cfg, runs1 + runs2, self.store.read(dedupe=True), rep, manifest,
                                     elapsed=time.time() - self.started)
        return summary

    def _execute(self, runs: list[planning.PlannedRun], manifest: Manifest, total: int, offset: int = 0) -> None:
        if self.train_fn is None:
            raise ConfigError("no training backend given")

        def after_each() -> None:
            write_study_report(self.out, self.cfg, runs, self.store.read(dedupe=True), None, manifest,
                               elapsed=time.time() - self.started, partial=True)

        execute(runs, self.out, manifest, self.train_fn, total=total, offset=offset, law=self.cfg.law, within=self.cfg.within,
                progress=self.progress, log=self.log, started=self.started, after_each=after_each)


def execute(runs, out: Path, manifest: Manifest, train_fn: TrainFn, *, total: int | None = None, offset: int = 0,
            law: str = "joint_family", within: str = "natural", progress: bool = True, log: Callable[[str], None] = print,
            started: float | None = None, after_each: Callable[[], None] | None = None, overrides: Mapping[str, list] | None = None) -> None:
    """Train every planned run not yet in ``out/results.jsonl``; a run left half-done by a kill is restarted."""
    store = ResultsStore(out / "results.jsonl")
    started = started or time.time()
    done = store.run_ids()
    total = total or len(runs)
    for i, run in enumerate(runs, 1 + offset):
        if run.run_id in done:
            continue
        run_dir = out / "runs" / run.run_id
        if run_dir.exists():
            shutil.rmtree(run_dir)  # interrupted: restart it so the record is what an uninterrupted run gives
        log(f"[{i}/{total}] {run.purpose:<12} {run.rung:<9} D={run.tokens:,}  "
            + " ".join(f"{f}={p:.3f}" for f, p in run.ratios.items()) + f"  seed={run.seed}"
            + f"  ({time.time() - started:.0f}s elapsed)")
        train_fn({
            "recipe": run.rung, "data": str(manifest.root), "ratios": run.ratios, "out": str(run_dir), "tokens": run.tokens,
            "seed": run.seed, "run_id": run.run_id, "tb_root": str(out / "tb"), "store": str(store.path),
            "report_dir": str(out / "fit_live"), "law": law, "bootstrap": 0, "within": within, "progress": progress,
            "overrides": list((overrides or {}).get(run.run_id, [])),
            "extra_record": {"purpose": run.purpose, "phase": run.phase, "mixture": run.mixture},
        })
        if after_each:
            after_each()
