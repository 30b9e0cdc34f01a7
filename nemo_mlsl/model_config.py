"""Architecture in NeMo ``GPTConfig`` field names, with exact parameter and FLOP counts.

The same ``ModelConfig`` becomes a ``transformers`` Llama on the CPU path and a NeMo ``GPTConfig``
on the GPU path, so a recipe describes one architecture on both.
"""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.typed_config import coerce

# Fusions whose kernels come from TransformerEngine or Apex: off with megatron-core's local layers (every GPU backend).
TE_FUSIONS = ("masked_softmax_fusion", "bias_activation_fusion", "bias_dropout_fusion", "persist_layer_norm",
              "apply_rope_fusion", "gradient_accumulation_fusion")


@dataclass(frozen=True)
class ModelConfig:
    """Decoder architecture (field names as in NeMo's ``GPTConfig``)."""

    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_attention_heads: int
    seq_length: int = 2048
    kv_channels: int | None = None
    num_query_groups: int | None = None
    vocab_size: int | None = None
    normalization: str = "RMSNorm"
    gated_linear_unit: bool = True
    add_bias_linear: bool = False
    share_embeddings_and_output_weights: bool = True
    position_embedding_type: str = "rope"
    rotary_base: float = 10000.0
    layernorm_epsilon: float = 1e-5
    init_method_std: float = 0.02
    # Implementation, not architecture (NeMo path only): TransformerEngine layers where TE imports ("auto"),
    # or forced ("transformer_engine" / "local": megatron-core's own layers, no TE or Apex needed).
    transformer_impl: str = "auto"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "model") -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {unknown}; valid fields: {sorted(known)}")
        hints = typing.get_type_hints(cls)
        cfg = cls(**{k: coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()})
        cfg.validate(where)
        return cfg

    def validate(self, where: str = "model") -> None:
        for name in ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "seq_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name} must be >= 1, got {getattr(self, name)}")
        if self.kv_channels is None and self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"{where}: hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}; set kv_channels explicitly"
            )
        if self.num_attention_heads % self.query_groups:
            raise ConfigError(f"{where}: num_attention_heads {self.num_attention_heads} is not divisible by num_query_groups {self.query_groups}")
        if self.normalization not in ("RMSNorm", "LayerNorm"):
            raise ConfigError(f"{where}.normalization must be RMSNorm or LayerNorm, got {self.normalization!r}")
        if self.position_embedding_type not in ("rope", "learned_absolute"):
            raise ConfigError(f"{where}.position_embedding_type must be rope or learned_absolute")
        if self.transformer_impl not in TRANSFORMER_IMPLS:
            raise ConfigError(f"{where}.transformer_impl must be one of {', '.join(TRANSFORMER_IMPLS)}, got {self.transformer_impl!r}")

    @property
    def head_dim(self) -> int:
        return self.kv_channels or self.hidden_size // self.num_attention_heads

    @property
    def query_groups(self) -> int:
        return self.num_query_groups or self.num_attention_heads

    def with_vocab(self, vocab_size: int) -> "ModelConfig":
        return ModelConfig(**{**asdict(self), "vocab_size": vocab_size})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def architecture(self) -> dict[str, Any]:
        """The fields that define the network (what a checkpoint must match), without the implementation choice."""
        d = asdict(self)
        d.pop("transformer_impl")
        return d


TRANSFORMER_IMPLS = ("auto", "transformer_engine", "local")


@dataclass(frozen=True)
class ParamCount:
    """Exact counts as megatron-core / transformers build the model."""

    total: int
    non_embedding: int
    embedding: int
    flops_per_token: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def count_parameters(cfg: ModelConfig, vocab_size: int | None = None) -> ParamCount:
    """Parameters of the decoder as built (norm weights, optional biases, tied or untied head).

    Non-embedding N (what both papers fit) excludes the token embedding, the untied output
    layer and learned position embeddings. Training FLOPs per token follow Kaplan et al. (2020):
    6 x (non-embedding N + the output projection V·h) + 6 x layers x seq x attention width.
    """
    v = vocab_size or cfg.vocab_size
    if not v:
        raise ConfigError("count_parameters needs a vocab_size (from the tokenizer or the recipe)")
    h, f, nh, kv, g, L = cfg.hidden_size, cfg.ffn_hidden_size, cfg.num_attention_heads, cfg.head_dim, cfg.query_groups, cfg.num_layers
    norm = h if cfg.normalization == "RMSNorm" else 2 * h
    bias = cfg.add_bias_linear
    qkv = h * (nh * kv + 2 * g * kv) + (nh * kv + 2 * g * kv if bias else 0)
    proj = nh * kv * h + (h if bias else 0)
    fc1 = h * f * (2 if cfg.gated_linear_unit else 1) + (f * (2 if cfg.gated_linear_unit else 1) if bias else 0)
    fc2 = f * h + (h if bias else 0)
    per_layer = 2 * norm + qkv + proj + fc1 + fc2
    non_embedding = L * per_layer + norm
    embedding = v * h
    positions = cfg.seq_length * h if cfg.position_embedding_type == "learned_absolute" else 0
    output = 0 if cfg.share_embeddings_and_output_weights else v * h
    total = non_embedding + embedding + positions + output
    flops = 6 * (non_embedding + v * h) + 6 * L * cfg.seq_length * nh * kv
    return ParamCount(total=total, non_embedding=non_embedding, embedding=embedding + positions + output, flops_per_token=flops)
