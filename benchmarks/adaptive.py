"""What adapting the mixture during a run costs (issue #26): `mlsl train --adaptive ado` (or ``--policy law``) against the same run
without adaptation, on the same data, rung, steps and seed, measured in the same process.

Three runs, repeated ``--repeats`` times in alternating order (the best of each kept, as the runs differ only in what
is measured):
- ``static``: a fixed mixture, validating at the recipe's cadence (what a run without adaptation costs);
- ``static, validating every interval``: the same, validating at every boundary the adaptive run has;
- ``adaptive``: the policy's decisions at every boundary (``--policy``, default ``ado``: its fits and the building of each
  next interval).

The policy's overhead is adaptive / static-validating-every-interval (the same validations, the decisions added);
the policy's own seconds per training step come from the run's record (``adaptive.decision_s``, timed around each
decision), free of run-to-run noise. Adaptation as a whole (its extra validations too) is adaptive / static.

    python benchmarks/adaptive.py              # cpu_250k, 196 steps (the default study's confirmation run), interval 20
    python benchmarks/adaptive.py --steps 60   # shorter
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

from mlsl_lightning.train import TrainRequest, train
from nemo_mlsl.recipes import load
from train_cpu import synthetic_data

RATIOS = {"amber": 0.6, "cobalt": 0.25, "jade": 0.15}


class TrainTimer(pl.Callback):
    """Wall time from the first training batch to the end of the last step (validations inside it included)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not hasattr(self, "start"):
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self.end = time.perf_counter()


def one_run(kind: str, data: str, out: Path, rung: str, steps: int, interval: int, policy: str = "ado") -> dict[str, float]:
    timer = TrainTimer()
    over = [] if kind == "static" else [f"train.val_every={interval}"]
    extra = {"adaptive": policy, "interval": interval} if kind == "adaptive" else {}
    res = train(TrainRequest(rung, data, RATIOS, str(out), max_steps=steps, progress=False, overrides=over, law=None,
                             extra_callbacks=[timer], seed=0, **extra))
    secs = timer.end - timer.start
    row = {"seconds": secs, "per_step_s": secs / steps}
    if kind == "adaptive":
        row.update(decisions=res["adaptive"]["decisions"], decision_s=res["adaptive"]["decision_s"])
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rung", default="cpu_250k")
    ap.add_argument("--steps", type=int, default=196)
    ap.add_argument("--interval", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--policy", default="ado", help="the adaptive run's policy (the nemo_mlsl.policies registry)")
    a = ap.parse_args()
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    tmp = Path(tempfile.mkdtemp())
    data = synthetic_data(tmp)
    kinds = ["static", "static_val", "adaptive"]
    rows: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    for i in range(a.repeats):
        for kind in (kinds if i % 2 == 0 else kinds[::-1]):
            rows[kind].append(one_run(kind, data, tmp / f"{kind}{i}", a.rung, a.steps, a.interval, a.policy))
    best = {k: min(v, key=lambda r: r["seconds"]) for k, v in rows.items()}
    ad = best["adaptive"]
    t = load(a.rung).train
    print(f"{a.rung}, {a.steps} steps x {t.global_batch_size} x {t.seq_length} tokens, interval {a.interval} "
          f"({ad['decisions']} decisions), {torch.get_num_threads()} threads, best of {a.repeats}")
    print(f"static, validating every {t.val_every} steps:     {best['static']['per_step_s'] * 1000:8.1f} ms/step")
    print(f"static, validating every {a.interval} steps:       {best['static_val']['per_step_s'] * 1000:8.1f} ms/step")
    print(f"adaptive ({a.policy}), every {a.interval} steps:          {ad['per_step_s'] * 1000:8.1f} ms/step")
    print(f"policy overhead: adaptive / static with the same validations = {ad['seconds'] / best['static_val']['seconds']:.3f}")
    print(f"  the policy's own time (decisions and building the next intervals): {ad['decision_s']:.3f} s = "
          f"{1000 * ad['decision_s'] / a.steps:.2f} ms/step, {100 * ad['decision_s'] / ad['seconds']:.2f}% of the run")
    print(f"adaptation as a whole (its validations too): adaptive / static = {ad['seconds'] / best['static']['seconds']:.3f}")
    print(json.dumps({"best": best, "all": rows}))


if __name__ == "__main__":
    main()
