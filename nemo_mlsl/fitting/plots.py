"""PNG figures for fit and study reports (matplotlib, headless)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nemo_mlsl.fitting.lawfit import LawFit  # noqa: E402
from nemo_mlsl.fitting.observations import FamilyData, Observations  # noqa: E402
from nemo_mlsl.errors import ConfigError  # noqa: E402
from nemo_mlsl.outputs import output_file  # noqa: E402


def _grid(n: int) -> tuple[plt.Figure, np.ndarray]:
    cols = min(3, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def readable_log_axis(axis: matplotlib.axis.Axis) -> None:
    """Plain-number tick labels on a log axis. Losses span less than a decade, where a log axis may have no major
    tick (so no label at all): there, evenly spaced round ticks instead; over a few decades, 1-2-5 ticks.
    Call after plotting (it reads the data range)."""
    lo, hi = axis.get_view_interval()
    if lo > 0 and hi / lo < 10:
        axis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
        axis.set_minor_locator(matplotlib.ticker.NullLocator())
    elif lo > 0 and hi / lo < 1000:
        axis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _lay_out(fig: plt.Figure) -> None:
    """``tight_layout``, or, where the labels cannot fit that way (matplotlib then warns "Tight layout not applied"
    and leaves the axes as they were), fixed margins instead: the figure is written either way, without the warning
    in the user's terminal. Any other warning passes through."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.tight_layout()
    for w in caught:
        if "Tight layout not applied" in str(w.message):
            fig.subplots_adjust(left=0.1, right=0.97, bottom=0.12, top=0.9, wspace=0.35, hspace=0.45)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def legend(axes: Any, **kwargs: Any) -> None:
    """A legend on the first of ``axes`` (one Axes or several) that has labelled artists, and none where nothing is
    labelled (a figure of records that carry no such data): matplotlib would warn "No artists with labels found"."""
    for ax in np.atleast_1d(np.asarray(axes, dtype=object)).ravel():
        if ax.get_legend_handles_labels()[0]:
            ax.legend(**kwargs)
            return


def save(fig: plt.Figure, path: Path) -> Path:
    """Lay out, write as PNG (110 dpi) and close; the directory is created, a bad path is a named error."""
    try:
        path = output_file(path, "plot file")
    except ConfigError:
        plt.close(fig)
        raise
    _lay_out(fig)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


MAX_PANELS = 12  # per-target figures draw at most this many targets (a swarm may have a hundred); the report says so


def shown_targets(lf: LawFit) -> list[str]:
    """The targets a per-target figure draws: all, or the first ``MAX_PANELS``."""
    return list(lf.fits)[:MAX_PANELS]


def axis_family(lf: LawFit, target: str, data: FamilyData) -> int:
    """The share column a target's loss is drawn against: its own share where it is a training family, else the family
    whose share moves its fitted loss most at the runs' mean mixture (|d log L / d p_j|)."""
    if data.has_own_share:
        return data.index
    mean = FamilyData(target, -1, np.array([np.exp(np.log(data.N).mean())]), np.array([np.exp(np.log(data.D).mean())]),
                      np.zeros(1), data.P.mean(axis=0, keepdims=True), data.U, np.ones(1), data.families)
    with np.errstate(all="ignore"):
        grad = np.abs(np.nan_to_num(lf.fits[target].law.share_jacobian(lf.fits[target].theta, mean)[0]))
    return int(np.argmax(grad))


def along_share(row: np.ndarray, index: int, p: np.ndarray) -> np.ndarray:
    """Mixtures ``[len(p), F]`` that give family ``index`` the shares ``p`` and the others ``row``'s proportions
    (uniform if ``row`` had none): what a cross-family law's curve against one family's share holds fixed."""
    rest = np.delete(np.asarray(row, dtype=float), index)
    rest = rest / rest.sum() if rest.sum() > 0 else np.full(len(rest), 1.0 / max(1, len(rest)))
    out = np.empty((len(p), len(row)))
    out[:, index] = p
    out[:, [j for j in range(len(row)) if j != index]] = (1.0 - p)[:, None] * rest[None, :]
    return out


def loss_vs_ratio(lf: LawFit, path: Path) -> Path:
    """Per target, loss vs ratio (log axes; symlog near 0 where runs have no share of the family): runs by (N, D)
    setting, the fitted law (along the first run's mix of the others) and a bootstrap band. A target that is no
    training family is drawn against the share that moves its loss most (named in the x label)."""
    obs = lf.obs
    targets = shown_targets(lf)
    fig, axes = _grid(len(targets))
    settings = sorted(set(zip(obs.N.tolist(), obs.D.tolist())))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(settings)))
    for ax, t in zip(axes, targets):
        data = lf.law.data_for(obs, t)
        j = axis_family(lf, t, data)
        x = data.P[:, j]
        pos = x[x > 0]
        floor = float(pos.min()) if len(pos) else 1e-3
        zeros = bool(np.any(x <= 0))
        for (N, D), col in zip(settings, colors):
            keep = (data.N == N) & (data.D == D)
            if not keep.any():
                continue
            ax.scatter(x[keep], data.loss[keep], s=14, color=col, label=f"N={N:.3g}, D={D:.3g}")
            lo = max(1e-3, floor * 0.8)
            grid = np.geomspace(lo, min(1.0, max(x[keep].max(), lo) * 1.2), 50)
            if zeros and lf.law.zero_shares:
                grid = np.concatenate([[0.0], grid])
            m = len(grid)
            P = along_share(data.P[keep][0], j, grid)
            view = FamilyData(t, data.index, np.full(m, N), np.full(m, D), P[:, data.index] if data.has_own_share else np.zeros(m),
                              P, data.U, np.ones(m), data.families)
            with np.errstate(all="ignore"):
                ax.plot(grid, np.exp(lf.fits[t].log_predict(view)), color=col, lw=1)
                boot = lf.fits[t].boot
                if boot is not None and len(boot):
                    ok = boot[~np.isnan(boot).any(axis=1)]
                    if len(ok) > 5:
                        curves = np.exp(lf.fits[t].log_predict(view, ok))
                        ax.fill_between(grid, *np.percentile(curves, [2.5, 97.5], axis=0), color=col, alpha=0.15, lw=0)
        if zeros:
            ax.set_xscale("symlog", linthresh=floor)  # p = 0 has no place on a log axis: linear below the smallest share
        else:
            ax.set_xscale("log")
        ax.set_yscale("log")
        readable_log_axis(ax.xaxis)
        readable_log_axis(ax.yaxis)
        g = lf.fits[t].params.get("gamma")
        ax.set_title(f"{t}" + (f"  γ={g:.3f}" if g is not None else ""))
        share = "sampling ratio p" if data.has_own_share else f"share of {data.families[j]}"
        ax.set_xlabel(share + (" (symlog: 0 included)" if zeros else ""))
        ax.set_ylabel("validation loss")
    legend(axes, fontsize=6)
    return save(fig, path)


def predicted_vs_observed(lf: LawFit, path: Path, test: Observations | None = None) -> Path:
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    for obs, label, marker in ((lf.obs, "in-sample", "o"), (test, "held out", "x")):
        if obs is None:
            continue
        o = np.concatenate([lf.law.data_for(obs, t).loss for t in lf.fits])
        p = np.concatenate([lf.predict(obs, t) for t in lf.fits])
        ax.scatter(o, p, s=14, marker=marker, label=label)
    lims = ax.get_xlim()
    ax.plot(lims, lims, "k--", lw=0.8)
    ax.set_xlabel("observed loss")
    ax.set_ylabel("predicted loss")
    ax.set_title(f"{lf.spec}: predicted vs observed")
    legend(ax)
    return save(fig, path)


def loss_vs_N(lf: LawFit, path: Path) -> Path:
    """Per target: loss normalised to p = 1 (L·p^γ) vs non-embedding N, one curve per D; a target that is no training
    family (no γ) at the first run's mixture."""
    obs = lf.obs
    targets = shown_targets(lf)
    fig, axes = _grid(len(targets))
    Ds = sorted(set(obs.D.tolist()))
    colors = plt.cm.plasma(np.linspace(0, 0.85, len(Ds)))
    for ax, t in zip(axes, targets):
        data = lf.law.data_for(obs, t)
        g = lf.fits[t].params.get("gamma", 0.0)
        for D, col in zip(Ds, colors):
            keep = data.D == D
            if not keep.any():
                continue
            keep = keep & ((data.p > 0) | (g == 0))  # L·p^γ is undefined at p = 0 for γ != 0
            if not keep.any():
                continue
            ax.scatter(data.N[keep], data.loss[keep] * data.p[keep] ** g, s=14, color=col, label=f"D={D:.3g}")
            Ns = np.geomspace(data.N.min() * 0.8, data.N.max() * 1.25, 40)
            row = data.P[keep][0]
            P = along_share(row, data.index, np.ones(40)) if data.has_own_share else np.tile(row, (40, 1))
            view = FamilyData(t, data.index, Ns, np.full(40, D), np.ones(40) if data.has_own_share else np.zeros(40), P,
                              data.U, np.ones(40), data.families)
            ax.plot(Ns, np.exp(lf.fits[t].log_predict(view)), color=col, lw=1)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(t)
        ax.set_xlabel("non-embedding parameters N")
        ax.set_ylabel("loss at p=1  (L·p^γ)")
    legend(axes, fontsize=6)
    return save(fig, path)


def ratio_bars(sets: Mapping[str, Mapping[str, float]], path: Path, ci: Mapping[str, Sequence[float]] | None = None,
               title: str = "sampling ratios") -> Path:
    """Grouped bars: one group per family, one bar per ratio set; intervals on the first set."""
    names = list(sets)
    fams = sorted(next(iter(sets.values())))
    x = np.arange(len(fams))
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(fams) + 2), 3.8))
    for k, name in enumerate(names):
        vals = [sets[name].get(f, 0.0) for f in fams]
        err = None
        if k == 0 and ci:
            err = np.array([[vals[i] - ci[f][0], ci[f][1] - vals[i]] for i, f in enumerate(fams)]).T.clip(min=0)
        ax.bar(x + k * width - 0.4 + width / 2, vals, width, label=name, yerr=err, capsize=3)
    ax.set_xticks(x, fams)
    ax.set_ylabel("ratio")
    ax.set_title(title)
    legend(ax, fontsize=7)
    return save(fig, path)
