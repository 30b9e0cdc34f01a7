"""Recipe (``recipes/*.yaml``) + prepared data + family ratios → Megatron-Bridge ``ConfigContainer``.

Built directly from the rung (Bridge's own Llama recipes fetch Hugging Face configs at build time): a
``GPTModelProvider`` with the recipe's architecture (NeMo's ``GPTConfig`` field names), the family blend
as ``blend_per_split`` (weighted training prefixes; every language's validation prefix with equal weight,
so a validation sample's ``dataset_id`` indexes ``blend["validation_languages"]``), the prepared data's
tokenizer, the recipe's schedule, TensorBoard and the parallel layout. Builds and validates on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from mlsl_bridge.compat import ensure_importable, have_te
from nemo_mlsl.errors import ConfigError
from nemo_mlsl.model_config import TE_FUSIONS, ModelConfig
from nemo_mlsl.recipes import Recipe, TrainSettings, load

ensure_importable()

def resolve_impl(requested: str) -> str:
    """``auto`` → TransformerEngine where it imports (this process builds the model), megatron-core's local layers otherwise."""
    if requested == "transformer_engine" and not have_te():
        raise ConfigError("model.transformer_impl=transformer_engine, but transformer_engine is not installed here; "
                          "install it or use model.transformer_impl=auto or local")
    if requested == "auto":
        return "transformer_engine" if have_te() else "local"
    return requested


def model_provider(model: ModelConfig, parallel: Any, vocab_size: int, seq_length: int, dropout: float = 0.0, impl: str = "local"):
    """``GPTModelProvider`` with the recipe's architecture and parallel layout."""
    import torch
    import torch.nn.functional as F
    from megatron.bridge.models.gpt_provider import GPTModelProvider, local_layer_spec, transformer_engine_layer_spec

    # Bridge's own spec functions (importable by name, so the config's YAML loads back through Bridge's allowlist)
    spec = transformer_engine_layer_spec if impl == "transformer_engine" else local_layer_spec
    fusions = {name: False for name in TE_FUSIONS} if impl == "local" else {}
    return GPTModelProvider(
        num_layers=model.num_layers, hidden_size=model.hidden_size, ffn_hidden_size=model.ffn_hidden_size,
        num_attention_heads=model.num_attention_heads, num_query_groups=model.query_groups, kv_channels=model.head_dim,
        seq_length=seq_length, normalization=model.normalization, gated_linear_unit=model.gated_linear_unit,
        activation_func=F.silu if model.gated_linear_unit else F.gelu, add_bias_linear=model.add_bias_linear,
        share_embeddings_and_output_weights=model.share_embeddings_and_output_weights,
        position_embedding_type=model.position_embedding_type, rotary_base=int(model.rotary_base),
        layernorm_epsilon=model.layernorm_epsilon, init_method_std=model.init_method_std,
        hidden_dropout=dropout, attention_dropout=dropout, vocab_size=vocab_size, make_vocab_size_divisible_by=128,
        tensor_model_parallel_size=parallel.tensor_model_parallel_size,
        pipeline_model_parallel_size=parallel.pipeline_model_parallel_size,
        context_parallel_size=parallel.context_parallel_size, sequence_parallel=parallel.sequence_parallel,
        transformer_layer_spec=spec, bf16=True, params_dtype=torch.bfloat16, **fusions,
    )


def scheduler(t: TrainSettings, steps: int):
    """WSD (warm up, hold, linear anneal over ``decay_fraction``), cosine or constant, in iterations."""
    from megatron.bridge.training.config import SchedulerConfig

    warmup = min(t.warmup_steps, steps // 2)
    common = dict(lr_warmup_iters=warmup, lr_warmup_init=0.0, lr_decay_iters=steps, start_weight_decay=t.weight_decay,
                  end_weight_decay=t.weight_decay, weight_decay_incr_style="constant")
    if t.schedule == "cosine":
        return SchedulerConfig(lr_decay_style="cosine", **common)
    if t.schedule == "constant":
        return SchedulerConfig(lr_decay_style="constant", **common)
    return SchedulerConfig(lr_decay_style="WSD", lr_wsd_decay_style="linear",
                           lr_wsd_decay_iters=max(1, round(t.decay_fraction * steps)), **common)


def tokenizer_config(kind: str, path: str):
    """Bridge's tokenizer for the prepared data's own tokenizer (a local file or directory: nothing downloaded)."""
    from megatron.bridge.training.tokenizers.config import TokenizerConfig

    if kind == "sentencepiece":
        return TokenizerConfig(tokenizer_type="SentencePieceTokenizer", tokenizer_model=path)
    return TokenizerConfig(tokenizer_type="HuggingFaceTokenizer", tokenizer_model=path)


@dataclass
class BridgeRun:
    """A built run: Bridge's config plus the lookup tables our forward step and callback need."""

    config: Any  # ConfigContainer
    recipe: Recipe
    blend: dict[str, Any] | None  # blend_paths(...) tables; None for the mock dataset of a dry run without data
    steps: int
    seed: int
    impl: str
    name: str
    scheduled: Any = None  # the run's ScheduledBlend (mlsl_bridge.schedule) when it trains on a mixture schedule
    adaptive: dict[str, Any] | None = None  # an adaptive run's checked settings (policy, interval, min_share, ...)

    @property
    def tokens_per_step(self) -> int:
        return self.recipe.train.global_batch_size * self.recipe.train.seq_length


def _split(blend_list: Sequence[Any]) -> list[list]:
    """``[w, prefix, w, prefix, ...]`` (NeMo's flat form) → megatron's ``[prefixes, weights]`` (a list, as Bridge's
    YAML loader gives it back)."""
    return [[str(p) for p in blend_list[1::2]], [float(w) for w in blend_list[0::2]]]


def bridge_run(
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
    seed: int = 1234,
    max_steps: int | None = None,
    check_epochs: bool = True,
    validate: bool = True,
    tb_dir: str | None = None,
    schedule: Any = None,
    schedule_where: str = "schedule",
    adaptive: Mapping[str, Any] | None = None,
) -> BridgeRun:
    """The Bridge pretraining config for one rung on the family blend of a prepared data directory.

    ``data=None`` builds Bridge's mock dataset in place of the blend (for ``--dry-run`` on a machine without
    prepared data; the model, schedule and parallel layout are the rung's). ``check_epochs`` refuses a run
    that would repeat a family's or language's data past the recipe's ``max_data_epochs``. ``schedule`` (a
    ``MixtureSchedule`` ending at the run's last step, in place of ``ratios``) makes the training set the schedule's
    joined blend (``mlsl_bridge.schedule.ScheduledDataset``); its errors name ``schedule_where``. ``adaptive``
    (``{"policy": NAME, "interval": STEPS, "min_share": .., "smoothing": .., "max_change": ..}``, with ``ratios`` the first
    interval's): the training set starts as that first interval and ``mlsl_bridge.adaptive.AdaptiveMixtureCallback`` adds
    each next one at its boundary's evaluation; Bridge evaluates at every boundary and reads the set with no worker
    processes (a worker would hold a copy made before the decisions)."""
    from megatron.bridge.training.config import (CheckpointConfig, ConfigContainer, DistributedDataParallelConfig,
                                                 DistributedInitConfig, GPTDatasetConfig, LoggerConfig, MockGPTDatasetConfig,
                                                 OptimizerConfig, RNGConfig, TrainingConfig, ValidationConfig)

    from nemo_mlsl.data.blend import blend_paths, validation_batches

    recipe = load(rung, overrides, num_nodes=num_nodes, gpus_per_node=num_gpus_per_node)
    p, t = recipe.parallel, recipe.train
    steps = max_steps or t.resolved_max_steps
    out = Path(dir or f"bridge_runs/{name or recipe.name}")
    blend = scheduled = settings = None
    if adaptive is not None:
        from nemo_mlsl.data.blend import BlendConfig
        from nemo_mlsl.data.manifest import Manifest
        from nemo_mlsl.data.schedule import adaptive_start
        from nemo_mlsl.policies import adaptive_settings

        if schedule is not None or not data:
            raise ConfigError("an adaptive run starts from --ratios (its first interval) on the prepared data (--data DIR) "
                              "and decides the next intervals; give --ratios, not --schedule")
        settings = adaptive_settings(adaptive)
        scheduled = adaptive_start(Manifest.load(data), BlendConfig({}, within, t.seq_length, seed, t.max_data_epochs),
                                   ratios, settings["interval"], steps, t.global_batch_size, check_epochs)
        ratios = scheduled.family_ratios  # the run's table of training datasets: every family with data
    elif schedule is not None:
        from mlsl_bridge.schedule import scheduled_blend

        if not data or ratios is not None:
            raise ConfigError("a run on a mixture schedule needs the prepared data (--data DIR) and no --ratios (the "
                              "schedule carries each interval's ratios)")
        if schedule.steps != steps:
            raise ConfigError(f"{schedule_where} intervals[{len(schedule.intervals) - 1}].until_step = {schedule.steps}, "
                              f"but Bridge's train.train_iters is {steps}; make the last interval end at step {steps} or "
                              "leave its until_step out")
        scheduled = scheduled_blend(data, schedule, within, t.seq_length, seed, t.max_data_epochs, t.global_batch_size,
                                    schedule_where)
        if check_epochs:
            scheduled.check_epochs()
        ratios = scheduled.family_ratios  # the whole run's table of training datasets: the schedule's mean
    if data:
        blend = blend_paths(data, ratios, within, normalize=scheduled is not None, seq_length=t.seq_length,
                            max_epochs=t.max_data_epochs,
                            train_samples=steps * t.global_batch_size if check_epochs and scheduled is None else None)
        if scheduled is not None and blend["train_languages"] != scheduled.train_languages:
            raise RuntimeError("the schedule's table of training datasets differs from its blend's")  # what dataset_id names
        n_val, vocab = len(blend["validation_languages"]), blend["vocab_size"]
    else:
        n_val, vocab = 1, recipe.vocab_size or recipe.paper.get("vocab_size")
        if not vocab:
            raise ConfigError(f"recipe {rung!r} has no vocab_size: give the prepared data directory (--data DIR)")
    impl = resolve_impl(recipe.model.transformer_impl)
    dataset_common = dict(random_seed=seed, seq_length=t.seq_length, reset_position_ids=False, reset_attention_mask=False,
                          eod_mask_loss=False, num_dataset_builder_threads=1, dataloader_type="single", num_workers=2,
                          skip_getting_attention_mask_from_dataset=True, create_attention_mask=False,
                          mid_level_dataset_surplus=0.005)
    if blend is not None:
        train, val = _split(blend["paths"]["train"]), _split(blend["paths"]["validation"])
        dataset = GPTDatasetConfig(blend_per_split=[train, val, val], split=None, path_to_cache=blend["cache_dir"],
                                   **dataset_common)
        if scheduled is not None:
            from mlsl_bridge.schedule import ScheduledDataset

            loader = {"dataloader_type": dataset_common["dataloader_type"],
                      "num_workers": 0 if settings is not None else dataset_common["num_workers"]}
            dataset = ScheduledDataset(blend=dataset, data_dir=str(data), schedule=scheduled.schedule.to_dict(),
                                       within=within, global_batch_size=t.global_batch_size,
                                       max_epochs=t.max_data_epochs, adaptive=settings is not None, **loader)
            if settings is not None:
                dataset.live = scheduled  # not a field: the callback extends what the training set reads
                blend["family_ratios"] = dict(scheduled.interval_blends[0].family_ratios)  # the first interval's
        tokenizer = tokenizer_config(blend["tokenizer_kind"], blend["tokenizer_model"])
    else:
        dataset = MockGPTDatasetConfig(**dataset_common)
        from megatron.bridge.training.tokenizers.config import TokenizerConfig

        tokenizer = TokenizerConfig(tokenizer_type="NullTokenizer", vocab_size=vocab)
    val_every = t.val_every
    if settings is not None and settings["interval"] % val_every:  # every boundary evaluates (the decision reads it)
        val_every = settings["interval"]
    eval_every = min(val_every, steps)
    config = ConfigContainer(
        model=model_provider(recipe.model, p, vocab, t.seq_length, t.dropout, impl),
        train=TrainingConfig(train_iters=steps, global_batch_size=t.global_batch_size, micro_batch_size=t.micro_batch_size,
                             manual_gc=True, manual_gc_interval=100),
        validation=ValidationConfig(eval_interval=eval_every,
                                    eval_iters=validation_batches(t.val_samples_per_language * n_val, t.global_batch_size)),
        optimizer=OptimizerConfig(optimizer="adam", lr=t.lr, min_lr=t.min_lr, weight_decay=t.weight_decay, bf16=True,
                                  adam_beta1=t.adam_beta1, adam_beta2=t.adam_beta2, adam_eps=1e-8,
                                  use_distributed_optimizer=True, overlap_param_gather=True, clip_grad=t.grad_clip),
        scheduler=scheduler(t, steps),
        ddp=DistributedDataParallelConfig(check_for_nan_in_grad=True, grad_reduce_in_fp32=True, overlap_grad_reduce=True,
                                          overlap_param_gather=True, use_distributed_optimizer=True),
        dataset=dataset,
        logger=LoggerConfig(log_interval=10, tensorboard_dir=tb_dir or str(out / "tb"), log_timers_to_tensorboard=False),
        tokenizer=tokenizer,
        checkpoint=CheckpointConfig(save=str(out / "checkpoints"), save_interval=steps, ckpt_format="torch_dist",
                                    fully_parallel_save=True),
        rng=RNGConfig(seed=seed),
        dist=DistributedInitConfig(),
        mixed_precision="bf16_mixed",
    )
    run = BridgeRun(config=config, recipe=recipe, blend=blend, steps=steps, seed=seed, impl=impl, name=name or recipe.name,
                    scheduled=scheduled, adaptive=settings)
    if validate:
        validated(config, (num_nodes or p.num_nodes) * (num_gpus_per_node or p.gpus_per_node))
    return run


def validated(config: Any, world_size: int) -> Any:
    """A deep copy of ``config`` after Bridge's own runtime update and ``validate()`` for ``world_size`` processes
    (what ``pretrain()`` does first); Bridge's assertion becomes a named error. ``config`` itself is untouched."""
    import copy
    import os

    import torch.distributed as dist
    from megatron.bridge.training.config import runtime_config_update

    checked = copy.deepcopy(config)
    saved = {key: os.environ.get(key) for key in ("WORLD_SIZE", "RANK")}
    if not dist.is_initialized():
        os.environ["WORLD_SIZE"] = str(world_size)
        os.environ.setdefault("RANK", "0")
    try:
        runtime_config_update(checked)
    except (AssertionError, ValueError, TypeError) as err:
        raise ConfigError(f"Megatron-Bridge rejected the config for {world_size} GPU(s): {err}") from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return checked


def to_yaml(config: Any) -> str:
    """The config as Bridge prints it (``ConfigContainer.print_yaml``), as text."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        config.print_yaml()
    return buf.getvalue()
