"""Measuring the transfer matrix on the user's languages: the design (monolingual + 50/50 bilingual runs)
and the scoring of their loss curves (``metrics.jsonl``) into BTS with bootstrap intervals."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

from nemo_mlsl.outputs import output_dir, write_json_atomic
from nemo_mlsl.errors import ConfigError, FitError
from nemo_mlsl.families import FamilyMap, normalize_code
from nemo_mlsl.study.plan import PlannedRun, load_runs
from nemo_mlsl.atlas.transfer import Curve, NeverReached, bts, fas, heatmap, summarize_matrix


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
    out = output_dir(out, "--out")
    write_json_atomic(out / "plan.json", {"kind": "transfer", "runs": [r.to_dict() for r in runs]})
    # Each language is its own "family", so the family blend samples languages directly.
    (out / "families.yaml").write_text(yaml.safe_dump({"families": {normalize_code(l): [normalize_code(l)] for l in languages}}))


def _curve(run_dir: Path, lang: str) -> Curve:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise ConfigError(f"{path} is missing: train the run first (mlsl transfer run)")
    pts = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    if not pts or any(lang not in p["language_loss"] for p in pts):
        raise ConfigError(f"{path} has no loss curve for {lang!r}: its runs must validate on every scored language")
    return Curve.of([p["tokens"] for p in pts], [p["language_loss"][lang] for p in pts])


def score(study: Path, d_mono_fraction: float = 1.0, bootstrap: int = 200, seed: int = 0,
          family_of: Mapping[str, str] | None = None) -> dict[str, Any]:
    """BTS matrix (rows target, columns source) from a transfer study's runs, with bootstrap over seeds.

    A bilingual run that never reaches the monolingual loss gives an upper bound, 2 - (its tokens)/d_mono,
    listed under ``censored``: the pair interferes at least that much."""
    runs = load_runs(study / "plan.json")
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
    censored: set[tuple[str, str]] = set()
    for (a, b), curves in bi.items():
        for src, tgt, k in ((b, a, 0), (a, b, 1)):
            if tgt not in mono:
                raise ConfigError(f"no monolingual run for {tgt!r}: BTS({src}→{tgt}) needs one")
            # vals[a, b]: the score from monolingual seed a and bilingual seed b
            vals = np.zeros((len(mono[tgt]), len(curves)))
            for a_, m in enumerate(mono[tgt]):
                d_mono = d_mono_fraction * m.tokens[-1]
                for b_, pair in enumerate(curves):
                    try:
                        vals[a_, b_] = bts(m, pair[k], d_mono)
                    except NeverReached:  # right-censored: BTS is below what the run's length can show
                        vals[a_, b_] = 2.0 - pair[k].tokens[-1] / d_mono
                        censored.add((src, tgt))
                    except FitError as err:
                        raise FitError(f"BTS({src}→{tgt}): {err}") from None
            i, j = langs.index(tgt), langs.index(src)
            mat[i, j] = float(vals.mean())
            if bootstrap and vals.size > 1:
                lo[i, j], hi[i, j] = seed_bootstrap(vals, bootstrap, rng)
    fm = FamilyMap.builtin()
    fam = {}
    for l in langs:  # the given map first, then the built-in table; a language in neither is its own family
        try:
            fam[l] = (family_of or {}).get(l) or fm.family_of(l)
        except ConfigError:
            fam[l] = l
    summary = summarize_matrix(langs, mat, fam)
    doc = {"languages": langs, "rows": "target", "columns": "source", "bts": _nan_none(mat),
           "ci_low": _nan_none(lo), "ci_high": _nan_none(hi), "d_mono_fraction": d_mono_fraction, "families": fam,
           "censored": [{"source": s_, "target": t_} for s_, t_ in sorted(censored)], **summary}
    write_json_atomic(study / "transfer.json", doc)
    heatmap(langs, mat, study / "transfer.png")
    return doc


def seed_bootstrap(vals: np.ndarray, n: int, rng: np.random.Generator) -> tuple[float, float]:
    """95% interval of the mean score, resampling the independent units: monolingual seeds (rows) and
    bilingual seeds (columns), each with replacement. The pairs are not independent (every pair shares
    its runs with others), so resampling pairs would understate the spread."""
    rows, cols = vals.shape
    means = [vals[np.ix_(rng.integers(0, rows, rows), rng.integers(0, cols, cols))].mean() for _ in range(n)]
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def _nan_none(m: np.ndarray) -> list:
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in m]


def _result(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "result.json"
    if not path.exists():
        raise ConfigError(f"{path} is missing: {run_dir} is not a finished run")
    return json.loads(path.read_text())


def score_finetuning(base: Path, finetuned: Sequence[Path], out: Path) -> dict[str, Any]:
    """FAS matrix (rows target, columns source) from finetuning runs started from one base checkpoint.

    Each finetuned run trains on one source (its only non-zero ratio); the base run's final validation is
    the reference loss L_t of every target, so FAS(s→t) is the mean loss gain on t over the finetuning."""
    ref = _result(base)["language_loss"]
    cols: dict[str, list[Path]] = {}
    for d in finetuned:
        active = [k for k, v in _result(d)["ratios"].items() if v > 0]
        if len(active) != 1:
            raise ConfigError(f"{d}: a finetuning run for FAS trains on exactly one source, its ratios name {active}")
        cols.setdefault(active[0], []).append(d)
    sources, targets = sorted(cols), sorted(ref)
    mat = np.full((len(targets), len(sources)), np.nan)
    for j, s in enumerate(sources):
        for i, t in enumerate(targets):
            mat[i, j] = float(np.mean([fas(ref[t], _curve(d, t)) for d in cols[s]]))
    doc = {"targets": targets, "sources": sources, "rows": "target", "columns": "source", "fas": _nan_none(mat),
           "base": str(base), "base_loss": ref}
    out = output_dir(out, "--out")
    write_json_atomic(out / "fas.json", doc)
    heatmap(targets, mat, out / "fas.png", "Finetuning Adaptation Score\n(row: target, column: source)", columns=sources)
    return doc
