"""Recipe files (``recipes/<source>/<name>.yaml``) → typed configs.

Configuration flows one way: YAML → OmegaConf (interpolation, ``key=value`` overrides) → these
dataclasses → objects. One loader and one list of rungs serve the CPU path, NeMo and the CLI.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import OmegaConf

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.model_config import ModelConfig, count_parameters
from nemo_mlsl.typed_config import coerce, typed  # noqa: F401  (coerce: re-exported for callers)

SOURCES = ("cpu", "atlas", "he2024")
SCHEDULES = ("wsd", "cosine", "constant")


def recipes_dir() -> Path:
    """``$MLSL_RECIPES`` or the ``recipes/`` folder beside the package."""
    env = os.environ.get("MLSL_RECIPES")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "recipes"


@dataclass(frozen=True)
class TrainSettings:
    """How to train a rung: batch, schedule, optimizer, validation and precision."""

    seq_length: int = 2048
    micro_batch_size: int = 1
    global_batch_size: int = 256
    lr: float = 2e-4
    min_lr: float = 2e-5
    schedule: str = "wsd"
    warmup_steps: int = 1000
    decay_fraction: float = 0.1
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    grad_clip: float = 1.0
    max_steps: int | None = None
    tokens: int | None = None
    val_every: int = 1000
    val_samples_per_language: int = 64
    max_data_epochs: float = 4.0
    precision: str = "bf16-mixed"
    dropout: float = 0.0

    def validate(self, where: str = "train") -> None:
        """Refuse settings no trainer can run, naming the field (``where`` is e.g. ``recipe cpu_15k.yaml: train``)."""
        problems = [f"{name} must be >= 1, got {getattr(self, name)}" for name in
                    ("seq_length", "micro_batch_size", "global_batch_size", "val_every", "val_samples_per_language")
                    if getattr(self, name) < 1]
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        for name in ("lr", "min_lr"):  # lr 0: a run that only validates (tests); min_lr is the floor of the decay
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                problems.append(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            problems.append(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        for name in ("decay_fraction", "dropout"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                problems.append(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            problems.append(f"weight_decay and grad_clip must be >= 0, got {self.weight_decay} and {self.grad_clip}")
        if not self.max_data_epochs > 0:
            problems.append(f"max_data_epochs must be > 0, got {self.max_data_epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"max_steps must be >= 1 (or null: from tokens), got {self.max_steps}")
        if self.tokens is not None and self.tokens < 1:
            problems.append(f"tokens must be >= 1 (or null: from max_steps), got {self.tokens}")
        if problems:
            raise ConfigError(f"{where}: " + "; ".join(problems))

    def steps_for(self, tokens: float) -> int:
        return max(1, math.ceil(tokens / (self.global_batch_size * self.seq_length)))

    def run_steps(self, max_steps: int | None = None, tokens: float | None = None) -> int:
        """Optimizer steps of one run: ``--max-steps``, else ``--tokens`` (whole steps), else the recipe's length.
        Zero, negative or non-finite values are refused (they used to mean "the recipe's full length")."""
        if max_steps is not None and tokens is not None:
            raise ConfigError("give --tokens or --max-steps, not both")
        if max_steps is not None:
            if isinstance(max_steps, bool) or int(max_steps) != max_steps or max_steps < 1:
                raise ConfigError(f"--max-steps must be a whole number >= 1, got {max_steps} (leave it out for the recipe's length)")
            return int(max_steps)
        if tokens is not None:
            if not (math.isfinite(tokens) and tokens > 0):
                raise ConfigError(f"--tokens must be a positive number of training tokens, got {tokens:g} (leave it out for "
                                  "the recipe's length)")
            return self.steps_for(tokens)
        return self.resolved_max_steps

    @property
    def resolved_max_steps(self) -> int:
        if self.max_steps:
            return int(self.max_steps)
        if self.tokens:
            return self.steps_for(self.tokens)
        raise ConfigError("train: give max_steps or tokens")


@dataclass(frozen=True)
class ParallelSettings:
    """Default parallel layout (for 8x80 GB GPU nodes on the NeMo path)."""

    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    context_parallel_size: int = 1
    sequence_parallel: bool = False
    num_nodes: int = 1
    gpus_per_node: int = 8


@dataclass(frozen=True)
class Recipe:
    name: str
    source: str
    description: str
    model: ModelConfig
    train: TrainSettings
    parallel: ParallelSettings
    vocab_size: int | None = None
    paper: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    def params(self, vocab_size: int | None = None):
        return count_parameters(self.model, vocab_size or self.vocab_size)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("path")
        return d


def _train_settings(data: Mapping[str, Any] | None, where: str) -> TrainSettings:
    train = typed(TrainSettings, data, where)
    train.validate(where)
    return train


def available() -> dict[str, Path]:
    """Every recipe name → file, from ``recipes/<source>/*.yaml``."""
    root = recipes_dir()
    out: dict[str, Path] = {}
    for source in SOURCES:
        for path in sorted((root / source).glob("*.yaml")):
            out[path.stem] = path
    return out


def load(name_or_path: str, overrides: Sequence[str] = (), *, num_nodes: int | None = None,
         gpus_per_node: int | None = None) -> Recipe:
    """Load a recipe by name or path, applying ``key=value`` overrides; the parallel layout is checked for
    ``num_nodes`` x ``gpus_per_node`` GPUs when given (a 1-GPU run of an 8-GPU rung), else the recipe's own."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        rungs = available()
        if name_or_path not in rungs:
            raise ConfigError(
                f"unknown recipe {name_or_path!r}; valid names: {', '.join(sorted(rungs))} (or a path to a .yaml file)"
            )
        path = rungs[name_or_path]
    conf = OmegaConf.load(path)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. train.lr=1e-3)")
    if overrides:
        conf = OmegaConf.merge(conf, OmegaConf.from_dotlist(list(overrides)))
    data = OmegaConf.to_container(conf, resolve=True)
    where = f"recipe {path.name}"
    known = {"name", "source", "description", "model", "train", "parallel", "vocab_size", "paper"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key(s) {unknown}; valid: {sorted(known)}")
    source = data.get("source", path.parent.name)
    if source not in SOURCES:
        raise ConfigError(f"{where}: source must be one of {SOURCES}, got {source!r}")
    recipe = Recipe(
        name=data.get("name", path.stem), source=source, description=data.get("description", ""),
        model=ModelConfig.from_mapping(data["model"], f"{where}: model"),
        train=_train_settings(data.get("train"), f"{where}: train"),
        parallel=typed(ParallelSettings, data.get("parallel"), f"{where}: parallel"),
        vocab_size=data.get("vocab_size"), paper=dict(data.get("paper") or {}), path=str(path),
    )
    validate_parallel(recipe, num_nodes, gpus_per_node)
    return recipe


def validate_parallel(recipe: Recipe, num_nodes: int | None = None, gpus_per_node: int | None = None) -> int:
    """Check that TP/PP/CP divide heads, layers, sequence and GPUs; returns the data-parallel size."""
    p, m, t = recipe.parallel, recipe.model, recipe.train
    tp, pp, cp = p.tensor_model_parallel_size, p.pipeline_model_parallel_size, p.context_parallel_size
    gpus = (num_nodes or p.num_nodes) * (gpus_per_node or p.gpus_per_node)
    where = f"recipe {recipe.name!r} (TP={tp}, PP={pp}, CP={cp}, GPUs={gpus})"
    problems = []
    if m.num_attention_heads % tp:
        problems.append(f"num_attention_heads={m.num_attention_heads} is not divisible by TP={tp}")
    if m.query_groups % tp:
        problems.append(f"num_query_groups={m.query_groups} is not divisible by TP={tp}")
    if m.ffn_hidden_size % tp:
        problems.append(f"ffn_hidden_size={m.ffn_hidden_size} is not divisible by TP={tp}")
    if m.num_layers % pp:
        problems.append(f"num_layers={m.num_layers} is not divisible by PP={pp}")
    if t.seq_length % (2 * cp) and cp > 1:
        problems.append(f"seq_length={t.seq_length} is not divisible by 2xCP={2 * cp}")
    if p.sequence_parallel and tp == 1:
        problems.append("sequence_parallel needs TP > 1")
    if gpus % (tp * pp * cp):
        problems.append(f"{gpus} GPUs are not divisible by TPxPPxCP={tp * pp * cp}")
    else:
        dp = gpus // (tp * pp * cp)
        if t.global_batch_size % (t.micro_batch_size * dp):
            problems.append(f"global_batch_size={t.global_batch_size} is not divisible by micro_batch_size x DP = {t.micro_batch_size}x{dp}")
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))
    return gpus // (tp * pp * cp)
