"""The seam between the one study orchestration and the training stacks.

A **backend** says what training one planned run means (the CPU Lightning trainer, a NeMo 2 recipe);
a **launcher** says where runs execute (in this process, one after the other; or as jobs of a
NeMo-Run executor, local or Slurm, several at a time). Every run appends its own record to the
study's results store (locked appends), so the study learns that a run finished by reading the store:
the same code resumes, refits and reports whichever backend and launcher trained the runs.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from nemo_mlsl.study.plan import PlannedRun


@dataclass(frozen=True)
class RunSpec:
    """One planned run, resolved to paths: everything a backend needs to train it."""

    run: PlannedRun
    data: str  # prepared data directory
    out: str  # the run's own directory
    store: str  # the study's results.jsonl
    tb_root: str  # TensorBoard root shared by the study's runs
    report_dir: str  # the live fit, rewritten after every run
    law: str | None = "joint_family"
    within: str = "natural"
    overrides: tuple[str, ...] = ()
    tags: dict[str, Any] = field(default_factory=dict)  # extra record fields (purpose, phase, mixture)

    @property
    def run_id(self) -> str:
        return self.run.run_id

    def clean(self) -> None:
        """Remove what an interrupted attempt left, so the record is what an uninterrupted run gives."""
        if Path(self.out).exists():
            shutil.rmtree(self.out)


class Backend(Protocol):
    name: str

    def train(self, spec: RunSpec) -> None:
        """Train the run in this process (its record goes to ``spec.store``)."""

    def task(self, spec: RunSpec) -> Any:
        """The run as a NeMo-Run task (``run.Script`` or ``run.Partial``) for an executor to run elsewhere."""

    def describe(self, spec: RunSpec) -> str:
        """What will run, for ``--dry-run``."""


def train_arguments(spec: RunSpec, backend: Sequence[str] = (), extra: Sequence[str] = ()) -> list[str]:
    """``mlsl train`` arguments for a planned run (``backend`` right after ``train``, ``extra`` before the tags):
    the command line a job runs, the same for every backend that trains through ``mlsl train``."""
    r = spec.run
    args = ["train", *backend, "--recipe", r.rung, "--data", spec.data,
            "--ratios", ",".join(f"{f}={float(p)!r}" for f, p in r.ratios.items()), "--out", spec.out, "--tokens", str(r.tokens),
            "--seed", str(r.seed), "--run-id", spec.run_id, "--tb-root", spec.tb_root, "--store", spec.store,
            "--report-dir", spec.report_dir, "--law", spec.law or "none", "--bootstrap", "0", "--within", spec.within, *extra]
    if r.adaptive:  # an adaptive arm: its policy decides every interval from --ratios on
        args += ["--adaptive", str(r.adaptive["policy"]), "--interval", str(r.adaptive["interval"]),
                 "--min-share", repr(float(r.adaptive["min_share"])), "--smoothing", repr(float(r.adaptive["smoothing"]))]
        if "max_change" in r.adaptive:
            args += ["--max-change", repr(float(r.adaptive["max_change"]))]
    for key, value in spec.tags.items():
        args += ["--tag", f"{key}={value}"]
    return args + list(spec.overrides)  # last: recipe overrides are the command's positional arguments


OnDone = Callable[[RunSpec], None]


class Launcher(Protocol):
    def launch(self, backend: Backend, specs: Sequence[RunSpec], on_done: OnDone) -> None:
        """Train every spec; call ``on_done`` as each run's record appears; return when all have ended."""


class InlineLauncher:
    """One run after the other in this process (the default for CPU studies: no scheduler, no startup cost)."""

    def launch(self, backend: Backend, specs: Sequence[RunSpec], on_done: OnDone) -> None:
        for spec in specs:
            spec.clean()
            backend.train(spec)
            on_done(spec)


def inline_launcher(executor: Any, jobs_dir: Path, title: str) -> InlineLauncher:
    """The ``inline`` entry of the ``nemo_mlsl.launchers`` registry."""
    return InlineLauncher()


def launcher(executor: Any, jobs_dir: Path, title: str) -> Launcher:
    """The registered launcher for ``executor.type`` (``nemo_mlsl.launchers``: inline, NeMo-Run's local and slurm, or a
    third-party one); its jobs keep their files under ``jobs_dir``."""
    from nemo_mlsl.registry import LAUNCHERS

    return LAUNCHERS.get(executor.type)(executor, Path(jobs_dir), title)
