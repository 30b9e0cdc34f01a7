"""Run records → arrays a law can be fitted to (one row per run, one column per family)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from nemo_mlsl.errors import ConfigError, FitError


RENORMALIZE_TOLERANCE = 0.01  # shares summing to 1 within this are renormalized (authors round them), with a warning


@dataclass(frozen=True)
class Observations:
    """N, D, shares P[run, family], losses L[run, family] and unique tokens U[family] (inf if unknown).

    ``families`` are every family any run trains on or is evaluated on (the mixture's features); a run's
    loss on a family it was not evaluated on is NaN, and ``evaluated`` are the families with a loss in at
    least one run (the targets). A share of 0 is data: the family was not trained on in that run."""

    run_ids: tuple[str, ...]
    families: tuple[str, ...]
    N: np.ndarray
    D: np.ndarray
    P: np.ndarray
    L: np.ndarray
    U: np.ndarray
    seeds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    warnings: tuple[str, ...] = ()

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]], families: Sequence[str] | None = None) -> "Observations":
        if not records:
            raise FitError("no run records to fit: train some runs first (mlsl train / mlsl study)")
        if families:
            fams = tuple(sorted(families))
        else:
            fams = tuple(sorted({str(f) for rec in records for key in ("ratios", "family_loss") for f in (rec.get(key) or {})}))
        n, f = len(records), len(fams)
        N, D, P, L = np.zeros(n), np.zeros(n), np.zeros((n, f)), np.full((n, f), np.nan)
        U = np.full(f, np.inf)
        seeds = np.zeros(n, dtype=np.int64)
        rescaled: list[tuple[str, float]] = []
        for r, rec in enumerate(records):
            rid = rec.get("run_id", f"#{r}")
            N[r], D[r] = float(rec["N"]), float(rec["D"])
            seeds[r] = int(rec.get("seed", 0))
            unknown = sorted(set(rec["ratios"]) - set(fams))
            if unknown and any(float(rec["ratios"][u]) > 0 for u in unknown):
                raise ConfigError(f"run {rid!r} trains on {unknown}, which are not among the families asked for ({list(fams)}); "
                                  "fit on every family the runs train on")
            for j, fam in enumerate(fams):
                P[r, j] = float(rec["ratios"].get(fam, 0.0))
                if fam in rec["family_loss"]:
                    L[r, j] = float(rec["family_loss"][fam])
                    if not (math.isfinite(L[r, j]) and L[r, j] > 0):
                        raise ConfigError(f"run {rid!r}: family_loss[{fam!r}] = {L[r, j]} is not a positive finite loss")
                if not 0.0 <= P[r, j] <= 1.0:
                    raise ConfigError(f"run {rid!r}: ratio of {fam!r} is {P[r, j]}, outside [0, 1]")
            total = float(P[r].sum())
            if abs(total - 1.0) > RENORMALIZE_TOLERANCE + 1e-12:
                raise ConfigError(f"run {rid!r}: ratios sum to {total:.6g}, not 1 (more than {RENORMALIZE_TOLERANCE:.0%} off, "
                                  "so they are not rounded shares); fix the record's ratios")
            if abs(total - 1.0) > 1e-9:
                P[r] /= total
                rescaled.append((str(rid), total))
            if not np.isfinite(L[r]).any():
                raise ConfigError(f"run {rid!r} has no family_loss for any of {list(fams)}; a run needs at least one loss")
            for j, fam in enumerate(fams):
                tok = (rec.get("family_tokens") or {}).get(fam)
                if tok:
                    U[j] = float(tok)
            if N[r] <= 0 or D[r] <= 0:
                raise ConfigError(f"run {rid!r}: N={N[r]} and D={D[r]} must be > 0")
        notes = []
        if rescaled:
            lo, hi = min(t for _, t in rescaled), max(t for _, t in rescaled)
            names = ", ".join(r for r, _ in rescaled[:10]) + (f" and {len(rescaled) - 10} more" if len(rescaled) > 10 else "")
            notes.append(f"the ratios of {len(rescaled)} run(s) summed to {lo:.6g}" + (f"–{hi:.6g}" if hi != lo else "")
                         + f", not 1, and were renormalized: {names}")
        return cls(tuple(str(r.get("run_id", f"#{i}")) for i, r in enumerate(records)), fams, N, D, P, L, U, seeds, tuple(notes))

    @property
    def evaluated(self) -> tuple[str, ...]:
        """Families with a loss in at least one run: what a law is fitted to (the others are only shares)."""
        return tuple(f for j, f in enumerate(self.families) if np.isfinite(self.L[:, j]).any())

    def subset(self, idx: np.ndarray) -> "Observations":
        idx = np.asarray(idx)
        return Observations(tuple(self.run_ids[i] for i in idx), self.families, self.N[idx], self.D[idx],
                            self.P[idx], self.L[idx], self.U, self.seeds[idx] if len(self.seeds) else self.seeds,
                            self.warnings)

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
        """The runs with a loss on ``family`` (every family's share kept as features)."""
        j = obs.family_index(family)
        keep = np.isfinite(obs.L[:, j])
        if not keep.any():
            raise FitError(f"no run has a loss on family {family!r} (it appears only as a share); fit the evaluated "
                           f"families {list(obs.evaluated)}")
        if keep.all():
            return cls(family, j, obs.N, obs.D, obs.P[:, j], obs.P, obs.U, obs.L[:, j], obs.families)
        return cls(family, j, obs.N[keep], obs.D[keep], obs.P[keep, j], obs.P[keep], obs.U, obs.L[keep, j], obs.families)

    @classmethod
    def at(cls, family: str, families: Sequence[str], N: np.ndarray, D: np.ndarray, P: np.ndarray,
           U: np.ndarray | None = None) -> "FamilyData":
        """Points to predict at (no losses): N, D of shape [n], shares P of shape [n, F] over ``families``."""
        P = np.atleast_2d(np.asarray(P, dtype=float))
        j = list(families).index(family)
        n = len(P)
        U = np.full(len(families), np.inf) if U is None else np.asarray(U, dtype=float)
        return cls(family, j, np.broadcast_to(np.asarray(N, float), (n,)).copy(), np.broadcast_to(np.asarray(D, float), (n,)).copy(),
                   P[:, j], P, U, np.ones(n), tuple(families))

    def take(self, keep: np.ndarray) -> "FamilyData":
        return FamilyData(self.family, self.index, self.N[keep], self.D[keep], self.p[keep], self.P[keep], self.U,
                          self.loss[keep], self.families)
