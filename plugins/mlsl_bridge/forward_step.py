"""Bridge's GPT forward step, plus per-language ``[loss_sum, tokens]`` entries during evaluation.

Bridge's ``get_batch_from_iterator`` sets every extra batch key to ``None``, so the step reads each
microbatch's ``dataset_id`` as the batch leaves the iterator (before context-parallel slicing; it is one id
per sample). In evaluation the loss function's report gains two 2-element entries per validation language:

- ``mlsl/<code>/loss``  = ``[masked loss sum, tokens]`` of that language's samples;
- ``mlsl/<code>/share`` = ``[tokens of that language, all tokens]``.

Bridge's evaluation sums every 2-element entry over microbatches, all-reduces it over data+context
parallel ranks on the last pipeline stage and divides: the first becomes the language's mean loss, the
second its share of the tokens, and ``language_sums`` turns the pair back into ``[loss_sum, tokens]`` up to
one common factor, which is all token-weighted family losses and bits per byte need. Training steps are
Bridge's own, untouched.

Only the last pipeline stage computes the loss (Bridge loads labels and the loss mask there only), so only it
gains the entries; the other stages pass Bridge's output through. In evaluation the batches come from the
study's fixed validation set (``mlsl_bridge.validation.FixedValidation``), not from Bridge's validation stream.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from mlsl_bridge.compat import ensure_importable
from nemo_mlsl.distributed import microbatch_language_sums

ensure_importable()

PREFIX = "mlsl/"


def loss_key(language: str) -> str:
    return f"{PREFIX}{language}/loss"


def share_key(language: str) -> str:
    return f"{PREFIX}{language}/share"


class _Tap:
    """An iterator that remembers the ``dataset_id`` of the batch it last handed out."""

    def __init__(self, source: Iterator):
        self.source = source
        self.dataset_id: Any = None

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.source)
        self.dataset_id = batch.get("dataset_id") if isinstance(batch, Mapping) else None
        return batch


def language_entries(per_token_loss: torch.Tensor, loss_mask: torch.Tensor, dataset_id: torch.Tensor,
                     languages: Sequence[str]) -> dict[str, torch.Tensor]:
    """The two entries per language for one microbatch (every language, zeros where absent: Bridge's reduction
    reads the keys of the first microbatch from all of them)."""
    sums = microbatch_language_sums(per_token_loss.view(loss_mask.shape), loss_mask, dataset_id, len(languages))
    total = sums[1].sum()
    out: dict[str, torch.Tensor] = {}
    for i, lang in enumerate(languages):
        out[loss_key(lang)] = torch.stack([sums[0, i], sums[1, i]]).float()
        out[share_key(lang)] = torch.stack([sums[1, i], total]).float()
    return out


def _with_language_entries(loss_fn, loss_mask: torch.Tensor, dataset_id: torch.Tensor, languages: Sequence[str],
                           output_tensor: torch.Tensor):
    loss, num_tokens, report = loss_fn(output_tensor)
    per_token = output_tensor[0] if isinstance(output_tensor, tuple) else output_tensor
    ids = torch.as_tensor(dataset_id).long().view(-1).to(per_token.device)
    return loss, num_tokens, {**report, **language_entries(per_token, loss_mask.to(per_token.device), ids, languages)}


def _loss_mask_of(loss_fn: Any) -> torch.Tensor:
    """Bridge's loss function is ``partial(masked_next_token_loss, loss_mask, ...)``: its first bound argument."""
    args = getattr(loss_fn, "args", ())
    if not args or not isinstance(args[0], torch.Tensor):
        raise TypeError("Megatron-Bridge's forward_step no longer returns partial(masked_next_token_loss, loss_mask, ...); "
                        "nemo-mlsl's per-language validation needs updating for this Bridge version")
    return args[0]


def computes_loss(model: Any) -> bool:
    """Whether this model chunk is where Bridge computes the loss: the last pipeline stage (and, with virtual
    pipeline stages, the last chunk), as Bridge's ``get_batch`` decides where labels and loss mask are loaded."""
    from megatron.bridge.training.utils.flop_utils import get_model_chunk_vp_stage
    from megatron.bridge.training.utils.pg_utils import get_pg_collection
    from megatron.core.pipeline_parallel.utils import is_pp_last_stage, is_vp_last_stage
    from megatron.core.utils import get_model_config

    if not is_pp_last_stage(get_pg_collection(model).pp):
        return False
    vp_stage = get_model_chunk_vp_stage(model)
    return vp_stage is None or is_vp_last_stage(vp_stage=vp_stage,
                                                vp_size=get_model_config(model).virtual_pipeline_model_parallel_size)


class FamilyForwardStep:
    """``gpt_step.forward_step`` with per-language entries in evaluation; pass it to ``pretrain()``.

    ``languages`` are the validation blend's languages in ``dataset_id`` order. With ``validation`` (a
    ``FixedValidation``), evaluation reads the study's fixed validation set instead of Bridge's stream. A sample
    without a ``dataset_id`` (a one-language blend of Bridge's own) is language 0."""

    def __init__(self, languages: Sequence[str], validation: Any = None):
        self.languages = list(languages)
        self.validation = validation

    def __call__(self, state, data_iterator, model, return_schedule_plan: bool = False):
        from megatron.bridge.training.gpt_step import forward_step

        evaluating = not model.training and not return_schedule_plan
        if evaluating and self.validation is not None:
            data_iterator = self.validation.iterator(state, model)
        tap = _Tap(data_iterator) if data_iterator is not None else None
        output, loss_fn = forward_step(state, tap if tap is not None else data_iterator, model, return_schedule_plan)
        if not evaluating or tap is None or not computes_loss(model):
            return output, loss_fn  # training, or a stage without labels and loss mask: Bridge's own
        ids = tap.dataset_id
        if ids is None:
            if len(self.languages) != 1:
                raise ValueError("a validation batch without dataset_id on a blend of several languages")
            ids = torch.zeros(output.shape[0], dtype=torch.long)
        return output, partial(_with_language_entries, loss_fn, _loss_mask_of(loss_fn), ids, self.languages)


def language_sums(total_loss_dict: Mapping[str, Any], languages: Sequence[str]) -> np.ndarray | None:
    """``[languages, 2]`` (loss sum, tokens) up to a common factor, from Bridge's reduced evaluation dict (the
    mean loss and token share of each language); None where the entries are absent (not the last stage)."""
    if not total_loss_dict or loss_key(languages[0]) not in total_loss_dict:
        return None
    out = np.zeros((len(languages), 2))
    for i, lang in enumerate(languages):
        mean, share = float(total_loss_dict[loss_key(lang)]), float(total_loss_dict[share_key(lang)])
        if share > 0 and math.isfinite(mean) and math.isfinite(share):
            out[i] = (mean * share, share)
    return out
