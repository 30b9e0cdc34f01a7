"""The one-shot GPU check of the NeMo path (``gpu/check.sh`` runs it on a lent GPU; docs/gpu.md has the figures).

Phases, each timed, each result or traceback written to ``$OUT/gpu_report.json`` as soon as it ends (so one
failure does not waste the GPU's time):

1. ``corpus``: synthetic 4-family corpus, prepared (SentencePiece, indexed data).
2. ``plugins``: three short ``atlas_s00`` runs with every plugin, the fitting callback and a results store
   included; asserts each run recorded (with its tags) and the TensorBoard scalars present
   (``val_family/*``, ``val_language/*``, ``mixture/*``, ``fit/*`` after the third run).
3. ``validation_cost``: validation wall time with and without the per-family callback.
4. ``throughput``: tokens/s and MFU of the largest rung that fits one GPU, with the layer implementation used.
5. ``schedule``: a 3-interval mixture schedule inside ``llm.pretrain`` on the GPU; asserts the record's intervals
   realise each interval's shares (the samples drawn, by ``dataset_id``) and ``schedule.json`` was written.
6. ``study``: the default study's ``--quick`` variant on the NeMo backend, if time remains.

``--dry`` builds every recipe and trainer of every phase without training (on any machine, no GPU).
"""

from __future__ import annotations

import json
import sys
import time

from check_common import (BUDGET_S, DRY, OUT, RATIOS, REPORT, ROOT, SMALL, T0, THROUGHPUT_OVERRIDES, THROUGHPUT_RUNG, WORK, corpus, log,
                          phase, save, scalars, throughput_figures)

import lightning.pytorch as pl


class Timer(pl.Callback):
    """Wall times of training steps and validation epochs (CUDA synchronised)."""

    def __init__(self):
        self.steps, self.vals, self._t, self._v = [], [], 0.0, 0.0

    @staticmethod
    def _sync() -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_batch_start(self, *a):
        self._t = time.perf_counter()

    def on_train_batch_end(self, *a):
        self._sync()
        self.steps.append(time.perf_counter() - self._t)

    def on_validation_epoch_start(self, *a):
        self._v = time.perf_counter()

    def on_validation_epoch_end(self, *a):
        self._sync()
        self.vals.append(time.perf_counter() - self._v)


def build(rung: str, tag: str, steps: int, overrides=(), ratios=RATIOS, store=None, family_cb=True, checkpoints=False,
          schedule=None):
    import nemo_run as run

    from mlsl_nemo.recipe import pretrain_recipe

    d = WORK / f"run_{tag}"
    r = pretrain_recipe(rung, str(WORK / "data"), ratios, num_nodes=1, num_gpus_per_node=1, dir=str(d), name=tag,
                        overrides=list(overrides), store=store, max_steps=steps, law="family_power", report_dir=str(WORK / "fit"),
                        record_extra={"purpose": "gpu-check"}, check_epochs=not DRY, schedule=schedule)
    if not family_cb:
        r.trainer.callbacks = [c for c in r.trainer.callbacks if "FamilyValidation" not in str(c.__fn_or_cls__)]
    r.trainer.callbacks.append(run.Config(Timer))
    if not checkpoints:
        r.trainer.enable_checkpointing = False
        r.log.ckpt = None
    return r, d


def execute(recipe):
    """Build and run in this process (one GPU); returns the trainer. In --dry, builds the trainer on the CPU only."""
    import fiddle as fdl

    if DRY:
        recipe.trainer.accelerator = "cpu"
        return fdl.build(recipe.trainer)
    fn = fdl.build(recipe)
    trainer = fn.keywords["trainer"]
    fn()
    return trainer


def plugins() -> dict:
    store = WORK / "results.jsonl"
    mixes = [RATIOS, {"amber": 0.1, "cobalt": 0.4, "jade": 0.2, "ruby": 0.3}, {"amber": 0.25, "cobalt": 0.25, "jade": 0.25, "ruby": 0.25}]
    out = {}
    for i, ratios in enumerate(mixes):
        recipe, d = build("atlas_s00", f"plugins{i}", 200, SMALL, ratios, store=str(store))
        trainer = execute(recipe)
        if DRY:
            continue
        timer = next(c for c in trainer.callbacks if isinstance(c, Timer))
        tags = scalars(d)
        out[f"run{i}"] = {"val_family": sorted(t for t in tags if t.startswith("val_family/")),
                          "mixture": {t: v[1] for t, v in tags.items() if t.startswith("mixture/") and t.endswith("/ratio")},
                          "fit": sorted(t for t in tags if t.startswith("fit/")), "val_loss": tags.get("val_loss"),
                          "step_s_median": sorted(timer.steps)[len(timer.steps) // 2] if timer.steps else None}
    if DRY:
        return {"built": len(mixes)}
    records = [json.loads(l) for l in store.read_text().splitlines()]
    assert [r["run_id"] for r in records] == [f"plugins{i}" for i in range(3)], records
    assert all(r["purpose"] == "gpu-check" and r["backend"] == "nemo" for r in records)
    assert len(out["run0"]["val_family"]) >= 8 and out["run0"]["mixture"], out["run0"]
    assert out["run2"]["fit"], "the fitting callback logged no fit/* scalars after the third run"
    out["records"] = [{k: r.get(k) for k in ("run_id", "N", "D", "family_loss", "realized_ratios", "transformer_impl")}
                      for r in records]
    return out


def validation_cost() -> dict:
    out = {}
    for tag, with_cb in (("with", True), ("without", False)):
        recipe, d = build("atlas_s00", f"val_{tag}", 200, SMALL, family_cb=with_cb)
        trainer = execute(recipe)
        if DRY:
            continue
        timer = next(c for c in trainer.callbacks if isinstance(c, Timer))
        out[tag] = {"validation_s": timer.vals, "val_loss": scalars(d).get("val_loss")}
    return out


def throughput() -> dict:
    recipe, d = build(THROUGHPUT_RUNG, "throughput", 25, THROUGHPUT_OVERRIDES)
    trainer = execute(recipe)
    if DRY:
        return {"rung": THROUGHPUT_RUNG}
    timer = next(c for c in trainer.callbacks if isinstance(c, Timer))
    return throughput_figures(timer.steps, getattr(trainer.lightning_module.config, "mlsl_transformer_impl", None))


def schedule() -> dict:
    """Three intervals of 40 steps, the ratios changing at each boundary, on the small rung."""
    steps = 120
    sched = {"intervals": [{"until_step": 40, "ratios": RATIOS},
                           {"until_step": 80, "ratios": {"amber": 0.1, "cobalt": 0.2, "jade": 0.3, "ruby": 0.4}},
                           {"until_step": steps, "ratios": {"amber": 0.25, "cobalt": 0.25, "jade": 0.25, "ruby": 0.25}}]}
    store = WORK / "schedule.jsonl"
    recipe, d = build("atlas_s00", "schedule", steps, SMALL, None, store=str(store), schedule=sched)
    trainer = execute(recipe)
    if DRY:
        return {"built": True, "intervals": len(sched["intervals"])}
    timer = next(c for c in trainer.callbacks if isinstance(c, Timer))
    rec = json.loads(store.read_text().splitlines()[-1])
    got = rec["schedule"]["intervals"]
    assert [(iv["start_step"], iv["until_step"]) for iv in got] == [(0, 40), (40, 80), (80, 120)], got
    worst = max(abs(iv["realized"][f] - iv["ratios"][f]) for iv in got for f in iv["ratios"])
    assert worst <= 4 / (40 * 32), f"an interval's realised share is {worst:.4f} off its target"
    written = sorted(str(p.relative_to(d)) for p in d.rglob("schedule.json"))
    assert written, f"no schedule.json under {d}"
    return {"intervals": got, "worst_share_error": worst, "schedule_json": written, "family_loss": rec["family_loss"],
            "step_s_median": sorted(timer.steps)[len(timer.steps) // 2] if timer.steps else None}


def study() -> dict:
    from mlsl_nemo.study import NeMoBackend
    from nemo_mlsl.study.backend import InlineLauncher
    from nemo_mlsl.study.config import load_study
    from nemo_mlsl.study.runner import Study

    cfg = load_study(ROOT / "studies" / "default.yaml", quick=True)
    s = Study(cfg, WORK / "study", NeMoBackend(), InlineLauncher(), progress=False)
    if DRY:
        return {"phase1": len(s.run(dry_run=True)["phase1"])}
    summary = s.run()
    return {k: summary[k] for k in ("gamma", "optimal_ratios", "law_mean_abs_error", "naive_mean_abs_error", "gains", "runs")}


def main() -> int:
    log("work dir", WORK, "report", OUT / "gpu_report.json")
    if not phase("corpus", corpus):
        return 1
    phase("plugins", plugins)
    phase("validation_cost", validation_cost)
    phase("throughput", throughput)
    phase("schedule", schedule)
    if DRY or time.time() - T0 < BUDGET_S - 150:
        phase("study", study)
    else:
        REPORT["phases"]["study"] = {"ok": None, "skipped": f"{time.time() - T0:.0f}s used of {BUDGET_S:.0f}s"}
        save()
    REPORT["seconds"] = round(time.time() - T0, 1)
    save()
    return 0 if all(p.get("ok") is not False for p in REPORT["phases"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
