"""The one-shot GPU check of the Megatron-Bridge path (``gpu/check.sh --bridge`` runs it on a lent GPU, with the
wheels of ``make gpu-wheels-bridge``; docs/gpu.md has the figures).

Phases, each timed, each result or traceback written to ``$OUT/gpu_report.json`` as it ends:

1. ``corpus``: the synthetic 4-family corpus, prepared.
2. ``plugins``: three short ``atlas_s00`` runs, each the user's command ``mlsl train --backend bridge`` (a
   subprocess: Bridge's ``pretrain()`` owns the process group), with a results store; asserts each run recorded
   (tags, ``backend: bridge``) and the TensorBoard scalars (``val_family/*``, ``val_language/*``; ``fit/*`` after
   the third run) present.
3. ``adaptive``: ``mlsl train --backend bridge --adaptive ado --interval 50`` for 150 steps inside Bridge's own
   ``pretrain()``; asserts ``schedule.json`` holds the first interval and two decided by ``ado``, the record's
   ``adaptive`` field counts them, each interval realised its shares to within 0.02, and TensorBoard has the ratio
   trajectory (``schedule/<family>/ratio``).
4. ``throughput``: tokens/s and MFU of ``he2024_1b2`` on one GPU through Bridge, step times from a callback.

``--dry`` builds every run's ``ConfigContainer`` and has Bridge validate it, without training (any machine).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from check_common import (DRY, RATIOS, REPORT, SMALL, T0, THROUGHPUT_OVERRIDES, THROUGHPUT_RUNG, WORK, corpus, log, phase, save,
                          scalars, throughput_figures)

from mlsl_bridge.compat import ensure_importable  # noqa: E402

ensure_importable()  # first: Bridge imports without TransformerEngine

MIXES = [RATIOS, {"amber": 0.1, "cobalt": 0.4, "jade": 0.2, "ruby": 0.3}, {"amber": 0.25, "cobalt": 0.25, "jade": 0.25, "ruby": 0.25}]


def _request(rung: str, tag: str, steps: int, overrides, ratios=RATIOS, store=None, adaptive=None):
    from mlsl_bridge.train import BridgeRequest

    return BridgeRequest(rung, str(WORK / "data"), ratios, str(WORK / f"run_{tag}"), max_steps=steps, run_id=tag,
                         overrides=list(overrides), store=store, law="family_power", report_dir=str(WORK / "fit"),
                         num_nodes=1, gpus_per_node=1, extra_record={"purpose": "gpu-check"}, check_epochs=not DRY,
                         adaptive=adaptive)


def _dry(req) -> dict:
    from mlsl_bridge.recipe import validated
    from mlsl_bridge.train import build_run

    built = build_run(req)
    validated(built.run.config, 1)
    return {"steps": built.run.steps, "impl": built.run.impl}


def plugins() -> dict:
    store = WORK / "results.jsonl"
    steps = 200
    over = [*SMALL, "model.transformer_impl=auto"]
    out = {}
    for i, ratios in enumerate(MIXES):
        tag = f"plugins{i}"
        if DRY:
            out[tag] = _dry(_request("atlas_s00", tag, steps, over, ratios, str(store)))
            continue
        cmd = [sys.executable, "-m", "nemo_mlsl.cli", "train", "--backend", "bridge", "--recipe", "atlas_s00", "--data",
               str(WORK / "data"), "--ratios", ",".join(f"{k}={v}" for k, v in ratios.items()), "--out", str(WORK / f"run_{tag}"),
               "--max-steps", str(steps), "--run-id", tag, "--store", str(store), "--law", "family_power", "--report-dir",
               str(WORK / "fit"), "--gpus-per-node", "1", "--tag", "purpose=gpu-check", *over]
        t = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        (WORK / f"{tag}.log").write_text(proc.stdout + proc.stderr)
        assert proc.returncode == 0, proc.stderr[-4000:]
        tags = scalars(WORK / f"run_{tag}" / "tb")
        out[tag] = {"seconds": round(time.time() - t, 1), "val_family": sorted(t for t in tags if t.startswith("val_family/")),
                    "fit": sorted(t for t in tags if t.startswith("fit/")), "lm_loss": tags.get("lm loss validation")}
    if DRY:
        return out
    records = [json.loads(line) for line in store.read_text().splitlines()]
    assert [r["run_id"] for r in records] == [f"plugins{i}" for i in range(3)], records
    assert all(r["purpose"] == "gpu-check" and r["backend"] == "bridge" for r in records)
    assert len(out["plugins0"]["val_family"]) >= 12, out["plugins0"]
    assert out["plugins2"]["fit"], "the live fit logged no fit/* scalars after the third run"
    out["records"] = [{k: r.get(k) for k in ("run_id", "N", "D", "family_loss", "transformer_impl", "wall_time_s")} for r in records]
    return out


def adaptive() -> dict:
    steps, interval, tag = 150, 50, "adaptive"
    over = [*SMALL, "model.transformer_impl=auto"]
    if DRY:
        return _dry(_request("atlas_s00", tag, steps, over, adaptive={"policy": "ado", "interval": interval}))
    store = WORK / "adaptive.jsonl"
    cmd = [sys.executable, "-m", "nemo_mlsl.cli", "train", "--backend", "bridge", "--recipe", "atlas_s00", "--data",
           str(WORK / "data"), "--ratios", ",".join(f"{k}={v}" for k, v in RATIOS.items()), "--adaptive", "ado",
           "--interval", str(interval), "--out", str(WORK / f"run_{tag}"), "--max-steps", str(steps), "--run-id", tag,
           "--store", str(store), "--law", "none", "--gpus-per-node", "1", "--tag", "purpose=gpu-check", *over]
    t = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    (WORK / f"{tag}.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stderr[-4000:]
    saved = json.loads((WORK / f"run_{tag}" / "schedule.json").read_text())["intervals"]
    assert [(iv["start_step"], iv["until_step"], iv["reason"]) for iv in saved] == [(0, 50, "initial"), (50, 100, "ado"),
                                                                                    (100, 150, "ado")], saved
    (rec,) = [json.loads(line) for line in store.read_text().splitlines()]
    assert rec["adaptive"]["decisions"] == 2 and rec["backend"] == "bridge", rec.get("adaptive")
    for iv in rec["schedule"]["intervals"]:  # megatron's blend: each language within a sample of its target
        assert all(abs(iv["realized"][f] - iv["ratios"].get(f, 0.0)) <= 0.02 for f in iv["realized"]), iv
    tags = scalars(WORK / f"run_{tag}" / "tb")
    ratios = sorted(t for t in tags if t.startswith("schedule/"))
    assert ratios, "no schedule/<family>/ratio scalars"
    return {"seconds": round(time.time() - t, 1), "intervals": [{k: iv[k] for k in ("start_step", "until_step", "reason",
                                                                                    "ratios", "realized")} for iv in saved],
            "decision_s": rec["adaptive"]["decision_s"], "family_loss": rec["family_loss"], "schedule_scalars": ratios}


def throughput() -> dict:
    req = _request(THROUGHPUT_RUNG, "throughput", 25, [*THROUGHPUT_OVERRIDES, "train.val_every=1000", "model.transformer_impl=auto"])
    if DRY:
        return {"rung": THROUGHPUT_RUNG, **_dry(req)}
    import torch
    from megatron.bridge.training.callbacks import Callback

    from mlsl_bridge.compat import import_pretrain
    from mlsl_bridge.train import build_run

    class StepTimer(Callback):
        def __init__(self):
            self.steps, self._t = [], 0.0

        def on_train_step_start(self, context):
            self._t = time.perf_counter()

        def on_train_step_end(self, context):
            torch.cuda.synchronize()
            self.steps.append(time.perf_counter() - self._t)

    built = build_run(req)
    built.run.config.checkpoint.save = None  # timing only
    timer = StepTimer()
    import_pretrain()(built.run.config, built.forward_step, callbacks=[built.callback, timer])
    return throughput_figures(timer.steps, built.run.impl)


def main() -> int:
    log("work dir", WORK, "Megatron-Bridge check")
    REPORT["backend"] = "bridge"
    if not phase("corpus", corpus):
        return 1
    phase("plugins", plugins)
    phase("adaptive", adaptive)
    phase("throughput", throughput)
    REPORT["seconds"] = round(time.time() - T0, 1)
    save()
    return 0 if all(p.get("ok") is not False for p in REPORT["phases"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
