"""Figures a practitioner reads: labelled log axes, and layouts that never print matplotlib's warnings."""

from __future__ import annotations

import math
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nemo_mlsl.fitting import plots# noqa: E402


def _labels(axis) -> list[float]:
    axis.figure.canvas.draw()
    lo, hi = axis.get_view_interval()
    return [float(t.get_text()) for t, v in zip(axis.get_ticklabels(), axis.get_ticklocs()) if t.get_text() and lo <= v <= hi]


def test_a_log_axis_within_a_decade_gets_numeric_labels():
    fig, ax = plt.subplots()
    ax.plot([0.05, 0.6], [3.8, 2.0])
    ax.set_yscale("log")
    assert _labels(ax.yaxis) == []  # matplotlib's default: no major tick between 1 and 10, so no label
    plots.readable_log_axis(ax.yaxis)
    got = _labels(ax.yaxis)
    assert len(got) >= 3 and all(1.9 <= v <= 3.9 for v in got)
    plt.close(fig)


def test_a_log_axis_over_decades_gets_1_2_5_labels():
    fig, ax = plt.subplots()
    ax.plot([0.02, 0.9], [1, 2])
    ax.set_xscale("log")
    plots.readable_log_axis(ax.xaxis)
    got = _labels(ax.xaxis)
    assert {0.05, 0.1, 0.2, 0.5} <= set(got)
    plt.close(fig)


def test_save_lays_out_oversized_labels_without_a_warning(tmp_path):
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([1, 2])
    ax.set_ylabel("loss", fontsize=90)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.save(fig, tmp_path / "big.png")
    assert (tmp_path / "big.png").stat().st_size > 0


def test_loss_vs_ratio_labels_every_panels_loss_axis(tmp_path, monkeypatch):
    from nemo_mlsl.fitting.lawfit import fit
    from nemo_mlsl.fitting.observations import Observations

    rng = np.random.default_rng(0)
    gamma = {"amber": 0.05, "cobalt": 0.2}
    recs = []
    for i, (N, D) in enumerate([(1e4, 1e5), (1e4, 2e5), (4e4, 1e5), (4e4, 2e5)] * 3):
        p = float(rng.uniform(0.1, 0.9))
        ratios = {"amber": p, "cobalt": 1 - p}
        c = 1.5 + 30 / N ** 0.3 + 200 / D ** 0.35
        recs.append({"run_id": f"r{i}", "N": N, "D": D, "ratios": ratios,
                     "family_loss": {f: c * ratios[f] ** -g * math.exp(rng.normal(0, 0.003)) for f, g in gamma.items()}})
    lf = fit("joint_family", Observations.from_records(recs), bootstrap=0)
    figs = []
    monkeypatch.setattr(plots, "save", lambda fig, path: figs.append(fig) or path)
    plots.loss_vs_ratio(lf, tmp_path / "l.png")
    for ax in figs[0].axes:
        if ax.get_visible():
            assert len(_labels(ax.yaxis)) >= 2, ax.get_title()
