"""The Megatron-Bridge backend plugin: ``mlsl train --backend bridge`` (Bridge's ``pretrain()``), ``mlsl recipes
build NAME --backend bridge`` (the validated ``ConfigContainer``, or a ``torchrun`` of that training command) and
the study's ``BridgeBackend``. Bridge lives in its own Python 3.12 environment (``make setup-bridge``)."""

from __future__ import annotations

import argparse

from nemo_mlsl.backends import BackendPlugin
from nemo_mlsl.errors import ConfigError


def _study(gpus_per_run: int, nodes_per_run: int):
    from mlsl_bridge.study import BridgeBackend

    return BridgeBackend(gpus_per_run=gpus_per_run, nodes_per_run=nodes_per_run)


def _train(a: argparse.Namespace) -> dict | None:
    from mlsl_bridge.train import BridgeRequest, train
    from nemo_mlsl.cli.common import adaptive_arg, ratios_arg, tags

    schedule = getattr(a, "schedule", None)
    record = train(BridgeRequest(
        recipe=a.recipe, data=a.data, ratios=None if schedule is not None else ratios_arg(a.ratios), out=a.out,
        schedule=schedule, adaptive=adaptive_arg(a), tokens=a.tokens, max_steps=a.max_steps, seed=a.seed,
        within=a.within, run_id=a.run_id, tb_root=a.tb_root, store=a.store, report_dir=a.report_dir,
        law=None if a.law == "none" else a.law, bootstrap=a.bootstrap, overrides=a.overrides, num_nodes=a.nodes,
        gpus_per_node=a.gpus_per_node, extra_record=tags(a.tag)))
    if record:
        print(f"recorded {record['run_id']} in {a.store}: N={record['N']:,} D={record['D']:,}")
    return record


def _build(a: argparse.Namespace) -> int:
    from mlsl_bridge import recipe as mod
    from nemo_mlsl.cli.common import adaptive_arg
    from nemo_mlsl.recipes import load

    schedule_file = getattr(a, "schedule", None)
    schedule = None
    if schedule_file is not None:
        from nemo_mlsl.data.schedule import MixtureSchedule

        if not a.data:
            raise ConfigError("--schedule needs the prepared data directory (--data DIR)")
        steps = load(a.name, a.overrides, num_nodes=a.nodes, gpus_per_node=a.gpus_per_node).train.resolved_max_steps
        schedule = MixtureSchedule.load(schedule_file, steps)
    build = lambda check: mod.bridge_run(a.name, a.data, a.ratios, within=a.within, num_nodes=a.nodes,  # noqa: E731
                                         num_gpus_per_node=a.gpus_per_node, dir=a.log_dir, overrides=a.overrides,
                                         check_epochs=check, validate=False, schedule=schedule,
                                         schedule_where=f"--schedule {str(schedule_file)!r}:", adaptive=adaptive_arg(a))
    mixture = ["--schedule", str(schedule_file)] if schedule is not None else ["--ratios", str(a.ratios)]
    if a.adaptive is not None:  # the run's own flags, as given (mlsl train checks them again)
        mixture += ["--adaptive", a.adaptive, "--interval", str(a.interval),
                    *[x for flag, v in (("--min-share", a.min_share), ("--smoothing", a.smoothing),
                                        ("--max-change", a.max_change)) if v is not None for x in (flag, str(v))]]
    if not a.dry_run:
        if not (a.data and (a.ratios or schedule is not None) and a.log_dir):
            raise ConfigError("mlsl recipes build --backend bridge without --dry-run trains: give --data, --ratios (or "
                              "--schedule) and --log-dir")
        if (a.nodes or 1) > 1:
            raise ConfigError("mlsl recipes build --backend bridge trains on this node only (--nodes 1); for several nodes "
                              "run `mlsl train --backend bridge` under your launcher or `mlsl study --executor slurm`")
        gpus = a.gpus_per_node or load(a.name, a.overrides).parallel.gpus_per_node
        build(True)  # refuse bad input before launching
        cmd = ["torchrun", f"--nproc-per-node={gpus}", "-m", "nemo_mlsl.cli", "train", "--backend", "bridge", "--recipe", a.name,
               "--data", a.data, *mixture, "--within", a.within, "--out", a.log_dir, "--nodes", "1", "--gpus-per-node", str(gpus),
               *(["--store", a.store] if a.store else []), *a.overrides]
        import subprocess

        return subprocess.call(cmd)
    warning = None
    try:
        run = build(True)
    except ConfigError as err:  # show the configuration anyway; the run itself would refuse to start
        run, warning = build(False), err
    p = run.recipe.parallel
    gpus = (a.nodes or p.num_nodes) * (a.gpus_per_node or p.gpus_per_node)
    checked = mod.validated(run.config, gpus)
    print(f"# Megatron-Bridge ConfigContainer for {run.recipe.name}: validated by Bridge for {gpus} GPU(s) "
          f"(TP={p.tensor_model_parallel_size}, PP={p.pipeline_model_parallel_size}, CP={p.context_parallel_size}); "
          f"{run.steps:,} steps; layers: {run.impl}")
    if run.blend is None:
        print("# no --data: Bridge's mock dataset and a null tokenizer stand in for the family blend (give --data DIR --ratios ...)")
    else:
        print(f"# family blend: {len(run.blend['train_languages'])} training prefixes, validation over "
              f"{len(run.blend['validation_languages'])} languages (dataset_id order: {', '.join(run.blend['validation_languages'])})")
    if run.adaptive is not None:
        st = run.adaptive
        print(f"# adaptive mixture: policy {st['policy']}, an interval every {st['interval']} steps from the first "
              f"interval's ratios (min share {st['min_share']:g}, smoothing {st['smoothing']:g}, max change "
              f"{st['max_change']:g}); Bridge evaluates every {run.config.validation.eval_interval} steps; the training set "
              "is decided interval by interval by mlsl_bridge.adaptive.AdaptiveMixtureCallback")
    elif run.scheduled is not None:
        spans = ", ".join(f"{iv.start_step}-{iv.until_step}" for iv in run.scheduled.schedule.intervals)
        print(f"# mixture schedule: {len(run.scheduled.schedule.intervals)} intervals (steps {spans}), the training set "
              "built by mlsl_bridge.schedule.ScheduledDataset")
    if warning:
        print(f"# warning: {warning}")
    print(mod.to_yaml(checked), end="")
    return 0


BACKEND = BackendPlugin(name="bridge", runs_label="Megatron-Bridge runs", study=_study, train=_train, build=_build,
                        requires=("megatron.bridge",),
                        missing="needs Megatron-Bridge, which lives in its own Python 3.12 environment: run `make setup-bridge` "
                                "once, then use .venv-bridge/bin/mlsl", schedules=True, build_schedules=True,
                        adaptive=True, build_adaptive=True)
