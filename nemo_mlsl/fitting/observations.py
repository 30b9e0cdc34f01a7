"""Run records → arrays a law can be fitted to: one row per run, the mixture's shares as features, the evaluated
targets' losses as what is predicted.

A record's ``ratios`` are its training shares (the mixture: one column per family, ``P``) and its ``family_loss``
its evaluated targets (any names: a family, a language, a downstream task, a held-out set: one column per target,
``L``). A target that is also a family has a share of its own (``own_index``); any other target is predicted from
the whole mixture alone. Records are read one at a time into flat arrays, so a store of a million runs costs memory
in its numbers, not in Python objects.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from nemo_mlsl.errors import ConfigError, FitError


RENORMALIZE_TOLERANCE = 0.01  # shares summing to 1 within this are renormalized (authors round them), with a warning


@dataclass(frozen=True)
class Observations:
    """N, D, shares P[run, family], losses L[run, target] and unique tokens U[family] (inf if unknown).

    ``families`` are every family any run lists a share for (the mixture's features); ``targets`` every name any
    run has a loss for. A run's loss on a target it was not evaluated on is NaN. A share of 0 is data: the family
    was not trained on in that run."""

    run_ids: tuple[str, ...]
    families: tuple[str, ...]
    N: np.ndarray
    D: np.ndarray
    P: np.ndarray
    L: np.ndarray
    U: np.ndarray
    seeds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    warnings: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], families: Sequence[str] | None = None,
                     targets: Sequence[str] | None = None) -> "Observations":
        """``families``: the share columns (default: every family the runs name; a run training on another is an
        error); ``targets``: the loss columns (default: every target the runs have a loss for; others are ignored)."""
        reader = _Reader(families, targets)
        for rec in records:
            reader.add(rec)
        return reader.finish()

    @property
    def evaluated(self) -> tuple[str, ...]:
        """The targets: what a law is fitted to (the families' shares alone are features)."""
        return self.targets

    def subset(self, idx: np.ndarray) -> "Observations":
        idx = np.asarray(idx)
        return Observations(tuple(self.run_ids[i] for i in idx), self.families, self.N[idx], self.D[idx],
                            self.P[idx], self.L[idx], self.U, self.seeds[idx] if len(self.seeds) else self.seeds,
                            self.warnings, self.targets)

    def __len__(self) -> int:
        return len(self.run_ids)

    def family_index(self, family: str) -> int:
        """The share column of ``family``."""
        if family not in self.families:
            raise ConfigError(f"unknown family {family!r}; the runs train on {list(self.families)}")
        return self.families.index(family)

    def target_index(self, target: str) -> int:
        """The loss column of ``target``."""
        if target not in self.targets:
            raise ConfigError(f"unknown target {target!r}; the runs are evaluated on {list(self.targets)}")
        return self.targets.index(target)

    def own_index(self, target: str) -> int:
        """The share column of ``target`` if it is a training family, else -1 (no share of its own)."""
        return self.families.index(target) if target in self.families else -1

    def family_losses(self) -> np.ndarray:
        """Losses aligned with the share columns, ``[n, F]``: each family's loss on itself (NaN where it is no target)."""
        out = np.full(self.P.shape, np.nan)
        for j, f in enumerate(self.families):
            if f in self.targets:
                out[:, j] = self.L[:, self.targets.index(f)]
        return out


class _Reader:
    """Collects records one at a time (validated as they come) into flat arrays; ``finish`` makes them dense."""

    def __init__(self, families: Sequence[str] | None, targets: Sequence[str] | None):
        self.fixed_families = tuple(sorted(families)) if families else None
        self.fixed_targets = tuple(sorted(targets)) if targets else None
        self.fam_col: dict[str, int] = {f: j for j, f in enumerate(self.fixed_families or ())}
        self.tgt_col: dict[str, int] = {t: j for j, t in enumerate(self.fixed_targets or ())}
        self.run_ids: list[str] = []
        self.N, self.D, self.seeds = array("d"), array("d"), array("q")
        self.share_row, self.share_col, self.share_val = array("q"), array("q"), array("d")
        self.loss_row, self.loss_col, self.loss_val = array("q"), array("q"), array("d")
        self.U: dict[str, float] = {}
        self.rescaled: list[tuple[str, float]] = []

    def _column(self, cols: dict[str, int], name: str) -> int:
        if name not in cols:
            cols[name] = len(cols)
        return cols[name]

    def add(self, rec: Mapping[str, Any]) -> None:
        r = len(self.run_ids)
        rid = str(rec.get("run_id", f"#{r}"))
        N, D = float(rec["N"]), float(rec["D"])
        if not (N > 0 and D > 0):
            raise ConfigError(f"run {rid!r}: N={N} and D={D} must be > 0")
        ratios = rec["ratios"]
        if self.fixed_families is not None:
            unknown = sorted(f for f in ratios if f not in self.fam_col and float(ratios[f]) > 0)
            if unknown:
                raise ConfigError(f"run {rid!r} trains on {unknown}, which are not among the families asked for "
                                  f"({list(self.fixed_families)}); fit on every family the runs train on")
        shares = {}
        for fam, v in ratios.items():
            v = float(v)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"run {rid!r}: ratio of {fam!r} is {v}, outside [0, 1]")
            if self.fixed_families is None or fam in self.fam_col:
                shares[str(fam)] = v
        total = float(sum(shares.values()))
        if abs(total - 1.0) > RENORMALIZE_TOLERANCE + 1e-12:
            raise ConfigError(f"run {rid!r}: ratios sum to {total:.6g}, not 1 (more than {RENORMALIZE_TOLERANCE:.0%} off, "
                              "so they are not rounded shares); fix the record's ratios")
        if abs(total - 1.0) > 1e-9:
            shares = {f: v / total for f, v in shares.items()}
            self.rescaled.append((rid, total))
        losses = {}
        for name, v in (rec.get("family_loss") or {}).items():
            if self.fixed_targets is not None and name not in self.tgt_col:
                continue
            v = float(v)
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"run {rid!r}: family_loss[{name!r}] = {v} is not a positive finite loss")
            losses[str(name)] = v
        if not losses:
            asked = f" for any of {list(self.fixed_targets)}" if self.fixed_targets else ""
            raise ConfigError(f"run {rid!r} has no family_loss{asked}; a run needs at least one evaluated target")
        for fam, v in shares.items():
            self.share_row.append(r)
            self.share_col.append(self._column(self.fam_col, fam))
            self.share_val.append(v)
        for name, v in losses.items():
            self.loss_row.append(r)
            self.loss_col.append(self._column(self.tgt_col, name))
            self.loss_val.append(v)
        for fam, tok in (rec.get("family_tokens") or {}).items():
            if tok:
                self.U[str(fam)] = float(tok)
        self.run_ids.append(rid)
        self.N.append(N)
        self.D.append(D)
        self.seeds.append(int(rec.get("seed", 0)))

    def finish(self) -> Observations:
        n = len(self.run_ids)
        if not n:
            raise FitError("no run records to fit: train some runs first (mlsl train / mlsl study)")
        fams = tuple(sorted(self.fam_col))
        tgts = tuple(sorted(self.tgt_col))
        fam_order = np.array([fams.index(f) for f in self.fam_col], dtype=np.int64) if fams else np.zeros(0, np.int64)
        tgt_order = np.array([tgts.index(t) for t in self.tgt_col], dtype=np.int64)
        P = np.zeros((n, len(fams)))
        if len(self.share_val):
            P[np.frombuffer(self.share_row, np.int64), fam_order[np.frombuffer(self.share_col, np.int64)]] = np.frombuffer(self.share_val)
        L = np.full((n, len(tgts)), np.nan)
        L[np.frombuffer(self.loss_row, np.int64), tgt_order[np.frombuffer(self.loss_col, np.int64)]] = np.frombuffer(self.loss_val)
        U = np.array([self.U.get(f, np.inf) for f in fams])
        notes = []
        if self.rescaled:
            lo, hi = min(t for _, t in self.rescaled), max(t for _, t in self.rescaled)
            names = ", ".join(r for r, _ in self.rescaled[:10]) + (f" and {len(self.rescaled) - 10} more" if len(self.rescaled) > 10 else "")
            notes.append(f"the ratios of {len(self.rescaled)} run(s) summed to {lo:.6g}" + (f"–{hi:.6g}" if hi != lo else "")
                         + f", not 1, and were renormalized: {names}")
        return Observations(tuple(self.run_ids), fams, np.frombuffer(self.N).copy(), np.frombuffer(self.D).copy(), P, L, U,
                            np.frombuffer(self.seeds, np.int64).copy(), tuple(notes), tgts)


@dataclass(frozen=True)
class FamilyData:
    """The view of one target a law is fitted on (``family`` is the target's name): the runs with a loss on it,
    every family's share ``P`` as features, and the target's own share ``p`` where it is a training family
    (``index`` its column in ``P``; -1 and ``p`` = 0 for a target that is no family)."""

    family: str
    index: int
    N: np.ndarray
    D: np.ndarray
    p: np.ndarray
    P: np.ndarray
    U: np.ndarray
    loss: np.ndarray
    families: tuple[str, ...] = ()

    @property
    def target(self) -> str:
        return self.family

    @property
    def has_own_share(self) -> bool:
        return self.index >= 0

    @classmethod
    def of(cls, obs: Observations, target: str) -> "FamilyData":
        """The runs with a loss on ``target`` (every family's share kept as features)."""
        if target not in obs.targets:
            if target in obs.families:
                raise FitError(f"no run has a loss on family {target!r} (it appears only as a share); fit the evaluated "
                               f"targets {list(obs.targets)}")
            raise FitError(f"no run is evaluated on {target!r}; the runs' targets are {list(obs.targets)}")
        t = obs.target_index(target)
        j = obs.own_index(target)
        keep = np.isfinite(obs.L[:, t])
        p = obs.P[:, j] if j >= 0 else np.zeros(len(obs))
        if keep.all():
            return cls(target, j, obs.N, obs.D, p, obs.P, obs.U, obs.L[:, t], obs.families)
        return cls(target, j, obs.N[keep], obs.D[keep], p[keep], obs.P[keep], obs.U, obs.L[keep, t], obs.families)

    @classmethod
    def at(cls, family: str, families: Sequence[str], N: np.ndarray, D: np.ndarray, P: np.ndarray,
           U: np.ndarray | None = None) -> "FamilyData":
        """Points to predict ``family`` (any target) at (no losses): N, D of shape [n], shares P of shape [n, F] over
        ``families``; U the families' unique tokens (default: unknown, no repetition)."""
        P = np.atleast_2d(np.asarray(P, dtype=float))
        j = list(families).index(family) if family in families else -1
        n = len(P)
        U = np.full(len(families), np.inf) if U is None else np.asarray(U, dtype=float)
        return cls(family, j, np.broadcast_to(np.asarray(N, float), (n,)).copy(), np.broadcast_to(np.asarray(D, float), (n,)).copy(),
                   P[:, j] if j >= 0 else np.zeros(n), P, U, np.ones(n), tuple(families))

    def take(self, keep: np.ndarray) -> "FamilyData":
        return FamilyData(self.family, self.index, self.N[keep], self.D[keep], self.p[keep], self.P[keep], self.U,
                          self.loss[keep], self.families)

    def distinct_mixtures(self) -> int:
        return len(np.unique(np.round(self.P, 9), axis=0)) if len(self.P) else 0
