"""One fixed validation set for every run of a study: the same samples, in the same order, at every evaluation,
whatever the run's length, seed or batch size (the core's ``validation_set`` and ``ValidationWindow``; the CPU
Lightning data module; NeMo's data module). Bridge's side is in tests/test_bridge.py."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nemo_mlsl.data.blend import ValidationWindow, validation_batches, validation_set
from nemo_mlsl.data.manifest import Manifest

RATIOS = {"amber": 0.5, "cobalt": 0.3, "jade": 0.2}


def ids(samples) -> list[tuple]:
    """A sample's identity: its language and its tokens (two different samples never share both here)."""
    return [(int(s["dataset_id"]), tuple(torch.as_tensor(s["tokens"]).tolist())) for s in samples]


def batch_ids(batches) -> list[tuple]:
    out = []
    for b in batches:
        for i in range(len(b["tokens"])):
            out.append((int(b["dataset_id"][i]), tuple(torch.as_tensor(b["tokens"][i]).tolist())))
    return out


def test_the_window_is_the_set_padded_with_masked_samples(synth_data):
    m = Manifest.load(synth_data)
    fixed = validation_set(m, 5, 64)
    assert len(fixed) == 5 * len(m.languages)
    counts = np.bincount(np.asarray(fixed.dataset_index, dtype=np.int64), minlength=len(m.languages))
    assert counts.min() >= 4 and counts.max() <= 6  # megatron's blend draws the languages equally
    window = ValidationWindow(fixed, 8)  # 30 samples in batches of 8: 4 batches, 2 padding samples
    assert len(window) == validation_batches(30, 8) * 8 == 32
    assert ids(window[i] for i in range(30)) == ids(fixed[i] for i in range(30))
    for i in (30, 31):
        pad = window[i]
        assert float(pad["loss_mask"].sum()) == 0 and ids([pad]) == ids([fixed[i - 30]])
    assert float(window[0]["loss_mask"].sum()) > 0
    with pytest.raises(IndexError):
        window[32]


def test_the_set_depends_on_neither_the_run_seed_nor_the_run_length(synth_data):
    """The training blend follows the run's seed and length; the validation set follows neither."""
    from nemo_mlsl.data.blend import BlendConfig, FamilyBlend

    m = Manifest.load(synth_data)
    short = FamilyBlend(m, BlendConfig(RATIOS, seq_length=64, seed=1)).build(16, 6)
    long = FamilyBlend(m, BlendConfig(RATIOS, seq_length=64, seed=2)).build(640, 6)
    assert ids(short.train[i] for i in range(8)) != ids(long.train[i] for i in range(8))  # the run's own data order
    assert ids(short.validation[i] for i in range(36)) == ids(long.validation[i] for i in range(36))
    assert ids(short.validation[i] for i in range(36)) == ids(validation_set(m, 6, 64)[i] for i in range(36))


def test_cpu_runs_of_different_length_and_seed_validate_on_the_same_samples(synth_data):
    """The Lightning data module of two runs (10 and 200 steps, seeds 1 and 7): every validation pass reads the
    fixed set, in order, whole."""
    from mlsl_lightning.datamodule import FamilyBlendDataModule

    def passes(max_steps: int, seed: int) -> list[list[tuple]]:
        dm = FamilyBlendDataModule(str(synth_data), RATIOS, seq_length=64, micro_batch_size=4, global_batch_size=8,
                                   max_steps=max_steps, val_samples_per_language=5, seed=seed)
        return [batch_ids(dm.val_dataloader()) for _ in range(2)]  # two evaluations

    short, long = passes(10, 1), passes(200, 7)
    want = ids(validation_set(Manifest.load(synth_data), 5, 64))
    assert short[0] == short[1] == long[0] == long[1] == want and len(want) == 30


def test_nemo_runs_of_different_length_and_seed_validate_on_the_same_samples(synth_data):
    """NeMo's data module as the recipe builds it, for runs of 8 and 400 steps (seeds 1 and 9): the validation
    dataloader (NeMo's megatron sampler, restarted by Lightning at each evaluation) reads the fixed set padded to
    whole global batches; NeMo's own sizing by evaluation count is gone."""
    pytest.importorskip("nemo.collections.llm", reason="NeMo is installed by `make setup` (extra 'nemo')")
    import fiddle as fdl
    from megatron.core import parallel_state

    from mlsl_nemo.recipe import pretrain_recipe
    from nemo_mlsl.data.blend import one_process_group

    def evaluation(max_steps: int, seed: int) -> tuple[list[tuple], list[float]]:
        recipe = pretrain_recipe("atlas_s00", str(synth_data), RATIOS, num_gpus_per_node=1, check_epochs=False,
                                 max_steps=max_steps, seed=seed,
                                 overrides=["model.seq_length=64", "train.global_batch_size=16", "train.micro_batch_size=8",
                                            "train.val_samples_per_language=5", "train.val_every=4"])
        limit = recipe.trainer.limit_val_batches
        assert limit == validation_batches(30, 16) == 2
        dm = fdl.build(recipe.data)
        with one_process_group():
            dm.build(trainer_max_steps=max_steps, trainer_val_check_interval=4, trainer_limit_val_batches=limit,
                     trainer_limit_test_batches=limit)
            dm.trainer = SimpleNamespace(global_step=0)  # what NeMo's dataloader reads from Lightning's trainer
            parallel_state.initialize_model_parallel(1, 1)
            try:
                loader = dm.data_sampler.transform_dataloader(dm.val_dataloader())
            finally:
                parallel_state.destroy_model_parallel()
        batches = list(loader)[: limit * 2]  # limit global batches = limit x 2 micro-batches of 8
        return batch_ids(batches), [float(b["loss_mask"].sum(dim=1).min()) for b in batches]

    (short, short_mask), (long, long_mask) = evaluation(8, 1), evaluation(400, 9)
    want = ids(validation_set(Manifest.load(synth_data), 5, 64))
    assert short == long and short[:30] == want and len(short) == 32  # the set, then 2 padding samples
    assert short_mask == long_mask
