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
    """A build's mixture: --ratios, or a fixed --schedule on a backend whose build takes one; --adaptive is refused by
    name (an adaptive mixture is the CPU backend's for now)."""
    if a.adaptive is not None:
        fixed = "; or give a fixed --schedule FILE" if plugin.build_schedules else ""
        raise ConfigError(f"--adaptive: mlsl recipes build --backend {a.backend} trains no adaptive mixture yet; an adaptive "
                          f"mixture trains on the CPU backend for now (mlsl train --backend cpu --adaptive POLICY --ratios "
                          f"...){fixed}")
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
    s.add_argument("--adaptive", metavar="POLICY", help="refused: an adaptive mixture trains on mlsl train --backend cpu")
    s.add_argument("--within", default="natural")
    s.add_argument("--nodes", type=positive_int)
    s.add_argument("--gpus-per-node", type=positive_int)
    s.add_argument("--log-dir")
    s.add_argument("--store")
    s.add_argument("--backend", choices=BACKENDS.names(), default="nemo",
                   help="build: nemo: NeMo 2's run.Partial(llm.pretrain); bridge: Megatron-Bridge's ConfigContainer")
    s.add_argument("--dry-run", action="store_true")
