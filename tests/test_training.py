"""The CPU training path: result records, per-family validation, TensorBoard tags and resume."""

import json
import math

import lightning.pytorch as pl
import pytest
import torch

from mlsl_lightning.callbacks import FamilyValidationCallback
from mlsl_lightning.datamodule import FamilyBlendDataModule
from mlsl_lightning.model import CausalLM, token_losses
from mlsl_lightning.train import TrainRequest, train
from nemo_mlsl.data.manifest import Manifest
from nemo_mlsl.errors import ConfigError
from nemo_mlsl.recipes import load

RATIOS = {"amber": 0.5, "cobalt": 0.3, "jade": 0.2}


def test_short_run_writes_result_metrics_and_tensorboard(synth_data, tmp_path):
    res = train(TrainRequest("cpu_100k", str(synth_data), RATIOS, str(tmp_path / "run"), max_steps=12,
                             overrides=["train.val_every=6"], progress=False))
    on_disk = json.loads((tmp_path / "run" / "result.json").read_text())
    assert on_disk == json.loads(json.dumps(res))
    m = Manifest.load(synth_data)
    assert set(res["family_loss"]) == set(m.families) and set(res["language_loss"]) == set(m.languages)
    assert all(math.isfinite(v) and 0 < v < 10 for v in [*res["family_loss"].values(), *res["language_loss"].values()])
    t = load("cpu_100k").train
    assert res["D"] == 12 * t.global_batch_size * t.seq_length and res["steps"] == 12 and res["ratios"] == RATIOS
    assert res["N"] == load("cpu_100k").params(m.vocab_size).non_embedding
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["step"] for l in lines] == [6, 12]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "run" / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for fam in m.families:
        assert {f"val_family/{fam}/loss", f"val_family/{fam}/bpb", f"mixture/{fam}/ratio"} <= tags
    assert {f"val_language/{l}/loss" for l in m.languages} <= tags


def test_callback_equals_direct_computation(synth_data):
    recipe = load("cpu_100k")
    pl.seed_everything(0)
    dm = FamilyBlendDataModule(str(synth_data), RATIOS, seq_length=64, micro_batch_size=8, global_batch_size=8, max_steps=2,
                               val_samples_per_language=6)
    m = dm.manifest
    model = CausalLM(recipe.model.to_dict(), m.vocab_size, recipe.train.__dict__, 2)
    cb = FamilyValidationCallback(dm.validation_languages, {l: m.family_of(l) for l in m.languages}, m.bytes_per_token())
    trainer = pl.Trainer(accelerator="cpu", logger=False, callbacks=[cb], enable_progress_bar=False, enable_checkpointing=False)
    trainer.validate(model, datamodule=dm, verbose=False)
    # direct: every validation sample, its own language, token-weighted means
    sums = {l: [0.0, 0.0] for l in m.languages}
    model.eval()
    with torch.no_grad():
        for i in range(len(dm.built.validation)):
            s = dm.built.validation[i]
            lang = dm.validation_languages[int(s["dataset_id"])]
            losses = token_losses(model(s["tokens"][None]), s["labels"][None])[0]
            sums[lang][0] += float((losses * s["loss_mask"]).sum())
            sums[lang][1] += float(s["loss_mask"].sum())
    for lang, (loss, n) in sums.items():
        assert cb.last["languages"][lang]["loss"] == pytest.approx(loss / n, rel=1e-5)
    for fam, langs in m.families.items():
        want = sum(sums[l][0] for l in langs) / sum(sums[l][1] for l in langs)
        assert cb.last["families"][fam]["loss"] == pytest.approx(want, rel=1e-5)


class Recorder(pl.Callback):
    def __init__(self, stop_at=None):
        self.seen, self.stop_at = {}, stop_at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen[trainer.global_step] = batch["tokens"][:, :6].tolist()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.stop_at is not None and trainer.global_step >= self.stop_at:
            raise KeyboardInterrupt


def test_resume_continues_from_the_checkpoint_with_the_same_data_order(synth_data, tmp_path):
    kw = dict(max_steps=10, overrides=["train.val_every=4"], progress=False, seed=5)
    full = Recorder()
    ref = train(TrainRequest("cpu_100k", str(synth_data), RATIOS, str(tmp_path / "full"), extra_callbacks=[full], **kw))
    first = Recorder(stop_at=6)
    with pytest.raises((KeyboardInterrupt, RuntimeError, SystemExit)):
        train(TrainRequest("cpu_100k", str(synth_data), RATIOS, str(tmp_path / "cut"), extra_callbacks=[first], **kw))
    assert (tmp_path / "cut" / "checkpoints" / "last.ckpt").exists() and not (tmp_path / "cut" / "result.json").exists()
    with pytest.raises(ConfigError, match="--resume"):
        train(TrainRequest("cpu_100k", str(synth_data), RATIOS, str(tmp_path / "cut"), **kw))
    second = Recorder()
    res = train(TrainRequest("cpu_100k", str(synth_data), RATIOS, str(tmp_path / "cut"), resume=True, extra_callbacks=[second], **kw))
    assert min(second.seen) == 4  # resumed from the step-4 checkpoint
    for step, batch in second.seen.items():
        assert batch == full.seen[step]
    assert res["steps"] == 10
    for fam, loss in ref["family_loss"].items():
        assert res["family_loss"][fam] == pytest.approx(loss, rel=1e-4)


def test_bad_ratios_fail_before_training(synth_data, tmp_path):
    with pytest.raises(ConfigError, match="unknown family 'omega'"):
        train(TrainRequest("cpu_100k", str(synth_data), {"amber": 0.5, "omega": 0.5}, str(tmp_path / "r"), max_steps=2, progress=False))
    with pytest.raises(ConfigError, match="unknown recipe 'cpu_huge'"):
        train(TrainRequest("cpu_huge", str(synth_data), RATIOS, str(tmp_path / "r"), max_steps=2, progress=False))


def test_init_from_starts_a_finetuning_run_from_the_base_weights(synth_data, tmp_path):
    base = train(TrainRequest("cpu_100k", str(synth_data), RATIOS, str(tmp_path / "base"), max_steps=10,
                              overrides=["train.val_every=4"], progress=False))
    # lr 0: the finetuning run's first validation must be the base run's final one (the last weights, not step 8's)
    frozen = train(TrainRequest("cpu_100k", str(synth_data), {"amber": 1.0}, str(tmp_path / "frozen"), max_steps=2,
                                init_from=str(tmp_path / "base"), progress=False,
                                overrides=["train.val_every=1", "train.lr=0", "train.min_lr=0", "train.schedule=constant"]))
    first = json.loads((tmp_path / "frozen" / "metrics.jsonl").read_text().splitlines()[0])
    for lang, loss in base["language_loss"].items():
        assert first["language_loss"][lang] == pytest.approx(loss, rel=1e-6)
    assert frozen["init_from"].endswith("last.ckpt") and frozen["steps"] == 2
    tuned = train(TrainRequest("cpu_100k", str(synth_data), {"amber": 1.0}, str(tmp_path / "tuned"), max_steps=6,
                               init_from=str(tmp_path / "base" / "checkpoints" / "last.ckpt"), progress=False,
                               overrides=["train.val_every=3", "train.lr=1e-3", "train.schedule=constant", "train.warmup_steps=0"]))
    assert tuned["family_loss"]["amber"] < base["family_loss"]["amber"]
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(TrainRequest("cpu_100k", str(synth_data), RATIOS, str(tmp_path / "x"), max_steps=2, init_from=str(tmp_path / "nope"),
                           progress=False))
    with pytest.raises(ConfigError, match="checkpoint's model"):
        train(TrainRequest("cpu_15k", str(synth_data), RATIOS, str(tmp_path / "y"), max_steps=2, init_from=str(tmp_path / "base"),
                           progress=False))
