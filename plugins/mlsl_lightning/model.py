"""The CPU decoder: a ``transformers`` Llama built from a ``ModelConfig`` (no weights, no download)."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from nemo_mlsl.model_config import ModelConfig
from nemo_mlsl.recipes import TrainSettings


def llama_config(cfg: ModelConfig, vocab_size: int, dropout: float = 0.0):
    """NeMo ``GPTConfig`` names → ``transformers.LlamaConfig`` (the one mapping for the CPU path)."""
    from transformers import LlamaConfig

    if cfg.normalization != "RMSNorm" or not cfg.gated_linear_unit or cfg.position_embedding_type != "rope" or cfg.add_bias_linear:
        raise ValueError("the CPU path builds Llama-style decoders: RMSNorm, gated SwiGLU, RoPE, no linear biases")
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.ffn_hidden_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.query_groups, head_dim=cfg.head_dim, max_position_embeddings=cfg.seq_length,
        rms_norm_eps=cfg.layernorm_epsilon, rope_theta=cfg.rotary_base, tie_word_embeddings=cfg.share_embeddings_and_output_weights,
        attention_bias=False, mlp_bias=False, initializer_range=cfg.init_method_std, attention_dropout=dropout,
        use_cache=False, bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )


def build_decoder(cfg: ModelConfig, vocab_size: int, dropout: float = 0.0) -> torch.nn.Module:
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(llama_config(cfg, vocab_size, dropout))
    model.config._attn_implementation = "sdpa"
    return model


def lr_lambda(train: TrainSettings, max_steps: int):
    """Multiplier of ``train.lr`` at a step: linear warmup, then WSD (stable, linear decay) or cosine."""
    floor = train.min_lr / train.lr if train.lr > 0 else 0.0
    warm = max(0, min(train.warmup_steps, max_steps - 1))

    def fn(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if train.schedule == "constant":
            return 1.0
        if train.schedule == "cosine":
            t = (step - warm) / max(1, max_steps - warm)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
        decay_start = max_steps - int(round(train.decay_fraction * max_steps))
        if step < decay_start:
            return 1.0
        t = (step - decay_start) / max(1, max_steps - decay_start)
        return 1.0 - (1.0 - floor) * min(1.0, t)

    if train.schedule not in ("wsd", "cosine", "constant"):
        raise ValueError(f"train.schedule must be wsd, cosine or constant, got {train.schedule!r}")
    return fn


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy in nats, shape ``[batch, seq]``."""
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="none").view_as(labels)


class CausalLM(pl.LightningModule):
    """Decoder + schedule. ``validation_step`` returns per-sample loss sums, token counts and ``dataset_id``:
    the contract the family validation callback (and a NeMo model, through its loss reduction) meets."""

    def __init__(self, model: dict[str, Any], vocab_size: int, train: dict[str, Any], max_steps: int,
                 tokenizer_sha256: str | None = None):
        super().__init__()  # tokenizer_sha256 only rides along in the checkpoint, so finetuning can check it
        self.save_hyperparameters()
        self.model_cfg = ModelConfig(**model)
        self.train_cfg = TrainSettings(**train)
        self.max_steps = max_steps
        self.decoder = build_decoder(self.model_cfg, vocab_size, self.train_cfg.dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # An all-ones padding mask lets transformers use SDPA's is_causal path instead of materialising a
        # causal mask with vmap on every call (3x faster on CPU for these small models); the result is the same.
        return self.decoder(input_ids=tokens, attention_mask=torch.ones_like(tokens)).logits

    def _losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        losses = token_losses(self(batch["tokens"]), batch["labels"])
        return losses, batch["loss_mask"].to(losses.dtype)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        losses, mask = self._losses(batch)
        loss = (losses * mask).sum() / mask.sum().clamp_min(1)
        self.log("train_loss", loss, prog_bar=True, batch_size=batch["tokens"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        losses, mask = self._losses(batch)
        loss_sum, tokens = (losses * mask).sum(1), mask.sum(1)
        self.log("val_loss", loss_sum.sum() / tokens.sum().clamp_min(1), prog_bar=True, batch_size=int(tokens.sum()))
        return {"loss_sum": loss_sum.detach(), "tokens": tokens.detach(), "dataset_id": batch["dataset_id"]}

    def configure_optimizers(self):
        t = self.train_cfg
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            (no_decay if p.ndim < 2 or "embed" in name else decay).append(p)
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=t.lr, betas=(t.adam_beta1, t.adam_beta2),
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(t, self.max_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
