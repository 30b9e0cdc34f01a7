"""``mlsl``: the command line. Thin: parse, call the core (or a plugin), print."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from nemo_mlsl.errors import ConfigError, MLSLError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    COMMANDS[fn.__name__.removeprefix("cmd_").replace("_", "-")] = fn
    return fn


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=float))


def _ratios_arg(text: str | None) -> dict[str, float] | None:
    from nemo_mlsl.mixtures import parse_ratios

    return parse_ratios(text) if text else None


@command
def cmd_synth(a: argparse.Namespace) -> int:
    from nemo_mlsl.data.synth import SynthConfig, generate

    fams = generate(SynthConfig(families=a.families, languages_per_family=a.languages_per_family, docs=a.docs,
                                transfer=a.transfer, seed=a.seed), a.out)
    print(f"wrote {sum(map(len, fams.values()))} languages in {len(fams)} families to {a.out} (families.yaml beside them)")
    return 0


@command
def cmd_prepare(a: argparse.Namespace) -> int:
    if a.indexed:
        from nemo_mlsl.data.from_indexed import IndexedConfig, prepare_indexed

        if not a.tokenizer:
            raise ConfigError("--indexed needs the --tokenizer the data was made with (a SentencePiece .model, or a "
                              "Hugging Face tokenizer.json or directory)")
        if a.input:
            raise ConfigError("give either --input (text to tokenize) or --indexed (existing .bin/.idx data), not both")
        m = prepare_indexed(IndexedConfig(spec=a.indexed, tokenizer=a.tokenizer, out=a.out, families_yaml=a.families,
                                          eod_token=a.eod_token, val_docs=a.val_docs, seed=a.seed, force=a.force), log=print)
    else:
        from nemo_mlsl.data.prepare import PrepareConfig, prepare

        if not a.input:
            raise ConfigError("give --input DIR|FILE ... (text) or --indexed SPEC.yaml (existing Megatron .bin/.idx data)")
        m = prepare(PrepareConfig(inputs=a.input, out=a.out, families_yaml=a.families, vocab_size=a.vocab_size,
                                  tokenizer=a.tokenizer, eod_token=a.eod_token, val_docs=a.val_docs, workers=a.workers, seed=a.seed,
                                  force=a.force, character_coverage=a.character_coverage, text_field=a.text_field,
                                  progress=not a.no_progress))
    tok = m.family_tokens("train")
    print(f"{m.root}: {len(m.languages)} languages, {len(tok)} families, vocab {m.vocab_size} ({m.tokenizer_kind})")
    for fam, n in tok.items():
        print(f"  {fam:<16} {n:>12,} train tokens  ({', '.join(m.families[fam])})")
    return 0


@command
def cmd_blend(a: argparse.Namespace) -> int:
    from nemo_mlsl.data.blend import BlendConfig, FamilyBlend
    from nemo_mlsl.data.manifest import Manifest
    from nemo_mlsl.mixtures import MixtureContext, compute_mixture

    m = Manifest.load(a.data)
    ratios = _ratios_arg(a.ratios)
    if ratios is None:
        ratios = compute_mixture(a.mixture, MixtureContext(m.family_tokens(), budget=a.samples * a.seq_length))
    blend = FamilyBlend(m, BlendConfig(ratios, a.within, a.seq_length, a.seed, a.max_epochs, a.normalize))
    audit = blend.build(a.samples, 1).audit()
    if a.json:
        _print_json({"families": audit["families"], "languages": audit["languages"]})
        return 0
    print(f"{audit['samples']} samples x {audit['seq_length']} tokens")
    print(f"{'family':<16}{'target':>9}{'realized':>10}{'tokens':>12}{'epochs':>8}")
    for fam, f in audit["families"].items():
        print(f"{fam:<16}{f['target']:>9.4f}{f['realized']:>10.4f}{f['tokens']:>12,}{f['epochs']:>8.2f}")
    print(f"{'language':<16}{'target':>9}{'realized':>10}{'tokens':>12}{'epochs':>8}")
    for lang, l in audit["languages"].items():
        print(f"{lang:<16}{l['target']:>9.4f}{l['realized']:>10.4f}{l['tokens']:>12,}{l['epochs']:>8.2f}")
    return 0


def _tags(items: Sequence[str] | None) -> dict[str, Any]:
    """``--tag key=value`` → record fields (values parsed as JSON where they are JSON: numbers, true, null)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--tag {item!r} must look like key=value (e.g. purpose=design)")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _bridge(module: str) -> Any:
    """An ``mlsl_bridge`` module; a named error where Megatron-Bridge is not installed (its own environment)."""
    import importlib
    import importlib.util

    if importlib.util.find_spec("megatron") is None or importlib.util.find_spec("megatron.bridge") is None:
        raise ConfigError("--backend bridge needs Megatron-Bridge, which lives in its own Python 3.12 environment: "
                          "run `make setup-bridge` once, then use .venv-bridge/bin/mlsl")
    return importlib.import_module(module)


def _train_bridge(a: argparse.Namespace) -> int:
    mod = _bridge("mlsl_bridge.train")
    record = mod.train(mod.BridgeRequest(
        recipe=a.recipe, data=a.data, ratios=_ratios_arg(a.ratios), out=a.out, tokens=a.tokens, max_steps=a.max_steps, seed=a.seed,
        within=a.within, run_id=a.run_id, tb_root=a.tb_root, store=a.store, report_dir=a.report_dir,
        law=None if a.law == "none" else a.law, bootstrap=a.bootstrap, overrides=a.overrides, num_nodes=a.nodes,
        gpus_per_node=a.gpus_per_node, extra_record=_tags(a.tag)))
    if record:
        print(f"recorded {record['run_id']} in {a.store}: N={record['N']:,} D={record['D']:,}")
    return 0


@command
def cmd_train(a: argparse.Namespace) -> int:
    if a.backend == "bridge":
        return _train_bridge(a)
    from mlsl_lightning.train import TrainRequest, train

    result = train(TrainRequest(recipe=a.recipe, data=a.data, ratios=_ratios_arg(a.ratios), out=a.out, overrides=a.overrides,
                                within=a.within, max_steps=a.max_steps, tokens=a.tokens, seed=a.seed, resume=a.resume,
                                init_from=a.init_from, normalize=a.normalize, store=a.store, law=None if a.law == "none" else a.law,
                                run_id=a.run_id, tb_root=a.tb_root, report_dir=a.report_dir, bootstrap=a.bootstrap,
                                progress=not a.no_progress, extra_record=_tags(a.tag)))
    print(f"wrote {Path(a.out) / 'result.json'}: N={result['N']:,} D={result['D']:,}")
    for fam, loss in result["family_loss"].items():
        print(f"  {fam:<16} loss {loss:.4f}  bpb {result['family_bpb'][fam]:.4f}")
    return 0


def _records(path: str, dedupe: bool) -> list[dict]:
    from nemo_mlsl.results import ResultsStore

    store = ResultsStore(path)
    if not store.path.exists():
        raise ConfigError(f"--runs {path!r}: no results store there ({store.path} does not exist); give a results.jsonl "
                          "or a study directory that holds one")
    return store.read(dedupe=dedupe)


@command
def cmd_fit(a: argparse.Namespace) -> int:
    from nemo_mlsl.analysis import fit_and_report

    rep = fit_and_report(_records(a.runs, a.dedupe), a.out, law=a.law, bootstrap=a.bootstrap, seed=a.seed,
                         holdout=a.holdout, objective=a.objective)
    doc = rep.doc
    print(f"fitted {doc['law']} to {doc['n_runs']} runs -> {a.out}/fit.json, report.md")
    for w in doc.get("warnings", []):
        print(f"  warning: {w}")
    for fam, entry in doc["families"].items():
        g = entry["params"].get("gamma")
        ci = entry["ci"].get("gamma")
        print(f"  {fam:<16}" + (f" gamma {g:.4f}" if g is not None else "") + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""))
    ov = doc["metrics"]["in_sample"]["overall"]
    print(f"  in-sample R2 {ov['r2']:.4f}  MAPE {ov['mape']:.2f}%")
    if "holdout" in doc["metrics"]:
        h = doc["metrics"]["holdout"]["overall"]
        print(f"  held-out ({a.holdout}) R2 {h['r2']:.4f}  MAPE {h['mape']:.2f}%")
    return 0


@command
def cmd_optimize(a: argparse.Namespace) -> int:
    from nemo_mlsl.data.blend import DEFAULT_MAX_EPOCHS
    from nemo_mlsl.fitting import load_fit_doc
    from nemo_mlsl.optimize import optimal_from_fit

    doc = load_fit_doc(a.fit)
    min_ratio: Any = float(a.min_ratio) if a.min_ratio and "=" not in a.min_ratio else (_ratios_arg(a.min_ratio) or 0.0)
    caps = None
    if a.data:
        from nemo_mlsl.data.manifest import Manifest
        from nemo_mlsl.mixtures import data_caps

        if a.D is None:
            raise ConfigError("--data caps the ratios at max_epochs x tokens / D: give the token budget --D")
        caps = data_caps(Manifest.load(a.data).family_languages(), a.D, a.max_epochs or DEFAULT_MAX_EPOCHS, a.within)
    elif a.max_epochs is not None:
        raise ConfigError("--max-epochs needs --data DIR (the prepared data whose token counts the caps come from)")
    out = optimal_from_fit(doc, N=a.N, D=a.D, objective=a.objective, weights=_ratios_arg(a.weights), min_ratio=min_ratio,
                           caps=caps)
    if a.json:
        _print_json(out)
        return 0
    print(f"optimal ratios ({out['objective']}, law {out['law']}, N={out['N']}, D={out['D']}):")
    for fam, p in out["ratios"].items():
        ci = out.get("ci", {}).get(fam)
        cap = (out.get("caps") or {}).get(fam)
        binds = fam in out.get("binding_caps", [])
        print(f"  {fam:<16} {p:.4f}" + (f"  [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
              + (f"  data cap {cap:.4f}" + (" (binding)" if binds else "") if cap is not None else ""))
    return 0


@command
def cmd_report(a: argparse.Namespace) -> int:
    from nemo_mlsl.analysis import fit_and_report

    rep = fit_and_report(_records(a.runs, a.dedupe), a.out, law=a.law, bootstrap=a.bootstrap, seed=a.seed)
    print(f"wrote {', '.join(rep.files)} to {a.out}")
    return 0


def study_backend(name: str, executor) -> Any:
    if name == "bridge":
        return _bridge("mlsl_bridge.study").BridgeBackend(gpus_per_run=executor.gpus_per_run, nodes_per_run=executor.nodes_per_run)
    if name == "nemo":
        from mlsl_nemo.study import NeMoBackend

        return NeMoBackend(gpus_per_run=executor.gpus_per_run, nodes_per_run=executor.nodes_per_run)
    from mlsl_lightning.study_backend import CPUBackend

    return CPUBackend()


def study_launcher(executor, out: Path, title: str) -> Any:
    from nemo_mlsl.study.backend import InlineLauncher

    if executor.type == "inline":
        return InlineLauncher()
    from mlsl_nemo.launcher import NeMoRunLauncher

    return NeMoRunLauncher(executor, out / "jobs", title=title)  # (NeMo-Run mangles paths with a "nemo_run" component)


@command
def cmd_study(a: argparse.Namespace) -> int:
    from nemo_mlsl.study.config import load_study, with_executor
    from nemo_mlsl.study.runner import Study, run_specs

    cfg = with_executor(load_study(a.config, quick=a.quick), type=a.executor, max_parallel=a.max_parallel)
    out = Path(a.out).resolve()  # jobs on other nodes and in other working directories see the same paths
    backend = study_backend(a.backend, cfg.executor)
    study = Study(cfg, out, backend, study_launcher(cfg.executor, out, f"mlsl-{cfg.name}"), progress=not a.no_progress)
    if a.dry_run:
        plan = study.run(dry_run=True)
        runs = plan["phase1"]
        what = {"nemo": "NeMo runs", "bridge": "Megatron-Bridge runs"}.get(a.backend, "runs")
        print(f"study {cfg.name}: {len(runs)} phase-1 {what} on the {a.backend} backend, executor {cfg.executor.type} "
              f"(at most {cfg.executor.max_parallel} in flight); phase 2, the largest rung at the optimum and baselines, "
              "is planned after the fit")
        for r in runs:
            print(f"  {r.run_id:<44} {r.rung:<9} N={r.N:>10,} D={r.tokens:>10,} " + " ".join(f"{f}={p:.3f}" for f, p in r.ratios.items()))
        spec = run_specs(runs[:1], out, plan["manifest"], law=cfg.law, within=cfg.within)[0]
        print(f"\nfirst run ({spec.run_id}):")
        print(backend.describe(spec))
        return 0
    s = study.run(resume=a.resume)
    print()
    print(f"Report: {out / 'report.md'}  (figures beside it; TensorBoard: tensorboard --logdir {out / 'tb'})")
    print("gamma per family: " + ", ".join(f"{f} {g:.3f}" for f, g in s["gamma"].items()))
    print("optimal ratios:   " + ", ".join(f"{f} {p:.3f}" for f, p in s["optimal_ratios"].items()))
    if s.get("binding_caps"):
        print("data caps binding at the optimum: " + ", ".join(f"{f} <= {s['data_caps'][f]:.3f}" for f in s["binding_caps"]))
    c = s["comparison"].get("optimal")
    if c:
        print(f"largest rung {s['confirm_rung']} at the optimum, predicted vs observed loss:")
        for f in c["observed"]:
            print(f"  {f:<10} predicted {c['predicted'][f]:.4f}  observed {c['observed'][f]:.4f}  |error| {c['abs_error'][f]:.4f}")
    for name, g in s["gains"].items():
        print(f"gain over {name} (its total loss minus the optimum's): {g['difference']:+.4f} ({100 * g['relative']:+.2f}%): {g['verdict']}")
    return 0


def _recipe_row(name: str) -> dict[str, Any]:
    from nemo_mlsl.recipes import load

    r = load(name)
    vocab = r.vocab_size or r.paper.get("vocab_size")
    counts = r.params(vocab) if vocab else None
    p, m = r.parallel, r.model
    return {
        "name": r.name, "source": r.source, "params": r.paper.get("params", counts.total if counts else None),
        "model_params": counts.total if counts else None, "non_embedding_params": counts.non_embedding if counts else None,
        "num_layers": m.num_layers, "hidden_size": m.hidden_size, "num_attention_heads": m.num_attention_heads,
        "ffn_hidden_size": m.ffn_hidden_size, "kv_channels": m.head_dim, "vocab_size": vocab,
        "tensor_model_parallel_size": p.tensor_model_parallel_size, "pipeline_model_parallel_size": p.pipeline_model_parallel_size,
        "global_batch_size": r.train.global_batch_size,
        "tokens": r.train.resolved_max_steps * r.train.global_batch_size * r.train.seq_length,
    }


@command
def cmd_recipes(a: argparse.Namespace) -> int:
    from nemo_mlsl.recipes import available, load

    if a.action == "list":
        rows = sorted((_recipe_row(n) for n in available()), key=lambda r: (r["source"], r["non_embedding_params"] or 0))
        if a.json:
            _print_json(rows)
            return 0
        print(f"{'name':<14}{'source':<8}{'params':>15}{'as built':>15}{'non-emb N':>15}{'L':>4}{'d':>6}{'heads':>6}{'TP':>4}{'PP':>4}{'tokens':>17}")
        for r in rows:
            print(f"{r['name']:<14}{r['source']:<8}{r['params'] or 0:>15,}{r['model_params'] or 0:>15,}{r['non_embedding_params'] or 0:>15,}"
                  f"{r['num_layers']:>4}{r['hidden_size']:>6}{r['num_attention_heads']:>6}{r['tensor_model_parallel_size']:>4}"
                  f"{r['pipeline_model_parallel_size']:>4}{r['tokens']:>17,}")
        return 0
    if not a.name:
        raise ConfigError(f"mlsl recipes {a.action} needs a recipe NAME")
    if a.action == "show":
        r = load(a.name, a.overrides)
        print(f"# {r.path}")
        _print_json({**r.to_dict(), "counts": _recipe_row(a.name)})
        return 0
    if a.backend == "bridge":
        return _build_bridge(a)
    from mlsl_nemo.recipe import pretrain_recipe

    build = lambda check: pretrain_recipe(a.name, a.data, a.ratios, within=a.within, num_nodes=a.nodes,  # noqa: E731
                                          num_gpus_per_node=a.gpus_per_node, dir=a.log_dir, overrides=a.overrides, store=a.store,
                                          check_epochs=check)
    if a.dry_run:
        try:
            recipe = build(True)
        except ConfigError as err:  # show the configuration anyway; the run itself would refuse to start
            recipe = build(False)
            print(f"# warning: {err}")
        print(recipe)
        return 0
    recipe = build(True)
    import nemo_run as run

    executor = run.LocalExecutor(ntasks_per_node=a.gpus_per_node or load(a.name).parallel.gpus_per_node, launcher="torchrun")
    run.run(recipe, executor=executor, name=a.name)
    return 0


def _build_bridge(a: argparse.Namespace) -> int:
    """``mlsl recipes build NAME --backend bridge``: the validated ``ConfigContainer`` (``--dry-run``), or a
    ``torchrun`` of ``mlsl train --backend bridge`` on this node's GPUs."""
    from nemo_mlsl.recipes import load

    mod = _bridge("mlsl_bridge.recipe")
    build = lambda check: mod.bridge_run(a.name, a.data, a.ratios, within=a.within, num_nodes=a.nodes,  # noqa: E731
                                         num_gpus_per_node=a.gpus_per_node, dir=a.log_dir, overrides=a.overrides,
                                         check_epochs=check, validate=False)
    if not a.dry_run:
        if not (a.data and a.ratios and a.log_dir):
            raise ConfigError("mlsl recipes build --backend bridge without --dry-run trains: give --data, --ratios and --log-dir")
        if (a.nodes or 1) > 1:
            raise ConfigError("mlsl recipes build --backend bridge trains on this node only (--nodes 1); for several nodes "
                              "run `mlsl train --backend bridge` under your launcher or `mlsl study --executor slurm`")
        gpus = a.gpus_per_node or load(a.name, a.overrides).parallel.gpus_per_node
        build(True)  # refuse bad input before launching
        cmd = ["torchrun", f"--nproc-per-node={gpus}", "-m", "nemo_mlsl.cli", "train", "--backend", "bridge", "--recipe", a.name,
               "--data", a.data, "--ratios", a.ratios, "--within", a.within, "--out", a.log_dir, "--nodes", "1", "--gpus-per-node", str(gpus),
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
    if warning:
        print(f"# warning: {warning}")
    print(mod.to_yaml(checked), end="")
    return 0


@command
def cmd_transfer(a: argparse.Namespace) -> int:
    from nemo_mlsl import transfer, transfer_study

    if a.action == "show":
        langs, mat = transfer.published_matrix()
        out = Path(a.out or ".")
        out.mkdir(parents=True, exist_ok=True)
        transfer.heatmap(langs, mat, out / "transfer_published.png", "ATLAS measured BTS\n(row: target, column: source)")
        from nemo_mlsl.families import FamilyMap

        summary = transfer.summarize_matrix(langs, mat, {l: FamilyMap.builtin().family_of(l) for l in langs})
        if a.json:
            _print_json({"languages": langs, "bts": [[None if v != v else v for v in row] for row in mat.tolist()], **summary})
            return 0
        print("ATLAS Bilingual Transfer Scores, measured 9x9 block (rows: target, columns: source)")
        print("       " + "".join(f"{l:>6}" for l in langs))
        for l, row in zip(langs, mat):
            print(f"{l:>6} " + "".join("     -" if v != v else f"{v:>+6.1f}" for v in row))
        print(f"symmetry (Pearson r, A->B vs B->A): {summary['symmetry_pearson_r']:+.2f}; within-family mean "
              f"{summary['family']['within_mean']:+.2f}, across-family mean {summary['family']['across_mean']:+.2f}")
        print(f"heatmap: {out / 'transfer_published.png'}")
        return 0
    if a.action == "design":
        from nemo_mlsl.recipes import load

        tokens = int(a.tokens)
        langs = [l.strip() for l in a.languages.split(",") if l.strip()]
        pairs = [tuple(p.split("-")) for p in a.pairs.split(",")] if a.pairs else None
        n = load(a.rung).params(a.vocab_size).non_embedding
        runs = transfer_study.design(langs, a.rung, tokens, n, pairs, a.seeds)
        transfer_study.write_design(Path(a.out), runs, langs)
        print(f"wrote {Path(a.out) / 'plan.json'} ({len(runs)} runs) and {Path(a.out) / 'families.yaml'}")
        print(f"next: mlsl prepare --input TEXT --families {Path(a.out) / 'families.yaml'} --out {Path(a.out) / 'data'}")
        print(f"      mlsl transfer run --runs {a.out} --data {Path(a.out) / 'data'}")
        return 0
    if a.action == "run":
        from nemo_mlsl.data.manifest import Manifest
        from nemo_mlsl.recipes import load
        from nemo_mlsl.study.plan import load_runs
        from nemo_mlsl.study.runner import execute

        study = Path(a.runs)
        runs = load_runs(study / "plan.json")
        # Constant LR (a curve read mid-run must not depend on where the run ends) and one validation
        # every d_mono/16 tokens in every run, so the bilingual curves are as finely sampled as the monolingual.
        d_mono = min(r.tokens for r in runs)
        over = {r.run_id: ["train.schedule=constant",
                           f"train.val_every={max(1, load(r.rung).train.steps_for(d_mono) // a.evals)}"] for r in runs}
        from mlsl_lightning.study_backend import CPUBackend

        execute(runs, study, Manifest.load(a.data), CPUBackend(progress=not a.no_progress), law=None, overrides=over)
        print(f"trained {len(runs)} runs; score them with: mlsl transfer score --runs {study}")
        return 0
    if a.action == "fas":
        if not (a.base and a.finetuned):
            raise ConfigError("transfer fas needs --base RUN (the checkpoint's run) and --finetuned RUN [RUN ...]")
        out = Path(a.out or Path(a.base).parent / "fas")
        doc = transfer_study.score_finetuning(Path(a.base), [Path(d) for d in a.finetuned], out)
        print(f"wrote {out / 'fas.json'} and fas.png (rows: target, columns: source; > 0: finetuning on the source helps)")
        print("        " + "".join(f"{s:>9}" for s in doc["sources"]))
        for t, row in zip(doc["targets"], doc["fas"]):
            print(f"{t:>8}" + "".join(f"{v:>+9.3f}" for v in row))
        return 0
    family_of = None
    if a.families:
        from nemo_mlsl.families import FamilyMap

        family_of = dict(FamilyMap.from_yaml(a.families).table)
    doc = transfer_study.score(Path(a.runs), a.d_mono_fraction, a.bootstrap, family_of=family_of)
    print(f"wrote {Path(a.runs) / 'transfer.json'} and transfer.png (rows: target, columns: source)")
    for p in doc["synergistic"][:3]:
        print(f"  most synergistic:  {p['source']} -> {p['target']}  BTS {p['bts']:+.3f}")
    for p in doc["interfering"][:3]:
        print(f"  most interfering:  {p['source']} -> {p['target']}  BTS {p['bts']:+.3f}")
    for c in doc["censored"]:
        print(f"  {c['source']} -> {c['target']}: the bilingual run never reached the monolingual loss; its BTS is an "
              "upper bound (train bilingual runs longer to measure it)")
    fam = doc.get("family") or {}
    if fam.get("within_mean") is not None and fam.get("across_mean") is not None:
        print(f"  within-family mean BTS {fam['within_mean']:+.3f}, across-family {fam['across_mean']:+.3f}")
    return 0


@command
def cmd_plan_languages(a: argparse.Namespace) -> int:
    from nemo_mlsl.multilinguality import CapacityLaw, from_records

    if a.from_ <= 0 or a.to <= 0:
        raise ConfigError(f"--from and --to are numbers of languages and must be > 0; got --from {a.from_:g} --to {a.to:g}")
    law = CapacityLaw.paper() if not a.fit else from_records(_records(a.fit, False))
    r = a.to / a.from_
    m = law.multipliers(r)
    if a.plot:
        import numpy as np

        import matplotlib.pyplot as plt

        from nemo_mlsl.plots import save

        s = np.geomspace(max(1.0, m["N"] * 0.6), m["N"] * 4, 200)
        t = law.frontier(r, s)
        fig, ax = plt.subplots(figsize=(4.6, 4))
        ax.plot(s, t * r, label=f"iso-loss frontier, K {a.from_:g} -> {a.to:g}")
        ax.scatter([m["N"]], [m["D_total"]], color="k", zorder=3, label="compute-optimal")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("model size multiplier N'/N")
        ax.set_ylabel("total token multiplier D'/D")
        ax.legend(fontsize=7)
        save(fig, Path(a.plot))
    if a.json:
        _print_json({"law": law.source, "phi": law.phi, "psi": law.psi, "alpha": law.alpha, "beta": law.beta, **m})
        return 0
    print(f"from {a.from_:g} to {a.to:g} languages (r = {r:g}), {law.source} exponents phi={law.phi:.3f} psi={law.psi:.3f} "
          f"alpha={law.alpha:.3f} beta={law.beta:.3f}:")
    print(f"  model size   x{m['N']:.3f}   (r^{m['exponents']['N']:.3f})")
    print(f"  total tokens x{m['D_total']:.3f}   (r^{m['exponents']['D_total']:.3f}); per language x{m['D_per_language']:.3f}")
    print(f"  compute      x{m['compute']:.3f}   (r^{m['exponents']['compute']:.3f})")
    return 0


@command
def cmd_crossover(a: argparse.Namespace) -> int:
    from nemo_mlsl.crossover import find_crossover, paper_crossover
    from nemo_mlsl.transfer import Curve

    if a.published:
        if not a.N or a.N <= 0:
            raise ConfigError("crossover --published needs the model size: --N (non-embedding parameters, e.g. --N 2e9)")
        c = paper_crossover(a.N)
        print(f"ATLAS relation C = 1.11e6 * N^1.65: at N={a.N:.4g}, pretraining from scratch overtakes finetuning after "
              f"{c.tokens:.4g} tokens ({c.compute:.4g} FLOPs)")
        return 0

    def curve(path: str, lang: str | None) -> Curve:
        if not Path(path).is_file():
            raise ConfigError(f"{path} does not exist: give the metrics.jsonl of a finished run (mlsl train writes RUN/metrics.jsonl)")
        try:
            pts = [json.loads(l) for l in Path(path).read_text().splitlines() if l.strip()]
            vals = [p["language_loss"][lang] if lang else float(np.mean(list(p["family_loss"].values()))) for p in pts]
            return Curve.of([p["tokens"] for p in pts], vals)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not JSON lines ({err})") from None
        except KeyError as err:
            raise ConfigError(f"{path}: a validation line has no {err}" + (f" (language {lang!r} not validated in that run)"
                              if lang else "")) from None

    import numpy as np

    if a.runs:  # a directory holding the two runs: pretrain/ and finetune/
        a.pretrain, a.finetune = str(Path(a.runs) / "pretrain" / "metrics.jsonl"), str(Path(a.runs) / "finetune" / "metrics.jsonl")
    if not (a.pretrain and a.finetune):
        raise ConfigError("give --runs DIR (with pretrain/ and finetune/ runs), or --pretrain and --finetune metrics.jsonl, or --published")
    langs = a.languages.split(",") if a.languages else [None]
    for lang in langs:
        c = find_crossover(curve(a.pretrain, lang), curve(a.finetune, lang), a.N)
        label = lang or "all families"
        print(f"{label}: pretraining overtakes finetuning after {c.tokens:,.0f} tokens"
              + (f" ({c.compute:.4g} FLOPs at N={a.N:.4g})" if c.compute else "") + f", at loss {c.loss:.4f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlsl", description="Multilingual scaling-law studies (family law, ATLAS).")
    p.add_argument("--verbose", action="store_true", help="show every third-party warning and log line (hidden: the known "
                                                          "harmless ones, see nemo_mlsl/quiet.py)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write the synthetic multilingual corpus")
    s.add_argument("--out", required=True)
    s.add_argument("--families", type=int, default=4)
    s.add_argument("--languages-per-family", type=int, default=2)
    s.add_argument("--docs", type=int, default=400)
    s.add_argument("--transfer", type=float, default=0.0)
    s.add_argument("--seed", type=int, default=0)

    s = sub.add_parser("prepare", help="text (or existing Megatron indexed data) -> tokenizer + indexed datasets + manifest")
    s.add_argument("--input", nargs="+", help="text: dirs of <code>.jsonl/.txt/.parquet (optionally .gz) files or <code>/ "
                                              "subdirectories of them, single files, or a YAML manifest")
    s.add_argument("--indexed", metavar="SPEC.yaml", help="existing .bin/.idx data: a YAML mapping each language to its train "
                                                          "(and optionally validation) prefix(es) and, if needed, its family")
    s.add_argument("--families", help="families YAML (overrides the built-in table)")
    s.add_argument("--out", required=True)
    s.add_argument("--vocab-size", type=int, default=2000)
    s.add_argument("--tokenizer", help="an existing tokenizer: a SentencePiece .model, or a Hugging Face tokenizer.json "
                                       "(or a directory holding one); read offline, copied into --out")
    s.add_argument("--eod-token", help="the end-of-document token of a Hugging Face tokenizer (default: </s>, <|endoftext|>, ...)")
    s.add_argument("--character-coverage", type=float, default=0.9995,
                   help="SentencePiece training: share of character occurrences with a piece of their own (rare characters "
                        "are spelled as bytes when the vocabulary has byte fallback, from 320 pieces)")
    s.add_argument("--text-field", default="text", help="the text field of .jsonl lines / column of .parquet files")
    s.add_argument("--val-docs", type=int)
    s.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    s.add_argument("--seed", type=int, default=1234)
    s.add_argument("--force", action="store_true")
    s.add_argument("--no-progress", action="store_true")

    s = sub.add_parser("blend", help="build the family blend and report target vs realized shares")
    s.add_argument("--data", required=True)
    s.add_argument("--ratios", help="family=ratio,...")
    s.add_argument("--mixture", default="uniform", help="mixture spec when --ratios is absent (natural, temperature:3, unimax:2, ...)")
    s.add_argument("--within", default="natural")
    s.add_argument("--samples", type=int, required=True)
    s.add_argument("--seq-length", type=int, default=128)
    s.add_argument("--seed", type=int, default=1234)
    s.add_argument("--max-epochs", type=float, default=4.0)
    s.add_argument("--normalize", action="store_true")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("train", help="train one run with per-family validation (CPU Lightning, or Megatron-Bridge on GPUs)")
    s.add_argument("--backend", choices=["cpu", "bridge"], default="cpu",
                   help="cpu: the Lightning CPU path; bridge: Megatron-Bridge's pretrain() (GPUs; one process per GPU under torchrun)")
    s.add_argument("--nodes", type=int, help="bridge: nodes of the run (default: the recipe's)")
    s.add_argument("--gpus-per-node", type=int, help="bridge: GPUs per node (default: the recipe's)")
    s.add_argument("--recipe", required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--ratios", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--within", default="natural")
    s.add_argument("--max-steps", type=int)
    s.add_argument("--tokens", type=float)
    s.add_argument("--seed", type=int, default=1234)
    s.add_argument("--resume", action="store_true")
    s.add_argument("--init-from", help="finetune: start from this run directory's (or .ckpt file's) weights, with a fresh "
                                       "optimizer and schedule; tokens are counted from the start of the finetuning")
    s.add_argument("--normalize", action="store_true")
    s.add_argument("--store", help="results store to append to (refits and reports after the run)")
    s.add_argument("--law", default="joint_family", help="law the fitting callback refits after the run ('none': record only)")
    s.add_argument("--bootstrap", type=int, default=50, help="bootstrap replicates of that refit")
    s.add_argument("--report-dir", help="where the refit writes its report (default: beside the store, fit/)")
    s.add_argument("--run-id", help="the record's run_id (default: the --out directory's name)")
    s.add_argument("--tb-root", help="shared TensorBoard root (logs go to TB_ROOT/RUN_ID)")
    s.add_argument("--tag", action="append", metavar="KEY=VALUE", help="extra record field (repeatable), e.g. purpose=design")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("overrides", nargs="*", help="recipe overrides key=value (e.g. train.lr=1e-3)")

    for name, help_ in (("fit", "fit a law to run records"), ("report", "rewrite the fit report")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("--runs", required=True, help="results.jsonl or a study directory")
        s.add_argument("--law", default="joint_family")
        s.add_argument("--out", required=True)
        s.add_argument("--bootstrap", type=int, default=200)
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--dedupe", action="store_true")
        if name == "fit":
            s.add_argument("--holdout", choices=["largest-N", "largest-D", "mixtures"])
            s.add_argument("--objective", default="normalized", choices=["normalized", "raw"])

    s = sub.add_parser("optimize", help="optimal family ratios from a fit")
    s.add_argument("--fit", required=True)
    s.add_argument("--N", type=float)
    s.add_argument("--D", type=float)
    s.add_argument("--data", help="prepared data: cap each family so that no language repeats more than --max-epochs times in D tokens")
    s.add_argument("--max-epochs", type=float, help="epoch cap of each language with --data (default 4, as the recipes)")
    s.add_argument("--within", default="natural", help="within-family sampling of the planned run (for the per-language caps)")
    s.add_argument("--objective", default="normalized", choices=["normalized", "raw"])
    s.add_argument("--weights")
    s.add_argument("--min-ratio")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("recipes", help="list, show or build the ladder recipes")
    s.add_argument("action", choices=["list", "show", "build"])
    s.add_argument("name", nargs="?")
    s.add_argument("overrides", nargs="*", help="key=value overrides")
    s.add_argument("--json", action="store_true")
    s.add_argument("--data")
    s.add_argument("--ratios")
    s.add_argument("--within", default="natural")
    s.add_argument("--nodes", type=int)
    s.add_argument("--gpus-per-node", type=int)
    s.add_argument("--log-dir")
    s.add_argument("--store")
    s.add_argument("--backend", choices=["nemo", "bridge"], default="nemo",
                   help="nemo: NeMo 2's run.Partial(llm.pretrain); bridge: Megatron-Bridge's ConfigContainer")
    s.add_argument("--dry-run", action="store_true")

    s = sub.add_parser("transfer", help="cross-lingual transfer: design runs, train them, score the BTS matrix, "
                                       "score finetuning runs (FAS), or show ATLAS's")
    s.add_argument("action", choices=["design", "run", "score", "fas", "show"])
    s.add_argument("--languages")
    s.add_argument("--pairs", help="a-b,c-d (default: all pairs)")
    s.add_argument("--rung", default="cpu_60k")
    s.add_argument("--tokens", type=float, default=400_000,
                   help="tokens of each monolingual run (= d_mono); bilingual runs train on 3x as many. Too few and every "
                        "pair scores near +1: the runs are step-limited, not data-limited (docs/science.md)")
    s.add_argument("--evals", type=int, default=16, help="validations per d_mono tokens in every run")
    s.add_argument("--seeds", type=int, default=1)
    s.add_argument("--vocab-size", type=int, default=512)
    s.add_argument("--out")
    s.add_argument("--runs")
    s.add_argument("--data")
    s.add_argument("--d-mono-fraction", type=float, default=1.0, help="reference point d_mono as a fraction of the monolingual run")
    s.add_argument("--bootstrap", type=int, default=200)
    s.add_argument("--families", help="score: families.yaml grouping the languages (default: the built-in table)")
    s.add_argument("--base", help="fas: the base run the finetuning runs started from (mlsl train --init-from)")
    s.add_argument("--finetuned", nargs="+", help="fas: finetuning run directories, one source each")
    s.add_argument("--published", action="store_true")
    s.add_argument("--json", action="store_true")
    s.add_argument("--no-progress", action="store_true")

    s = sub.add_parser("plan-languages", help="how N, D and compute must grow with the number of languages (ATLAS §5)")
    s.add_argument("--from", dest="from_", type=float, required=True)
    s.add_argument("--to", type=float, required=True)
    s.add_argument("--fit", help="capacity runs (results store) to fit the law to; default: the paper's exponents")
    s.add_argument("--plot", help="write the iso-loss frontier PNG here")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("crossover", help="when pretraining from scratch overtakes finetuning (ATLAS §6)")
    s.add_argument("--runs", help="a directory with pretrain/ and finetune/ run directories")
    s.add_argument("--pretrain", help="metrics.jsonl of the from-scratch run")
    s.add_argument("--finetune", help="metrics.jsonl of the finetuning run")
    s.add_argument("--languages", help="comma-separated; default: the mean family loss")
    s.add_argument("--N", type=float)
    s.add_argument("--published", action="store_true")

    s = sub.add_parser("study", help="run a whole scaling-law study (design, runs, fit, optimum, confirmation, report)")
    s.add_argument("--config", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--backend", choices=["cpu", "nemo", "bridge"], default="cpu",
                   help="what trains a run: the CPU Lightning path, NeMo 2 recipes or Megatron-Bridge (GPUs)")
    s.add_argument("--executor", choices=["inline", "local", "slurm"],
                   help="where runs execute: in this process one after the other (inline, the default), or as jobs of "
                        "NeMo-Run's local or Slurm executor (overrides the study YAML's executor.type)")
    s.add_argument("--max-parallel", type=int, help="at most this many runs in flight (executor.max_parallel)")
    s.add_argument("--dry-run", action="store_true")
    s.add_argument("--resume", action="store_true")
    s.add_argument("--quick", action="store_true", help="the config's quick variant (tests, CI)")
    s.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:
        from nemo_mlsl.quiet import silence_known_noise

        silence_known_noise()
    try:
        return COMMANDS[args.command](args)
    except MLSLError as err:
        print(f"mlsl {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
