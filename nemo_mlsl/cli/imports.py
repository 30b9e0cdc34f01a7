"""``mlsl import-runs``: run records from published run sets (CSV pairs, olmix swarms, Megatron TensorBoard logs)."""

from __future__ import annotations

import argparse

from nemo_mlsl.cli.common import ratios_arg
from nemo_mlsl.errors import ConfigError


def _records(a: argparse.Namespace, warnings: list[str], notes: list[str]) -> list[dict]:
    if a.format == "csv":
        from nemo_mlsl.importers.csv_pair import CsvPairSpec, import_csv_pair

        if not a.shares or not a.losses:
            raise ConfigError("import-runs csv needs --shares FILE and --losses FILE")
        spec = CsvPairSpec(a.shares, a.losses, index=a.index or "index", share_pattern=a.share_pattern,
                           loss_pattern=a.loss_pattern, N=a.N, D=a.D, N_column=a.N_column, D_column=a.D_column,
                           ignore=[c for c in (a.ignore or "").split(",") if c], run_prefix=a.run_prefix, warnings=warnings, notes=notes)
        return import_csv_pair(spec)
    if a.format == "olmix":
        from nemo_mlsl.importers.olmix import import_olmix

        if not a.swarm or a.N is None or a.D is None:
            raise ConfigError("import-runs olmix needs --swarm DIR (ratios.csv, metrics.csv) and the runs' --N and --D")
        return import_olmix(a.swarm, a.N, a.D, metric_pattern=a.loss_pattern, domain_pattern=a.share_pattern, warnings=warnings,
                            notes=notes)
    from nemo_mlsl.importers.tensorboard import import_tensorboard, runs_table

    if not a.logdirs:
        raise ConfigError("import-runs tensorboard needs one or more run log directories")
    if a.runs_table:
        table = runs_table(a.runs_table, index=a.index or "run", share_pattern=a.share_pattern, N=a.N, D=a.D,
                           N_column=a.N_column or "N", D_column=a.D_column or "D")
    elif a.ratios and a.N is not None and a.D is not None and len(a.logdirs) == 1:
        from pathlib import Path

        table = {Path(a.logdirs[0]).name: {"ratios": ratios_arg(a.ratios), "N": a.N, "D": a.D}}
    else:
        raise ConfigError("give each run's shares, N and D: --runs-table CSV (a row per log directory name), or for one "
                          "run --ratios fam=p,... --N --D")
    return import_tensorboard(a.logdirs, table, name_pattern=a.name_pattern, warnings=warnings, notes=notes)


def cmd_import_runs(a: argparse.Namespace) -> int:
    from pathlib import Path

    from nemo_mlsl.outputs import output_file
    from nemo_mlsl.results import ResultsStore

    if not Path(a.out).is_dir():  # (a study directory stands for its results.jsonl)
        output_file(a.out, "--out")  # before anything is read
    warnings: list[str] = []
    notes: list[str] = []
    recs = _records(a, warnings, notes)
    store = ResultsStore(a.out)
    added = store.extend(recs)
    families = {f for r in recs for f in r["ratios"]}
    trained = sorted({f for r in recs for f, p in r["ratios"].items() if p > 0})
    evaluated = sorted({f for r in recs for f in r["family_loss"]})
    print(f"imported {added} of {len(recs)} runs ({len(recs) - added} already there) -> {store.path}")
    print(f"  {len(trained)} families trained on, {len(evaluated)} evaluated: {shown(evaluated)}")
    strangers = [t for t in evaluated if t not in families]
    if strangers:
        from nemo_mlsl.laws.base import whole_mixture_laws

        print(f"  {len(strangers)} of the {len(evaluated)} targets are no training family: they are predicted from the whole "
              f"mixture ({', '.join(whole_mixture_laws())})")
    for note in notes:
        print(f"  {note}")
    if warnings:
        print(f"  warning: {len(warnings)} run(s) had shares summing to 1 only within 1%, renormalized (first: {warnings[0]})")
    return 0


def shown(names: list[str], first: int = 12) -> str:
    return ", ".join(names[:first]) + (f" and {len(names) - first} more" if len(names) > first else "")


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("import-runs", help="run records from published run sets: csv (shares + losses), olmix, tensorboard")
    s.set_defaults(func=cmd_import_runs)
    s.add_argument("format", choices=["csv", "olmix", "tensorboard"])
    s.add_argument("logdirs", nargs="*", help="tensorboard: the runs' log directories (a run is named by its directory)")
    s.add_argument("--out", required=True, help="results store to append to (results.jsonl)")
    s.add_argument("--shares", help="csv: shares per run")
    s.add_argument("--losses", help="csv: losses per run")
    s.add_argument("--swarm", help="olmix: directory with ratios.csv and metrics.csv")
    s.add_argument("--runs-table", help="tensorboard: CSV with a row per run (shares, N, D)")
    s.add_argument("--index", help="the column naming the runs (csv: default 'index'; tensorboard table: 'run')")
    s.add_argument("--share-pattern", default=r"(?P<family>.+)", help="regex over share columns; group 'family' names the family")
    s.add_argument("--loss-pattern", default=r"(?P<family>.+)", help="regex over loss (olmix: metric) columns")
    s.add_argument("--name-pattern", default=r"(?P<family>.+)", help="tensorboard: regex over validation-set names")
    s.add_argument("--ignore", help="csv: comma-separated columns that are neither shares nor losses")
    s.add_argument("--N", type=float, help="model size of every run (else --N-column)")
    s.add_argument("--D", type=float, help="training tokens of every run (else --D-column)")
    s.add_argument("--N-column", dest="N_column")
    s.add_argument("--D-column", dest="D_column")
    s.add_argument("--ratios", help="tensorboard, one run: its shares fam=p,...")
    s.add_argument("--run-prefix", default="", help="prefix for run ids (keeps several sets apart in one store)")
