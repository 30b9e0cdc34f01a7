"""``mlsl study --backend nemo``: the study's plan as NeMo-Run experiments of the ladder recipes.

Phase 1 (design, independence, repeats) is known before any training; phase 2 (the largest rung at
the optimum and the baselines) is planned after the fit, exactly as on the CPU backend. ``--dry-run``
prints every run's NeMo configuration without a GPU; otherwise each run is launched in order through
NeMo-Run's local executor, appending its record to the study's results store (the fitting callback).
"""

from __future__ import annotations

from pathlib import Path

from nemo_mlsl.study.config import StudyConfig
from nemo_mlsl.study.runner import Study


def print_nemo_plan(cfg: StudyConfig, out: Path, dry_run: bool = True) -> int:
    from mlsl_nemo.recipe import pretrain_recipe
    from nemo_mlsl.recipes import load

    plan = Study(cfg, out, None, progress=False).run(dry_run=True)
    data = str(plan["manifest"].root)
    recipes = []
    for run in plan["phase1"]:
        t = load(run.rung).train
        steps = t.steps_for(run.tokens)
        recipes.append((run, pretrain_recipe(run.rung, data, run.ratios, dir=str(out / "nemo"), name=run.run_id,
                                             store=str(out / "results.jsonl"), seed=run.seed, max_steps=steps,
                                             num_gpus_per_node=1 if run.rung.startswith("cpu") else None)))
    print(f"study {cfg.name}: {len(recipes)} phase-1 NeMo runs (phase 2 is planned after the fit)")
    for run, recipe in recipes:
        print(f"  {run.run_id:<44} {run.rung:<10} max_steps={recipe.trainer.max_steps:<7} "
              f"TP={recipe.trainer.strategy.tensor_model_parallel_size} PP={recipe.trainer.strategy.pipeline_model_parallel_size} "
              f"GPUs={recipe.trainer.devices}x{recipe.trainer.num_nodes}")
    if dry_run:
        print("\nfirst run's configuration:")
        print(recipes[0][1])
        return 0
    import nemo_run as run

    with run.Experiment(f"mlsl-{cfg.name}", base_dir=str(out / "nemo")) as exp:
        for planned, recipe in recipes:
            exp.add(recipe, executor=run.LocalExecutor(ntasks_per_node=recipe.trainer.devices, launcher="torchrun"),
                    name=planned.run_id)
        exp.run(sequential=True)
    print(f"phase 1 done; run `mlsl study --config {cfg.source} --out {out} --backend nemo` again for phase 2 and the report")
    return 0
