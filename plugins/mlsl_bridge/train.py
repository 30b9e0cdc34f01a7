"""One run on Megatron-Bridge: the rung's ``ConfigContainer``, the family forward step and the family
callback, handed to Bridge's ``pretrain()`` (``mlsl train --backend bridge``; one process per GPU under
``torchrun``). ``build_run`` is everything but the training, so it is tested on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from mlsl_bridge.callback import BridgeRunRecord, FamilyValidationCallback, TrainingMixture
from mlsl_bridge.forward_step import FamilyForwardStep
from mlsl_bridge.recipe import BridgeRun, bridge_run
from mlsl_bridge.schedule import ScheduledMixture, schedule_record
from mlsl_bridge.validation import FixedValidation
from nemo_mlsl.errors import ConfigError
from nemo_mlsl.placement import single_process_env
from nemo_mlsl.fitting.live import LiveFit


@dataclass
class BridgeRequest:
    recipe: str
    data: str
    ratios: Mapping[str, float] | str | None
    out: str
    schedule: str | Path | None = None  # a mixture schedule file (YAML/JSON) in place of ratios (--schedule FILE)
    adaptive: Mapping[str, Any] | None = None  # {policy, interval, min_share, smoothing, max_change}: ratios are the first
    tokens: float | None = None
    max_steps: int | None = None
    seed: int = 1234
    within: str = "natural"
    run_id: str | None = None
    tb_root: str | None = None  # TensorBoard logs go to TB_ROOT/RUN_ID (a study's shared root), else OUT/tb
    store: str | None = None
    report_dir: str | None = None
    law: str | None = "joint_family"
    bootstrap: int = 0
    overrides: Sequence[str] = ()
    num_nodes: int | None = None
    gpus_per_node: int | None = None
    extra_record: Mapping[str, Any] = field(default_factory=dict)
    check_epochs: bool = True  # refuse a run that repeats a family's or language's data past max_data_epochs


@dataclass
class BuiltBridgeRun:
    run: BridgeRun
    forward_step: FamilyForwardStep
    callback: FamilyValidationCallback
    adaptive: Any = None  # an adaptive run's AdaptiveMixtureCallback (after ``callback``)

    @property
    def callbacks(self) -> list:
        return [self.callback, *([self.adaptive] if self.adaptive is not None else [])]


def build_run(req: BridgeRequest) -> BuiltBridgeRun:
    """Config, forward step and callback for one run (nothing trained, nothing written)."""
    from nemo_mlsl.recipes import load

    if not req.data:
        raise ConfigError("a Bridge run needs the prepared data directory (--data DIR)")
    if (req.ratios is None) == (req.schedule is None):
        raise ConfigError("a Bridge run needs its family ratios (--ratios fam=p,...) or a mixture schedule (--schedule "
                          "FILE), " + ("not both" if req.ratios is not None else "one of them"))
    steps = None
    if req.adaptive is not None and req.schedule is not None:
        raise ConfigError("an adaptive Bridge run starts from --ratios (its first interval) and decides the next ones; give "
                          "--ratios, not --schedule")
    if req.tokens is not None or req.max_steps is not None or req.schedule is not None:
        recipe = load(req.recipe, req.overrides, num_nodes=req.num_nodes, gpus_per_node=req.gpus_per_node)
        # the layout checked for the run's GPUs
        steps = recipe.train.run_steps(req.max_steps, req.tokens) if req.tokens is not None or req.max_steps is not None \
            else recipe.train.resolved_max_steps
    schedule, where = None, "schedule"
    if req.schedule is not None:
        from nemo_mlsl.data.schedule import MixtureSchedule

        schedule = MixtureSchedule.load(req.schedule, steps)  # its end: train_iters; an open last interval runs there
        where = f"--schedule {str(req.schedule)!r}:"
    run = bridge_run(req.recipe, req.data, req.ratios, within=req.within, num_nodes=req.num_nodes,
                     num_gpus_per_node=req.gpus_per_node, dir=req.out, name=req.run_id, overrides=req.overrides, seed=req.seed,
                     max_steps=steps, validate=False, check_epochs=req.check_epochs,
                     tb_dir=str(Path(req.tb_root) / (req.run_id or Path(req.out).name)) if req.tb_root else None,
                     schedule=schedule, schedule_where=where, adaptive=req.adaptive)
    blend, recipe = run.blend, run.recipe
    counts = recipe.params(blend["vocab_size"])
    make_record = live = None
    extra = dict(req.extra_record)
    if run.scheduled is not None and run.adaptive is None:  # an adaptive run's: AdaptiveMixtureCallback keeps it current
        extra["schedule"] = schedule_record(run.scheduled)
    if req.store:
        make_record = BridgeRunRecord(run_id=run.name, recipe=recipe.name, N=counts.non_embedding, N_total=counts.total,
                                      tokens_per_step=run.tokens_per_step, ratios=blend["family_ratios"], seed=req.seed,
                                      flops_per_token=counts.flops_per_token, family_tokens=blend["family_tokens"],
                                      within=req.within, transformer_impl=run.impl, extra=extra)
        live = LiveFit(req.store, req.report_dir or str(Path(req.out) / "fit"), law=req.law, bootstrap=req.bootstrap,
                       tokens=blend["family_tokens"])
    hparams = {**{f"ratio/{k}": v for k, v in blend["family_ratios"].items()}, "N": counts.non_embedding,
               "D": run.steps * run.tokens_per_step, "recipe": recipe.name, "seed": req.seed, "transformer_impl": run.impl,
               "backend": "bridge"}
    t = recipe.train
    mixture = TrainingMixture(blend["train_languages"], blend["paths"]["train"][0::2], blend["family_of"], blend["train_tokens"],
                              t.seq_length, t.global_batch_size) if run.scheduled is None else \
        ScheduledMixture(run.scheduled, blend["family_of"], blend["train_tokens"])
    validation = FixedValidation(req.data, t.val_samples_per_language, t.seq_length)
    callback = FamilyValidationCallback(blend["validation_languages"], blend["family_of"], blend["bytes_per_token"],
                                        make_record=make_record, live_fit=live, hparams=hparams, mixture=mixture,
                                        validation=validation)
    adaptive = None
    if run.adaptive is not None:
        from mlsl_bridge.adaptive import AdaptiveMixtureCallback

        adaptive = AdaptiveMixtureCallback(run.config.dataset, callback, run.adaptive, run.steps, req.out,
                                           sorted({blend["family_of"][l] for l in blend["validation_languages"]}),
                                           record=make_record)
    return BuiltBridgeRun(run, FamilyForwardStep(blend["validation_languages"], validation), callback, adaptive)


def train(req: BridgeRequest) -> dict[str, Any] | None:
    """Train the run with Bridge's ``pretrain()``; returns the record (on the last rank, with ``store``)."""
    import os

    import torch

    from mlsl_bridge.compat import import_pretrain

    built = build_run(req)
    if not torch.cuda.is_available():
        raise ConfigError("Megatron-Bridge trains on CUDA GPUs and this machine has none: check the run's config with "
                          "`mlsl recipes build RUNG --backend bridge --dry-run --data ... --ratios ...`, or train on the CPU "
                          "with `mlsl train` (--backend cpu)")
    if "WORLD_SIZE" not in os.environ and (req.num_nodes or 1) * (req.gpus_per_node or 1) == 1:
        # one process on one GPU, not under torchrun: the rendezvous torchrun would have set
        os.environ.update(single_process_env())  # a free port: two such jobs on one host must not collide
    Path(req.out).mkdir(parents=True, exist_ok=True)
    if built.run.scheduled is not None and os.environ.get("RANK", "0") == "0":
        from nemo_mlsl.data.schedule import SCHEDULE_FILE

        built.run.scheduled.schedule.write(Path(req.out) / SCHEDULE_FILE)
    pretrain = import_pretrain()
    pretrain(built.run.config, built.forward_step, callbacks=built.callbacks)
    return built.callback.record
