"""Measuring the transfer matrix on the user's languages: the design (monolingual + 50/50 bilingual runs)
and the scoring of their loss curves (``metrics.jsonl``) into BTS with bootstrap intervals."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

from nemo_mlsl.data.manifest import write_json_atomic
from nemo_mlsl.errors import ConfigError, FitError
from nemo_mlsl.families import FamilyMap, normalize_code
from nemo_mlsl.study.plan import PlannedRun
from nemo_mlsl.transfer import Curve, bts, heatmap, summarize_matrix


def design(languages: Sequence[str], rung: str, tokens: int, n_params: int, pairs: Sequence[tuple[str, str]] | None = None,
           seeds: int = 1, seed: int = 0) -> list[PlannedRun]:
    """Monolingual runs for D tokens and bilingual 50/50 runs for 3·D total tokens, every seed: scored at the
    monolingual run's end (d_mono = D), the bilingual curve then covers BTS from -1 (interference) up."""
    langs = [normalize_code(l) for l in languages]
    if len(set(langs)) < 2:
        raise ConfigError("--languages needs at least two distinct languages")
    pairs = [tuple(sorted(p)) for p in (pairs or itertools.combinations(sorted(langs), 2))]
    for p in pairs:
        if not set(p) <= set(langs):
            raise ConfigError(f"pair {p} uses a language not in --languages")
    runs = []
    for k in range(seeds):
        s = seed + k
        sfx = f"-seed{s}" if seeds > 1 else ""
        for l in sorted(langs):
            runs.append(PlannedRun(f"mono-{l}{sfx}", "mono", rung, tokens, {x: float(x == l) for x in sorted(langs)}, s, n_params))
        for a, b in pairs:
            runs.append(PlannedRun(f"bi-{a}-{b}{sfx}", "bilingual", rung, 3 * tokens,
                                   {x: 0.5 if x in (a, b) else 0.0 for x in sorted(langs)}, s, n_params))
    return runs


def write_design(out: Path, runs: Sequence[PlannedRun], languages: Sequence[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "plan.json", {"kind": "transfer", "runs": [r.to_dict() for r in runs]})
    # Each language is its own "family", so the family blend samples languages directly.
    (out / "families.yaml").write_text(yaml.safe_dump({"families": {normalize_code(l): [normalize_code(l)] for l in languages}}))


def _curve(run_dir: Path, lang: str) -> Curve:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise ConfigError(f"{path} is missing: train the run first (mlsl transfer run)")
    pts = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    return Curve.of([p["tokens"] for p in pts], [p["language_loss"][lang] for p in pts])


def score(study: Path, d_mono_fraction: float = 1.0, bootstrap: int = 200, seed: int = 0,
          family_of: Mapping[str, str] | None = None) -> dict[str, Any]:
    """BTS matrix (rows target, columns source) from a transfer study's runs, with bootstrap over seeds."""
    runs = [PlannedRun(**r) for r in json.loads((study / "plan.json").read_text())["runs"]]
    langs = sorted({l for r in runs for l, p in r.ratios.items()})
    mono: dict[str, list[Curve]] = {}
    bi: dict[tuple[str, str], list[tuple[Curve, Curve]]] = {}
    for r in runs:
        d = study / "runs" / r.run_id
        active = [l for l, p in r.ratios.items() if p > 0]
        if r.purpose == "mono":
            mono.setdefault(active[0], []).append(_curve(d, active[0]))
        else:
            a, b = active
            bi.setdefault((a, b), []).append((_curve(d, a), _curve(d, b)))
    n = len(langs)
    mat = np.full((n, n), np.nan)
    lo, hi = np.full((n, n), np.nan), np.full((n, n), np.nan)
    rng = np.random.default_rng(seed)
    for (a, b), curves in bi.items():
        for src, tgt, k in ((b, a, 0), (a, b, 1)):
            if tgt not in mono:
                raise ConfigError(f"no monolingual run for {tgt!r}: BTS({src}→{tgt}) needs one")
            vals = []
            for m in mono[tgt]:
                d_mono = d_mono_fraction * m.tokens[-1]
                for pair in curves:
                    try:
                        vals.append(bts(m, pair[k], d_mono))
                    except FitError as err:
                        raise FitError(f"BTS({src}→{tgt}): {err}") from None
            i, j = langs.index(tgt), langs.index(src)
            mat[i, j] = float(np.mean(vals))
            if len(vals) > 1 and bootstrap:
                boots = [np.mean(rng.choice(vals, size=len(vals))) for _ in range(bootstrap)]
                lo[i, j], hi[i, j] = np.percentile(boots, [2.5, 97.5])
    fam = dict(family_of) if family_of else {}
    if not fam:
        fm = FamilyMap.builtin()
        for l in langs:
            try:
                fam[l] = fm.family_of(l)
            except ConfigError:
                fam[l] = l
    summary = summarize_matrix(langs, mat, fam)
    doc = {"languages": langs, "rows": "target", "columns": "source", "bts": _nan_none(mat),
           "ci_low": _nan_none(lo), "ci_high": _nan_none(hi), "d_mono_fraction": d_mono_fraction, "families": fam, **summary}
    write_json_atomic(study / "transfer.json", doc)
    heatmap(langs, mat, study / "transfer.png")
    return doc


def _nan_none(m: np.ndarray) -> list:
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in m]
