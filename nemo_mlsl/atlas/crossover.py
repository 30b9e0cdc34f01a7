"""Pretrain from scratch or finetune a multilingual checkpoint (ATLAS §6).

Given both loss curves of a target language (tokens → loss), the crossover is the token count after
which the from-scratch run has the lower loss for good; its compute is C = 6·N·D. Without curves,
the paper's fitted relation C ≈ 1.11e6 · N^1.65 gives D = C / (6N) (body-text constant; see
docs/science.md on the paper's inconsistent printed variants).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nemo_mlsl.errors import FitError
from nemo_mlsl.atlas.transfer import Curve

PAPER_CONSTANT, PAPER_EXPONENT = 1_113_708.0, 1.65


@dataclass(frozen=True)
class Crossover:
    tokens: float
    compute: float | None
    loss: float


def find_crossover(pretrain: Curve, finetune: Curve, N: float | None = None, points: int = 2000) -> Crossover:
    """Smallest token count after which pretraining stays at or below finetuning (log-linear interpolation)."""
    lo = max(pretrain.tokens[0], finetune.tokens[0])
    hi = min(pretrain.tokens[-1], finetune.tokens[-1])
    if lo >= hi:
        raise FitError("the pretraining and finetuning curves do not overlap in tokens")
    grid = np.geomspace(lo, hi, points)
    gp = np.interp(np.log(grid), np.log(pretrain.tokens), pretrain.loss)
    gf = np.interp(np.log(grid), np.log(finetune.tokens), finetune.loss)
    diff = gp - gf  # > 0: finetuning is ahead
    if diff[0] <= 0:
        raise FitError("pretraining is already ahead at the first common token count: the curves do not cross within the data")
    ahead = diff <= 0
    if not ahead[-1]:
        raise FitError(f"the curves do not cross within the data (up to {hi:.4g} tokens finetuning stays ahead); "
                       "extend the from-scratch run")
    i = len(ahead) - int(np.argmax(~ahead[::-1]))  # first index of the final run of 'pretraining ahead'
    x0, x1 = np.log(grid[i - 1]), np.log(grid[i])
    d0, d1 = diff[i - 1], diff[i]
    t = float(np.exp(x0 + d0 * (x1 - x0) / (d0 - d1)))
    loss = float(np.interp(np.log(t), np.log(grid), gp))
    return Crossover(t, 6.0 * N * t if N else None, loss)


def paper_crossover(N: float) -> Crossover:
    """The paper's relation between model size and crossover compute (Fig. 7, body-text constant)."""
    C = PAPER_CONSTANT * N ** PAPER_EXPONENT
    return Crossover(C / (6.0 * N), C, float("nan"))
