"""``mlsl train`` on CPU: recipe + prepared data + family ratios → a run directory with ``result.json``.

RUN/ holds ``result.json`` (final validation), ``metrics.jsonl`` (every validation),
``checkpoints/`` (``last.ckpt`` for ``--resume``) and ``tb/`` unless a shared TensorBoard root is given.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.outputs import output_dir, write_json_atomic
from nemo_mlsl.recipes import Recipe, load

if TYPE_CHECKING:
    from nemo_mlsl.data.schedule import MixtureSchedule


@dataclass
class TrainRequest:
    recipe: str
    data: str
    ratios: Mapping[str, float] | None
    out: str
    overrides: Sequence[str] = ()
    within: str = "natural"
    max_steps: int | None = None
    tokens: float | None = None
    seed: int = 1234
    resume: bool = False
    init_from: str | None = None
    run_id: str | None = None
    tb_root: str | None = None
    store: str | None = None
    report_dir: str | None = None
    law: str | None = "joint_family"
    bootstrap: int = 50
    progress: bool = True
    normalize: bool = False
    extra_callbacks: list = field(default_factory=list)
    extra_record: dict = field(default_factory=dict)
    schedule: "str | Path | MixtureSchedule | None" = None  # a schedule file (YAML/JSON) or object, instead of ratios
    adaptive: str | None = None  # a policy of the nemo_mlsl.policies registry: decides each next interval from validation
    interval: int | None = None  # with adaptive: steps per interval (the first one trains on ratios)
    min_share: float = 0.02
    smoothing: float = 0.5
    max_change: float = 1.0  # with adaptive: the most one decision moves the ratios (total variation; 1: no limit)


def _schedule(recipe: Recipe, req: TrainRequest) -> "tuple[MixtureSchedule | None, int, str | None]":
    """The run's schedule (None: one interval on ``req.ratios``), its steps, and how errors name it. Without
    --max-steps / --tokens a schedule whose last interval has an until_step sets the run's length."""
    from nemo_mlsl.data.schedule import MixtureSchedule

    if req.adaptive is not None:
        from nemo_mlsl.policies import policy

        policy(req.adaptive)  # an unknown policy is refused before training
        if req.schedule is not None or req.ratios is None:
            raise ConfigError("--adaptive starts from --ratios (its first interval) and decides the next ones; give "
                              "--ratios, not --schedule")
        if not req.interval or req.interval < 1:
            raise ConfigError("--adaptive needs --interval STEPS >= 1: the steps of each interval, one decision per boundary")
        if not 0 <= req.min_share < 1 or not 0 <= req.smoothing <= 1:
            raise ConfigError(f"--min-share must be in [0, 1) and --smoothing in [0, 1]; got {req.min_share}, {req.smoothing}")
        if not 0 < req.max_change <= 1:
            raise ConfigError(f"--max-change must be in (0, 1] (the total variation one decision may move the ratios by; "
                              f"1: no limit); got {req.max_change}")
        steps = _steps(recipe, req)
        return MixtureSchedule.one_interval(req.ratios, min(req.interval, steps), reason="initial"), steps, None
    if req.interval is not None:
        raise ConfigError("--interval is the step count of an --adaptive run's intervals; give --adaptive POLICY too")
    if req.schedule is None:
        if req.ratios is None:
            raise ConfigError("a run needs its family ratios or a schedule: give --ratios fam=p,... or --schedule FILE")
        return None, _steps(recipe, req), "schedule"
    if req.ratios is not None:
        raise ConfigError("give --ratios or --schedule, not both (a schedule carries each interval's ratios)")
    explicit = req.max_steps is not None or req.tokens is not None
    steps = _steps(recipe, req) if explicit else None
    default = recipe.train.run_steps(None, None)
    if isinstance(req.schedule, MixtureSchedule):
        sched = MixtureSchedule.from_dict(req.schedule.to_dict(), steps, default_steps=default)
        return sched, sched.steps, "schedule"
    sched = MixtureSchedule.load(req.schedule, steps, default_steps=default)
    return sched, sched.steps, f"--schedule {str(req.schedule)!r}:"


def _steps(recipe: Recipe, req: TrainRequest) -> int:
    return recipe.train.run_steps(req.max_steps, req.tokens)


def init_checkpoint(path: str | Path) -> Path:
    """The checkpoint to start a finetuning run from: a ``.ckpt`` file or a run directory (its ``last.ckpt``)."""
    p = Path(path)
    ckpt = p / "checkpoints" / "last.ckpt" if p.is_dir() else p
    if not ckpt.is_file():
        raise ConfigError(f"--init-from {str(path)!r}: no checkpoint at {ckpt}; give a run directory of a finished run "
                          "(it keeps checkpoints/last.ckpt) or a .ckpt file")
    return ckpt


def load_weights(model, ckpt: Path) -> None:
    """Copy a checkpoint's weights into ``model`` (fresh optimizer and schedule: a finetuning run, not a resume)."""
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    old, new = state.get("hyper_parameters", {}), model.hparams
    for key in ("model", "vocab_size", "tokenizer_sha256"):
        a, b = old.get(key), new.get(key)
        if a is not None and a != b:
            what = (", ".join(f"{k} {a.get(k)} vs {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
                    if isinstance(a, dict) and isinstance(b, dict) else f"{a} vs {b}")
            raise ConfigError(f"--init-from {ckpt}: the checkpoint's {key} differs from this run's ({what}); finetune with "
                              "the base run's recipe, on data prepared with its tokenizer (mlsl prepare --tokenizer)")
    model.load_state_dict(state["state_dict"])


def checkpoint_io() -> Any:
    """Lightning's checkpoint writer, with the umask's permissions: it writes through a temporary file (0600) and
    renames it into place, so checkpoints were unreadable to teammates while the rest of the run was not."""
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    from nemo_mlsl.outputs import honour_umask

    class UmaskCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
            super().save_checkpoint(checkpoint, path, storage_options)
            honour_umask(path)

    return UmaskCheckpointIO()


def check_schedule(path: Path, schedule: "MixtureSchedule", resume: bool, adaptive: bool = False) -> None:
    """A resumed run keeps its schedule (RUN/schedule.json): another one would read other samples (an adaptive run: its
    first interval; the policy's decisions follow from it)."""
    import json

    if resume and path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            saved = None  # unreadable: rewritten below; the checkpoint's own copy is still compared at load
        want = json.loads(json.dumps(schedule.to_dict()))
        if saved is not None and adaptive:
            saved, want = saved.get("intervals", [None])[:1], want["intervals"][:1]
        if saved is not None and saved != want:
            raise ConfigError(f"--resume: {path} holds another mixture schedule than this run's; resume with the run's own "
                              f"--ratios / --schedule ({path} itself), or start a new --out")


def schedule_record(dm: Any) -> dict[str, Any]:
    """The record's schedule: every interval with its targets and the family shares its samples realised."""
    from nemo_mlsl.data.schedule import schedule_record as record

    return record(dm.schedule, dm.built)


def train(req: TrainRequest) -> dict[str, Any]:
    """Train one run and return (and write) its result record."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from mlsl_lightning.callbacks import (
        AdaptiveMixtureCallback,
        FamilyValidationCallback,
        MixtureMonitorCallback,
        RunLogCallback,
        ScalingLawFitCallback,
        ScheduleCallback,
        TensorBoardLayoutCallback,
    )
    from mlsl_lightning.datamodule import FamilyBlendDataModule
    from mlsl_lightning.model import CausalLM
    from nemo_mlsl.data.schedule import SCHEDULE_FILE
    from nemo_mlsl.policies import policy

    # Lightning's per-run banner (GPU/TPU availability, "fit stopped") adds nothing in a study of many runs.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    recipe = load(req.recipe, req.overrides)
    t = recipe.train
    schedule, steps, where = _schedule(recipe, req)
    out = Path(req.out)
    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    if (out / "result.json").exists() and not req.resume:
        raise ConfigError(f"{out} already holds a finished run (result.json); choose another --out or pass --resume")
    if last.exists() and not req.resume:
        raise ConfigError(f"{out} holds an interrupted run ({last}); pass --resume to continue it or choose another --out")
    init = init_checkpoint(req.init_from) if req.init_from else None
    output_dir(out, "--out")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 0) or max(1, os.cpu_count() or 1))  # the user's cap, else all cores
    pl.seed_everything(req.seed, workers=True, verbose=False)

    dm = FamilyBlendDataModule(
        req.data, req.ratios if schedule is None else None, within=req.within, seq_length=t.seq_length, micro_batch_size=t.micro_batch_size,
        global_batch_size=t.global_batch_size, max_steps=steps, val_samples_per_language=t.val_samples_per_language,
        seed=req.seed, max_epochs=t.max_data_epochs, normalize=req.normalize, schedule=schedule, schedule_where=where,
        adaptive=req.adaptive is not None,
    )
    check_schedule(out / SCHEDULE_FILE, dm.schedule, req.resume, adaptive=dm.adaptive)
    m = dm.manifest
    if not (dm.adaptive and req.resume and (out / SCHEDULE_FILE).is_file()):  # an adaptive run's file holds its decisions
        dm.schedule.write(out / SCHEDULE_FILE)
    vocab = m.vocab_size
    counts = recipe.params(vocab)
    model = CausalLM(recipe.model.architecture(), vocab, t.__dict__, steps, m.tokenizer_sha256)
    if init is not None:
        load_weights(model, init)
    run_id = req.run_id or out.name
    family_of = {l: m.family_of(l) for l in m.languages}
    fam_cb = FamilyValidationCallback(dm.validation_languages, family_of, m.bytes_per_token("validation"))
    tokens_per_step = t.global_batch_size * t.seq_length
    # an adaptive run validates at every boundary (its decisions read that validation): the recipe's cadence if it
    # divides the interval, else the interval
    val_every = t.val_every if not dm.adaptive or req.interval % t.val_every == 0 else req.interval
    ratios = dict(dm.blend.family_ratios)
    hparams = {**{f"ratio/{k}": v for k, v in ratios.items()}, "N": counts.non_embedding, "D": steps * tokens_per_step,
               "recipe": recipe.name, "seed": req.seed}
    adaptive_cb = (AdaptiveMixtureCallback(dm, req.adaptive, policy(req.adaptive), req.interval, steps, out / "metrics.jsonl",
                                           out / SCHEDULE_FILE, req.min_share, req.smoothing, req.max_change) if dm.adaptive else None)
    callbacks = [
        fam_cb,
        ScheduleCallback(dm),
        MixtureMonitorCallback(dm.train_languages, family_of, m.tokens("train"), every=max(1, min(10, steps // 10))),
        RunLogCallback(out / "metrics.jsonl", fam_cb, tokens_per_step,
                       ratios_at=None if schedule is None else (lambda step: dm.schedule.ratios_at(max(0, step - 1)))),
        TensorBoardLayoutCallback(hparams),
        *([adaptive_cb] if adaptive_cb is not None else []),
        ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0, every_n_train_steps=max(1, min(val_every, steps))),
        *req.extra_callbacks,
    ]
    logger = TensorBoardLogger(save_dir=req.tb_root or str(out / "tb"), name=run_id if req.tb_root else "", version="",
                               default_hp_metric=False)
    start = time.time()
    fam_tokens = m.family_tokens("train")

    def make_record(trainer: pl.Trainer) -> dict[str, Any] | None:
        final = fam_cb.last
        if final is None:
            return None
        tokens = trainer.global_step * tokens_per_step
        audit = dm.built.audit()["families"] if dm.built else {}
        return {
            "run_id": run_id, "recipe": recipe.name, "N": counts.non_embedding, "N_total": counts.total, "D": tokens,
            "ratios": dm.schedule.mean_ratios() if dm.adaptive else ratios, "family_loss": {f: v["loss"] for f, v in final["families"].items()},
            "family_bpb": {f: v["bpb"] for f, v in final["families"].items()},
            "language_loss": {l: v["loss"] for l, v in final["languages"].items()},
            "language_bpb": {l: v["bpb"] for l, v in final["languages"].items()},
            "steps": trainer.global_step, "seed": req.seed, "within": req.within,
            "flops": counts.flops_per_token * tokens, "wall_time_s": round(time.time() - start, 3),
            "family_tokens": fam_tokens, "family_epochs": dm.built.family_epochs if dm.built else {},
            "realized_ratios": {f: a["realized"] for f, a in audit.items()},
            **({"init_from": str(init)} if init is not None else {}),
            **({"schedule": schedule_record(dm)} if schedule is not None else {}),
            **({"adaptive": {"policy": req.adaptive, "interval": req.interval, "min_share": req.min_share,
                             "smoothing": req.smoothing, "max_change": req.max_change, "decisions": adaptive_cb.decisions,
                             "decision_s": round(adaptive_cb.seconds, 4)}} if adaptive_cb is not None else {}),
            **req.extra_record,
        }

    if req.store:
        callbacks.append(ScalingLawFitCallback(req.store, req.report_dir or Path(req.store).parent / "fit", make_record,
                                               law=req.law, bootstrap=req.bootstrap, tokens=fam_tokens))
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_steps=steps, val_check_interval=min(val_every, steps) * (t.global_batch_size // t.micro_batch_size),
        check_val_every_n_epoch=None, num_sanity_val_steps=0, logger=logger, callbacks=callbacks,
        enable_progress_bar=req.progress, enable_model_summary=False, gradient_clip_val=t.grad_clip or None,
        accumulate_grad_batches=t.global_batch_size // t.micro_batch_size, precision=t.precision,
        log_every_n_steps=max(1, min(10, steps // 5)), deterministic=False, plugins=[checkpoint_io()],
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*Checkpoint directory.*exists and is not empty.*")
        warnings.filterwarnings("ignore", ".*LeafSpec.*")
        trainer.fit(model, datamodule=dm, ckpt_path=str(last) if req.resume and last.exists() else None)
        if fam_cb.last_step != trainer.global_step:
            trainer.validate(model, datamodule=dm, verbose=False)
    if trainer.global_step < steps:
        raise RuntimeError(f"training stopped at step {trainer.global_step} of {steps}")
    trainer.save_checkpoint(str(last))  # the final weights, for --init-from (periodic saves may stop short of the end)
    result = make_record(trainer)
    if trainer.global_rank == 0:
        for lg in trainer.loggers:
            if isinstance(lg, TensorBoardLogger):
                lg.log_hyperparams(hparams, {"hp/final_val_loss": sum(result["family_loss"].values()) / len(result["family_loss"])})
                lg.finalize("success")
        write_json_atomic(out / "result.json", result)
    return result
