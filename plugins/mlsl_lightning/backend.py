"""The CPU backend plugin: ``mlsl train`` on the Lightning CPU path, and the study's ``CPUBackend``."""

from __future__ import annotations

import argparse
from pathlib import Path

from nemo_mlsl.backends import BackendPlugin


def _study(gpus_per_run: int, nodes_per_run: int):
    from mlsl_lightning.study_backend import CPUBackend

    return CPUBackend()


def _train(a: argparse.Namespace) -> dict:
    from mlsl_lightning.train import TrainRequest, train
    from nemo_mlsl.cli.common import ratios_arg, tags

    result = train(TrainRequest(recipe=a.recipe, data=a.data, ratios=ratios_arg(a.ratios), schedule=a.schedule, adaptive=a.adaptive,
                                interval=a.interval, out=a.out, **{k: getattr(a, k) for k in ('min_share', 'smoothing', 'max_change') if getattr(a, k) is not None}, overrides=a.overrides,
                                within=a.within, max_steps=a.max_steps, tokens=a.tokens, seed=a.seed, resume=a.resume,
                                init_from=a.init_from, normalize=a.normalize, store=a.store, law=None if a.law == "none" else a.law,
                                run_id=a.run_id, tb_root=a.tb_root, report_dir=a.report_dir, bootstrap=a.bootstrap,
                                progress=not a.no_progress, extra_record=tags(a.tag)))
    print(f"wrote {Path(a.out) / 'result.json'}: N={result['N']:,} D={result['D']:,}")
    for fam, loss in result["family_loss"].items():
        print(f"  {fam:<16} loss {loss:.4f}  bpb {result['family_bpb'][fam]:.4f}")
    for iv in result.get("schedule", {}).get("intervals", []):
        fams = sorted({*iv["ratios"], *iv.get("realized", {})})
        shares = "  ".join(f"{f} {iv['ratios'].get(f, 0.0):.4f}/{iv.get('realized', {}).get(f, 0.0):.4f}" for f in fams)
        print(f"  steps {iv['start_step']}-{iv['until_step']} ({iv['reason']}): target/realized {shares}")
    return result


BACKEND = BackendPlugin(name="cpu", runs_label="runs", study=_study, train=_train, requires=("lightning",),
                        missing="needs Lightning: pip install -e '.[cpu]' (make setup does)", schedules=True, adaptive=True)
