"""``mlsl recipes``: list, show and build the ladder rungs (building is the backend's)."""

from __future__ import annotations

import argparse
from typing import Any

from nemo_mlsl.backends import BACKENDS, backend
from nemo_mlsl.cli.common import print_json
from nemo_mlsl.cli.parser import positive_int, refuse_unused
from nemo_mlsl.errors import ConfigError


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


def cmd_recipes(a: argparse.Namespace) -> int:
    from nemo_mlsl.recipes import available, load

    if a.action != "build":  # the others read no data, layout or backend: a --data given to them is a mistake
        refuse_unused(a, a.parser, {"json"}, f"recipes {a.action}")
    if a.action == "list":
        rows = sorted((_recipe_row(n) for n in available()), key=lambda r: (r["source"], r["non_embedding_params"] or 0))
        if a.json:
            print_json(rows)
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
        print_json({**r.to_dict(), "counts": _recipe_row(a.name)})
        return 0
    plugin = backend(a.backend)
    plugin.supports("build")
    check_mixture(a, plugin)
    from nemo_mlsl.outputs import check_output

    for flag, path in (("--log-dir", a.log_dir), ("--store", a.store)):
        if path:
            check_output(path, flag)  # before the recipe is built (a dry run writes nothing; the run would fail there)
    return plugin.build(a)


def check_mixture(a: argparse.Namespace, plugin: Any) -> None:
    """A build's mixture: --ratios, a fixed --schedule on a backend whose build takes one, or --adaptive POLICY
    --interval STEPS (from --ratios) on a backend whose build trains an adaptive mixture."""
    adaptive_flags = [f for f, v in (("--interval", a.interval), ("--min-share", a.min_share), ("--smoothing", a.smoothing),
                                     ("--max-change", a.max_change)) if v is not None]
    if a.adaptive is None and adaptive_flags:
        raise ConfigError(f"{', '.join(adaptive_flags)} set(s) an --adaptive run; give --adaptive POLICY (e.g. ado) or "
                          f"leave {adaptive_flags[0]} out")
    if a.adaptive is not None:
        if not plugin.build_adaptive:
            able = [n for n in BACKENDS.names() if backend(n, check=False).build_adaptive]
            fixed = "; or give a fixed --schedule FILE" if plugin.build_schedules else ""
            raise ConfigError(f"--adaptive: mlsl recipes build --backend {a.backend} trains no adaptive mixture yet; "
                              f"--adaptive builds on: {', '.join(able)} (or mlsl train --backend cpu --adaptive POLICY)"
                              f"{fixed}")
        from nemo_mlsl.policies import policy

        policy(a.adaptive)  # an unknown policy, by name
        if a.schedule is not None or a.ratios is None:
            raise ConfigError("--adaptive starts from --ratios (its first interval) and decides the next ones; give "
                              "--ratios, not --schedule")
        if a.interval is None:
            raise ConfigError("--adaptive needs --interval STEPS >= 1: the steps of each interval, one decision per boundary")
        if a.min_share is not None and not 0 <= a.min_share < 1 or a.smoothing is not None and not 0 <= a.smoothing <= 1:
            raise ConfigError(f"--min-share must be in [0, 1) and --smoothing in [0, 1]; got {a.min_share}, {a.smoothing}")
        if a.max_change is not None and not 0 < a.max_change <= 1:
            raise ConfigError(f"--max-change must be in (0, 1] (the total variation one decision may move the ratios by; "
                              f"1: no limit); got {a.max_change}")
        return
    if a.schedule is None:
        return
    if not plugin.build_schedules:
        able = [n for n in BACKENDS.names() if backend(n, check=False).build_schedules]
        raise ConfigError(f"--backend {a.backend} does not build a mixture schedule yet; mlsl recipes build --schedule builds "
                          f"on: {', '.join(able)} (or give --ratios)")
    if a.ratios is not None:
        raise ConfigError("give --ratios or --schedule, not both (a schedule carries each interval's ratios)")


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("recipes", help="list, show or build the ladder recipes")
    s.set_defaults(func=cmd_recipes, parser=s)
    s.add_argument("action", choices=["list", "show", "build"])
    s.add_argument("name", nargs="?")
    s.add_argument("overrides", nargs="*", help="key=value overrides")
    s.add_argument("--json", action="store_true")
    s.add_argument("--data")
    s.add_argument("--ratios")
    s.add_argument("--schedule", metavar="FILE", help="build: a fixed mixture schedule (YAML or JSON, as mlsl train "
                                                      "--schedule) instead of --ratios; its last interval ends at the "
                                                      "recipe's last step (backends whose build takes one: nemo, bridge)")
    s.add_argument("--adaptive", metavar="POLICY", help="build: a mixture that adapts during the run from --ratios: POLICY "
                                                        "(e.g. ado) decides each next interval at its boundary's "
                                                        "validation (backends whose build takes one: nemo)")
    s.add_argument("--interval", type=positive_int, metavar="STEPS", help="with --adaptive: the steps of each interval")
    s.add_argument("--min-share", type=float, help="with --adaptive: every family's least share (default 0.02)")
    s.add_argument("--smoothing", type=float, help="with --adaptive: weight of the previous ratios in the next (default 0.5)")
    s.add_argument("--max-change", type=float, help="with --adaptive: the most one decision moves the ratios (total "
                                                    "variation; default 1: no limit)")
    s.add_argument("--within", default="natural")
    s.add_argument("--nodes", type=positive_int)
    s.add_argument("--gpus-per-node", type=positive_int)
    s.add_argument("--log-dir")
    s.add_argument("--store")
    s.add_argument("--backend", choices=BACKENDS.names(), default="nemo",
                   help="build: nemo: NeMo 2's run.Partial(llm.pretrain); bridge: Megatron-Bridge's ConfigContainer")
    s.add_argument("--dry-run", action="store_true")
