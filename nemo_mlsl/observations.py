"""Run records → arrays a law can be fitted to (one row per run, one column per family)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from nemo_mlsl.errors import ConfigError, FitError


@dataclass(frozen=True)
class Observations:
    """N, D, ratios P[run, family], losses L[run, family] and unique tokens U[family] (inf if unknown)."""

    run_ids: tuple[str, ...]
    families: tuple[str, ...]
    N: np.ndarray
    D: np.ndarray
    P: np.ndarray
    L: np.ndarray
    U: np.ndarray
    seeds: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]], families: Sequence[str] | None = None) -> "Observations":
        if not records:
            raise FitError("no run records to fit: train some runs first (mlsl train / mlsl study)")
        fams = tuple(sorted(families or records[0]["family_loss"]))
        n, f = len(records), len(fams)
        N, D, P, L = np.zeros(n), np.zeros(n), np.zeros((n, f)), np.zeros((n, f))
        U = np.full(f, np.inf)
        seeds = np.zeros(n, dtype=np.int64)
        for r, rec in enumerate(records):
            rid = rec.get("run_id", f"#{r}")
            missing = [fam for fam in fams if fam not in rec["family_loss"]]
            if missing:
                raise ConfigError(f"run {rid!r} has no family_loss for {missing}; every run must report every family")
            N[r], D[r] = float(rec["N"]), float(rec["D"])
            seeds[r] = int(rec.get("seed", 0))
            for j, fam in enumerate(fams):
                P[r, j] = float(rec["ratios"].get(fam, 0.0))
                L[r, j] = float(rec["family_loss"][fam])
                if not (math.isfinite(L[r, j]) and L[r, j] > 0):
                    raise ConfigError(f"run {rid!r}: family_loss[{fam!r}] = {L[r, j]} is not a positive finite loss")
                if not 0.0 <= P[r, j] <= 1.0:
                    raise ConfigError(f"run {rid!r}: ratio of {fam!r} is {P[r, j]}, outside [0, 1]")
            for j, fam in enumerate(fams):
                tok = (rec.get("family_tokens") or {}).get(fam)
                if tok:
                    U[j] = float(tok)
            if N[r] <= 0 or D[r] <= 0:
                raise ConfigError(f"run {rid!r}: N={N[r]} and D={D[r]} must be > 0")
        return cls(tuple(str(r.get("run_id", f"#{i}")) for i, r in enumerate(records)), fams, N, D, P, L, U, seeds)

    def subset(self, idx: np.ndarray) -> "Observations":
        idx = np.asarray(idx)
        return Observations(tuple(self.run_ids[i] for i in idx), self.families, self.N[idx], self.D[idx],
                            self.P[idx], self.L[idx], self.U, self.seeds[idx] if len(self.seeds) else self.seeds)

    def __len__(self) -> int:
        return len(self.run_ids)

    def family_index(self, family: str) -> int:
        if family not in self.families:
            raise ConfigError(f"unknown family {family!r}; the runs have {list(self.families)}")
        return self.families.index(family)


@dataclass(frozen=True)
class FamilyData:
    """The view of one family a law is fitted on."""

    family: str
    index: int
    N: np.ndarray
    D: np.ndarray
    p: np.ndarray
    P: np.ndarray
    U: np.ndarray
    loss: np.ndarray
    families: tuple[str, ...] = ()

    @classmethod
    def of(cls, obs: Observations, family: str) -> "FamilyData":
        j = obs.family_index(family)
        return cls(family, j, obs.N, obs.D, obs.P[:, j], obs.P, obs.U, obs.L[:, j], obs.families)

    def take(self, keep: np.ndarray) -> "FamilyData":
        return FamilyData(self.family, self.index, self.N[keep], self.D[keep], self.p[keep], self.P[keep], self.U,
                          self.loss[keep], self.families)
