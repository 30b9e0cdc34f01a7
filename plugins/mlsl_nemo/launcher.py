"""Running a study's runs as jobs of a NeMo-Run executor (local or Slurm), at most K in flight.

All of a phase's runs are submitted together as one NeMo-Run experiment. The width limit is expressed in
NeMo-Run's own terms: run i depends on run i-K (``afterany``, so a failed run does not block the rest).
Slurm then keeps K jobs in flight and starts the next as one ends; the local executor, which has no
dependencies, runs them K at a time, each of the K on its own GPUs (``CUDA_VISIBLE_DEVICES``). No scheduling
of our own: completion is read from the results store (each run appends its record), and the job handles are
kept in ``OUT/jobs/jobs.json`` as each job is launched, so a ``--resume`` after the study process died waits
for jobs still queued or running instead of submitting them twice.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from nemo_mlsl.data.manifest import write_json_atomic
from nemo_mlsl.errors import ConfigError
from nemo_mlsl.placement import gpu_slices, visible_gpus
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
    def gpu_slots(self, backend: Backend) -> list[str] | None:
        """The local executor's K concurrent jobs each get their own GPUs (``CUDA_VISIBLE_DEVICES``), from the GPUs
        this process sees (the executor's ``env`` may set them); None for CPU runs and for Slurm (it assigns GPUs)."""
        gpus = getattr(backend, "gpus_per_run", 0)
        if self.config.type != "local" or not gpus:
            return None
        env = {**os.environ, **{k: str(v) for k, v in self.config.env.items()}}
        return gpu_slices(visible_gpus(env), gpus, max(1, self.config.max_parallel))

    def executor(self, backend: Backend, gpus_visible: str | None = None) -> Any:
        import nemo_run as run

        c = self.config
        gpus = getattr(backend, "gpus_per_run", 0)
        tasks = max(1, gpus)  # one process per GPU (NeMo); one process for a CPU run
        env = {k: str(v) for k, v in c.env.items()}
        if c.type == "local":
            if gpus_visible is not None:
                env["CUDA_VISIBLE_DEVICES"] = gpus_visible
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
            slots = self.gpu_slots(backend)
            with run.Experiment(self.title, base_dir=str(self.base_dir), log_level="WARN") as exp:
                ids: list[str] = []
                for i, spec in enumerate(todo):
                    # run i waits for run i-K, so runs i and i-K never overlap: slot i mod K is free when run i starts
                    deps = [ids[i - k]] if i >= k else None
                    executor = self.executor(backend, slots[i % k] if slots else None)
                    ids.append(exp.add(backend.task(spec), executor=executor, name=spec.run_id, dependencies=deps))
                saver = _Every(self.poll_s, lambda: self._save_launched(exp))  # the local executor launches level by level
                saver.start()
                try:
                    exp.run(sequential=False)
                finally:
                    saver.stop()
        finally:
            watcher.stop()

    def _save_launched(self, exp: Any) -> None:
        """Keep the handle of every job launched so far (a --resume after this process dies waits for them)."""
        handles = {job.id: job.handle for job in exp.jobs if getattr(job, "handle", "")}
        if handles and any(self._handles().get(i) != h for i, h in handles.items()):
            self._save_handles(handles)


class _Every(threading.Thread):
    """Calls ``fn`` every ``poll_s`` seconds until stopped, and once more at the stop."""

    def __init__(self, poll_s: float, fn: Callable[[], None]):
        super().__init__(daemon=True)
        self.poll_s, self.fn = poll_s, fn
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.poll_s):
            self.fn()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.fn()


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


def launcher(executor: ExecutorConfig, jobs_dir: Path, title: str) -> NeMoRunLauncher:
    """The ``local`` and ``slurm`` entries of the ``nemo_mlsl.launchers`` registry."""
    return NeMoRunLauncher(executor, jobs_dir, title=title)
