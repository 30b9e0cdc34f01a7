"""Per-language (loss sum, token count) sums of a microbatch, and reducing them across ranks (one all-reduce, one broadcast).

Data (and context) parallel ranks hold disjoint samples: sum over that group, never over tensor
parallel ranks (they hold identical losses). Under pipeline parallelism only the last stage holds
losses: broadcast its result over the pipeline group so the logging rank (global rank 0, on the
first stage) sees it. With no process group every call is the identity.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def reduce_language_sums(
    sums: torch.Tensor,
    dp_group: "dist.ProcessGroup | None" = None,
    pp_group: "dist.ProcessGroup | None" = None,
    pp_last_rank: int | None = None,
    on_last_stage: bool = True,
) -> torch.Tensor:
    """Sum ``sums`` over ``dp_group`` (on last-stage ranks), then broadcast from ``pp_last_rank`` over ``pp_group``."""
    if not (dist.is_available() and dist.is_initialized()):
        return sums
    out = sums.clone()
    if on_last_stage:
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=dp_group)
    if pp_group is not None and pp_last_rank is not None and dist.get_world_size(pp_group) > 1:
        dist.broadcast(out, src=pp_last_rank, group=pp_group)
    return out


def microbatch_language_sums(per_token_loss: torch.Tensor, loss_mask: torch.Tensor, dataset_id: torch.Tensor, n: int) -> torch.Tensor:
    """``[2, n]`` sums of masked token loss and token counts, indexed by ``dataset_id``."""
    loss, mask = per_token_loss.float(), loss_mask.float()
    out = torch.zeros(2, n, dtype=torch.float64, device=loss.device)
    ids = dataset_id.long().to(loss.device)
    out[0].index_add_(0, ids, (loss * mask).sum(-1).double())
    out[1].index_add_(0, ids, mask.sum(-1).double())
    return out
