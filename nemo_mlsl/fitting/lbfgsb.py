"""L-BFGS-B as ``scipy.optimize.minimize(method="L-BFGS-B", jac=True, bounds=...)`` runs it, without its Python
wrappers around each evaluation (a quarter of a fit's time on 1,000 runs).

The same Fortran-derived routine (``scipy.optimize._lbfgsb.setulb``) is driven with the same inputs in the same order:
the start clipped to the bounds and evaluated once before the first call, an evaluation only at a point not equal to
the last one, the gradient passed as a float64 copy, the same stopping tests (``maxiter`` iterations, ``maxfun``
evaluations, ``ftol`` as ``factr = ftol / eps``, ``gtol``). So the iterates, and the fit, are the same bit for bit.
The routine is private to SciPy: the first call checks the driver against ``minimize`` on a small bounded problem,
and where they differ at all (another SciPy) every call goes through ``minimize``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy.optimize import minimize

MAXCOR, MAXLS, MAXFUN = 10, 20, 15000  # minimize's defaults for L-BFGS-B


@dataclass
class Result:
    x: np.ndarray
    fun: float
    nit: int
    nfev: int
    converged: bool  # stopped by ftol or gtol, not by maxiter or maxfun


def _driver(fun: Callable[[np.ndarray], tuple[float, np.ndarray]], x0: np.ndarray, bounds: Sequence[tuple[float, float]],
            maxiter: int, ftol: float, gtol: float) -> Result:
    from scipy.optimize import _lbfgsb

    n = len(x0)
    lower = np.array([b[0] for b in bounds], dtype=np.float64)
    upper = np.array([b[1] for b in bounds], dtype=np.float64)
    nbd = np.zeros(n, np.int32)
    low_bnd, upper_bnd = np.zeros(n, np.float64), np.zeros(n, np.float64)
    for i in range(n):  # 2: bounded on both sides; 1: below only; 3: above only; 0: free (as minimize codes them)
        lo, hi = np.isinf(lower[i]), np.isinf(upper[i])
        if not lo:
            low_bnd[i] = lower[i]
        if not hi:
            upper_bnd[i] = upper[i]
        nbd[i] = {(False, False): 2, (False, True): 1, (True, False): 3, (True, True): 0}[(bool(lo), bool(hi))]
    x = np.array(np.clip(np.asarray(x0, dtype=np.float64).ravel(), lower, upper), dtype=np.float64)
    last_x = x.copy()
    last_f, last_g = fun(last_x.copy())
    last_f = float(last_f)
    nfev = 1
    f = np.array(0.0, dtype=np.float64)
    g = np.zeros((n,), dtype=np.float64)
    wa = np.zeros(2 * MAXCOR * n + 5 * n + 11 * MAXCOR * MAXCOR + 8 * MAXCOR, np.float64)
    iwa = np.zeros(3 * n, dtype=np.int32)
    task, ln_task = np.zeros(2, dtype=np.int32), np.zeros(2, dtype=np.int32)
    lsave, isave, dsave = np.zeros(4, dtype=np.int32), np.zeros(44, dtype=np.int32), np.zeros(29, dtype=np.float64)
    factr = ftol / np.finfo(float).eps
    nit = 0
    while True:
        g = np.asarray(g).astype(np.float64)
        _lbfgsb.setulb(MAXCOR, x, low_bnd, upper_bnd, nbd, f, g, factr, gtol, wa, iwa, task, lsave, isave, dsave, MAXLS,
                       ln_task)
        if task[0] == 3:  # f and g wanted at x
            if not np.array_equal(x, last_x):
                last_x = x.copy()
                last_f, last_g = fun(last_x.copy())
                last_f = float(last_f)
                nfev += 1
            f, g = last_f, np.atleast_1d(last_g)
        elif task[0] == 1:  # a new iteration
            nit += 1
            if nit >= maxiter:
                task[0], task[1] = 5, 504
            elif nfev > MAXFUN:
                task[0], task[1] = 5, 502
        else:
            break
    return Result(x, float(f), nit, nfev, bool(task[0] == 4))


def _scipy(fun, x0, bounds, maxiter, ftol, gtol) -> Result:
    res = minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": maxiter, "ftol": ftol, "gtol": gtol})
    return Result(res.x, float(res.fun), int(res.nit), int(res.nfev), bool(res.status == 0))


def _agrees() -> bool:
    """Whether the driver reproduces ``minimize`` bit for bit here (a bounded, badly scaled problem run to its cap)."""
    A = np.vander(np.linspace(0.1, 1.0, 12), 6)
    y = np.sin(np.linspace(0.0, 3.0, 12))

    def fun(t: np.ndarray) -> tuple[float, np.ndarray]:
        r = A @ t - y
        return float(np.sum(np.sqrt(1e-6 + r * r))), A.T @ (r / np.sqrt(1e-6 + r * r))

    bounds = [(-3.0, 3.0)] * 5 + [(0.05, 2.0)]
    try:
        for maxiter in (7, 300):
            a, b = _driver(fun, np.full(6, 0.5), bounds, maxiter, 1e-15, 1e-10), _scipy(fun, np.full(6, 0.5), bounds, maxiter, 1e-15, 1e-10)
            if a.x.tobytes() != b.x.tobytes() or a.fun != b.fun or a.nit != b.nit or a.nfev != b.nfev:
                return False
        return True
    except Exception:  # another SciPy's private routine: use minimize
        return False


_DIRECT: bool | None = None


def uses_driver() -> bool:
    global _DIRECT
    if _DIRECT is None:
        _DIRECT = _agrees()
    return _DIRECT


def lbfgsb(fun: Callable[[np.ndarray], tuple[float, np.ndarray]], x0: np.ndarray, bounds: Sequence[tuple[float, float]], *,
           maxiter: int, ftol: float, gtol: float, reference: bool = False) -> Result:
    """Minimise ``fun`` (value and gradient) from ``x0`` within ``bounds``: ``minimize``'s L-BFGS-B, bit for bit.
    ``reference``: through ``minimize`` itself."""
    if reference or any(lo == hi for lo, hi in bounds) or not uses_driver():  # minimize removes fixed variables first
        return _scipy(fun, x0, bounds, maxiter, ftol, gtol)
    return _driver(fun, x0, bounds, maxiter, ftol, gtol)
