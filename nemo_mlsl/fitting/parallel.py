"""Fits spread over worker processes: the same tasks give the same results, bit for bit, for any number of jobs.

Each task is a pure function of its arguments and runs with BLAS single-threaded (see ``lawfit.fit``), in the
parent (``jobs`` 1) or in a worker (``jobs`` > 1); results come back in task order whatever order the workers
finish in. Errors travel back as values, so an error class that cannot be pickled still reaches the caller.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from threadpoolctl import threadpool_limits

from nemo_mlsl.errors import ConfigError


def available_cores() -> int:
    """The cores this process may run on (its affinity where the platform says, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def check_jobs(jobs: int | None, field: str = "--jobs") -> int:
    """``jobs`` as a number of processes: None means every available core; otherwise a whole number >= 1."""
    if jobs is None:
        return available_cores()
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"{field} {jobs!r}: the number of worker processes is a whole number >= 1 "
                          f"(this machine has {available_cores()} cores; leave it out to use them all)")
    return jobs


@dataclass
class Failed:
    """A task's error, carried back as a value: its class and message, the error itself where it pickles, and
    whether it is the user's (an ``MLSLError``: bad input, a law that cannot take the runs) or a bug."""

    kind: str
    message: str
    user: bool
    error: BaseException | None = None


def _call(fn: Callable[[Any], Any], task: Any, worker: bool = True) -> Any:
    from nemo_mlsl.errors import MLSLError

    with threadpool_limits(limits=1, user_api="blas"):
        try:
            return fn(task)
        except MLSLError as err:
            return Failed(type(err).__name__, str(err), True, err if _picklable(err) else None)
        except Exception as err:
            if not worker:
                raise  # in this process: the bug's own traceback
            return Failed(type(err).__name__, f"{err}\n{traceback.format_exc()}", False)


def _picklable(err: BaseException) -> bool:
    import pickle

    try:
        pickle.loads(pickle.dumps(err))
        return True
    except Exception:
        return False


def _context() -> multiprocessing.context.BaseContext:
    # fork where it is safe (Linux): workers start in milliseconds with everything imported; spawn elsewhere.
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def run_tasks(fn: Callable[[Any], Any], tasks: Sequence[Any], jobs: int = 1,
              done: Callable[[int, Any], None] | None = None) -> list[Any]:
    """``[fn(t) for t in tasks]``, a ``Failed`` in place of a task that raised an ``MLSLError``, in ``jobs`` processes.
    ``fn`` must be a module-level function and the tasks picklable when ``jobs`` > 1. ``done(i, result)`` is called in
    this process as each task finishes (for progress), in the order they finish."""
    results: list[Any] = [None] * len(tasks)
    if jobs <= 1 or len(tasks) <= 1:
        for i, task in enumerate(tasks):
            results[i] = _call(fn, task, worker=False)
            if done:
                done(i, results[i])
        return results
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=_context()) as pool:
        pending = {pool.submit(_call, fn, task): i for i, task in enumerate(tasks)}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                i = pending.pop(fut)
                results[i] = fut.result()
                if done:
                    done(i, results[i])
    return results


def raise_failed(result: Any) -> Any:
    """``result``, or the error its task raised, raised again here (a bug in a worker as a RuntimeError with the
    worker's traceback)."""
    if isinstance(result, Failed):
        if result.error is not None:
            raise result.error
        if result.user:
            from nemo_mlsl.errors import FitError

            raise FitError(result.message)
        raise RuntimeError(f"{result.kind} in a fitting worker: {result.message}")
    return result
