"""Cross-lingual transfer (ATLAS §4): Bilingual Transfer Score, Finetuning Adaptation Score, the matrix.

BTS(s→t) = -(d_bi - 2·d_mono) / d_mono, where d_bi is the number of (total) tokens the 50/50 bilingual
(s, t) model needs to reach the monolingual t model's loss at d_mono tokens: 0 is neutral (the
bilingual model needs exactly the same target tokens), > 0 positive transfer, < 0 interference.
Both curves are first replaced by their least-squares non-increasing fit (isotonic regression), so
that evaluation noise can neither make a curve cross a level twice nor, as a running minimum would,
let one lucky low evaluation decide the score; then they are interpolated linearly in (log tokens, loss).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from typing import Mapping, Sequence

import numpy as np

from nemo_mlsl.errors import ConfigError, FitError


class NeverReached(FitError):
    """A curve ends above the loss level asked for: the run was too short to measure the score."""


@dataclass(frozen=True)
class Curve:
    """A loss curve: tokens (increasing) → loss on one target language."""

    tokens: np.ndarray
    loss: np.ndarray

    @classmethod
    def of(cls, tokens: Sequence[float], loss: Sequence[float]) -> "Curve":
        t, l = np.asarray(tokens, float), np.asarray(loss, float)
        if len(t) < 2 or len(t) != len(l):
            raise ConfigError("a loss curve needs at least two (tokens, loss) points of equal length")
        order = np.argsort(t)
        t, l = t[order], l[order]
        if np.any(t <= 0) or np.any(~np.isfinite(l)):
            raise ConfigError("curve tokens must be > 0 and losses finite")
        return cls(t, l)

    @cached_property
    def envelope(self) -> np.ndarray:
        """The loss's least-squares non-increasing fit (what scores are read from)."""
        return monotone_fit(self.loss)

    def loss_at(self, tokens: float) -> float:
        """Loss of the monotone fit at ``tokens`` (inside the curve's range)."""
        if not self.tokens[0] <= tokens <= self.tokens[-1]:
            raise FitError(f"{tokens:.4g} tokens lies outside the curve ({self.tokens[0]:.4g}..{self.tokens[-1]:.4g})")
        return float(np.interp(np.log(tokens), np.log(self.tokens), self.envelope))

    def tokens_to_reach(self, level: float) -> float:
        """First token count at which the monotone fit of the curve reaches ``level``."""
        env = self.envelope
        if env[-1] > level:
            raise NeverReached(f"the curve never reaches loss {level:.4f} (it ends at {env[-1]:.4f}); train the bilingual run longer")
        if env[0] <= level:
            return float(self.tokens[0])
        i = int(np.argmax(env <= level))
        x0, x1, y0, y1 = np.log(self.tokens[i - 1]), np.log(self.tokens[i]), env[i - 1], env[i]
        return float(np.exp(x0 + (level - y0) * (x1 - x0) / (y1 - y0)))


def monotone_fit(y: Sequence[float]) -> np.ndarray:
    """Least-squares non-increasing fit of ``y`` (pool adjacent violators): each violating run is replaced by its mean."""
    blocks: list[list[float]] = []  # [mean, count]
    for v in np.asarray(y, float):
        blocks.append([v, 1.0])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            (m2, n2), (m1, n1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    return np.concatenate([np.full(int(n), m) for m, n in blocks]) if blocks else np.zeros(0)


def bts(mono: Curve, bilingual: Curve, d_mono: float) -> float:
    """Bilingual Transfer Score of the source on the target (``bilingual`` is the target's loss vs total tokens)."""
    level = mono.loss_at(d_mono)
    d_bi = bilingual.tokens_to_reach(level)
    return -(d_bi - 2.0 * d_mono) / d_mono


def fas(base_loss: float, finetuned: Curve) -> float:
    """Finetuning Adaptation Score ``(1/d_max) ∫_0^d_max (L_base − L_ft(d)) dd`` on the target.

    The finetuning run starts from the base checkpoint, so at d = 0 its loss is the base loss: the
    curve is anchored there and integrated (trapezoids) from 0 to its last evaluation d_max."""
    t = np.concatenate([[0.0], finetuned.tokens])
    gain = np.concatenate([[0.0], base_loss - finetuned.loss])
    return float(np.trapz(gain, t) / t[-1])


def published_matrix() -> tuple[list[str], np.ndarray]:
    """The 9x9 BTS block measured in ATLAS (rows target, columns source; NaN on the diagonal)."""
    text = resources.files("nemo_mlsl").joinpath("tables/atlas_bts_9x9.csv").read_text()
    rows = list(csv.reader(io.StringIO("".join(l for l in text.splitlines(True) if not l.startswith("#")))))
    langs = rows[0][1:]
    mat = np.array([[float(v) if v else np.nan for v in r[1:]] for r in rows[1:]])
    return langs, mat


def summarize_matrix(langs: Sequence[str], mat: np.ndarray, family_of: Mapping[str, str] | None = None, top: int = 5) -> dict:
    """The most synergistic (BTS > 0) and interfering (< 0) pairs, symmetry, and the within- vs across-family means."""
    pairs = [(langs[j], langs[i], float(mat[i, j])) for i in range(len(langs)) for j in range(len(langs))
             if i != j and np.isfinite(mat[i, j])]
    ordered = sorted(pairs, key=lambda p: -p[2])
    a, b = [], []
    for i in range(len(langs)):
        for j in range(i + 1, len(langs)):
            if np.isfinite(mat[i, j]) and np.isfinite(mat[j, i]):
                a.append(mat[i, j])
                b.append(mat[j, i])
    out = {
        "synergistic": [{"source": s, "target": t, "bts": v} for s, t, v in ordered if v > 0][:top],
        "interfering": [{"source": s, "target": t, "bts": v} for s, t, v in ordered[::-1] if v < 0][:top],
        "symmetry_pearson_r": float(np.corrcoef(a, b)[0, 1]) if len(a) > 2 else None,
        "mean": float(np.nanmean(mat)),
    }
    if family_of:
        within = [v for s, t, v in pairs if family_of.get(s) == family_of.get(t)]
        across = [v for s, t, v in pairs if family_of.get(s) != family_of.get(t)]
        out["family"] = {"within_mean": float(np.mean(within)) if within else None, "within_pairs": len(within),
                         "across_mean": float(np.mean(across)) if across else None, "across_pairs": len(across)}
    return out


def heatmap(langs: Sequence[str], mat: np.ndarray, path, title: str = "Bilingual Transfer Score\n(row: target, column: source)",
            columns: Sequence[str] | None = None):
    """A diverging heatmap of a (target x source) score matrix, values printed in the cells."""
    import matplotlib.pyplot as plt

    from nemo_mlsl.fitting.plots import save

    cols = list(columns) if columns is not None else list(langs)
    finite = np.abs(mat[np.isfinite(mat)])
    lim = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    fig, ax = plt.subplots(figsize=(max(4.5, 1.5 + 0.55 * len(cols)), max(3.5, 1.2 + 0.5 * len(langs))))
    ax.set_facecolor("#d9d9d9")  # unmeasured cells (NaN) show grey, not as a neutral 0
    im = ax.imshow(mat, cmap="RdBu", vmin=-lim, vmax=lim)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(langs)), langs)
    ax.set_xlabel("source")
    ax.set_ylabel("target")
    for i in range(len(langs)):
        for j in range(len(cols)):
            if np.isfinite(mat[i, j]):
                ax.text(j, i, f"{mat[i, j]:+.2f}" if lim < 1 else f"{mat[i, j]:+.1f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(title, fontsize=9)
    return save(fig, path)
