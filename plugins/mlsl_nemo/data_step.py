"""``family_gpt_data_step``: NeMo's ``gpt_data_step`` that keeps each sample's ``dataset_id``.

NeMo sets every extra batch key to ``None`` and slices sequence tensors for context parallelism;
``dataset_id`` is per sample (``[micro_batch]``), so it is put back after that slicing. Install with
``GPTConfig(data_step_fn=family_gpt_data_step)``.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch


def _raw_batch(item: Any) -> Any:
    return item[0] if isinstance(item, tuple) and len(item) == 3 else item


def restore_dataset_id(out: dict, dataset_id: Any, device: torch.device | None = None) -> dict:
    if dataset_id is not None:
        ids = torch.as_tensor(dataset_id).long()
        out["dataset_id"] = ids.to(device, non_blocking=True) if device is not None else ids
    return out


def family_gpt_data_step(dataloader_iter: Iterator, use_mtp: bool = False) -> dict[str, Any]:
    from nemo.collections.llm.gpt.model.base import gpt_data_step

    item = next(dataloader_iter)
    raw = _raw_batch(item)
    ds_id = raw.get("dataset_id") if isinstance(raw, dict) else None
    out = gpt_data_step(iter([item]), use_mtp=use_mtp)
    device = next((v.device for v in out.values() if isinstance(v, torch.Tensor)), None)
    return restore_dataset_id(out, ds_id, device)
