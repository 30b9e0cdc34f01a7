"""Chinchilla (Hoffmann et al. 2022, approach 3): ``L(N, D) = E + A/N^α + B/D^β``.

``chinchilla`` (or ``chinchilla:family``) fits each family on its runs at p_i = 1;
``chinchilla:total`` fits one law to every run's mixture loss Σ_i p_i L_i (loss on the training mix).
"""

from __future__ import annotations

import numpy as np

from nemo_mlsl.errors import ConfigError, FitError
from nemo_mlsl.laws.base import Law, Param
from nemo_mlsl.fitting.observations import FamilyData, Observations


def scale_params(data: FamilyData) -> list[Param]:
    """E, a = log A, α, b = log B, β: the (N, D) part shared by Chinchilla and the joint family law."""
    top = float(data.loss.min())
    return [
        Param("E", 0.0, top, (0.0, 0.5 * top, 0.9 * top)),
        Param("a", -5.0, 40.0, (0.0, 5.0, 10.0, 20.0)),
        Param("alpha", 0.0, 2.5, (0.1, 0.3, 0.6, 1.0)),
        Param("b", -5.0, 40.0, (0.0, 5.0, 10.0, 20.0)),
        Param("beta", 0.0, 2.5, (0.1, 0.3, 0.6, 1.0)),
    ]


def scale_logs(data: FamilyData) -> tuple[np.ndarray, np.ndarray]:
    """(log N, log D) of the runs: what ``scale_terms`` needs of them, computed once per fit by the evaluators."""
    return np.log(data.N), np.log(data.D)


def scale_terms(theta: np.ndarray, data: FamilyData, logs: tuple[np.ndarray, np.ndarray] | None = None):
    """(A/N^α, B/D^β, E + A/N^α + B/D^β) for ``theta`` of shape [k] or [m, k] (first five entries used)."""
    theta = np.asarray(theta, dtype=float)
    E, a, alpha, b, beta = (theta[..., i : i + 1] if theta.ndim == 2 else theta[i] for i in range(5))
    log_n, log_d = scale_logs(data) if logs is None else logs
    tn = np.exp(a - alpha * log_n)
    td = np.exp(b - beta * log_d)
    return tn, td, E + tn + td


def scale_jacobian(theta: np.ndarray, data: FamilyData, terms=None, logs: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """d log(E + A/N^α + B/D^β) / d (E, a, α, b, β), ``[n, 5]``; ``terms`` and ``logs`` as computed for ``theta``, if at hand."""
    logs = scale_logs(data) if logs is None else logs
    tn, td, c = scale_terms(theta, data, logs) if terms is None else terms
    return np.stack([1 / c, tn / c, -logs[0] * tn / c, td / c, -logs[1] * td / c], axis=1)


def scale_evaluator(data: FamilyData):
    """theta -> (log(E + A/N^α + B/D^β), its Jacobian): the logs of N and D taken once, the terms once per step."""
    logs = scale_logs(data)

    def evaluate(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        terms = scale_terms(theta, data, logs)
        return np.log(terms[-1]), scale_jacobian(theta, data, terms, logs)

    return evaluate


class ChinchillaLaw(Law):
    name = "chinchilla"
    formula = "L(N,D) = E + A/N^α + B/D^β"
    # Mixture-blind: per family it is fitted on the runs at p_i = 1 only, and ``:total`` on the loss of the
    # training mix, so a zero share never enters a prediction (those runs are simply not used per family).
    zero_shares = True
    mixture_aware = False
    extrapolates_nd = True

    def __init__(self, arg: str | None = None):
        super().__init__(arg)
        if (arg or "family") not in ("family", "total"):
            raise ConfigError(f"law chinchilla:{arg}: the argument must be 'family' or 'total'")
        self.target = arg or "family"

    @property
    def own_share(self) -> bool:
        """Per family, fitted on the runs that train on that family alone: a target must be a training family."""
        return self.target == "family"

    def targets(self, obs: Observations) -> list[str]:
        return ["total"] if self.target == "total" else list(obs.targets)

    def data_for(self, obs: Observations, target: str) -> FamilyData:
        if self.target == "total":
            # The loss on the training mix, Σ_i p_i L_i, needs a loss for every family the run trains on.
            own = obs.family_losses()
            whole = np.all(np.isfinite(own) | (obs.P <= 0), axis=1)
            if not whole.any():
                raise FitError("law 'chinchilla:total' fits the loss on the training mix, Σ p_i L_i, and no run has a loss "
                               "for every family it trains on; use 'chinchilla' per family or a mixture law")
            keep = np.flatnonzero(whole)
            sub = obs.subset(keep)
            total = np.where(sub.P > 0, sub.P * np.nan_to_num(own[keep]), 0.0).sum(axis=1)
            return FamilyData("total", -1, sub.N, sub.D, np.ones(len(sub)), sub.P, sub.U, total, sub.families)
        data = FamilyData.of(obs, target)
        if not data.has_own_share:
            return data  # refused by name in check(): not a training family
        keep = np.isclose(data.p, 1.0)
        if keep.sum() == 0:
            raise FitError(
                f"law 'chinchilla' fits family {target!r} on runs with ratio 1 (that family alone) and found none; "
                "use 'chinchilla:total' for mixture runs, or 'joint_family'"
            )
        return data.take(keep)

    def params(self, data: FamilyData) -> list[Param]:
        return scale_params(data)

    def log_predict(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        return np.log(scale_terms(theta, data)[-1])

    def jacobian(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        return scale_jacobian(theta, data)

    def evaluator(self, data: FamilyData):
        return scale_evaluator(data)

    def share_jacobian(self, theta: np.ndarray, data: FamilyData) -> np.ndarray:
        """Zero: the law does not depend on the mixture."""
        return np.zeros((len(data.loss), data.P.shape[1]))

    def requirements(self) -> dict[str, int]:
        return {"runs": 6, "N": 2, "D": 2}
