"""``mlsl compare``: the law-selection table for chosen laws, as ``report.md``, ``compare.json`` and a figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from nemo_mlsl.fitting import plots
from nemo_mlsl.outputs import output_dir, write_json_atomic
from nemo_mlsl.fitting.observations import Observations
from nemo_mlsl.fitting.progress import FitProgress
from nemo_mlsl.fitting.selection import DEFAULT_FOLDS, select_law, selection_markdown


def heldout_bars(sel: Mapping[str, Any], path: Path) -> Path:
    """Grouped bars: held-out MAPE (%) per law (groups) and split (bars); a law that failed a split has no bar."""
    laws = [s for s in sel["laws"] if not s["skipped"]]
    splits = sel["splits"]
    x = np.arange(len(laws))
    width = 0.8 / max(1, len(splits))
    fig, ax = plots.plt.subplots(figsize=(max(5.0, 1.4 * len(laws) + 2), 3.8))
    for k, split in enumerate(splits):
        vals = [s["splits"].get(split, {}).get("mape", np.nan) for s in laws]
        ax.bar(x + k * width - 0.4 + width / 2, vals, width, label=split)
    ax.set_xticks(x, [s["law"] + (" (chosen)" if s["law"] == sel["chosen"] else "") for s in laws], fontsize=8)
    ax.set_ylabel("held-out MAPE (%)")
    ax.set_title("held-out error per law and split (lower is better)")
    plots.legend(ax, fontsize=7)
    return plots.save(fig, path)


def compare_laws(records: Iterable[Mapping[str, Any]], laws: Sequence[str] | None, out: str | Path, *, folds: int = DEFAULT_FOLDS,
                 seed: int = 0, jobs: int | None = 1, progress: FitProgress | None = None) -> dict[str, Any]:
    """Cross-validate ``laws`` (None: every registered law) on ``records``; write ``report.md``, ``compare.json`` and ``heldout_mape.png`` under ``out``."""
    out = output_dir(out, "--out")
    obs = Observations.from_records(records)
    doc = {"n_runs": len(obs), "families": list(obs.families), **select_law(obs, laws, folds=folds, seed=seed, jobs=jobs,
                                                                                   progress=progress).to_dict()}
    write_json_atomic(out / "compare.json", doc)
    png = heldout_bars(doc, out / "heldout_mape.png")
    lines = ["# Law comparison", "", f"{len(obs)} runs, families {', '.join(obs.families)}.", ""]
    lines += selection_markdown(doc) + ["## Figures", "", f"![{png.name}]({png.name})", ""]
    (out / "report.md").write_text("\n".join(lines))
    return doc
