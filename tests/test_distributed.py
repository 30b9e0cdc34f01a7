"""Per-language sums reduced over gloo process groups equal the single-process computation."""

import json

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nemo_mlsl.distributed import reduce_language_sums
from nemo_mlsl.metrics import family_metrics

LANGS = ["qaa", "qab", "qac", "qad", "qae"]
FAMILY = {"qaa": "x", "qab": "x", "qac": "y", "qad": "y", "qae": "z"}
BPT = {l: 1.5 + i * 0.5 for i, l in enumerate(LANGS)}


def samples(seed=0, n=64):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, len(LANGS), n)
    tokens = rng.integers(10, 33, n).astype(float)
    loss = tokens * rng.uniform(1.0, 4.0, n)
    return ids, loss, tokens


def local_sums(ids, loss, tokens):
    s = torch.zeros(len(LANGS), 2, dtype=torch.float64)
    s[:, 0].index_add_(0, torch.as_tensor(ids), torch.as_tensor(loss))
    s[:, 1].index_add_(0, torch.as_tensor(ids), torch.as_tensor(tokens))
    return s


def _worker(rank, world, pp, init, out):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    dp = world // pp
    stage, dp_rank = divmod(rank, dp)
    dp_groups = [dist.new_group([s * dp + d for d in range(dp)]) for s in range(pp)]
    pp_groups = [dist.new_group([s * dp + d for s in range(pp)]) for d in range(dp)]
    ids, loss, tokens = samples()
    last = stage == pp - 1
    # data parallel: each DP rank sees every dp-th sample; only the last pipeline stage holds losses
    mine = slice(dp_rank, None, dp)
    sums = local_sums(ids[mine], loss[mine], tokens[mine]) if last else torch.zeros(len(LANGS), 2, dtype=torch.float64)
    red = reduce_language_sums(sums, dp_groups[stage], pp_groups[dp_rank] if pp > 1 else None,
                               (pp - 1) * dp + dp_rank if pp > 1 else None, on_last_stage=last)
    if rank == 0:  # the logging rank sits on the first stage
        with open(out, "w") as fh:
            json.dump(family_metrics(red.numpy(), LANGS, FAMILY, BPT), fh)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.parametrize("world,pp", [(2, 1), (4, 1), (4, 2)])
def test_reduction_matches_single_process(tmp_path, world, pp):
    out = tmp_path / "m.json"
    mp.spawn(_worker, args=(world, pp, f"file://{tmp_path}/rdzv", str(out)), nprocs=world, join=True)
    got = json.loads(out.read_text())
    want = family_metrics(local_sums(*samples()).numpy(), LANGS, FAMILY, BPT)
    for kind in ("families", "languages"):
        assert got[kind].keys() == want[kind].keys()
        for name in want[kind]:
            for metric in ("loss", "bpb", "ppl", "tokens"):
                assert got[kind][name][metric] == pytest.approx(want[kind][name][metric], rel=1e-12)


def test_family_metrics_by_hand():
    sums = np.array([[20.0, 10.0], [30.0, 10.0], [8.0, 4.0]])
    m = family_metrics(sums, ["a", "b", "c"], {"a": "f", "b": "f", "c": "g"}, {"a": 2.0, "b": 4.0, "c": 1.0})
    assert m["families"]["f"]["loss"] == pytest.approx(2.5)  # token-weighted: 50 / 20
    assert m["families"]["f"]["bpb"] == pytest.approx(50 / np.log(2) / (10 * 2 + 10 * 4))
    assert m["languages"]["c"]["ppl"] == pytest.approx(np.exp(2.0))
    assert "g" in m["families"] and m["families"]["g"]["tokens"] == 4
