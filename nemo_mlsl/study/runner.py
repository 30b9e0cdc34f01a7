"""Running a study: corpus → phase-1 runs (refit after each) → fit → optimum → phase-2 runs → report.

One orchestration for every training stack: runs are trained through a ``Backend`` (CPU Lightning,
NeMo 2) and a ``Launcher`` (in process, or NeMo-Run executors), and each run appends its own record to
``results.jsonl``. ``--resume`` skips recorded runs and restarts any that were interrupted; a phase whose
runs did not all record stops the study with their names, so nothing is fitted on a partial design.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from nemo_mlsl.fitting.report import fit_and_report
from nemo_mlsl.data.manifest import Manifest
from nemo_mlsl.dirlock import hold
from nemo_mlsl.errors import ConfigError
from nemo_mlsl.mixtures import MixtureContext, compute_mixture, data_caps
from nemo_mlsl.fitting.optimize import study_laws
from nemo_mlsl.outputs import output_dir
from nemo_mlsl.recipes import load as load_recipe
from nemo_mlsl.results import ResultsStore
from nemo_mlsl.fitting.selection import AUTO
from nemo_mlsl.study import plan as planning
from nemo_mlsl.study import power
from nemo_mlsl.study.backend import Backend, InlineLauncher, Launcher, RunSpec
from nemo_mlsl.study.config import StudyConfig
from nemo_mlsl.study.design import _rounded
from nemo_mlsl.study.plan import FIT_PURPOSES
from nemo_mlsl.study.progress import StudyProgress
from nemo_mlsl.study.report import write_study_report


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


def check_phase2_mixtures(planned: Sequence[planning.PlannedRun], mixtures: Mapping[str, Mapping[str, float]]) -> None:
    """A resumed study's phase 2 was planned on the mixtures of an earlier fit; the refit on the same phase-1 runs must
    give the same optimum and baselines (it does, bit for bit, under the same config). Otherwise the recorded runs
    would be reported as the new mixtures' runs: refused, naming what moved."""
    moved = []
    planned_mix = {r.mixture: r.ratios for r in planned if r.purpose in ("confirm", "naive") and r.adaptive is None}
    for name in sorted(set(planned_mix) | set(mixtures)):
        old, new = planned_mix.get(name), mixtures.get(name)
        if old is None or new is None:
            moved.append(f"{name}: {'not planned before' if old is None else 'no longer asked for'}")
        elif any(abs(float(old.get(f, 0.0)) - float(new.get(f, 0.0))) > 1e-6 for f in set(old) | set(new)):
            fmt = lambda r: ", ".join(f"{f} {float(r.get(f, 0.0)):.3f}" for f in sorted(r))
            moved.append(f"{name}: planned {fmt(old)}, now {fmt(new)}")
    if moved:
        raise ConfigError("--resume: phase 2 was planned and trained on other mixtures than this config's fit gives ("
                          + "; ".join(moved) + "): the objective, law, baselines or bootstrap changed since (fit/ now holds this config's fit; "
                          "the study's report and records are unchanged). Resume with the config phase 2 was planned under, or "
                          "run the changed study in a new --out")


def phase2_mixtures(cfg: StudyConfig, optimal: Mapping[str, float], tokens: Mapping[str, int], D: float,
                    caps: Mapping[str, float]) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """The optimum and every baseline the data allows at D; a baseline that would repeat a family past its
    data cap cannot be trained as asked, so it is left out with the reason (the report says so)."""
    mixtures = {"optimal": _rounded(dict(optimal))}
    skipped: dict[str, str] = {}
    ctx = MixtureContext(tokens, budget=D)
    for spec in cfg.baselines:
        try:
            ratios = _rounded(compute_mixture(spec, ctx))
        except ConfigError as err:
            skipped[spec] = str(err)
            continue
        over = [f for f, p in ratios.items() if p > caps.get(f, 1.0) + 1e-9]
        if over:
            skipped[spec] = "it samples " + ", ".join(f"{f} at {ratios[f]:.3f} above its data cap {caps[f]:.3f}" for f in over)
            continue
        mixtures[spec] = ratios
    return mixtures, skipped


def adaptive_start(cfg: StudyConfig, tokens: Mapping[str, int], D: float, caps: Mapping[str, float]) -> dict[str, float]:
    """The adaptive arm's first interval: ``adaptive.start`` at D, which must keep every family within its data cap."""
    ratios = _rounded(compute_mixture(cfg.adaptive.start, MixtureContext(tokens, budget=D)))
    over = [f for f, p in ratios.items() if p > caps.get(f, 1.0) + 1e-9]
    if over:
        raise ConfigError("adaptive.start " + repr(cfg.adaptive.start) + " samples " + ", ".join(
            f"{f} at {ratios[f]:.3f} above its data cap {caps[f]:.3f}" for f in over) + ": start from another mixture")
    return ratios


class RunsFailed(ConfigError):
    """Some runs of a phase ended without a record (failed, cancelled, killed)."""


@dataclass
class Study:
    cfg: StudyConfig
    out: Path
    backend: Backend | None = None
    launcher: Launcher = field(default_factory=InlineLauncher)
    progress: bool = True
    log: Callable[[str], None] = print
    started: float = field(default_factory=time.time)

    @property
    def store(self) -> ResultsStore:
        return ResultsStore(self.out / "results.jsonl")

    def n_params(self, vocab: int) -> dict[str, int]:
        rungs = [*self.cfg.fit_rungs, self.cfg.confirm_rung]
        return {r: load_recipe(r).params(vocab).non_embedding for r in rungs}

    def plan(self) -> dict[str, Any]:
        """Corpus, parameter counts and the phase-1 runs (checked against an existing plan.json)."""
        manifest = prepare_corpus(self.cfg, self.out, self.progress)
        families = sorted(manifest.families)
        if self.cfg.objective.targets is not None:  # every pattern must name a family of this corpus, before any run
            from nemo_mlsl.fitting.target_weights import resolve_groups

            resolve_groups(self.cfg.objective.targets, families, "objective.targets")
        nparams = self.n_params(manifest.vocab_size)
        if nparams[self.cfg.confirm_rung] <= max(nparams[r] for r in self.cfg.fit_rungs):
            raise ConfigError(f"ladder.confirm {self.cfg.confirm_rung!r} must be larger than every fit rung")
        runs1 = planning.phase1(self.cfg, families, nparams)
        plan_path = self.out / "plan.json"
        old = planning.load_runs(plan_path) if plan_path.exists() else []
        if old:
            planning.check_same([r for r in old if r.phase == 1], runs1)
        runs2, note = [r for r in old if r.phase == 2], None
        if runs2:  # a resumed study's adaptive arm follows the config (another policy: a new arm on the same seeds)
            runs2, note = planning.reconcile_arm(self.cfg, runs2, nparams, lambda: adaptive_start(
                self.cfg, manifest.family_tokens("train"), float(self.cfg.confirm_tokens), self.phase2_caps(manifest, nparams)))
        extra = {}  # what phase 2 was planned with (optimum, skipped baselines, power), kept while its runs are
        if runs2:
            extra = {k: v for k, v in json.loads(plan_path.read_text()).items() if k not in ("study", "config", "runs")}
        return {"phase1": runs1, "phase2": runs2, "manifest": manifest, "n_params": nparams, "note": note, "extra": extra}

    def run(self, resume: bool = False, dry_run: bool = False) -> dict[str, Any]:
        """The study (``dry_run``: its plan). A study holds its directory for its whole life: a second process on the same
        ``--out`` is refused at once, naming this one (``nemo_mlsl.dirlock``)."""
        self.check_backend()
        if dry_run:
            output_dir(self.out, "--out")
            return self.plan()
        with hold(self.out, "--out"):
            return self._run(resume)

    def check_backend(self) -> None:
        """A study with an adaptive arm needs a backend whose runs take a policy (``adaptive = True``)."""
        if self.cfg.adaptive is not None and self.backend is not None and not getattr(self.backend, "adaptive", False):
            raise ConfigError(f"adaptive: the {getattr(self.backend, 'name', '?')} backend does not train adaptive mixtures "
                              "(the cpu, nemo and bridge backends do); use one of those, or remove adaptive from the study "
                              "config")

    def _run(self, resume: bool) -> dict[str, Any]:
        out = self.out
        if self.store.path.exists() and self.store.read(dedupe=True) and not resume:
            raise ConfigError(f"{out} already holds a study; pass --resume to continue it, or choose another --out")
        plan = self.plan()
        manifest, nparams, runs1, runs2 = plan["manifest"], plan["n_params"], plan["phase1"], plan["phase2"]
        plan_path = out / "plan.json"
        planning.save(plan_path, self.cfg, runs1 + runs2, plan["extra"])
        if plan["note"]:
            self.log(plan["note"])
        recorded = self.store.run_ids() & {r.run_id for r in runs1 + runs2}
        bar = StudyProgress(len(runs1) + (len(runs2) or planning.phase2_size(self.cfg, nparams)), self.progress, self.log, len(recorded))
        self._execute(runs1, manifest, bar, phase=1)
        records = self.store.read(dedupe=True)
        fit_records = [r for r in records if r.get("purpose") in FIT_PURPOSES]
        N, D = nparams[self.cfg.confirm_rung], self.cfg.confirm_tokens
        fam_tokens = manifest.family_tokens("train")
        caps = self.phase2_caps(manifest, nparams)
        bar.write(f"fitting {self.cfg.law} to {len(fit_records)} runs (bootstrap {self.cfg.bootstrap}) ...")
        rep = fit_and_report(fit_records, out / "fit", law=self.cfg.law, bootstrap=self.cfg.bootstrap, seed=self.cfg.seed,
                             N=N, D=D, objective=self.cfg.objective.type, weights=self.cfg.objective.weights,
                             targets=self.cfg.objective.targets, min_ratio=self.cfg.objective.min_ratio,
                             tokens=fam_tokens, caps=caps,
                             title=f"Study {self.cfg.name}: fit", candidates=study_laws())
        if "selection" in rep.doc:
            bar.write(f"law selection chose {rep.doc['law']} (held-out table in {out / 'fit' / 'report.md'})")
        if runs2:  # resumed: phase 2 was planned on an optimum that this refit must give again
            check_phase2_mixtures(runs2, phase2_mixtures(self.cfg, rep.optimal["ratios"], fam_tokens, float(D), caps)[0])
        if not runs2:
            mixtures, skipped = phase2_mixtures(self.cfg, rep.optimal["ratios"], fam_tokens, float(D), caps)
            for name, why in skipped.items():
                bar.write(f"baseline {name} is not trained: {why}")
            seeds = planning.confirm_seeds(self.cfg, nparams, len(mixtures) + (self.cfg.adaptive is not None))
            start = adaptive_start(self.cfg, fam_tokens, float(D), caps) if self.cfg.adaptive is not None else None
            lines = self.power_check(fit_records, power.predicted_gains(rep.doc, mixtures, N, D, self.cfg.objective.type), seeds)
            bar.write(f"confirmation power ({seeds} paired seed(s) per mixture at {self.cfg.confirm_rung}):")
            for line in power.describe(lines):
                bar.write(line)
            runs2 = planning.phase2(self.cfg, mixtures, nparams, seeds, adaptive_start=start)
            bar.total = len(runs1) + len(runs2)
            planning.save(plan_path, self.cfg, runs1 + runs2, {"optimal": rep.optimal, "skipped_baselines": skipped,
                                                                "power": [p.to_dict() for p in lines]})
        self._execute(runs2, manifest, bar, phase=2)
        bar.close()
        return write_study_report(out, self.cfg, runs1 + runs2, self.store.read(dedupe=True), rep, manifest,
                                  elapsed=time.time() - self.started)

    def noise(self, fit_records: Sequence[Mapping[str, Any]]) -> tuple[float, str]:
        """σ for planning the confirmation: measured by the phase-1 seed repeats, else ``seed_noise``, else assumed."""
        from nemo_mlsl.fitting.independence import seed_noise
        from nemo_mlsl.fitting.observations import Observations

        sigma = seed_noise(Observations.from_records(list(fit_records)))["sigma"] if fit_records else None
        if sigma:
            return float(sigma), "measured"
        if self.cfg.seed_noise:
            return float(self.cfg.seed_noise), "given"
        return power.ASSUMED_SIGMA, "assumed"

    def power_check(self, fit_records: Sequence[Mapping[str, Any]], predicted: Mapping[str, float | None],
                    seeds: int) -> list[power.PowerLine]:
        """Predicted vs detectable gain over every baseline, before the confirmation spends its compute."""
        sigma, source = self.noise(fit_records)
        return power.power_lines(predicted, sigma, source, seeds, list(predicted))

    def dry_run_power(self, plan: Mapping[str, Any]) -> tuple[list[str], list[power.PowerLine]]:
        """The dry run's power statement: from a fit already in ``out`` (a resumed study), else ``expected_gain``."""
        nparams, manifest = plan["n_params"], plan["manifest"]
        records = [r for r in self.store.read(dedupe=True) if r.get("purpose") in FIT_PURPOSES] if self.store.path.exists() else []
        fit_path = self.out / "fit" / "fit.json"
        N, D = nparams[self.cfg.confirm_rung], self.cfg.confirm_tokens
        if fit_path.exists():
            import json

            fit_doc = json.loads(fit_path.read_text())
            mixtures, _ = phase2_mixtures(self.cfg, fit_doc["optimal"]["ratios"], manifest.family_tokens("train"), float(D),
                                          self.phase2_caps(manifest, nparams))
            predicted: dict[str, float | None] = dict(power.predicted_gains(fit_doc, mixtures, N, D, self.cfg.objective.type))
            whence = f"predicted by the fit in {fit_path}"
        else:
            mixtures = {"optimal": {}, **{b: {} for b in self.cfg.baselines}}
            predicted = {b: self.cfg.expected_gain for b in self.cfg.baselines}
            whence = ("expected_gain from the config (the fit after phase 1 predicts the real ones)" if self.cfg.expected_gain
                      else "not known before phase 1 fits the law (set expected_gain to check one now)")
        seeds = planning.confirm_seeds(self.cfg, nparams, len(mixtures))
        lines = self.power_check(records, predicted, seeds)
        sigma, source = self.noise(records)
        head = [f"confirmation power: {seeds} paired seed(s) per mixture at {self.cfg.confirm_rung}, D={D:,}; seed noise "
                f"σ = {100 * sigma:.2f}% of loss ({source}); gains {whence}; beyond noise = beyond the 2σ level of the paired test "
                f"(pooled over {len(lines)} baseline(s)), detectable = called so with {100 * power.POWER:.0f}% probability"]
        return head + power.describe(lines), lines

    def phase2_caps(self, manifest: Manifest, nparams: Mapping[str, int]) -> dict[str, float]:
        """Data caps of the phase-2 mixtures: no language past the recipe's epoch cap in the tokens the phase-2
        runs really draw (whole steps: a little more than confirm_tokens), on the tightest of their rungs."""
        naive = max(self.cfg.fit_rungs, key=lambda r: nparams[r])
        caps: dict[str, float] = {}
        for rung in (self.cfg.confirm_rung, naive):
            t = load_recipe(rung).train
            drawn = t.steps_for(self.cfg.confirm_tokens) * t.global_batch_size * t.seq_length
            for fam, cap in data_caps(manifest.family_languages(), drawn, t.max_data_epochs, self.cfg.within).items():
                caps[fam] = min(cap, caps.get(fam, cap))
        return caps

    def _execute(self, runs: list[planning.PlannedRun], manifest: Manifest, bar: "StudyProgress", phase: int) -> None:
        if self.backend is None:
            raise ConfigError("no training backend given")

        def after_each(spec: RunSpec) -> None:
            records = self.store.read(dedupe=True)
            bar.done(spec, next((r for r in records if r["run_id"] == spec.run_id), None))
            write_study_report(self.out, self.cfg, runs, records, None, manifest, elapsed=time.time() - self.started, partial=True)

        execute(runs, self.out, manifest, self.backend, self.launcher, law=self.cfg.law, within=self.cfg.within,
                on_done=after_each, log=bar.write, what=f"phase {phase}")


def run_specs(runs: Sequence[planning.PlannedRun], out: Path, manifest: Manifest, *, law: str | None = "joint_family",
              within: str = "natural", overrides: Mapping[str, Sequence[str]] | None = None) -> list[RunSpec]:
    """RunSpecs under a study directory: runs/<id>, tb/, fit_live/, results.jsonl. With ``law: auto`` the runs are
    recorded without a live refit: the law is selected once, on phase 1's runs (a selection per run would cost more
    than the run). Every path is absolute: a job runs in another working directory (a Slurm job, a container) and
    must find the same files."""
    live = None if law == AUTO else law
    out, data = Path(out).resolve(), Path(manifest.root).resolve()
    return [RunSpec(run=r, data=str(data), out=str(out / "runs" / r.run_id), store=str(out / "results.jsonl"),
                    tb_root=str(out / "tb"), report_dir=str(out / "fit_live"), law=live, within=within,
                    overrides=tuple((overrides or {}).get(r.run_id, ())),
                    tags={"purpose": r.purpose, "phase": r.phase, "mixture": r.mixture}) for r in runs]


def execute(runs: Sequence[planning.PlannedRun], out: Path, manifest: Manifest, backend: Backend,
            launcher: Launcher | None = None, *, law: str | None = "joint_family", within: str = "natural",
            overrides: Mapping[str, Sequence[str]] | None = None, on_done: Callable[[RunSpec], None] | None = None,
            log: Callable[[str], None] = print, what: str = "runs") -> None:
    """Train every planned run not yet in ``out/results.jsonl``; raise ``RunsFailed`` naming those that ended
    without a record (rerunning with --resume trains exactly those)."""
    store = ResultsStore(out / "results.jsonl")
    done = store.run_ids()
    todo = [s for s in run_specs(runs, out, manifest, law=law, within=within, overrides=overrides) if s.run_id not in done]
    log(f"{what}: {len(todo)} of {len(runs)} runs to train" + (f" ({len(runs) - len(todo)} already recorded)" if len(todo) < len(runs) else ""))
    if todo:
        (launcher or InlineLauncher()).launch(backend, todo, on_done or (lambda spec: None))
    missing = sorted({s.run_id for s in todo} - store.run_ids())
    if missing:
        raise RunsFailed(f"{len(missing)} run(s) of {what} ended without a record: {', '.join(missing[:8])}"
                         + (" ..." if len(missing) > 8 else "") + f". Their logs are under {out}; fix the cause and rerun "
                         "with --resume: recorded runs are kept, these are trained again")
