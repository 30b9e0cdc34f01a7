"""Training throughput of `mlsl train` vs a bare PyTorch loop over the same model and batches, and the cost
of per-family validation vs a plain mean-loss validation over the same tokens (same run, same machine)."""

import json
import logging
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

from mlsl_lightning.callbacks import FamilyValidationCallback
from mlsl_lightning.datamodule import FamilyBlendDataModule
from mlsl_lightning.model import CausalLM, lr_lambda, token_losses
from mlsl_lightning.train import TrainRequest, train
from nemo_mlsl.data.prepare import PrepareConfig, prepare
from nemo_mlsl.data.synth import SynthConfig, generate
from nemo_mlsl.recipes import load

RUNG, STEPS = "cpu_440k", 120
RATIOS = {"amber": 0.4, "cobalt": 0.3, "jade": 0.3}


def bare_loop(data: str) -> float:
    recipe = load(RUNG)
    t = recipe.train
    pl.seed_everything(0, verbose=False)
    dm = FamilyBlendDataModule(data, RATIOS, seq_length=t.seq_length, micro_batch_size=t.micro_batch_size,
                               global_batch_size=t.global_batch_size, max_steps=STEPS, val_samples_per_language=t.val_samples_per_language)
    dm.setup()
    model = CausalLM(recipe.model.to_dict(), dm.manifest.vocab_size, t.__dict__, STEPS)
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=(t.adam_beta1, t.adam_beta2), weight_decay=t.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(t, STEPS))
    batches = list(dm.train_dataloader())[:STEPS]
    start = time.perf_counter()
    for b in batches:
        losses = token_losses(model(b["tokens"]), b["labels"])
        loss = (losses * b["loss_mask"]).sum() / b["loss_mask"].sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        opt.step()
        sched.step()
    return STEPS * t.global_batch_size * t.seq_length / (time.perf_counter() - start)


def _timed_hooks(cb: pl.Callback, acc: dict) -> None:
    """Wrap the callback's validation hooks to time them (its own cost, free of run-to-run noise)."""
    for name in ("on_validation_epoch_start", "on_validation_batch_end", "on_validation_epoch_end"):
        fn = getattr(cb, name)

        def wrapped(*a, _fn=fn, **k):
            t = time.perf_counter()
            out = _fn(*a, **k)
            acc["hooks"] = acc.get("hooks", 0.0) + time.perf_counter() - t
            return out

        setattr(cb, name, wrapped)


def validation_times(data: str, repeats: int = 7) -> tuple[float, float, float]:
    recipe = load(RUNG)
    dm = FamilyBlendDataModule(data, RATIOS, seq_length=128, micro_batch_size=8, global_batch_size=8, max_steps=2,
                               val_samples_per_language=64)
    m = dm.manifest
    model = CausalLM(recipe.model.to_dict(), m.vocab_size, recipe.train.__dict__, 2)
    trainers = {}
    family_cb = FamilyValidationCallback(dm.validation_languages, {l: m.family_of(l) for l in m.languages}, m.bytes_per_token())
    hook_time: dict = {}
    for name, cbs in (("family", [family_cb]), ("plain", [])):
        trainers[name] = pl.Trainer(accelerator="cpu", logger=False, callbacks=cbs, enable_progress_bar=False,
                                    enable_checkpointing=False, enable_model_summary=False)
        trainers[name].validate(model, datamodule=dm, verbose=False)  # warm-up
    _timed_hooks(family_cb, hook_time)
    times = {name: [] for name in trainers}
    for i in range(repeats):  # alternate which goes first, keep the best of each: they differ only by the callback
        for name, trainer in (list(trainers.items()) if i % 2 else list(trainers.items())[::-1]):
            start = time.perf_counter()
            trainer.validate(model, datamodule=dm, verbose=False)
            times[name].append(time.perf_counter() - start)
    return min(times["plain"]), min(times["family"]), hook_time["hooks"] / repeats


class TrainTimer(pl.Callback):
    """Wall time of the training steps alone (first batch start to last batch end)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not hasattr(self, "start"):
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.end = time.perf_counter()


def synthetic_data(tmp: Path) -> str:
    """The benchmarks' corpus: 3 synthetic families x 2 languages, prepared under ``tmp``; its data directory."""
    generate(SynthConfig(families=3, languages_per_family=2, docs=600, seed=0), tmp / "raw")
    prepare(PrepareConfig(inputs=[str(tmp / "raw")], out=str(tmp / "data"), families_yaml=str(tmp / "raw/families.yaml"),
                          vocab_size=512, progress=False))
    return str(tmp / "data")


def main() -> None:
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    tmp = Path(tempfile.mkdtemp())
    data = synthetic_data(tmp)
    timer = TrainTimer()
    res = train(TrainRequest(RUNG, data, RATIOS, str(tmp / "run"), max_steps=STEPS, progress=False, overrides=[f"train.val_every={STEPS}"],
                             extra_callbacks=[timer]))
    t = load(RUNG).train
    mlsl_tps = res["D"] / (timer.end - timer.start)
    mlsl_e2e = res["D"] / res["wall_time_s"]  # also building the blend, the final per-family validation and checkpointing
    bare_tps = bare_loop(data)
    plain, family, hooks = validation_times(data)
    print(f"{RUNG}, {STEPS} steps x {t.global_batch_size} x {t.seq_length} tokens, {torch.get_num_threads()} threads")
    print(f"mlsl train, training steps (Lightning, all callbacks):     {mlsl_tps:9,.0f} tokens/s")
    print(f"mlsl train end to end (+ blend build, validation, checkpoint): {mlsl_e2e:6,.0f} tokens/s")
    print(f"bare PyTorch loop, same model and batches:                  {bare_tps:9,.0f} tokens/s")
    print(f"ratio mlsl / bare: {mlsl_tps / bare_tps:.2f}  (target >= 0.9)")
    print(f"validation: plain mean loss {plain * 1000:.0f} ms, per-family {family * 1000:.0f} ms, ratio {family / plain:.3f}  (target <= 1.05)")
    print(f"  of which the per-family callback's own hooks: {hooks * 1000:.1f} ms = {1 + hooks / plain:.3f}x of plain validation")
    print(json.dumps({"mlsl_tokens_s": mlsl_tps, "mlsl_end_to_end_tokens_s": mlsl_e2e, "bare_tokens_s": bare_tps, "val_plain_s": plain, "val_family_s": family, "hooks_s": hooks}))


if __name__ == "__main__":
    main()
