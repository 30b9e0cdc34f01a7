"""Running a study's runs as jobs of a NeMo-Run executor (local or Slurm), at most K in flight.

All of a phase's runs are submitted together as one NeMo-Run experiment. The width limit is expressed in
NeMo-Run's own terms: run i depends on run i-K (``afterany``, so a failed run does not block the rest).
Slurm then keeps K jobs in flight and starts the next as one ends; the local executor, which has no
dependencies, runs them K at a time. No scheduling of our own: completion is read from the results
store (each run appends its record), and the job handles are kept in ``OUT/jobs/jobs.json`` so a
``--resume`` after the study process died waits for jobs still queued or running instead of submitting
them twice.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from nemo_mlsl.data.manifest import write_json_atomic
from nemo_mlsl.errors import ConfigError
from nemo_mlsl.results import ResultsStore
from nemo_mlsl.study.backend import Backend, OnDone, RunSpec
from nemo_mlsl.study.config import ExecutorConfig

ACTIVE = ("SUBMITTED", "PENDING", "RUNNING", "UNSUBMITTED")


class NeMoRunLauncher:
    def __init__(self, config: ExecutorConfig, base_dir: str | Path, title: str = "mlsl", poll_s: float = 2.0):
        if config.type not in ("local", "slurm"):
            raise ConfigError(f"executor.type {config.type!r}: NeMo-Run executors are 'local' or 'slurm'")
        self.config = config
        self.base_dir = Path(base_dir).resolve()
        self.title = title
        self.poll_s = poll_s

    # -- executors -------------------------------------------------------------------------------------
    def executor(self, backend: Backend) -> Any:
        import nemo_run as run

        c = self.config
        gpus = getattr(backend, "gpus_per_run", 0)
        tasks = max(1, gpus)  # one process per GPU (NeMo); one process for a CPU run
        env = {k: str(v) for k, v in c.env.items()}
        if c.type == "local":
            return run.LocalExecutor(ntasks_per_node=tasks, launcher="torchrun" if gpus else None, env_vars=env)
        return run.SlurmExecutor(
            account=c.account or "", partition=c.partition, nodes=c.nodes_per_run, ntasks_per_node=tasks,
            gpus_per_node=gpus or None, cpus_per_task=c.cpus_per_task, mem=c.mem, time=c.time,
            container_image=c.container_image, container_mounts=list(c.container_mounts), env_vars=env,
            job_name_prefix="mlsl-", tunnel=run.LocalTunnel(job_dir=str(self.base_dir / "experiments")),
            packager=run.Packager(), dependency_type="afterany",
        )

    # -- job handles, for --resume -------------------------------------------------------------------
    @property
    def jobs_file(self) -> Path:
        return self.base_dir / "jobs.json"

    def _handles(self) -> dict[str, str]:
        return json.loads(self.jobs_file.read_text()) if self.jobs_file.exists() else {}

    def _save_handles(self, handles: dict[str, str]) -> None:
        write_json_atomic(self.jobs_file, {**self._handles(), **handles})

    def _state(self, handle: str) -> str:
        from nemo_run.run.torchx_backend.runner import get_runner

        try:
            status = get_runner().status(handle)
        except Exception:  # noqa: BLE001 - an unknown or purged job is not running
            return "UNKNOWN"
        return status.state.name if status is not None else "UNKNOWN"

    def still_active(self, specs: Sequence[RunSpec]) -> list[RunSpec]:
        """Runs whose job from an earlier (killed) study process is still queued or running."""
        handles = self._handles()
        return [s for s in specs if s.run_id in handles and self._state(handles[s.run_id]) in ACTIVE]

    # -- launch ------------------------------------------------------------------------------------------
    def launch(self, backend: Backend, specs: Sequence[RunSpec], on_done: OnDone) -> None:
        import nemo_run as run

        if not specs:
            return
        store = ResultsStore(specs[0].store)
        watcher = _StoreWatcher(store, specs, on_done, self.poll_s)
        watcher.start()
        try:
            orphans = self.still_active(specs)
            if orphans:
                ids = {s.run_id for s in orphans}
                print(f"waiting for {len(orphans)} job(s) of an earlier study process still queued or running: "
                      + ", ".join(sorted(ids)), flush=True)
                handles = self._handles()
                while any(self._state(handles[i]) in ACTIVE for i in ids):
                    time.sleep(self.poll_s)
            todo = [s for s in specs if s.run_id not in store.run_ids()]
            if not todo:
                return
            for spec in todo:
                spec.clean()
                Path(spec.out).mkdir(parents=True, exist_ok=True)
            self.base_dir.mkdir(parents=True, exist_ok=True)
            k = max(1, self.config.max_parallel)
            with run.Experiment(self.title, base_dir=str(self.base_dir), log_level="WARN") as exp:
                ids: list[str] = []
                for i, spec in enumerate(todo):
                    deps = [ids[i - k]] if i >= k else None
                    ids.append(exp.add(backend.task(spec), executor=self.executor(backend), name=spec.run_id, dependencies=deps))
                exp.run(sequential=False)
                self._save_handles({job.id: job.handle for job in exp.jobs if getattr(job, "handle", "")})
        finally:
            watcher.stop()


class _StoreWatcher(threading.Thread):
    """Calls ``on_done`` for each run as its record appears in the store (the runs write it themselves)."""

    def __init__(self, store: ResultsStore, specs: Sequence[RunSpec], on_done: OnDone, poll_s: float):
        super().__init__(daemon=True)
        self.store, self.on_done, self.poll_s = store, on_done, poll_s
        self.pending = {s.run_id: s for s in specs}
        self._stop_event = threading.Event()

    def _poll(self) -> None:
        for run_id in sorted(self.store.run_ids() & set(self.pending)):
            self.on_done(self.pending.pop(run_id))

    def run(self) -> None:
        while not self._stop_event.wait(self.poll_s):
            self._poll()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self._poll()
