"""Stand-ins for the GPU in the NeMo study backend's tests.

``StandInLauncher`` (the 21-run study, fast): the real backend builds each run's NeMo recipe
(``NeMoBackend.task``); instead of training, the launcher builds the recipe's own ``nl.Trainer`` (on the
CPU) and NeMo's data module with the real family blend, and plays the run's last validation through the
recipe's data step and the callback's loss reduction, with per-token losses of a planted joint law; the
step counter reaches ``max_steps``, the mixture monitor reads the blend's sample index, and the fitting
callback builds the record with ``NeMoRunRecord``, appends it to the study's store and refits, as after a GPU run.

``cpu_nemo_backend`` (a few runs, slow): ``NeMoBackend.train`` itself, each run NeMo's own ``llm.pretrain`` in
a process of its own, with the CPU in place of the GPU (``cuda_on_cpu``, ``on_cpu``).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import sys
import time
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

TRUTH = {"E": 1.4, "A": 60.0, "alpha": 0.35, "B": 60.0, "beta": 0.32}
# the small study both stand-ins run (tests/test_nemo_study.py, tests/test_bridge.py): 17 phase-1 runs, 4 in phase 2
STUDY_FOR_STANDINS = {
    "name": "standin", "corpus": {"synth": {"families": 4, "languages_per_family": 1, "docs": 300, "seed": 2}, "vocab_size": 256},
    "ladder": {"fit": ["cpu_15k", "cpu_60k"], "confirm": "cpu_250k"}, "tokens": [50000, 100000], "confirm_tokens": 100000,
    "design": {"mixtures": 3, "floor": 0.05, "independence": {"ratio": 0.3, "mixtures": 3, "floor": 0.15},
               "repeats": {"seeds": 1, "points": 2}},
    "baselines": ["uniform"], "objective": {"type": "normalized", "min_ratio": 0.02}, "law": "joint_family", "bootstrap": 20,
}
GAMMA = {"amber": 0.08, "cobalt": 0.14, "jade": 0.2, "ruby": 0.11}


def planted_loss(family: str, N: float, D: float, p: float, run_id: str) -> float:
    c = TRUTH["E"] + TRUTH["A"] / N ** TRUTH["alpha"] + TRUTH["B"] / D ** TRUTH["beta"]
    u = int(hashlib.sha256(f"{run_id}/{family}".encode()).hexdigest()[:8], 16) / 2**32
    return float(c * max(p, 1e-3) ** -GAMMA.get(family, 0.1) * math.exp(0.004 * (u - 0.5)))


def check_standin_study(out: Path, backend: str) -> None:
    """What a study on a stand-in GPU must end with, whichever backend built its runs: every planned run recorded
    once with the study's tags, the fit on phase 1 only recovering the planted gammas, phase 2 and the report."""
    import json

    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    plan = json.loads((out / "plan.json").read_text())
    assert sorted(r["run_id"] for r in records) == sorted(r["run_id"] for r in plan["runs"]) and len(records) == 21
    by_id = {r["run_id"]: r for r in records}
    for planned in plan["runs"]:  # every record carries the study's tags, so the fit selects the right runs
        rec = by_id[planned["run_id"]]
        assert (rec["purpose"], rec["phase"], rec["mixture"], rec["backend"]) == (planned["purpose"], planned["phase"],
                                                                                  planned["mixture"], backend)
        assert rec["recipe"] == planned["rung"] and rec["N"] == planned["N"] and rec["ratios"] == planned["ratios"]
    fit = json.loads((out / "fit" / "fit.json").read_text())
    assert fit["n_runs"] == 17  # design, independence and repeats: not the phase-2 runs
    for fam, g in GAMMA.items():
        assert abs(fit["families"][fam]["params"]["gamma"] - g) <= 0.02, (fam, fit["families"][fam]["params"]["gamma"], g)
    s = json.loads((out / "summary.json").read_text())
    assert set(s["comparison"]) == {"optimal", "uniform"} and s["runs"] == 21
    assert (out / "report.md").read_text().count("## ") >= 6
    assert json.loads((out / "fit_live" / "fit.json").read_text())["n_runs"] == 21  # the live refit after the last run


class StandInLauncher:
    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s

    def launch(self, backend, specs, on_done) -> None:
        for spec in specs:
            spec.clean()
            self.play(backend.task(spec), spec)
            on_done(spec)
            time.sleep(self.delay_s)

    @staticmethod
    def play(recipe, spec) -> None:
        """The run's last validation as NeMo runs it, on NeMo's own blend: microbatches of the validation set through
        the recipe's data step and the callback's loss reduction (per-token losses from the planted law, by each
        sample's family), the epoch's sums through the callback; then the mixture monitor and the fitting callback
        at the last step, on the real training blend."""
        import fiddle as fdl
        from megatron.core import parallel_state
        from torch.utils.data import default_collate

        from mlsl_nemo.callback import NeMoFamilyValidationCallback, NeMoMixtureMonitorCallback
        from nemo_mlsl.data.blend import one_process_group

        recipe.trainer.accelerator = "cpu"
        recipe.trainer.default_root_dir = spec.out  # Lightning's default logger writes here (NeMo's logger does on a GPU)
        trainer = fdl.build(recipe.trainer)
        dm = fdl.build(recipe.data)
        fam_cb = next(c for c in trainer.callbacks if isinstance(c, NeMoFamilyValidationCallback))
        record_cfg = next(c for c in recipe.trainer.callbacks if "ScalingLawFit" in str(c.__fn_or_cls__)).make_record
        D = trainer.max_steps * record_cfg.tokens_per_step
        family_of_id = [fam_cb.family_of[l] for l in fam_cb.languages]
        loss_of_id = torch.tensor([planted_loss(f, record_cfg.N, D, record_cfg.ratios.get(f, 0.0), spec.run_id) for f in family_of_id])
        chunk = _Chunk()
        view = type("TrainerView", (), {"strategy": type("S", (), {"model": [chunk]})(), "sanity_checking": False})()
        with one_process_group(), cuda_on_cpu():
            parallel_state.initialize_model_parallel(1, 1)
            try:
                dm.build(trainer_max_steps=trainer.max_steps, trainer_val_check_interval=trainer.val_check_interval,
                         trainer_limit_val_batches=trainer.limit_val_batches, trainer_limit_test_batches=trainer.limit_test_batches)
                fam_cb.on_fit_start(view, chunk)
                fam_cb.on_validation_epoch_start(view, chunk)
                red, ds = chunk._validation_loss_reduction, dm._validation_ds
                mbs, per_step = dm.micro_batch_size, dm.global_batch_size // dm.micro_batch_size
                for step in range(int(trainer.limit_val_batches)):
                    outs = []
                    for mb in range(per_step):
                        first = (step * per_step + mb) * mbs
                        batch = recipe.model.config.data_step_fn(iter([default_collate([ds[i % len(ds)] for i in range(first, first + mbs)])]))
                        ids = batch.get("dataset_id", torch.zeros(mbs, dtype=torch.long))
                        outs.append(red.forward(batch, loss_of_id[ids][:, None].expand(batch["labels"].shape).contiguous())[2])
                    red.reduce(outs)
                fam_cb.on_validation_epoch_end(view, chunk)
            finally:
                parallel_state.destroy_model_parallel()
        trainer.datamodule = dm  # what the monitor and the record read: the blend the run trained on
        trainer.fit_loop.epoch_loop.automatic_optimization.optim_progress.optimizer.step.total.completed = trainer.max_steps
        monitor = next(c for c in trainer.callbacks if isinstance(c, NeMoMixtureMonitorCallback))
        monitor.on_train_batch_end(trainer, chunk, None, None, 0)
        for cb in trainer.callbacks:  # the recipe's own callbacks (Lightning's progress bar never opened a bar)
            if type(cb).__module__.startswith("mlsl_"):
                cb.on_validation_end(trainer, None)


class _Chunk:
    """A model chunk as NeMo's callbacks see it: the loss reduction is installed on it, its ``log`` is kept."""

    def __init__(self):
        self.logged: dict[str, float] = {}

    def log(self, name, value, **kw):
        self.logged[name] = value


# --- a CPU in place of the GPU, for NeMo's own llm.pretrain in a run's process (NeMoBackend.train) ------------------

class _CudaOnCpu(TorchFunctionMode):
    """Tensor calls that name CUDA (``.cuda()``, ``device="cuda"``, ``.to("cuda")``, pinned memory) go to the CPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        kwargs.pop("pin_memory", None)
        if func in (torch.Tensor.cuda, torch.Tensor.pin_memory):
            return args[0]
        if "cuda" in str(kwargs.get("device") or ""):
            kwargs["device"] = "cpu"
        if func is torch.Tensor.to and len(args) > 1 and isinstance(args[1], (str, torch.device)) and "cuda" in str(args[1]):
            args = (args[0], "cpu", *args[2:])
        return func(*args, **kwargs)


@contextlib.contextmanager
def cuda_on_cpu():
    """NeMo's strategy and megatron-core call CUDA in a few places besides tensors: streams, memory stats, the RNG tracker."""
    import nemo.lightning.io.pl as nemo_io
    from megatron.core.tensor_parallel import random as mrandom

    patches = {(torch.cuda, "Stream"): lambda *a, **k: None, (torch.cuda, "stream"): lambda *a, **k: contextlib.nullcontext(),
               (torch.cuda, "synchronize"): lambda *a, **k: None, (torch.cuda, "current_device"): lambda: "cpu",
               (torch.cuda, "max_memory_reserved"): lambda *a, **k: 0, (torch.cuda, "max_memory_allocated"): lambda *a, **k: 0,
               (torch.cuda, "empty_cache"): lambda: None,
               (nemo_io, "_fix_tensors_device"): lambda ckpt: ckpt,  # a loaded checkpoint's tensors onto the GPU: all CPU here
               (mrandom.CudaRNGStatesTracker, "fork"): lambda self, name="model-parallel-rng": contextlib.nullcontext()}
    saved = {key: getattr(*key) for key in patches}
    for (obj, name), fn in patches.items():
        setattr(obj, name, fn)
    try:
        with _CudaOnCpu():
            yield
    finally:
        for (obj, name), fn in saved.items():
            setattr(obj, name, fn)


def on_cpu(task):
    """The run's NeMo task with its GPU-only settings switched to their CPU equivalents (accelerator, bf16, the
    distributed optimizer and overlapped reductions, fused clipping, asynchronous checkpoints); everything else as built."""
    task.trainer.accelerator = "cpu"
    task.trainer.plugins = None
    task.trainer.enable_checkpointing = False
    task.log.ckpt = None
    task.data.num_workers = 0
    task.model.config.use_cpu_initialization = True
    task.optim.config.bf16 = False
    task.optim.config.use_distributed_optimizer = False
    task.optim.config.clip_grad = 0.0
    task.trainer.strategy.ddp.overlap_grad_reduce = False
    task.trainer.strategy.ddp.overlap_param_gather = False
    return task


class RecordingDataStep:
    """The recipe's family data step, and a JSON line per microbatch in ``out``: its samples' ``dataset_id`` and whether
    it trains (gradients on) or validates, i.e. the samples the model consumed, in the order it consumed them."""

    def __init__(self, out: str):
        self.out = out

    def __call__(self, dataloader_iter, **kw):
        import json

        from mlsl_nemo.data_step import family_gpt_data_step

        batch = family_gpt_data_step(dataloader_iter, **kw)
        ids = batch.get("dataset_id")
        with open(self.out, "a") as fh:
            fh.write(json.dumps({"train": torch.is_grad_enabled(), "ids": [] if ids is None else ids.tolist()}) + "\n")
        return batch


def run_task_on_cpu(task_file: str, checkpoint_every: int | None = None) -> int:
    """What ``python -m mlsl_nemo.run_task TASK`` does, on this CPU: NeMo's llm.pretrain, real model and all. With
    ``checkpoint_every``, NeMo's ModelCheckpoint saves a distributed checkpoint every that many steps (and the last), and
    a task started again in the same directory resumes from the last one (the recipe's ``default_resume``)."""
    from mlsl_nemo.run_task import load_task, run_task

    task = on_cpu(load_task(task_file))
    if checkpoint_every:
        import nemo_run as run
        from nemo import lightning as nl

        task.trainer.enable_checkpointing = True
        task.log.ckpt = run.Config(nl.ModelCheckpoint, save_last=True, save_top_k=-1, every_n_train_steps=checkpoint_every,
                                   filename="{step}-{consumed_samples}")
    with cuda_on_cpu():
        run_task(task)
    return 0


def cpu_nemo_backend():
    """The study's NeMo backend, unchanged but for the process it starts for each run (this file's ``run-task``)."""
    from mlsl_nemo.study import NeMoBackend

    class CPUNeMoBackend(NeMoBackend):
        def command(self, task_file):
            return [sys.executable, __file__, "run-task", str(task_file)]

    return CPUNeMoBackend()


def main(argv: list[str]) -> int:
    """``python nemo_standin.py STUDY.yaml OUT [--resume] [--delay S]``: the NeMo-backend study with the stand-in;
    ``python nemo_standin.py run-task TASK``: one NeMo task on the CPU."""
    if argv[0] == "run-task":
        return run_task_on_cpu(argv[1])
    from mlsl_nemo.study import NeMoBackend
    from nemo_mlsl.study.config import load_study
    from nemo_mlsl.study.runner import Study

    cfg = load_study(argv[0])
    delay = float(argv[argv.index("--delay") + 1]) if "--delay" in argv else 0.0
    s = Study(cfg, Path(argv[1]), NeMoBackend(), StandInLauncher(delay), progress=False).run(resume="--resume" in argv)
    print("optimal ratios:", s["optimal_ratios"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
