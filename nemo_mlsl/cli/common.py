"""What several commands share: JSON output, ``fam=p`` ratios, ``--tag`` fields and reading a results store."""

from __future__ import annotations

import argparse
import json
from typing import Any, Iterator, Sequence

from nemo_mlsl.errors import ConfigError


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=float))


def ratios_arg(text: str | None) -> dict[str, float] | None:
    from nemo_mlsl.mixtures import parse_ratios

    return parse_ratios(text) if text else None


def adaptive_arg(a: Any) -> dict[str, Any] | None:
    """``--adaptive POLICY --interval STEPS`` (and --min-share, --smoothing, --max-change) as a recipe's ``adaptive``
    settings (``nemo_mlsl.policies.adaptive_settings`` checks them), or None without --adaptive."""
    if getattr(a, "adaptive", None) is None:
        return None
    return {"policy": a.adaptive, "interval": a.interval, "min_share": getattr(a, "min_share", None),
            "smoothing": getattr(a, "smoothing", None), "max_change": getattr(a, "max_change", None)}


def tags(items: Sequence[str] | None) -> dict[str, Any]:
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


def records(path: str, dedupe: bool, stream: bool = False) -> "list[dict] | Iterator[dict]":
    """The run records of a results store (a results.jsonl, or a study directory holding one); ``stream``: an iterator
    (what the fits read: memory then grows with the runs' numbers, not with their records)."""
    from nemo_mlsl.results import ResultsStore

    store = ResultsStore(path)
    if not store.path.exists():
        raise ConfigError(f"--runs {path!r}: no results store there ({store.path} does not exist); give a results.jsonl "
                          "or a study directory that holds one")
    return store.iter_records(dedupe=dedupe) if stream else store.read(dedupe=dedupe)


def add_fit_speed_args(s: argparse.ArgumentParser) -> None:
    """``--jobs`` and ``--no-progress`` of the commands that fit laws (fit, report, compare)."""
    s.add_argument("--jobs", type=int, default=None,
                   help="worker processes for the fits (default: every core); the result is the same for any number")
    s.add_argument("--no-progress", action="store_true",
                   help="no progress (a bar on a terminal, else a line per fold and law on stderr)")


def fit_progress(a: argparse.Namespace):
    from nemo_mlsl.fitting.progress import FitProgress

    return FitProgress(show=not a.no_progress)
