"""Recipe (``recipes/*.yaml``) + prepared data + family ratios → ``run.Partial(llm.pretrain, ...)``.

The NeMo config tree is built lazily (``run.Config``), so it can be built, inspected and printed on a
machine without GPUs; ``nemo_run`` executes it on one.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.model_config import ModelConfig
from nemo_mlsl.recipes import Recipe, TrainSettings, load


def gpt_config(model: ModelConfig, vocab_size: int | None, dropout: float = 0.0):
    """NeMo ``GPTConfig`` with the recipe's architecture (same field names), the family data step and the
    layer implementation of ``model.transformer_impl`` (resolved on the node that builds the model)."""
    import nemo_run as run
    import torch.nn.functional as F
    from nemo.collections import llm

    from mlsl_nemo.data_step import family_gpt_data_step
    from mlsl_nemo.layers import SPECS, TE_FUSIONS

    fusions = {name: False for name in TE_FUSIONS} if model.transformer_impl == "local" else {}
    return run.Config(
        llm.GPTConfig,
        num_layers=model.num_layers, hidden_size=model.hidden_size, ffn_hidden_size=model.ffn_hidden_size,
        num_attention_heads=model.num_attention_heads, num_query_groups=model.query_groups, kv_channels=model.head_dim,
        seq_length=model.seq_length, normalization=model.normalization, gated_linear_unit=model.gated_linear_unit,
        activation_func=F.silu if model.gated_linear_unit else F.gelu, add_bias_linear=model.add_bias_linear,
        share_embeddings_and_output_weights=model.share_embeddings_and_output_weights,
        position_embedding_type=model.position_embedding_type, rotary_base=model.rotary_base,
        layernorm_epsilon=model.layernorm_epsilon, init_method_std=model.init_method_std,
        hidden_dropout=dropout, attention_dropout=dropout, vocab_size=vocab_size, make_vocab_size_divisible_by=128,
        data_step_fn=family_gpt_data_step, transformer_layer_spec=SPECS[model.transformer_impl], **fusions,
    )


def nemo_tokenizer(kind: str, path: str):
    """NeMo's own tokenizer class for the prepared data's tokenizer (a local file or directory: nothing downloaded)."""
    import nemo_run as run

    if kind == "sentencepiece":
        from nemo.collections.common.tokenizers.sentencepiece_tokenizer import SentencePieceTokenizer

        return run.Config(SentencePieceTokenizer, model_path=path)
    from nemo.collections.common.tokenizers.huggingface.auto_tokenizer import AutoTokenizer

    return run.Config(AutoTokenizer, pretrained_model_name=path, use_fast=True)


def pretrain_recipe(
    rung: str,
    data: str | None,
    ratios: str | Mapping[str, float] | None,
    *,
    within: str = "natural",
    num_nodes: int | None = None,
    num_gpus_per_node: int | None = None,
    dir: str | None = None,
    name: str | None = None,
    overrides: Sequence[str] = (),
    store: str | None = None,
    seed: int = 1234,
    max_steps: int | None = None,
    law: str | None = "joint_family",
    report_dir: str | None = None,
    bootstrap: int = 0,
    record_extra: Mapping[str, Any] | None = None,
    check_epochs: bool = True,
    tb_root: str | None = None,
    schedule: Mapping[str, Any] | None = None,
    adaptive: Mapping[str, Any] | None = None,
):
    """The full NeMo 2 pretraining recipe for one rung on the family blend.

    With ``store``, the fitting callback appends the run's record (tagged with ``record_extra``) to that
    results store at the final validation and refits ``law`` into ``report_dir`` (default ``DIR/fit``).
    ``check_epochs`` refuses a run that would repeat any family's or language's data past the recipe's
    ``max_data_epochs`` (off only to inspect a configuration on toy data). ``tb_root``: TensorBoard logs go to
    ``TB_ROOT/<name>`` (a study's ``tb/``) instead of NeMo's ``DIR/tb_logs``. ``schedule`` (a ``MixtureSchedule``'s
    dict form, instead of ``ratios``; ``schedule_file`` reads one): training follows it to the run's last step; it is
    checked here against the run's steps and the data, written to the run's log directory as ``schedule.json`` and
    kept in the run's record. ``adaptive`` (``{"policy": NAME, "interval": STEPS, "min_share": .., "smoothing": ..,
    "max_change": ..}``, with ``ratios`` the first interval's): the mixture adapts during the run, the policy deciding
    each next interval at its boundary's validation (``NeMoAdaptiveMixtureCallback``); the trainer validates at every
    boundary (the recipe's ``val_every`` where it divides the interval, else every interval)."""
    import nemo_run as run
    from megatron.core.distributed import DistributedDataParallelConfig
    from megatron.core.optimizer import OptimizerConfig
    from nemo import lightning as nl
    from nemo.collections import llm
    from nemo.collections.llm.recipes.log.default import default_resume
    from nemo.collections.llm.recipes.precision.mixed_precision import bf16_mixed
    from nemo.lightning.pytorch.optim import CosineAnnealingScheduler, MegatronOptimizerModule, WarmupHoldAnnealScheduler

    from mlsl_lightning.callbacks.scaling_law_fit import ScalingLawFitCallback
    from mlsl_nemo.data_module import FamilyPreTrainingDataModule
    from mlsl_nemo.callback import (NeMoAdaptiveMixtureCallback, NeMoFamilyValidationCallback, NeMoHparamsCallback,
                                    NeMoMixtureMonitorCallback, NeMoScheduleCallback)
    from nemo_mlsl.data.blend import blend_paths, validation_batches
    from mlsl_nemo.record import NeMoRunRecord

    if not data:
        raise ConfigError(f"recipe {rung!r}: give the prepared data directory (data=DIR / --data DIR)")
    recipe: Recipe = load(rung, overrides, num_nodes=num_nodes, gpus_per_node=num_gpus_per_node)
    nodes = num_nodes or recipe.parallel.num_nodes
    gpus = num_gpus_per_node or recipe.parallel.gpus_per_node
    p, t = recipe.parallel, recipe.train
    steps = max_steps or t.resolved_max_steps
    settings = None
    if adaptive is not None:
        if schedule is not None:
            raise ConfigError("adaptive: an adaptive run starts from ratios (its first interval) and decides the next "
                              "ones; give ratios, not schedule")
        from nemo_mlsl.policies import adaptive_settings

        settings = adaptive_settings(adaptive)
        schedule, blend = adaptive_blend(data, ratios, settings["interval"], within, seed, steps, t, check_epochs)
    elif schedule is not None:
        schedule, blend = scheduled_blend(data, ratios, schedule, within, seed, steps, t, check_epochs)
    else:
        blend = blend_paths(data, ratios, within, train_samples=steps * t.global_batch_size if check_epochs else None,
                            seq_length=t.seq_length,
                            max_epochs=t.max_data_epochs)
    n_val = len(blend["validation_languages"])
    limit_val = validation_batches(t.val_samples_per_language * n_val, t.global_batch_size)  # the fixed set, whole
    counts = recipe.params(blend["vocab_size"])
    run_name = name or recipe.name
    tokens_per_step = t.global_batch_size * t.seq_length
    callbacks = [
        run.Config(NeMoFamilyValidationCallback, languages=blend["validation_languages"], family_of=blend["family_of"],
                   bytes_per_token=blend["bytes_per_token"]),
        run.Config(NeMoMixtureMonitorCallback, languages=blend["train_languages"], family_of=blend["family_of"],
                   train_tokens=blend["train_tokens"], seq_length=t.seq_length, global_batch_size=t.global_batch_size,
                   every=max(1, min(10, steps // 10))),
        run.Config(NeMoHparamsCallback, hparams={**{f"ratio/{k}": v for k, v in blend["family_ratios"].items()},
                                                 "N": counts.non_embedding, "D": steps * tokens_per_step, "recipe": recipe.name,
                                                 "seed": seed, "transformer_impl": recipe.model.transformer_impl}),
    ]
    if schedule is not None:
        callbacks.append(run.Config(NeMoScheduleCallback))
    if settings is not None:
        callbacks.append(run.Config(NeMoAdaptiveMixtureCallback, max_steps=steps, **settings))
    if store:
        record = run.Config(NeMoRunRecord, run_id=run_name, recipe=recipe.name, N=counts.non_embedding, N_total=counts.total,
                            tokens_per_step=tokens_per_step, ratios=blend["family_ratios"], seed=seed,
                            flops_per_token=counts.flops_per_token, family_tokens=blend["family_tokens"], within=within,
                            extra=dict(record_extra or {}))
        callbacks.append(run.Config(ScalingLawFitCallback, store=store, report_dir=report_dir or f"{dir or '.'}/fit",
                                    make_record=record, law=law, bootstrap=bootstrap, tokens=blend["family_tokens"]))
    strategy = run.Config(
        nl.MegatronStrategy, tensor_model_parallel_size=p.tensor_model_parallel_size,
        pipeline_model_parallel_size=p.pipeline_model_parallel_size, context_parallel_size=p.context_parallel_size,
        sequence_parallel=p.sequence_parallel, gradient_as_bucket_view=True, ckpt_include_optimizer=True,
        ddp=run.Config(DistributedDataParallelConfig, check_for_nan_in_grad=True, grad_reduce_in_fp32=True,
                       overlap_grad_reduce=True, overlap_param_gather=True),
    )
    val_every = t.val_every
    if settings is not None and settings["interval"] % val_every:  # every boundary validates (the decision reads it)
        val_every = settings["interval"]
    trainer = run.Config(
        nl.Trainer, accelerator="gpu", devices=gpus, num_nodes=nodes, max_steps=steps, val_check_interval=min(val_every, steps),
        limit_val_batches=limit_val, limit_test_batches=limit_val, log_every_n_steps=10, use_distributed_sampler=False,
        plugins=bf16_mixed(), callbacks=callbacks, strategy=strategy, num_sanity_val_steps=0,
    )
    data_module = run.Config(
        FamilyPreTrainingDataModule, paths=blend["paths"], seq_length=t.seq_length, global_batch_size=t.global_batch_size,
        micro_batch_size=t.micro_batch_size, tokenizer=nemo_tokenizer(blend["tokenizer_kind"], blend["tokenizer_model"]),
        split=None, seed=seed, num_workers=0 if settings is not None else 2, index_mapping_dir=blend["cache_dir"],
        data_dir=str(data),
        val_samples_per_language=t.val_samples_per_language,
        **({"schedule": schedule, "within": within, "max_data_epochs": t.max_data_epochs} if schedule is not None else {}),
        **({"adaptive": True} if settings is not None else {}),
    )
    warm = min(0.5, t.warmup_steps / steps)
    if t.schedule == "cosine":
        scheduler = run.Config(CosineAnnealingScheduler, warmup_steps=min(t.warmup_steps, steps // 2), constant_steps=0,
                               max_steps=steps, min_lr=t.min_lr)
    else:  # wsd: warm up, hold, anneal linearly over decay_fraction; constant: warm up and hold
        hold = 1 - warm if t.schedule == "constant" else max(0.0, 1 - t.decay_fraction - warm)
        scheduler = run.Config(WarmupHoldAnnealScheduler, warmup_ratio=warm, hold_ratio=hold, max_steps=steps,
                               min_lr=t.min_lr if t.schedule == "wsd" else t.lr, decay_schedule="linear")
    optim = run.Config(
        MegatronOptimizerModule,
        config=run.Config(OptimizerConfig, optimizer="adam", lr=t.lr, min_lr=t.min_lr, weight_decay=t.weight_decay, bf16=True,
                          adam_beta1=t.adam_beta1, adam_beta2=t.adam_beta2, adam_eps=1e-8, use_distributed_optimizer=True,
                          clip_grad=t.grad_clip),
        lr_scheduler=scheduler,
    )
    model = run.Config(llm.GPTModel, config=gpt_config(recipe.model, blend["vocab_size"], t.dropout))
    return run.Partial(llm.pretrain, model=model, data=data_module, trainer=trainer,
                       log=_log(dir, run_name, tb_root), optim=optim, resume=default_resume())


def schedule_file(path: str, rung: str, overrides: Sequence[str] = (), num_nodes: int | None = None,
                  num_gpus_per_node: int | None = None) -> dict[str, Any]:
    """A schedule file (``--schedule FILE``) checked against the rung's steps (an open last interval runs to its end),
    in the dict form ``pretrain_recipe(schedule=...)`` takes; errors name the file."""
    from nemo_mlsl.data.schedule import MixtureSchedule

    steps = load(rung, overrides, num_nodes=num_nodes, gpus_per_node=num_gpus_per_node).train.resolved_max_steps
    return MixtureSchedule.load(path, steps).to_dict()


def scheduled_blend(data: str, ratios: Any, schedule: Mapping[str, Any], within: str, seed: int, steps: int,
                    t: TrainSettings, check_epochs: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """A scheduled run's schedule (checked against the run's ``steps`` and the data; its dict form) and the blend
    tables of the whole run (its steps-weighted mean ratios: the ``dataset_id`` table every interval maps into)."""
    from nemo_mlsl.data.blend import BlendConfig, blend_paths
    from nemo_mlsl.data.manifest import Manifest
    from nemo_mlsl.data.schedule import MixtureSchedule, ScheduledBlend

    if ratios is not None:
        raise ConfigError("give ratios or schedule, not both (a schedule carries each interval's ratios)")
    sched = MixtureSchedule.from_dict(schedule, steps, where="schedule")
    config = BlendConfig({}, within, t.seq_length, seed, t.max_data_epochs)
    scheduled = ScheduledBlend(Manifest.load(data), config, sched, t.global_batch_size, where="schedule")
    if check_epochs:
        scheduled.check_epochs()
    blend = blend_paths(data, scheduled.family_ratios, within, normalize=True, seq_length=t.seq_length,
                        max_epochs=t.max_data_epochs)
    if blend["train_languages"] != scheduled.train_languages:  # the monitor reads the joined dataset's dataset_id
        raise RuntimeError("the schedule's table of training datasets differs from its mean blend's")
    return sched.to_dict(), blend


def adaptive_blend(data: str, ratios: Any, interval: int, within: str, seed: int, steps: int, t: TrainSettings,
                   check_epochs: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """An adaptive run's first interval (``ratios`` for ``interval`` steps, checked against the data; its dict form) and
    the blend tables of the run (every language with data: any family may be drawn later)."""
    from nemo_mlsl.data.blend import BlendConfig, blend_paths
    from nemo_mlsl.data.manifest import Manifest
    from nemo_mlsl.data.schedule import adaptive_start

    scheduled = adaptive_start(Manifest.load(data), BlendConfig({}, within, t.seq_length, seed, t.max_data_epochs), ratios,
                               interval, steps, t.global_batch_size, check_epochs)
    blend = blend_paths(data, scheduled.family_ratios, within, normalize=True, seq_length=t.seq_length,
                        max_epochs=t.max_data_epochs)
    if blend["train_languages"] != scheduled.train_languages:  # the monitor reads the joined dataset's dataset_id
        raise RuntimeError("the adaptive run's table of training datasets differs from its blend's")
    blend["family_ratios"] = dict(scheduled.interval_blends[0].family_ratios)  # the hparams': the first interval's
    return scheduled.schedule.to_dict(), blend


def _log(dir: str | None, name: str, tb_root: str | None):
    """NeMo's default logger; with ``tb_root`` its TensorBoard logger writes to ``TB_ROOT/<name>`` as given (NeMo would
    otherwise move it under the run's log directory)."""
    from nemo.collections.llm.recipes.log.default import default_log, tensorboard_logger

    log = default_log(dir=dir, name=name, tensorboard_logger=tensorboard_logger(name=name, save_dir=tb_root or "tb_logs"))
    if tb_root:
        log.tensorboard.version = ""
        log.update_logger_directory = False
    return log
