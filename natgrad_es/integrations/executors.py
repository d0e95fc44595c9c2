"""Evaluate a generation through a ``concurrent.futures.Executor``: threads, processes, Dask, Ray.

``minimize(fun, x0, sigma0, executor=...)`` hands each generation to ``evaluate`` here:

* every row xᵢ of X becomes one task computing fun(xᵢ) (with ``vectorized=True``, every chunk of
  rows one task computing fun(X_chunk); ``chunksize`` sets the rows per task); the values come
  back in row order, whatever order the tasks finish;
* a task that raises, or whose worker is lost, is submitted again, up to ``retries`` more times;
  tasks already done are kept (nothing evaluated is lost, nothing is evaluated twice);
* a row still failing after its retries is NaN in the returned values and listed in
  ``Evaluation.failures``; ``minimize`` then follows ``nan_policy``: ``"worst"`` ranks it last
  (one warning), ``"raise"`` raises ``EvaluationError``, which carries X, the values obtained and
  the failures.  A generation in which *every* row fails raises in any case (nothing to rank).

The strategy does not know how f was evaluated, so a run with an executor is the serial run with the
same seed, value for value (for a deterministic ``fun``).

Executors that work:

* ``concurrent.futures.ThreadPoolExecutor`` — for objectives that release the GIL (numpy, I/O,
  subprocesses, simulators) or wait (remote calls, ``time.sleep``).
* ``concurrent.futures.ProcessPoolExecutor`` — ``fun`` must be picklable (a module-level function,
  a ``functools.partial`` of one, an instance of a module-level class).  A worker process that dies
  breaks the whole pool (the standard library's rule: ``BrokenProcessPool``); it cannot be retried
  on, so ``evaluate`` raises ``EvaluationError`` at once.  Use Dask for objectives that may crash.
* Dask: pass the ``distributed.Client`` itself (its ``get_executor(pure=False)`` is used) or an
  executor from ``client.get_executor(...)``.  A worker lost mid-task is handled by the scheduler
  (the task runs again on another worker; after ``distributed.scheduler.allowed-failures`` losses it
  fails with ``KilledWorker``, which counts as a failure here and is retried).  Tasks are submitted
  with a fresh key per attempt, so a retry is never answered from the cache of the failed one.
* Ray: ``ray.util.multiprocessing.Pool`` is not an Executor, but any object with
  ``submit(fn, *args) -> concurrent.futures.Future`` is accepted, and a Ray task's ``ObjectRef``
  converts to one with ``.future()``::

      import ray

      class RayExecutor:
          def submit(self, fn, *args):
              return ray.remote(fn).remote(*args).future()

      minimize(fun, x0, 0.5, executor=RayExecutor())

  (Ray retries tasks of dead workers itself: ``max_retries`` of ``ray.remote``.)

Tasks are not cancelled or timed out: a hung evaluation blocks the generation.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["evaluate", "Evaluation", "EvaluationError", "as_executor", "worker_count"]


class EvaluationError(RuntimeError):
    """Evaluations failed for good (after their retries, with ``nan_policy="raise"``, on every row
    of a generation, or on a broken executor).

    Attributes:
        X: the generation's solutions (n×d, as handed to the objective).
        values: (n,) float64, the f values obtained, NaN where none was.
        failures: ``{row: exception}`` of the rows without a value.
        es: set by ``minimize``: the strategy before this generation's ``tell`` (continue with
            ``es.tell(err.X, values)`` once the values are complete).
    """

    def __init__(self, message: str, X, values: np.ndarray, failures: dict[int, BaseException]):
        super().__init__(message)
        self.X = X
        self.values = values
        self.failures = failures
        self.es: Any = None


@dataclass
class Evaluation:
    """The outcome of ``evaluate``.

    Attributes:
        values: (n,) float64 f values in row order, NaN for rows that failed for good.
        failures: ``{row: the last exception}`` of those rows.
        attempts: tasks submitted in all (retries included).
        retried: rows that needed more than one attempt.
    """

    values: np.ndarray
    failures: dict[int, BaseException] = field(default_factory=dict)
    attempts: int = 0
    retried: int = 0


def as_executor(executor) -> Any:
    """The executor to submit to: a Dask ``Client`` becomes ``client.get_executor(pure=False)``;
    anything with ``submit`` is used as it is."""
    if executor is None:
        return None
    if hasattr(executor, "get_executor") and hasattr(executor, "scheduler_info"):
        return executor.get_executor(pure=False)
    if not callable(getattr(executor, "submit", None)):
        raise TypeError(f"executor must be a concurrent.futures.Executor (an object with "
                        f"submit(fn, *args) returning a Future) or a dask.distributed.Client, "
                        f"got {type(executor).__name__}")
    return executor


def worker_count(executor) -> int | None:
    """The number of workers of a thread / process pool or a Dask executor (None if unknown)."""
    n = getattr(executor, "_max_workers", None)
    if isinstance(n, int) and n > 0:
        return n
    client = getattr(executor, "_client", None)
    if client is not None:
        try:
            return max(1, sum(w.get("nthreads", 1) for w in
                              client.scheduler_info()["workers"].values()))
        except Exception:  # noqa: BLE001 - a best guess only
            return None
    return None


def _call_rows(fun: Callable, X, vectorized: bool, attempt: int) -> list[float]:
    """One task: f of a chunk of rows X, as floats — ``fun(X)`` when vectorized, else ``fun(x)``
    row by row (``attempt`` only makes each retry a distinct Dask task)."""
    if not vectorized:
        return [_as_float(fun(x)) for x in X]
    values = fun(X)
    if hasattr(values, "detach"):  # torch
        values = values.detach().cpu().numpy()
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.shape[0] != len(X):
        raise ValueError(f"the vectorized objective returned {values.shape[0]} values for "
                         f"{len(X)} rows")
    return values.tolist()


def _as_float(v) -> float:
    if hasattr(v, "numel"):  # a torch tensor
        v = v.item() if v.numel() == 1 else v
    elif isinstance(v, np.ndarray) and v.size == 1:
        v = v.item()
    return float(v)


def evaluate(fun: Callable, X, executor, *, retries: int = 1, vectorized: bool = False,
             chunksize: int | None = None, raise_on_failure: bool = False) -> Evaluation:
    """f of the rows of X through ``executor``, in row order, with retries of failed tasks.

    Args:
        fun: ``fun(x) -> float`` for one row x (shape (d,)); with ``vectorized=True``,
            ``fun(X_chunk) -> values`` for a chunk of rows.
        X: (n, d) solutions (numpy or torch; rows are passed as they are).
        executor: a ``concurrent.futures.Executor`` (or an object with ``submit``), or a Dask
            ``Client`` (see the module docstring).
        retries: how many times a failed task is submitted again (0: never).
        vectorized: see ``fun``.
        chunksize: rows per task.  Default 1 without ``vectorized``; with it, n split evenly over
            the executor's workers (one chunk per worker when their number is known, else 1 row
            per task).  A failed task is retried as a whole.
        raise_on_failure: raise ``EvaluationError`` as soon as a row has failed its retries
            (after the other tasks finished, so their values are in the error); otherwise return
            NaN for it.

    Returns:
        ``Evaluation`` (values, failures, attempts, retried).

    Raises:
        EvaluationError: ``raise_on_failure`` and a row failed; every row failed; or the
            executor is broken (a process pool whose worker died) or shut down.
    """
    if isinstance(retries, bool) or not isinstance(retries, (int, np.integer)) or retries < 0:
        raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
    ex = as_executor(executor)
    n = int(X.shape[0])
    if chunksize is None:
        workers = worker_count(ex) if vectorized else None
        chunksize = math.ceil(n / workers) if workers else 1
    if isinstance(chunksize, bool) or not isinstance(chunksize, (int, np.integer)) or chunksize < 1:
        raise ValueError(f"chunksize must be an integer >= 1, got {chunksize!r}")
    chunks = [(i, min(n, i + chunksize)) for i in range(0, n, chunksize)]
    values = np.full(n, np.nan)
    failures: dict[int, BaseException] = {}
    out = Evaluation(values, failures)
    pending: dict[cf.Future, tuple[int, int, int]] = {}
    retried: set[int] = set()

    def submit(lo: int, hi: int, attempt: int) -> None:
        try:
            fut = ex.submit(_call_rows, fun, X[lo:hi], vectorized, attempt)
        except (cf.BrokenExecutor, RuntimeError) as err:  # broken or shut-down executor
            for r in range(lo, hi):
                failures.setdefault(r, err)
            _drain(pending, values, failures)
            raise EvaluationError(f"the executor cannot take tasks ({type(err).__name__}: {err}); "
                                  f"values obtained so far are in the error's .values",
                                  X, values, dict(failures)) from err
        out.attempts += 1
        pending[fut] = (lo, hi, attempt)

    try:
        for lo, hi in chunks:
            submit(lo, hi, 0)
        while pending:
            done, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
            for fut in done:
                lo, hi, attempt = pending.pop(fut)
                err = fut.exception()
                if err is None:
                    values[lo:hi] = fut.result()
                    for r in range(lo, hi):
                        failures.pop(r, None)
                    continue
                if isinstance(err, cf.BrokenExecutor):
                    for r in range(lo, hi):
                        failures[r] = err
                    _drain(pending, values, failures)
                    raise EvaluationError(
                        f"the executor broke ({type(err).__name__}: {err}); a process pool whose "
                        f"worker died cannot run tasks again — use a Dask cluster for objectives "
                        f"that may crash. Values obtained so far are in the error's .values",
                        X, values, dict(failures)) from err
                for r in range(lo, hi):
                    failures[r] = err
                if attempt < retries:
                    retried.update(range(lo, hi))
                    submit(lo, hi, attempt + 1)
    except BaseException:
        for fut in pending:
            fut.cancel()
        raise
    out.retried = len(retried)
    if failures and (raise_on_failure or len(failures) == n):
        first = failures[min(failures)]
        what = "every row of the generation" if len(failures) == n else \
            f"{len(failures)} of {n} rows (rows {sorted(failures)[:10]})"
        raise EvaluationError(
            f"evaluation failed for {what} after {retries} retr{'y' if retries == 1 else 'ies'}: "
            f"{type(first).__name__}: {first}", X, values, dict(failures)) from first
    return out


def _drain(pending: dict, values: np.ndarray, failures: dict) -> None:
    """Collect the tasks that already finished (so their values are not lost) and cancel the rest."""
    for fut, (lo, hi, _) in list(pending.items()):
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            values[lo:hi] = fut.result()
            for r in range(lo, hi):
                failures.pop(r, None)
        else:
            fut.cancel()
            for r in range(lo, hi):
                failures.setdefault(r, cf.CancelledError("not run: the executor failed"))
    pending.clear()
