"""``mlsl train``: one run with per-family validation, on the backend that ``--backend`` names."""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

from nemo_mlsl.backends import BACKENDS, backend
from nemo_mlsl.cli.parser import non_negative_int, positive_int
from nemo_mlsl.errors import ConfigError


def check_outputs(a: argparse.Namespace) -> None:
    """Every path the run writes can be written, before anything trains (the refit after the run never fails it, so a
    bad --report-dir would otherwise pass unnoticed)."""
    from nemo_mlsl.outputs import output_dir, output_file

    if a.store and not Path(a.store).is_dir():  # a study directory stands for its results.jsonl
        output_file(a.store, "--store")
    if a.report_dir:
        output_dir(a.report_dir, "--report-dir")
    if a.tb_root:
        output_dir(a.tb_root, "--tb-root")


def run_lock(a: argparse.Namespace) -> contextlib.AbstractContextManager:
    """The run directory, held for the run (one process per run: a second `mlsl train --out` there is refused). Under
    torchrun every rank runs this command: rank 0 holds it for them all."""
    from nemo_mlsl.dirlock import hold

    rank = os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or "0"
    return hold(a.out, "--out") if rank.strip() in ("", "0") else contextlib.nullcontext()


def cmd_train(a: argparse.Namespace) -> int:
    if a.law != "none":  # the refit after the run: an unknown law is refused before training, not after
        from nemo_mlsl.fitting.lawfit import make_law

        make_law(a.law)
    plugin = backend(a.backend)
    plugin.supports("train")
    if (a.ratios is None) == (a.schedule is None):
        raise ConfigError("give the run's family ratios (--ratios fam=p,...) or a mixture schedule (--schedule FILE), "
                          + ("not both" if a.ratios else "one of them"))
    if a.adaptive is None:
        given = [f for f, v in (("--interval", a.interval), ("--min-share", a.min_share), ("--smoothing", a.smoothing),
                                            ("--max-change", a.max_change))
                 if v is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} set(s) an --adaptive run; give --adaptive POLICY (e.g. ado) or leave "
                              f"{given[0]} out")
    for flag, given, can, what in (("--schedule", a.schedule, "schedules", "a mixture schedule"),
                                   ("--adaptive", a.adaptive, "adaptive", "an adaptive mixture")):
        if given is not None and not getattr(plugin, can):
            able = [n for n in BACKENDS.names() if getattr(backend(n, check=False), can)]
            raise ConfigError(f"--backend {a.backend} does not train {what} yet; {flag} trains on: {', '.join(able)} "
                              "(or give --ratios)")
    check_outputs(a)
    with run_lock(a):
        plugin.train(a)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("train", help="train one run with per-family validation (CPU Lightning, or Megatron-Bridge on GPUs)")
    s.set_defaults(func=cmd_train)
    s.add_argument("--backend", choices=BACKENDS.names(), default="cpu",
                   help="cpu: the Lightning CPU path; bridge: Megatron-Bridge's pretrain() (GPUs; one process per GPU under "
                        "torchrun); any backend registered under the 'nemo_mlsl.backends' entry points that can train one run")
    s.add_argument("--nodes", type=positive_int, help="bridge: nodes of the run (default: the recipe's)")
    s.add_argument("--gpus-per-node", type=positive_int, help="bridge: GPUs per node (default: the recipe's)")
    s.add_argument("--recipe", required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--ratios", help="family ratios fam=p,... for the whole run (or --schedule)")
    s.add_argument("--schedule", metavar="FILE", help="a mixture schedule (YAML or JSON): ratios that change at step "
                                                      "boundaries, 'intervals: [{until_step: S, ratios: {fam: p}}, ...]' "
                                                      "(docs/howto.md, 'A mixture that changes during the run')")
    s.add_argument("--adaptive", metavar="POLICY", help="a mixture that adapts during the run: POLICY (e.g. ado, from the "
                                                        "'nemo_mlsl.policies' entry points) decides each next interval's "
                                                        "ratios from the run's validation history; --ratios is the first")
    s.add_argument("--interval", type=positive_int, metavar="STEPS", help="with --adaptive: the steps of each interval")
    s.add_argument("--min-share", type=float, help="with --adaptive: every family's least share (default 0.02)")
    s.add_argument("--smoothing", type=float, help="with --adaptive: weight of the previous ratios in the next (default 0.5)")
    s.add_argument("--max-change", type=float, help="with --adaptive: the most one decision moves the ratios, as a total "
                                                    "variation 1/2 sum|next - previous| in (0, 1] (default 1: no limit)")
    s.add_argument("--out", required=True)
    s.add_argument("--within", default="natural")
    s.add_argument("--max-steps", type=int)
    s.add_argument("--tokens", type=float)
    s.add_argument("--seed", type=non_negative_int, default=1234)
    s.add_argument("--resume", action="store_true")
    s.add_argument("--init-from", help="finetune: start from this run directory's (or .ckpt file's) weights, with a fresh "
                                       "optimizer and schedule; tokens are counted from the start of the finetuning")
    s.add_argument("--normalize", action="store_true")
    s.add_argument("--store", help="results store to append to (refits and reports after the run)")
    s.add_argument("--law", default="joint_family", help="law the fitting callback refits after the run ('none': record only)")
    s.add_argument("--bootstrap", type=non_negative_int, default=50, help="bootstrap replicates of that refit")
    s.add_argument("--report-dir", help="where the refit writes its report (default: beside the store, fit/)")
    s.add_argument("--run-id", help="the record's run_id (default: the --out directory's name)")
    s.add_argument("--tb-root", help="shared TensorBoard root (logs go to TB_ROOT/RUN_ID)")
    s.add_argument("--tag", action="append", metavar="KEY=VALUE", help="extra record field (repeatable), e.g. purpose=design")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("overrides", nargs="*", help="recipe overrides key=value (e.g. train.lr=1e-3)")
